#!/usr/bin/env python3
"""Runtime benchmark: per backend, compute time per second of audio on 1 thread, and the CPU
share of `edgeaudio listen --input FILE` in real time.

    .venv/bin/python bench/runtime.py [--model-stem edgeaudio/models/esc50-student.int8] [--json out]

Prints a table and writes bench/results/runtime.json. The streaming figure is the whole engine
at the model's default hop (front end + model every hop); "model only" and "front end only"
split one inference. The CPU share subtracts start-up (imports, model load) by also timing a
0.1 s run and taking the difference.
"""
from __future__ import annotations

import argparse
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from edgeaudio import Model
from edgeaudio.backends import BACKENDS_FOR_FORMAT, backend_available
from edgeaudio.files import atomic_write_json

REPO = Path(__file__).resolve().parents[1]


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import os
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.machine()}, " \
           f"Python {platform.python_version()}"


def timed(fn, repeats: int) -> float:
    """Median seconds of ``fn()``."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def stream_seconds_per_audio_second(model: Model, wave: np.ndarray) -> float:
    stream = model.stream()
    chunk = model.sample_rate // 20
    t0 = time.perf_counter()
    for i in range(0, len(wave), chunk):
        stream.push(wave[i:i + chunk])
    return (time.perf_counter() - t0) / (len(wave) / model.sample_rate)


def cpu_of_listen(model_path: Path, backend: str, audio: Path, duration: float | None):
    args = [sys.executable, "-m", "edgeaudio", "listen", "--input", str(audio), "--json",
            "--model", str(model_path), "--backend", backend]
    if duration is not None:
        args += ["--duration", str(duration)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    subprocess.run(args, cwd=REPO, check=True, capture_output=True)
    wall = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return cpu, wall


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-stem", type=Path,
                    default=REPO / "edgeaudio/models/esc50-student.int8",
                    help="model files <stem>.onnx and <stem>.tflite (default: the bundled model)")
    ap.add_argument("--audio", type=Path, default=REPO / "examples/scene.flac",
                    help="recording for the streaming and CPU-share figures")
    ap.add_argument("--json", type=Path, default=REPO / "bench/results/runtime.json")
    ap.add_argument("--skip-cpu-share", action="store_true")
    args = ap.parse_args()

    wave, rate = sf.read(args.audio, dtype="float32")
    rows = []
    for fmt, backends in BACKENDS_FOR_FORMAT.items():
        for backend in backends:
            if not backend_available(backend):
                print(f"skipping {backend}: not installed", file=sys.stderr)
                continue
            path = args.model_stem.parent / f"{args.model_stem.name}.{fmt}"
            model = Model(path, backend=backend, threads=1)
            assert rate == model.sample_rate, "benchmark audio must be at the model rate"
            window = wave[:model.info.window_samples]
            feats = model.frontend(window)
            model.scores_for_window(window)  # warm up
            row = {"backend": backend, "file": str(path.relative_to(REPO)),
                   "file_bytes": path.stat().st_size,
                   "model_ms": 1e3 * timed(lambda: model.backend.run(feats), 200),
                   "frontend_ms": 1e3 * timed(lambda: model.frontend(window), 200),
                   "hop_s": model.info.hop_seconds,
                   "stream_ms_per_audio_s": 1e3 * min(
                       stream_seconds_per_audio_second(model, wave) for _ in range(3))}
            if not args.skip_cpu_share:
                cpu_full, wall_full = cpu_of_listen(path, backend, args.audio, None)
                cpu_start, wall_start = cpu_of_listen(path, backend, args.audio, 0.1)
                row["listen_cpu_share_total"] = cpu_full / wall_full
                row["listen_cpu_share_steady"] = (cpu_full - cpu_start) / (wall_full - wall_start)
                row["listen_startup_cpu_s"] = cpu_start
            rows.append(row)

    print(f"machine: {machine()}")
    print(f"audio: {args.audio.name} ({len(wave) / rate:.1f} s); 1 inference thread\n")
    header = ("backend", "file KiB", "model ms", "front end ms", "stream ms per s audio",
              "listen CPU (steady)", "listen CPU (incl. start-up)")
    print(" | ".join(header))
    print(" | ".join("---" for _ in header))
    for r in rows:
        print(" | ".join([r["backend"], f"{r['file_bytes'] / 1024:.0f}", f"{r['model_ms']:.2f}",
                          f"{r['frontend_ms']:.2f}", f"{r['stream_ms_per_audio_s']:.1f}",
                          f"{100 * r.get('listen_cpu_share_steady', float('nan')):.1f} %",
                          f"{100 * r.get('listen_cpu_share_total', float('nan')):.1f} %"]))
    atomic_write_json(args.json, {"machine": machine(), "audio": str(args.audio.name),
                                  "rows": rows})
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
