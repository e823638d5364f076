#!/usr/bin/env python3
"""Firmware figures for the `tiny` and `small` students: what a microcontroller would hold.

    .venv/bin/python -m bench.firmware [--windows 0.5 1 2 4] [--classes 50]
        [--run small=runs/bench/train_esc50/student/fold1] [--check-clips 20]
        [--json bench/results/firmware.json]

For each student and model window length (seconds of audio per inference):

- **flash**: bytes of the int8 graph as ``firmware_demo.gen_firmware`` puts it in the C
  array (edgeaudio metadata and tensor names stripped), with where they go (int8 weights, int32
  biases, per-channel quantization parameters, flatbuffer structure);
- **arena**: the smallest TensorFlow Lite Micro tensor arena that allocates the graph (bisection
  to 256 bytes; TFLM on this 64-bit host, where its structs are a little larger than on a
  32-bit board), beside the int8 window ring the board keeps outside it;
- **TFLM ms per inference** on this host (reference kernels, 1 thread; not a board figure);
- **C front end** (``firmware_demo/frontend``, built from the model's own generated header):
  microseconds per second of audio on this host, whole buffer and streamed as int16 one hop per
  push (as the board sketch does); its code + tables (x86-64 ``-Os``) and its state.

Models: by default each student is built **untrained** (``build_student``, random weights) and
quantized with calibration windows from real ESC-50 clips: sizes and arenas do not depend on the
weights' values, with one catch this bench removes: fresh BatchNorms (weight 1, bias 0, mean 0,
variance 1) fold into identical constants, which the converter stores once, so an untrained
graph would come out ~4 KB smaller than a trained one; their statistics and affine parameters
are drawn at random first. ``--run NAME=RUN`` instead exports a trained checkpoint the way
``edgeaudio export --int8`` does (its own window, its own calibration data), and runs the host
TFLM check on ``--check-clips`` clips of its held-out fold: C front end + TFLM against the
runtime.
"""
from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from edgeaudio.files import atomic_write_json, shared_dir  # noqa: E402
from firmware_demo import bench_frontend, tflm_check  # noqa: E402
from firmware_demo.gen_firmware import generate  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
FIRMWARE = REPO / "firmware_demo"
SHARED = shared_dir()

TARGETS = {"tiny": {"flash_bytes": 100 * 1024, "arena_bytes": 64 * 1024}}


def esc50_rows():
    import csv
    meta = SHARED / "data" / "esc50" / "meta" / "esc50.csv"
    if not meta.exists():
        raise SystemExit(f"ESC-50 not found at {meta.parent.parent} (set EDGEAUDIO_SHARED)")
    return sorted(csv.DictReader(open(meta)), key=lambda r: r["filename"])


def untrained_int8(name: str, seconds: float, n_classes: int, out: Path, n_calibration: int,
                   seed: int = 0) -> tuple[Path, int]:
    """An untrained student of size ``name`` for ``seconds``-long windows, quantized with
    calibration windows drawn from ESC-50 training clips (folds 2-5). (path, params)"""
    import torch

    from edgeaudio.export.clips import Clip, calibration_windows
    from edgeaudio.export.quantize import quantize_tflite
    from edgeaudio.modelfile import ModelInfo
    from edgeaudio.train.students import build_student, count_params

    torch.manual_seed(seed)
    student = build_student(name, n_classes).eval()
    with torch.no_grad():  # as after training: no two BatchNorms alike (see the docstring)
        for module in student.network.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.running_mean.normal_(0.0, 0.1)
                module.running_var.uniform_(0.5, 2.0)
                if module.affine:
                    module.weight.uniform_(0.5, 1.5)
                    module.bias.normal_(0.0, 0.1)
    spec = student.frontend.frozen_spec()
    rows = esc50_rows()
    labels = sorted({r["category"] for r in rows})[:n_classes]
    labels += [f"class{i}" for i in range(len(labels), n_classes)]
    info = ModelInfo(labels=labels, frontend=spec,
                     n_frames=spec.n_frames(int(round(seconds * spec.sample_rate))),
                     name=f"{name}-untrained", version="untrained",
                     provenance={"student": name, "note": "untrained: for sizes only"})
    clips = [Clip(SHARED / "data" / "esc50" / "audio" / (r["filename"][:-4] + ".flac"))
             for r in rows if r["fold"] != "1"]
    calibration = calibration_windows(clips, info, n=n_calibration, seed=seed)
    path = quantize_tflite(student.network, info, calibration,
                                    out / f"{name}-{seconds:g}s.int8.tflite")
    return path, count_params(student.network)


def exported_int8(run: Path, out: Path, n_calibration: int) -> tuple[Path, int, dict]:
    """A trained checkpoint through ``edgeaudio export --int8`` (TFLite only, no report)."""
    from edgeaudio.export.cli import export_checkpoint
    from edgeaudio.train.checkpoint import load_student, resolve_checkpoint
    from edgeaudio.train.students import count_params

    result = export_checkpoint(run, out, formats=["tflite"], int8=True,
                               calibration=n_calibration, report=False)
    student, ckpt = load_student(resolve_checkpoint(run))
    return Path(result["files"]["model.int8.tflite"]), count_params(student.network), ckpt


def flash_breakdown(model_bytes: bytes) -> dict:
    """Where the bytes of the flashed graph go (a buffer shared by tensors counts once)."""
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(model_bytes))
    int8 = int32 = other = quant = 0
    seen = set()
    for graph in model.subgraphs:
        for t in graph.tensors:
            data = model.buffers[t.buffer].data
            n = 0 if data is None or t.buffer in seen else len(data)
            seen.add(t.buffer)
            if t.type == flatbuffer_utils.schema_fb.TensorType.INT8:
                int8 += n
            elif t.type == flatbuffer_utils.schema_fb.TensorType.INT32:
                int32 += n
            else:
                other += n
            q = t.quantization
            if q is not None and q.scale is not None:
                quant += 4 * len(q.scale) + 8 * len(q.zeroPoint if q.zeroPoint is not None
                                                    else [])
    return {"int8_weights": int8, "int32_biases": int32, "other_constants": other,
            "quantization_params": quant,
            "structure": len(model_bytes) - int8 - int32 - other - quant}


def frontend_figures(gen_dir: Path, wave: np.ndarray, repeats: int, rounds: int) -> dict:
    """Cost per second of audio (the best of ``rounds`` timings of ``repeats`` passes each: the
    host is shared), code + tables and state of the C front end built from the model's
    generated header."""

    text = (gen_dir / "ea_frontend_config.h").read_text()
    hop = int(re.search(r"#define EA_HOP_LENGTH (\d+)", text).group(1))
    rate = int(re.search(r"#define EA_SAMPLE_RATE (\d+)", text).group(1))
    exe = bench_frontend.compile_host(gen_dir)
    whole = min(bench_frontend.bench(exe, wave, repeats) for _ in range(rounds))
    stream = min(bench_frontend.bench(exe, wave, repeats, ("--int16", "--chunk", str(hop)))
                 for _ in range(rounds))
    obj = gen_dir / "ea_frontend_os.o"
    subprocess.run(["gcc", "-std=c99", "-Os", "-c", f"-I{gen_dir}",
                    f"-I{FIRMWARE / 'frontend'}", str(FIRMWARE / "frontend" / "ea_frontend.c"),
                    "-o", str(obj)], check=True)
    text_b, data_b, bss_b = (int(v) for v in subprocess.run(
        ["size", str(obj)], capture_output=True, text=True, check=True).stdout.splitlines()[1]
        .split()[:3])
    probe = gen_dir / "sizeof.c"
    probe.write_text('#include <stdio.h>\n#include "ea_frontend.h"\n'
                     'int main(void) { printf("%lu\\n", (unsigned long)sizeof(ea_frontend_t));'
                     ' return 0; }\n')
    subprocess.run(["gcc", "-std=c99", f"-I{gen_dir}", f"-I{FIRMWARE / 'frontend'}",
                    str(probe), "-o", str(gen_dir / "sizeof")], check=True)
    state = int(subprocess.run([str(gen_dir / "sizeof")], capture_output=True, text=True,
                               check=True).stdout)
    return {"us_per_audio_second": round(whole, 1),
            "us_per_audio_second_stream_int16": round(stream, 1),
            "us_per_frame": round(whole / (rate / hop), 2),
            "flash_bytes_code_and_tables_x86_64_Os": text_b + data_b,
            "state_bytes": state}


def tflm_ms(model_bytes: bytes, arena: int, repeats: int = 5) -> float:
    from edgeaudio.export.tflm import TFLMRunner

    runner = TFLMRunner(model_bytes, arena)
    x = np.random.default_rng(0).integers(-128, 128, runner.input_shape).astype(
        runner.input_dtype)
    runner.run_raw(x)
    t0 = time.perf_counter()
    for _ in range(repeats):
        runner.run_raw(x)
    return 1000 * (time.perf_counter() - t0) / repeats


def cpu_name() -> str:
    return bench_frontend.cpu_name()


def kib(n) -> str:
    return "–" if n is None else f"{n / 1024:.1f} KiB"


def markdown(rows: list) -> str:
    out = ["| student | model window | params | flash (graph) | smallest arena | "
           "int8 window ring | TFLM host ms / inference | C front end µs / s audio | "
           "tiny targets |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        target = ""
        t = TARGETS.get(r["student"])
        if t:
            ok_f = r["flash_bytes"] <= t["flash_bytes"]
            ok_a = r["arena_bytes"] <= t["arena_bytes"]
            share = 100 * r["flash_bytes"] / t["flash_bytes"]
            target = (f"flash {'✓' if ok_f else '✗'} ({share:.0f} % of 100 KiB), "
                      f"arena {'✓' if ok_a else '✗'} "
                      f"({100 * r['arena_bytes'] / t['arena_bytes']:.0f} % of 64 KiB)")
        out.append(f"| {r['student']}{' (trained)' if r['trained'] else ''} | "
                   f"{r['window_seconds']:g} s ({r['n_frames']} × {r['n_bins']}) | "
                   f"{r['params'] / 1000:.0f} K | {r['flash_bytes']} B ({kib(r['flash_bytes'])})"
                   f" | {r['arena_bytes']} B ({kib(r['arena_bytes'])}) | "
                   f"{kib(r['window_ring_bytes'])} | {r['tflm_ms_host']:.0f} | "
                   f"{r['frontend']['us_per_audio_second']:.0f} | {target} |")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--students", nargs="+", default=["tiny", "small"])
    ap.add_argument("--windows", nargs="+", type=float, default=[0.5, 1.0, 2.0, 4.0],
                    help="model window lengths (seconds) for the untrained students")
    ap.add_argument("--classes", type=int, default=50, help="classes (50: ESC-50)")
    ap.add_argument("--calibration", type=int, default=32,
                    help="calibration windows for the untrained students")
    ap.add_argument("--run", action="append", default=[], metavar="NAME=RUN",
                    help="also a trained checkpoint (name it), exported as export --int8 does")
    ap.add_argument("--run-calibration", type=int, default=200)
    ap.add_argument("--check-clips", type=int, default=20,
                    help="held-out ESC-50 clips for the TFLM check of each --run")
    ap.add_argument("--frontend-clips", type=int, default=12,
                    help="ESC-50 clips (5 s each) the front end is timed over")
    ap.add_argument("--repeats", type=int, default=10, help="front-end timing passes")
    ap.add_argument("--rounds", type=int, default=5,
                    help="front-end timings; the best counts (a shared host is noisy)")
    ap.add_argument("--json", type=Path, default=REPO / "bench" / "results" / "firmware.json")
    args = ap.parse_args(argv)

    import torch
    torch.set_num_threads(1)

    wave, what = bench_frontend.load_audio(args.frontend_clips, 16000)
    rows, checks, frontends = [], [], {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        jobs = [(s, w, None) for s in args.students for w in args.windows]
        jobs += [(spec.split("=", 1)[0], None, Path(spec.split("=", 1)[1])) for spec in args.run]
        for name, seconds, run in jobs:
            t0 = time.time()
            out = tmp / f"{name}-{seconds}-{run.name if run else 'untrained'}"
            out.mkdir()
            ckpt = None
            if run is None:
                path, params = untrained_int8(name, seconds, args.classes, out,
                                              args.calibration)
            else:
                path, params, ckpt = exported_int8(run, out, args.run_calibration)
            gen_dir = out / "gen"
            gen = generate(path, gen_dir)
            flash = tflm_check.build_firmware_host(path, gen_dir).model_bytes()
            assert len(flash) == gen["model_bytes"]
            # the same front end for every window of a student (the input scale aside)
            key = re.sub(r"#define EA_INPUT_(SCALE|ZERO_POINT) .*", "",
                         (gen_dir / "ea_frontend_config.h").read_text())
            if key not in frontends:
                frontends[key] = frontend_figures(gen_dir, wave, args.repeats, args.rounds)
            from edgeaudio import Model
            info = Model(path, backend="litert").info
            row = {"student": name, "trained": run is not None,
                   "checkpoint": str(run) if run else None,
                   "epochs": ckpt.get("epoch") if ckpt else 0,
                   "window_seconds": round(info.window_seconds, 3), "n_frames": info.n_frames,
                   "n_bins": info.frontend.n_bins, "classes": len(info.labels),
                   "params": params, "file_bytes": gen["file_bytes"],
                   "flash_bytes": gen["model_bytes"], "flash": flash_breakdown(flash),
                   "arena_bytes": gen["arena_bytes"],
                   "window_ring_bytes": info.n_frames * info.frontend.n_bins,
                   "input": gen["input_dtype"], "ops": gen["ops"],
                   "tflm_ms_host": round(tflm_ms(flash, gen["arena_bytes"]), 2),
                   "frontend": frontends[key]}
            rows.append(row)
            print(f"{name} {row['window_seconds']:g} s{' (trained)' if run else ''}: flash "
                  f"{row['flash_bytes']} B, arena {row['arena_bytes']} B, TFLM "
                  f"{row['tflm_ms_host']:.1f} ms, front end "
                  f"{row['frontend']['us_per_audio_second']:.0f} us/s ({time.time() - t0:.0f} s)",
                  flush=True)
            if run is not None and args.check_clips:
                fold = (ckpt.get("config") or {}).get("fold")
                clips = tflm_check.esc50_clips(args.check_clips, info.labels, fold)
                report = tflm_check.check(path, clips, out / "check")
                report.pop("model")
                checks.append({"student": name, "checkpoint": str(run), "fold": fold,
                               **report})
                print(tflm_check.summary({"model": f"{name} (trained)", **report}), flush=True)

    result = {"command": " ".join(["python -m bench.firmware"] + (argv if argv is not None
                                                            else sys.argv[1:])),
              "machine": {"cpu": cpu_name(), "cpus": os.cpu_count(),
                          "platform": platform.platform()},
              "load_average": os.getloadavg(),
              "frontend_audio": what, "targets": TARGETS, "rows": rows, "checks": checks}
    atomic_write_json(args.json, result, indent=1)
    print()
    print(markdown(rows))
    print(f"\nwrote {args.json}")
    return 0 if all(c["passed"] for c in checks) else 1


if __name__ == "__main__":
    raise SystemExit(main())
