"""The export report: does every written file score like the torch network, how big and how
fast is it? JSON for programs (``export_report.json``), markdown for people
(``export_report.md``).

Per file and backend: file size (and the graph alone, without the metadata), accuracy on the
held-out clips, top-1 agreement with the torch float network (per clip and per window), and
latency on 1 thread: model milliseconds per window and per second of audio at the model's
stream hop (a stream scores one window every hop), plus the numpy front end. Int8 TFLite files
are also run under TensorFlow Lite Micro and compared with LiteRT.

Evaluation follows ``Model.classify`` exactly: the same windows (the runtime's hop grid, the
last one zero-padded), the same front end, the output activation, the clip pooling; only the
features are computed once per clip and handed to each model (``scores_for_features``).
"""
from __future__ import annotations

import contextlib
import datetime
import json
import os
import platform
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgeaudio.backends import BACKENDS_FOR_FORMAT, backend_available
from edgeaudio.frontend import Frontend
from edgeaudio.model import Model, activate
from edgeaudio.modelfile import ModelInfo

from .clips import read_clip, runtime_windows
from .errors import write_file

JSON_NAME = "export_report.json"
MARKDOWN_NAME = "export_report.md"


@dataclass
class EvalSet:
    """Features of held-out clips, window by window, as the runtime computes them."""

    features: list            # per clip: [windows, n_frames, bins] float32
    labels: list              # per clip: label index or None
    names: list = field(default_factory=list)
    source: str = ""

    @property
    def windows(self) -> int:
        return int(sum(len(f) for f in self.features))

    @property
    def labeled(self) -> bool:
        return bool(self.labels) and all(y is not None for y in self.labels)


def eval_set(clips: list, info: ModelInfo, source: str = "") -> EvalSet:
    """Features of every readable clip (unreadable ones are skipped with a warning)."""
    frontend = Frontend(info.frontend)
    feats, labels, names = [], [], []
    for clip in clips:
        wave = read_clip(clip, info)
        if wave is None:
            continue
        feats.append(np.stack([frontend(w) for w in runtime_windows(info, wave)]))
        labels.append(clip.label)
        names.append(clip.path.name)
    return EvalSet(feats, labels, names, source)


def pool(window_scores: np.ndarray, how: str) -> np.ndarray:
    return window_scores.max(axis=0) if how == "max" else window_scores.mean(axis=0)


def score_bounds(raw: np.ndarray, activation: str, bound: float) -> tuple:
    """(lowest, highest) score of each class when every raw output (logit) may be off by up
    to ``bound``: a class is lowest with its own logit ``bound`` lower and every other one
    ``bound`` higher, and the reverse. Shaped like ``raw`` (``[..., classes]``)."""
    raw = np.asarray(raw, np.float64)
    if activation == "softmax":
        p = activate(raw, activation)
        # softmax with one logit moved by -2 * bound against all others, in closed form
        low = p / (p + np.exp(2 * bound) * (1 - p))
        high = p / (p + np.exp(-2 * bound) * (1 - p))
        return low, high
    return activate(raw - bound, activation), activate(raw + bound, activation)


def decided_top1(window_raw: np.ndarray, activation: str, pooling: str,
                 bound: float) -> int | None:
    """A clip's top-1 label (index) from its windows' raw outputs ``[windows, classes]`` when
    no error of up to ``bound`` on every raw output of every window can change it, else None
    (a near-tie that rounding may decide either way). Pooling is monotone, so pooling the
    per-window bounds bounds the clip's scores."""
    window_raw = np.atleast_2d(window_raw)
    top = int(np.argmax(pool(activate(window_raw.astype(np.float64), activation), pooling)))
    low, high = score_bounds(window_raw, activation, bound)
    low, high = pool(low, pooling), pool(high, pooling)
    rivals = np.delete(high, top)
    return top if rivals.size == 0 or low[top] > rivals.max() else None


def torch_window_scores(network, info: ModelInfo, data: EvalSet) -> list:
    """Per clip ``[windows, classes]`` scores of the torch network (float32, eval mode)."""
    import torch

    network = network.eval()
    out = []
    with torch.no_grad():
        for f in data.features:
            raw = network(torch.from_numpy(f)).numpy()
            out.append(activate(raw.astype(np.float64), info.output_activation))
    return out


def runtime_window_scores(model, data: EvalSet) -> list:
    """Per clip ``[windows, classes]`` scores from a loaded model (``Model`` or anything with
    ``scores_for_features``)."""
    return [np.stack([model.scores_for_features(w) for w in f]) for f in data.features]


def tflm_window_scores(runner, info: ModelInfo, data: EvalSet) -> list:
    return [np.stack([activate(runner.run(w).astype(np.float64), info.output_activation)
                      for w in f]) for f in data.features]


def compare(scores: list, reference: list | None, data: EvalSet, pooling: str) -> dict:
    """Accuracy of ``scores`` and its top-1 agreement with ``reference`` (both per clip)."""
    top = np.array([int(np.argmax(pool(s, pooling))) for s in scores])
    d = {"clips": len(scores)}
    if data.labeled:
        d["accuracy"] = float(np.mean(top == np.array(data.labels)))
    if reference is not None:
        ref_top = np.array([int(np.argmax(pool(s, pooling))) for s in reference])
        win = np.concatenate([s.argmax(axis=1) for s in scores])
        ref_win = np.concatenate([s.argmax(axis=1) for s in reference])
        d["agreement_clips"] = float(np.mean(top == ref_top))
        d["agreement_windows"] = float(np.mean(win == ref_win))
        d["max_abs_score_diff"] = float(max(np.abs(a - b).max() for a, b in zip(scores,
                                                                                  reference)))
    return d


def int8_accuracy_drop(network, info: ModelInfo, files: list, data: EvalSet) -> float | None:
    """Worst accuracy loss (points) of the int8 ``files``, through every installed backend,
    against the torch float network on ``data``: accuracy only, no latencies (what chooses
    between PTQ and QAT files)."""
    if not (data.features and data.labeled):
        return None
    reference = compare(torch_window_scores(network, info, data), None, data,
                        info.clip_pooling)["accuracy"]
    accuracies = []
    for path in map(Path, files):
        fmt = "tflite" if path.suffix == ".tflite" else "onnx"
        for backend in BACKENDS_FOR_FORMAT[fmt]:
            if backend_available(backend):
                model = Model(path, backend=backend, threads=1)
                accuracies.append(compare(runtime_window_scores(model, data), None, data,
                                          info.clip_pooling)["accuracy"])
    return 100 * (reference - min(accuracies)) if accuracies else None


@contextlib.contextmanager
def one_blas_thread():
    """numpy's BLAS on 1 thread while timing, whatever the import order did (edgeaudio asks
    for 1 OpenBLAS thread, but only before numpy is first imported)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def timed_ms(fn, repeats: int) -> float:
    """Median milliseconds of ``fn()`` after one warm-up call, numpy's BLAS on 1 thread."""
    with one_blas_thread():
        fn()
        times = []
        for _ in range(max(1, repeats)):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def latency(model: Model, features: np.ndarray, repeats: int = 100) -> dict:
    """Model time per window and per second of audio at the model's stream hop (1 window per
    hop), 1 thread as loaded."""
    hop = model.info.hop_seconds
    ms = timed_ms(lambda: model.backend.run(features), repeats)
    return {"model_ms_per_window": ms, "hop_seconds": hop,
            "model_ms_per_audio_second": ms / hop}


def frontend_latency(info: ModelInfo, repeats: int = 100) -> dict:
    frontend = Frontend(info.frontend)
    wave = (0.1 * np.random.default_rng(0).standard_normal(info.window_samples)).astype(
        np.float32)
    ms = timed_ms(lambda: frontend(wave), repeats)
    return {"frontend_ms_per_window": ms,
            "frontend_ms_per_audio_second": ms / info.hop_seconds}


def graph_bytes(path: Path) -> int:
    """File size without the edgeaudio metadata (what a device's graph really costs)."""
    path = Path(path)
    data = path.read_bytes()
    if path.suffix == ".tflite":
        from .tflm import strip_metadata
        return len(strip_metadata(data))
    import onnx

    model = onnx.load_from_string(data)
    del model.metadata_props[:]
    return len(model.SerializeToString())


def machine() -> str:
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return (f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.machine()}, "
            f"Python {platform.python_version()}")


def file_report(path: Path, network, info: ModelInfo, data: EvalSet, reference: list,
                repeats: int = 100, tflm: bool = True) -> dict:
    """Everything the report says about one model file, through every installed backend."""
    path = Path(path)
    fmt = "tflite" if path.suffix == ".tflite" else "onnx"
    row = {"file": path.name, "format": fmt, "int8": ".int8." in path.name,
           "bytes": path.stat().st_size, "graph_bytes": graph_bytes(path), "backends": []}
    example = data.features[0][0] if data.features else np.zeros(
        (info.n_frames, info.frontend.n_bins), np.float32)
    for backend in BACKENDS_FOR_FORMAT[fmt]:
        if not backend_available(backend):
            continue
        model = Model(path, backend=backend, threads=1)
        entry = {"backend": backend}
        if data.features:
            entry.update(compare(runtime_window_scores(model, data), reference, data,
                                 info.clip_pooling))
        entry.update(latency(model, example, repeats))
        row["backends"].append(entry)
    if tflm and fmt == "tflite" and row["int8"]:
        row["tflm"] = tflm_report(path, info, data, row)
    return row


def tflm_report(path: Path, info: ModelInfo, data: EvalSet, row: dict) -> dict:
    """TFLM: smallest arena, and top-1 agreement with LiteRT on the evaluation clips (plus the
    largest raw output difference, in int8 output steps: reference kernels round differently
    from LiteRT's optimized ones, so near-ties can flip)."""
    try:
        from .tflm import LiteRTReference, TFLMRunner, smallest_arena, tensor_quantization
        arena = smallest_arena(path.read_bytes())
        runner = TFLMRunner(path, arena_size=arena + 1024)
    except Exception as exc:  # report, don't fail the export: the files are written
        return {"error": str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__}
    d = {"arena_bytes": arena}
    if data.features:
        raw = [np.stack([runner.run(w) for w in f]) for f in data.features]
        scores = [activate(r.astype(np.float64), info.output_activation) for r in raw]
        reference = None
        if backend_available("litert"):
            litert = Model(path, backend="litert")
            ref_raw = [np.stack([litert.backend.run(w) for w in f]) for f in data.features]
            reference = [activate(r.astype(np.float64), info.output_activation)
                         for r in ref_raw]
            step = tensor_quantization(runner.out)
            if step:
                d["max_output_diff_steps"] = float(round(max(
                    np.abs(a - b).max() for a, b in zip(raw, ref_raw)) / step[0], 3))
        d.update(compare(scores, reference, data, info.clip_pooling))
        if reference is not None:
            d["agreement_reference"] = "litert"
        # the same graph, the same kernels: TFLM against LiteRT's reference kernels, bit for
        # bit on the first 200 windows, and top-1 on every window and clip
        inputs = [runner.quantize_input(w) for f in data.features for w in f][:200]
        with contextlib.suppress(Exception):
            ref = LiteRTReference(path.read_bytes())
            diffs = [np.abs(runner.run_raw(x).astype(np.int64) - ref.run_raw(x)).max()
                     for x in inputs]
            d["bit_exact_with_litert_reference_kernels"] = float(np.mean(np.equal(diffs, 0)))
            d["max_diff_vs_litert_reference_steps"] = int(max(diffs))
            d["bit_exact_windows_checked"] = len(inputs)
            ref_raw = [np.stack([ref.run(runner, w) for w in f]) for f in data.features]
            ref_scores = [activate(r.astype(np.float64), info.output_activation)
                          for r in ref_raw]
            agreement = compare(scores, ref_scores, data, info.clip_pooling)
            d["agreement_clips_reference_kernels"] = agreement["agreement_clips"]
            d["agreement_windows_reference_kernels"] = agreement["agreement_windows"]
    return d


def build_report(*, network, info: ModelInfo, files: list, data: EvalSet,
                 params: int | None = None, macs_per_second: dict | None = None,
                 repeats: int = 100, tflm: bool = True, extra: dict | None = None) -> dict:
    """The whole report for ``files`` written from ``network`` (the torch float reference)."""
    reference = torch_window_scores(network, info, data) if data.features else None
    torch_row = compare(reference, None, data, info.clip_pooling) if reference else {}
    if params is None:
        params = int(sum(p.numel() for p in network.parameters()))
    report = {
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(), "threads": 1,
        "model": {"name": info.name, "version": info.version, "classes": len(info.labels),
                  "params": params, "macs_per_audio_second": macs_per_second,
                  "n_frames": info.n_frames, "window_seconds": round(info.window_seconds, 4),
                  "hop_seconds": info.hop_seconds, "sample_rate": info.sample_rate,
                  "input_bins": info.frontend.n_bins},
        "evaluation": {"source": data.source, "clips": len(data.features),
                       "windows": data.windows, "labeled": data.labeled,
                       "pooling": info.clip_pooling},
        "torch_float": torch_row,
        "frontend": frontend_latency(info, repeats),
        "files": [file_report(Path(f), network, info, data, reference, repeats, tflm)
                  for f in files],
    }
    if extra:
        report.update(extra)
    return report


def _pct(x) -> str:
    return "–" if x is None else f"{100 * x:.1f} %"


def _ms(x) -> str:
    return "–" if x is None else f"{x:.3f}"


def markdown(report: dict) -> str:
    m, ev = report["model"], report["evaluation"]
    macs = m.get("macs_per_audio_second") or {}
    lines = [f"# Export report: {m['name']} {m['version']}", "",
             f"- created {report['created']} on {report['machine']}; latency on "
             f"{report['threads']} thread",
             f"- network: {m['params']:,} parameters"
             + (f", {macs['network'] / 1e6:.1f} M MACs per second of audio"
                if macs.get("network") else "")
             + (f" (front-end filterbank {macs['filterbank'] / 1e6:.1f} M, float on the host)"
                if macs.get("filterbank") else ""),
             f"- input: {m['n_frames']} frames x {m['input_bins']} bins "
             f"({m['window_seconds']} s at {m['sample_rate']} Hz), stream hop {m['hop_seconds']} s",
             f"- evaluation: {ev['clips']} clips, {ev['windows']} windows"
             + (f" from {ev['source']}" if ev.get("source") else "")
             + f"; clip score = {ev['pooling']} over windows"]
    q = report.get("quantization")
    if q:
        lines.append(f"- int8: {q.get('method', 'PTQ')}"
                     + (f", calibration {q['calibration_windows']} windows"
                        if q.get("calibration_windows") else "")
                     + (f" from {q['calibration_source']}" if q.get("calibration_source") else "")
                     + (f"; QAT {q['qat_epochs']} epochs because PTQ cost "
                        f"{q['choice']['ptq_drop_points']:.2f} points on "
                        f"{q['choice']['on']}" if q.get("method") == "QAT" else ""))
    ck = report.get("checkpoint")
    if ck and ck.get("metrics", {}).get("accuracy") is not None:
        lines.append(f"- checkpoint: epoch {ck.get('epoch')}, training's own held-out accuracy "
                     f"{_pct(ck['metrics']['accuracy'])} (whole clips in one pass; the table "
                     "scores the runtime's windows)")
    fe = report["frontend"]
    lines += [f"- numpy front end (all files): {fe['frontend_ms_per_window']:.3f} ms per window, "
              f"{fe['frontend_ms_per_audio_second']:.2f} ms per second of audio", ""]
    torch_acc = report["torch_float"].get("accuracy")
    lines += ["| file | backend | size KiB (graph) | accuracy | top-1 = torch (clips) | "
              "(windows) | model ms / window | model ms / s audio |",
              "|---|---|---|---|---|---|---|---|",
              f"| torch float | torch | – | {_pct(torch_acc)} | – | – | – | – |"]
    for f in report["files"]:
        size = f"{f['bytes'] / 1024:.0f} ({f['graph_bytes'] / 1024:.0f})"
        for b in f["backends"]:
            lines.append(f"| {f['file']} | {b['backend']} | {size} | {_pct(b.get('accuracy'))}"
                         f" | {_pct(b.get('agreement_clips'))} | "
                         f"{_pct(b.get('agreement_windows'))} | "
                         f"{_ms(b['model_ms_per_window'])} | "
                         f"{_ms(b['model_ms_per_audio_second'])} |")
    tflm_rows = [f for f in report["files"] if f.get("tflm")]
    if tflm_rows:
        lines += ["", "TensorFlow Lite Micro (int8 files):", ""]
        for f in tflm_rows:
            t = f["tflm"]
            if "error" in t:
                lines.append(f"- {f['file']}: {t['error']}")
            else:
                lines.append(f"- {f['file']}: arena {t['arena_bytes'] / 1024:.1f} KiB; "
                             f"accuracy {_pct(t.get('accuracy'))}; top-1 = LiteRT on "
                             f"{_pct(t.get('agreement_clips'))} of clips, "
                             f"{_pct(t.get('agreement_windows'))} of windows"
                             + (f"; outputs within {t['max_output_diff_steps']:g} int8 steps"
                                if t.get("max_output_diff_steps") is not None else "")
                             + (f"; bit-exact with LiteRT's reference kernels on "
                                f"{_pct(t['bit_exact_with_litert_reference_kernels'])} of "
                                f"{t['bit_exact_windows_checked']} windows (others within "
                                f"{t['max_diff_vs_litert_reference_steps']} step)"
                                if "bit_exact_with_litert_reference_kernels" in t else "")
                             + (f"; top-1 = LiteRT's reference kernels on "
                                f"{_pct(t['agreement_clips_reference_kernels'])} of clips, "
                                f"{_pct(t['agreement_windows_reference_kernels'])} of windows"
                                if "agreement_clips_reference_kernels" in t else ""))
    lines += ["", "Size: whole file (graph alone, without the metadata JSON). Agreement: the "
              "file's top-1 equals the torch float network's on the same features. Latency: "
              "median of repeated single-window runs; per second of audio = per window / hop."]
    return "\n".join(lines) + "\n"


def write_report(report: dict, out_dir) -> tuple:
    out = Path(out_dir)
    json_path, md_path = out / JSON_NAME, out / MARKDOWN_NAME
    write_file(json_path, (json.dumps(report, indent=2) + "\n").encode())
    write_file(md_path, markdown(report).encode())
    return json_path, md_path
