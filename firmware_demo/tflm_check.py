"""Host TFLM check: the firmware path (C front end + TensorFlow Lite Micro) against the Python
runtime, clip by clip.

    python firmware_demo/tflm_check.py models/model.int8.tflite clips/*.wav [--json out.json]
    python firmware_demo/tflm_check.py models/model.int8.tflite --esc50 20 [--fold 5]

For every clip, two paths score the same model windows (the runtime's hop grid, the last one
zero-padded, as ``edgeaudio.Model.classify`` cuts them):

- **runtime**: ``edgeaudio.Model(model, backend="litert")`` scoring the clip as ``classify`` does
  (checked equal to ``classify`` on the first clip): the numpy front end
  (float64), the runtime's int8 quantization, LiteRT's optimized kernels;
- **firmware**: the sources ``gen_firmware.py`` writes for a board, built on the host with gcc
  (``frontend/host_main.c`` + ``ea_frontend.c`` + ``ea_model_data.c``, float FFT as on a board):
  each window goes through the C front end as 16-bit PCM pushed one hop at a time
  (``ea_frontend_push_int16``, what the board sketch calls; float samples when the clip is not
  exactly 16-bit), is quantized to int8 by ``ea_frontend_quantize`` with the model's scale and
  zero point from the generated header, and runs in TensorFlow Lite Micro (the ``tflite-micro``
  package) from the compiled model array (the bytes a board flashes, read back from the built
  program) in the smallest tensor arena that allocates, found by search.

Both take the model's raw outputs through its output activation and pool windows into a clip
score the same way. The check passes when the top-1 label is the same on every clip. It also
reports how many windows agree, how many int8 input features equal the runtime's, and the
largest score difference.

The model's input decides what the firmware feeds: int8 features (what ``edgeaudio export
--int8`` writes) or, for a float-input model, the C front end's float features.

Needs gcc, the runtime (``edgeaudio``), ``ai-edge-litert`` and ``tflite-micro``; no torch.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
try:
    import edgeaudio  # noqa: F401
except ImportError:  # a checkout without an install: the runtime sits beside us
    sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
from gen_firmware import (firmware_model_bytes, generate, smallest_arena,  # noqa: E402
                          tflm_fits)

from edgeaudio.backends import native_stderr_silenced  # noqa: E402
from edgeaudio.export.tflm import tensor_quantization  # noqa: E402
from edgeaudio.model import Model, activate  # noqa: E402

CFLAGS = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-O2"]


class CheckError(RuntimeError):
    pass


@dataclass
class FirmwareHost:
    """The host build of a model's firmware sources."""

    exe: Path
    generated: dict      # gen_firmware.generate()'s answer
    n_frames: int
    n_bins: int
    window_samples: int
    hop_length: int

    def model_bytes(self) -> bytes:
        """The compiled ``ea_model_data`` array, read back from the built program."""
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "model.bin"
            _run([str(self.exe), "--model-out", str(out), "/dev/null", "/dev/null"])
            return out.read_bytes()

    def features(self, windows: np.ndarray, pcm16: bool = True, int8: bool = True):
        """Windows ``[W, window_samples]`` (float32) -> the C front end's features for each
        window ``[W, n_frames, bins]``: int8 (``ea_frontend_quantize`` with the header's
        scale and zero point) or float32. ``pcm16``: as int16 PCM (exact for 16-bit audio),
        pushed one hop at a time through the streaming API, as the board does."""
        windows = np.ascontiguousarray(windows, np.float32)
        n_windows, length = windows.shape
        if length != self.window_samples:
            raise CheckError(f"windows of {length} samples, the model takes "
                             f"{self.window_samples}")
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            args = [str(self.exe), "--window", str(length)]
            if pcm16:
                (windows * 32768.0).round().clip(-32768, 32767).astype(np.int16).tofile(
                    tmp / "in.raw")
                args += ["--int16", "--chunk", str(self.hop_length)]
            else:
                windows.tofile(tmp / "in.raw")
            if int8:
                args += ["--int8", str(tmp / "q.i8")]
            _run(args + [str(tmp / "in.raw"), str(tmp / "f.f32")])
            shape = (n_windows, self.n_frames, self.n_bins)
            if int8:
                return np.fromfile(tmp / "q.i8", np.int8).reshape(shape)
            return np.fromfile(tmp / "f.f32", np.float32).reshape(shape)


def _run(args):
    res = subprocess.run(args, capture_output=True, text=True)
    if res.returncode != 0:
        raise CheckError(f"{Path(args[0]).name} failed: {res.stderr.strip()[:300]}")
    return res


def build_firmware_host(model_path, build_dir, fft_double: bool = False,
                        cc: str = "gcc") -> FirmwareHost:
    """Generate the firmware sources of ``model_path`` into ``build_dir`` (gen_firmware.py)
    and build the host harness from exactly those sources."""
    if shutil.which(cc) is None:
        raise CheckError(f"{cc} not found: the check builds the C front end on the host")
    build_dir = Path(build_dir)
    generated = generate(model_path, build_dir)
    exe = build_dir / ("ea_firmware_host_f64" if fft_double else "ea_firmware_host")
    res = subprocess.run([cc, *CFLAGS, "-DEA_HOST_WITH_MODEL",
                          *(["-DEA_FFT_DOUBLE"] if fft_double else []),
                          f"-I{build_dir}", f"-I{HERE / 'frontend'}",
                          str(HERE / "frontend" / "ea_frontend.c"),
                          str(HERE / "frontend" / "host_main.c"),
                          str(build_dir / "ea_model_data.c"), "-o", str(exe), "-lm"],
                         capture_output=True, text=True)
    if res.returncode != 0:
        raise CheckError(f"building the firmware host harness failed:\n{res.stderr[:2000]}")
    info = Model(model_path, backend="litert").info
    return FirmwareHost(exe, generated, info.n_frames, info.frontend.n_bins,
                        info.window_samples, info.frontend.hop_length)


class TFLM:
    """TensorFlow Lite Micro on the host, in a given arena (bytes)."""

    def __init__(self, model_bytes: bytes, arena_size: int):
        from tflite_micro.python.tflite_micro import runtime

        self.arena_size = int(arena_size)
        with native_stderr_silenced():
            self.interpreter = runtime.Interpreter.from_bytes(model_bytes,
                                                              arena_size=self.arena_size)
        self.inp = self.interpreter.get_input_details(0)
        self.out = self.interpreter.get_output_details(0)
        self.input_shape = tuple(int(d) for d in self.inp["shape"])
        self.input_dtype = np.dtype(self.inp["dtype"])

    @property
    def input_quantization(self):
        return tensor_quantization(self.inp)

    @property
    def output_quantization(self):
        return tensor_quantization(self.out)

    def run_raw(self, x: np.ndarray) -> np.ndarray:
        """One model input (int8 or float32, as the model takes) -> the output tensor."""
        self.interpreter.set_input(np.asarray(x, self.input_dtype).reshape(self.input_shape), 0)
        self.interpreter.invoke()
        return np.asarray(self.interpreter.get_output(0)).reshape(-1)

    def dequantize(self, y: np.ndarray) -> np.ndarray:
        q = self.output_quantization
        if y.dtype in (np.int8, np.uint8) and q:
            y = (y.astype(np.float32) - q[1]) * q[0]
        return np.asarray(y, np.float32).reshape(-1)

    def run(self, x: np.ndarray) -> np.ndarray:
        """One model input -> raw float outputs (dequantized)."""
        return self.dequantize(self.run_raw(x))


class LiteRTReference:
    """LiteRT with its reference kernels (``BUILTIN_REF``), the kernels TFLM shares: on the
    same input TFLM should give the same output tensor. LiteRT's default kernels (XNNPACK,
    what the runtime uses) round differently, layer after layer."""

    def __init__(self, model_bytes: bytes):
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        with native_stderr_silenced():
            self.interpreter = Interpreter(
                model_content=model_bytes, num_threads=1,
                experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
            self.interpreter.allocate_tensors()
        self.inp = self.interpreter.get_input_details()[0]
        self.out = self.interpreter.get_output_details()[0]

    def run_raw(self, x: np.ndarray) -> np.ndarray:
        self.interpreter.set_tensor(self.inp["index"],
                                    np.asarray(x, self.inp["dtype"]).reshape(self.inp["shape"]))
        self.interpreter.invoke()
        return np.asarray(self.interpreter.get_tensor(self.out["index"])).reshape(-1)


def model_windows(model: Model, wave: np.ndarray) -> np.ndarray:
    """The windows ``Model.classify`` scores: its hop grid, the last one zero-padded."""
    hop = max(1, int(round(model.info.hop_seconds * model.sample_rate)))
    win = model.info.window_samples
    starts = model.window_starts(len(wave), hop)
    padded = np.zeros(starts[-1] + win, np.float32)
    padded[:len(wave)] = wave
    return np.stack([padded[s:s + win] for s in starts])


def _runtime_int8(features: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """The runtime's own quantization of float features (edgeaudio.backends)."""
    x = features.astype(np.float32)
    return np.clip(np.round(x / scale) + zero_point, -128, 127).astype(np.int8)


def check(model_path, clips, build_dir=None, fft_double: bool = False,
          pcm16: bool | None = None, reference: bool = True, log=lambda msg: None) -> dict:
    """Run every clip through both paths; returns a report (``passed``: same top-1 on every
    clip). ``pcm16``: feed the C front end int16 PCM (None: when the clip is exactly 16-bit).
    ``reference``: also run the C front end's inputs through LiteRT's reference kernels, which
    TFLM should match output for output (it explains a top-1 that differs from the runtime's:
    kernel rounding, not the front end)."""
    from edgeaudio.audio import load_audio

    model_path = Path(model_path)
    if build_dir is None:
        with tempfile.TemporaryDirectory() as tmp:
            return check(model_path, clips, tmp, fft_double, pcm16, reference, log)
    host = build_firmware_host(model_path, Path(build_dir), fft_double)
    flash = host.model_bytes()
    gen = host.generated
    if len(flash) != gen["model_bytes"]:
        raise CheckError("the compiled model array is not the generated graph")
    t0 = time.perf_counter()
    arena = smallest_arena(flash)
    arena_search_s = time.perf_counter() - t0
    tflm = TFLM(flash, arena)
    # LiteRT loads the same graph with whole zero-point vectors (it refuses the shrunk form)
    ref_kernels = (LiteRTReference(firmware_model_bytes(model_path.read_bytes(),
                                                        keep_zero_points=True))
                   if reference else None)
    runtime = Model(model_path, backend="litert")
    info = runtime.info
    out_q = tflm.output_quantization
    out_step = out_q[0] if out_q and tflm.out["dtype"] in (np.int8, np.uint8) else None
    int8 = tflm.input_dtype == np.int8
    if int8 and gen["input_dtype"] != "int8":
        raise CheckError("TFLM and LiteRT disagree about the model's input type")
    rows, tflm_s, tflm_runs = [], 0.0, 0
    feat_equal = feat_total = 0
    feat_max_steps = 0
    ref_equal = ref_total = ref_max = 0
    runtime_max_steps = 0.0
    for i, clip in enumerate(clips):
        clip = Path(clip)
        wave = load_audio(clip, runtime.sample_rate)
        windows = model_windows(runtime, wave)
        # the runtime's scores, window by window, as Model.classify computes them (its front
        # end, its backend, its activation and pooling); features once, for the comparison
        features = [runtime.frontend(w) for w in windows]
        runtime_raw = np.stack([runtime.backend.run(f) for f in features])
        window_scores = np.stack([activate(r.astype(np.float64), info.output_activation)
                                  for r in runtime_raw])
        runtime_scores = (window_scores.max(axis=0) if info.clip_pooling == "max"
                          else window_scores.mean(axis=0))
        if i == 0:  # the same as the runtime's own whole-clip path
            classified = runtime.classify(clip).scores
            if not np.allclose(classified, runtime_scores, atol=1e-6):
                raise CheckError("the check's windows differ from Model.classify's")
        exact16 = bool(np.array_equal(np.round(windows * 32768.0) / 32768.0, windows))
        use16 = exact16 if pcm16 is None else pcm16
        c_inputs = host.features(windows, pcm16=use16, int8=int8)
        t0 = time.perf_counter()
        tensors = [tflm.run_raw(x) for x in c_inputs]
        tflm_s += time.perf_counter() - t0
        tflm_runs += len(c_inputs)
        raw = [tflm.dequantize(t) for t in tensors]
        if out_step:  # how far the runtime's kernels drift from TFLM's, in output steps
            runtime_max_steps = max(runtime_max_steps, float(
                np.abs(np.stack(raw) - runtime_raw).max() / out_step))
        if ref_kernels is not None:  # int8 outputs: in steps; float outputs: in value
            for x, t in zip(c_inputs, tensors):
                r = ref_kernels.run_raw(x)
                d = (int(np.abs(r.astype(np.int64) - t.astype(np.int64)).max()) if out_step
                     else float(np.abs(r.astype(np.float64) - t.astype(np.float64)).max()))
                ref_equal += d == 0
                ref_total += 1
                ref_max = max(ref_max, d)
        scores = np.stack([activate(r.astype(np.float64), info.output_activation) for r in raw])
        pooled = scores.max(axis=0) if info.clip_pooling == "max" else scores.mean(axis=0)
        if int8:  # the C int8 features against the runtime's quantized numpy features
            scale, zp = tflm.input_quantization
            ref = np.stack([_runtime_int8(f, scale, zp) for f in features])
            steps = np.abs(c_inputs.astype(np.int16) - ref.astype(np.int16))
            feat_equal += int((steps == 0).sum())
            feat_total += steps.size
            feat_max_steps = max(feat_max_steps, int(steps.max()))
        top_runtime, top_firmware = int(np.argmax(runtime_scores)), int(np.argmax(pooled))
        ordered = np.sort(runtime_scores)
        rows.append({
            "clip": clip.name, "windows": len(windows), "pcm16": use16,
            "runtime": info.labels[top_runtime], "firmware": info.labels[top_firmware],
            "same_top1": top_runtime == top_firmware,
            "runtime_score": float(runtime_scores[top_runtime]),
            "firmware_score": float(pooled[top_firmware]),
            "runtime_margin": float(ordered[-1] - ordered[-2]) if len(ordered) > 1 else None,
            "windows_same_top1": float(np.mean(
                window_scores.argmax(axis=1) == scores.argmax(axis=1))),
            "max_score_diff": float(np.abs(window_scores - scores).max()),
        })
        log(f"{clip.name}: runtime {rows[-1]['runtime']} {rows[-1]['runtime_score']:.3f}, "
            f"firmware {rows[-1]['firmware']} {rows[-1]['firmware_score']:.3f}"
            f"{'' if rows[-1]['same_top1'] else '  <- DIFFERENT'}")
    same = [r["same_top1"] for r in rows]
    return {
        "model": str(model_path), "labels": len(info.labels), "n_frames": info.n_frames,
        "n_bins": info.frontend.n_bins, "hop_seconds": info.hop_seconds,
        "input": gen["input_dtype"], "input_scale": gen["input_scale"],
        "input_zero_point": gen["input_zero_point"],
        "file_bytes": gen["file_bytes"], "flash_model_bytes": len(flash),
        "ops": gen["ops"], "arena_bytes": arena,
        "arena_is_smallest": tflm_fits(flash, arena) and not tflm_fits(flash, arena - 256),
        "arena_search_seconds": round(arena_search_s, 2),
        "fft": "double" if fft_double else "float",
        "clips": len(rows), "same_top1_clips": int(sum(same)),
        "passed": bool(rows) and all(same),
        "windows": int(sum(r["windows"] for r in rows)),
        "windows_same_top1": float(np.average([r["windows_same_top1"] for r in rows],
                                              weights=[r["windows"] for r in rows]))
        if rows else None,
        "int8_features_equal_to_runtime": feat_equal / feat_total if feat_total else None,
        "int8_features_max_step_diff": feat_max_steps if feat_total else None,
        "max_score_diff": max((r["max_score_diff"] for r in rows), default=None),
        "max_output_diff_steps_vs_runtime": round(runtime_max_steps, 3) if out_step else None,
        "tflm_bit_exact_with_litert_reference_kernels":
            ref_equal / ref_total if ref_total else None,
        "tflm_max_diff_vs_litert_reference_steps":
            ref_max if ref_total and out_step else None,
        "tflm_max_abs_diff_vs_litert_reference":
            ref_max if ref_total and not out_step else None,
        "tflm_ms_per_inference_host": 1000 * tflm_s / max(1, tflm_runs),
        "rows": rows,
    }


def shared_dir() -> Path:
    return Path(os.environ.get("EDGEAUDIO_SHARED", HERE.parent.parent / "shared"))


def esc50_clips(n: int, labels=None, fold: int | None = None) -> list:
    """``n`` ESC-50 clips from ../shared (or $EDGEAUDIO_SHARED), spread over the classes
    (only the model's ``labels`` when they are ESC-50 categories), from ``fold`` if given."""
    import csv

    root = shared_dir() / "data" / "esc50"
    meta = root / "meta" / "esc50.csv"
    if not meta.exists():
        raise CheckError(f"ESC-50 not found at {root} (set EDGEAUDIO_SHARED)")
    rows = sorted(csv.DictReader(open(meta)), key=lambda r: r["filename"])
    if fold is not None:
        rows = [r for r in rows if r["fold"] == str(fold)]
    known = sorted({r["category"] for r in rows})
    if labels and set(labels) <= set(known):
        known = [c for c in known if c in set(labels)]
    by_class = {c: [r for r in rows if r["category"] == c] for c in known}
    chosen, i = [], 0
    while len(chosen) < n and any(len(v) > i for v in by_class.values()):
        for c in known:
            if len(chosen) < n and len(by_class[c]) > i:
                chosen.append(root / "audio" / (by_class[c][i]["filename"][:-4] + ".flac"))
        i += 1
    return chosen


def summary(report: dict) -> str:
    feats = report["int8_features_equal_to_runtime"]
    lines = [
        f"{report['model']}: {report['flash_model_bytes']} bytes in flash (file "
        f"{report['file_bytes']}), smallest TFLM arena {report['arena_bytes']} bytes, "
        f"input {report['input']} [{report['n_frames']} x {report['n_bins']}]",
        f"C front end ({report['fft']} FFT) + TFLM vs runtime (LiteRT): same top-1 on "
        f"{report['same_top1_clips']}/{report['clips']} clips, "
        f"{100 * report['windows_same_top1']:.1f} % of {report['windows']} windows; "
        + (f"int8 inputs {100 * feats:.3f} % equal (max {report['int8_features_max_step_diff']}"
           f" step); " if feats is not None else "")
        + f"max score diff {report['max_score_diff']:.4f}; TFLM "
        f"{report['tflm_ms_per_inference_host']:.1f} ms per inference on this host",
    ]
    raw = []
    if report["max_output_diff_steps_vs_runtime"] is not None:
        raw.append(f"TFLM vs the runtime's LiteRT kernels up to "
                   f"{report['max_output_diff_steps_vs_runtime']:g} int8 steps")
    if report["tflm_bit_exact_with_litert_reference_kernels"] is not None:
        steps = report["tflm_max_diff_vs_litert_reference_steps"]
        diff = (f"{steps} step" if steps is not None
                else f"{report['tflm_max_abs_diff_vs_litert_reference']:.2g}")
        raw.append(f"TFLM vs LiteRT's reference kernels on the same inputs: "
                   f"{100 * report['tflm_bit_exact_with_litert_reference_kernels']:.1f} % "
                   f"bit-exact, max diff {diff}")
    if raw:
        lines.append("raw outputs: " + "; ".join(raw))
    lines += [
        "PASS" if report["passed"] else "FAIL: different top-1 on " + ", ".join(
            f"{r['clip']} (runtime {r['runtime']}, firmware {r['firmware']}; the runtime's "
            f"margin over its second label {r['runtime_margin']:.4f})"
            for r in report["rows"] if not r["same_top1"]),
    ]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="an edgeaudio .tflite (int8 for a microcontroller)")
    ap.add_argument("clips", nargs="*", help="audio files")
    ap.add_argument("--esc50", type=int, default=0, metavar="N",
                    help="also N ESC-50 clips from the shared folder, spread over the classes")
    ap.add_argument("--fold", type=int, help="ESC-50 fold to take clips from (held-out fold)")
    ap.add_argument("--fft-double", action="store_true",
                    help="build the front end with -DEA_FFT_DOUBLE (default: float, as a board)")
    ap.add_argument("--no-reference", dest="reference", action="store_false",
                    help="skip the comparison with LiteRT's reference kernels")
    ap.add_argument("--build", help="keep the generated sources and host build here")
    ap.add_argument("--json", help="write the full report here")
    ap.add_argument("-q", "--quiet", action="store_true", help="no line per clip")
    args = ap.parse_args(argv)
    clips = list(args.clips)
    try:
        if args.esc50:
            labels = Model(args.model, backend="litert").labels
            clips += esc50_clips(args.esc50, labels, args.fold)
        if not clips:
            ap.error("no clips: give audio files or --esc50 N")
        report = check(args.model, clips, args.build, args.fft_double,
                       reference=args.reference, log=(lambda m: None) if args.quiet else print)
    except CheckError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    print(summary(report))
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
