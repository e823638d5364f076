"""Host TFLM check: the firmware path (C front end + TensorFlow Lite Micro) against the Python
runtime, clip by clip.

    python -m firmware_demo.tflm_check models/model.int8.tflite clips/*.wav [--json out.json]
    python -m firmware_demo.tflm_check models/model.int8.tflite --esc50 20 [--fold 5]

(from the repository root, with edgeaudio installed). For every clip, two paths score the same
model windows (the runtime's grid, ``edgeaudio.windows``, as ``edgeaudio.Model.classify`` cuts
them):

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
score the same way. The two paths run different kernels: TFLM the reference ones, the runtime
LiteRT's optimized ones (XNNPACK), whose requantization rounds differently layer after layer and
by CPU (AVX2, AVX-512, NEON take different code paths). So top-1 labels are judged only where
rounding cannot decide them: a clip is *decided* for a path when no error of up to a bound on
every raw output of every window could change that path's top-1
(``edgeaudio.export.report.decided_top1``); other clips are near-ties, reported, not judged.
The check passes when

- the firmware names the label of the **reference path** (the runtime's numpy features and int8
  quantization, run by LiteRT's reference kernels ``BUILTIN_REF``: TFLM's own kernels, bit-exact
  with it by design and the same on every CPU) on every clip it decides beyond
  ``REFERENCE_ROUNDING_STEPS`` int8 output steps, and
- the firmware names the **runtime's** label on every clip the runtime decides beyond
  ``RUNTIME_ROUNDING_STEPS`` steps (the optimized kernels' drift, whichever the CPU).

It also reports TFLM against the reference kernels on the very same inputs (bit for bit), how
many windows agree, how many int8 input features equal the runtime's, and the largest score
difference.

The model's input decides what the firmware feeds: int8 features (what ``edgeaudio export
--int8`` writes) or, for a float-input model, the C front end's float features.

Needs gcc, the runtime (``edgeaudio``), ``ai-edge-litert`` and ``tflite-micro``; no torch.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeaudio.audio import load_audio
from edgeaudio.export.clips import runtime_windows
from edgeaudio.export.report import decided_top1, pool
from edgeaudio.export.tflm import (LiteRTReference, TFLMRunner, dequantized, fits,
                                   smallest_arena, tensor_quantization)
from edgeaudio.files import atomic_write_json, shared_dir
from edgeaudio.model import Model, activate
from edgeaudio.quant import is_quantized, quantize

from .gen_firmware import generate

HERE = Path(__file__).resolve().parent
# How far LiteRT's optimized kernels may drift from the reference kernels at the output, in
# int8 output steps: 3-8 measured on the students (48 ops) and the tests' tiny model, on Intel
# and AMD; twice that, so a clip judged here cannot flip on another CPU.
RUNTIME_ROUNDING_STEPS = 16
# How far the firmware may be from LiteRT's reference kernels on the runtime's own features:
# TFLM's fully-connected kernel rounds one step differently now and then, and the C front end's
# int8 features are one step off for a few in 100 000. Neither depends on the CPU.
REFERENCE_ROUNDING_STEPS = 2
# Both for a float-output model, in logits: float32 kernels and the C front end's float FFT
# (features within 3e-3) move raw outputs by under 1e-3.
FLOAT_ROUNDING = 1e-2
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


def check(model_path, clips, build_dir=None, fft_double: bool = False,
          pcm16: bool | None = None, reference: bool = True, log=lambda msg: None,
          rounding_steps: float = RUNTIME_ROUNDING_STEPS,
          reference_steps: float = REFERENCE_ROUNDING_STEPS) -> dict:
    """Run every clip through both paths; returns a report (``passed``: see the module
    docstring; ``rounding_steps`` / ``reference_steps``: the bounds, in int8 output steps).
    ``pcm16``: feed the C front end int16 PCM (None: when the clip is exactly 16-bit).
    ``reference``: also run the reference path and the C front end's inputs through LiteRT's
    reference kernels, which TFLM should match output for output (it tells kernel rounding from
    a front-end bug)."""
    model_path = Path(model_path)
    if build_dir is None:
        with tempfile.TemporaryDirectory() as tmp:
            return check(model_path, clips, tmp, fft_double, pcm16, reference, log,
                         rounding_steps, reference_steps)
    host = build_firmware_host(model_path, Path(build_dir), fft_double)
    flash = host.model_bytes()
    gen = host.generated
    if len(flash) != gen["model_bytes"]:
        raise CheckError("the compiled model array is not the generated graph")
    t0 = time.perf_counter()
    arena = smallest_arena(flash)
    arena_search_s = time.perf_counter() - t0
    tflm = TFLMRunner(flash, arena_size=arena)
    # LiteRT loads the file's graph: whole zero-point vectors (it refuses the shrunk form)
    ref_kernels = LiteRTReference(model_path.read_bytes()) if reference else None
    runtime = Model(model_path, backend="litert")
    info = runtime.info
    out_q = tensor_quantization(tflm.out)
    out_step = out_q[0] if out_q and is_quantized(tflm.out["dtype"]) else None
    bound = rounding_steps * out_step if out_step else FLOAT_ROUNDING
    ref_bound = reference_steps * out_step if out_step else FLOAT_ROUNDING
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
        windows = runtime_windows(info, wave)
        # the runtime's scores, window by window, as Model.classify computes them (its front
        # end, its backend, its activation and pooling); features once, for the comparison
        features = [runtime.frontend(w) for w in windows]
        runtime_raw = np.stack([runtime.backend.run(f) for f in features])
        window_scores = np.stack([activate(r.astype(np.float64), info.output_activation)
                                  for r in runtime_raw])
        runtime_scores = pool(window_scores, info.clip_pooling)
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
        raw = [dequantized(t, tflm.out) for t in tensors]
        if out_step:  # how far the runtime's kernels drift from TFLM's, in output steps
            runtime_max_steps = max(runtime_max_steps, float(
                np.abs(np.stack(raw) - runtime_raw).max() / out_step))
        if ref_kernels is not None:  # int8 outputs: in steps; float outputs: in value
            for x, t in zip(c_inputs, tensors):
                r, t = ref_kernels.run_raw(x).reshape(-1), t.reshape(-1)
                d = (int(np.abs(r.astype(np.int64) - t.astype(np.int64)).max()) if out_step
                     else float(np.abs(r.astype(np.float64) - t.astype(np.float64)).max()))
                ref_equal += d == 0
                ref_total += 1
                ref_max = max(ref_max, d)
        scores = np.stack([activate(r.astype(np.float64), info.output_activation) for r in raw])
        pooled = pool(scores, info.clip_pooling)
        if int8:  # the C int8 features against the runtime's quantized numpy features
            scale, zp = tensor_quantization(tflm.inp)
            ref = np.stack([quantize(f, scale, zp, np.int8) for f in features])
            steps = np.abs(c_inputs.astype(np.int16) - ref.astype(np.int16))
            feat_equal += int((steps == 0).sum())
            feat_total += steps.size
            feat_max_steps = max(feat_max_steps, int(steps.max()))
        top_runtime, top_firmware = int(np.argmax(runtime_scores)), int(np.argmax(pooled))
        ordered = np.sort(runtime_scores)
        decided = decided_top1(runtime_raw, info.output_activation, info.clip_pooling,
                               bound) is not None
        by_reference = {}
        if ref_kernels is not None:  # the runtime's features through TFLM's own kernels
            ref_raw = np.stack([ref_kernels.run(tflm, f) for f in features])
            top_ref = int(np.argmax(pool(activate(ref_raw.astype(np.float64),
                                                  info.output_activation), info.clip_pooling)))
            # windows on their own, the same way: each a clip of one window
            ref_windows = [decided_top1(r, info.output_activation, "mean", ref_bound)
                           for r in ref_raw]
            firmware_windows = scores.argmax(axis=1)
            by_reference = {
                "reference": info.labels[top_ref],
                "decided_by_reference": decided_top1(ref_raw, info.output_activation,
                                                     info.clip_pooling, ref_bound) is not None,
                "same_top1_as_reference": top_ref == top_firmware,
                "windows_decided_by_reference": sum(t is not None for t in ref_windows),
                "windows_same_top1_as_reference_decided": int(sum(
                    t == f for t, f in zip(ref_windows, firmware_windows) if t is not None))}
        rows.append({
            "clip": clip.name, "windows": len(windows), "pcm16": use16,
            "runtime": info.labels[top_runtime], "firmware": info.labels[top_firmware],
            "same_top1": top_runtime == top_firmware, "decided": decided, **by_reference,
            "runtime_score": float(runtime_scores[top_runtime]),
            "firmware_score": float(pooled[top_firmware]),
            "runtime_margin": float(ordered[-1] - ordered[-2]) if len(ordered) > 1 else None,
            "windows_same_top1": float(np.mean(
                window_scores.argmax(axis=1) == scores.argmax(axis=1))),
            "max_score_diff": float(np.abs(window_scores - scores).max()),
        })
        log(f"{clip.name}: runtime {rows[-1]['runtime']} {rows[-1]['runtime_score']:.3f}, "
            f"firmware {rows[-1]['firmware']} {rows[-1]['firmware_score']:.3f}"
            f"{'' if decided else ' (near-tie)'}"
            f"{'' if rows[-1]['same_top1'] else '  <- DIFFERENT'}")
    same = [r["same_top1"] for r in rows]
    judged = [r for r in rows if r["decided"]]
    ref_judged = [r for r in rows if r.get("decided_by_reference")]
    # nothing judged proves nothing: at least one clip must be decided on one side
    passed = bool(judged or ref_judged) and all(r["same_top1"] for r in judged) and all(
        r["same_top1_as_reference"] for r in ref_judged)
    return {
        "model": str(model_path), "labels": len(info.labels), "n_frames": info.n_frames,
        "n_bins": info.frontend.n_bins, "hop_seconds": info.hop_seconds,
        "input": gen["input_dtype"], "input_scale": gen["input_scale"],
        "input_zero_point": gen["input_zero_point"],
        "file_bytes": gen["file_bytes"], "flash_model_bytes": len(flash),
        "ops": gen["ops"], "arena_bytes": arena,
        "arena_is_smallest": fits(flash, arena) and not fits(flash, arena - 256),
        "arena_search_seconds": round(arena_search_s, 2),
        "fft": "double" if fft_double else "float",
        "clips": len(rows), "same_top1_clips": int(sum(same)),
        "rounding_bound": {"steps": rounding_steps if out_step else None, "raw": bound},
        "decided_clips": len(judged),
        "same_top1_decided_clips": int(sum(r["same_top1"] for r in judged)),
        "reference_rounding_bound": {"steps": reference_steps if out_step else None,
                                     "raw": ref_bound} if ref_kernels is not None else None,
        "reference_decided_clips": len(ref_judged) if ref_kernels is not None else None,
        "same_top1_as_reference_decided_clips":
            int(sum(r["same_top1_as_reference"] for r in ref_judged))
            if ref_kernels is not None else None,
        "windows_same_top1_as_reference_decided": (
            sum(r["windows_same_top1_as_reference_decided"] for r in rows)
            / max(1, sum(r["windows_decided_by_reference"] for r in rows)))
            if ref_kernels is not None else None,
        "windows_decided_by_reference": sum(r["windows_decided_by_reference"] for r in rows)
            if ref_kernels is not None else None,
        "passed": passed,
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
        f"{report['same_top1_decided_clips']}/{report['decided_clips']} decided clips "
        f"({report['same_top1_clips']}/{report['clips']} in all), "
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
    if report["reference_decided_clips"] is not None:
        lines.append(f"C front end + TFLM vs the reference path (numpy features, LiteRT's "
                     f"reference kernels): same top-1 on "
                     f"{report['same_top1_as_reference_decided_clips']}/"
                     f"{report['reference_decided_clips']} decided clips, "
                     f"{100 * report['windows_same_top1_as_reference_decided']:.1f} % of "
                     f"{report['windows_decided_by_reference']} decided windows")
    near_ties = [r["clip"] for r in report["rows"] if not r["decided"]]
    if near_ties:
        lines.append(f"near-ties of the runtime, not judged ({len(near_ties)}): "
                     + ", ".join(near_ties))
    failures = [f"{r['clip']} (runtime {r['runtime']}, firmware {r['firmware']}; the runtime's "
                f"margin over its second label {r['runtime_margin']:.4f})"
                for r in report["rows"] if r["decided"] and not r["same_top1"]]
    failures += [f"{r['clip']} (reference path {r['reference']}, firmware {r['firmware']})"
                 for r in report["rows"]
                 if r.get("decided_by_reference") and not r["same_top1_as_reference"]]
    if report["passed"]:
        lines.append("PASS")
    elif failures:
        lines.append("FAIL: different top-1 on " + ", ".join(failures))
    else:
        lines.append("FAIL: no clip is decided beyond the kernels' rounding")
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
        atomic_write_json(args.json, report, indent=1)
    print(summary(report))
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
