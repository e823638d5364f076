"""Cost of the C99 front end per second of audio, on this machine.

    python -m firmware_demo.bench_frontend [--clips 12] [--repeats 20] [--cflags "-O2"]

Builds the host harness (float FFT as on the device, and -DEA_FFT_DOUBLE) into a temporary
folder, runs it over real ESC-50 clips (or 60 s of noise when shared/ is absent) and prints the
microseconds of CPU work per second of audio, timed inside the harness (no process start-up, no
file I/O), for the whole-buffer path and the streaming int16 path (one 10 ms hop per push).
"""
from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from edgeaudio.files import shared_dir

from .gen_frontend_header import load_spec, write_frontend_header

HERE = Path(__file__).resolve().parent
DEFAULT_CFLAGS = "-std=c99 -Wall -Wextra -Werror -pedantic -O2"


def compile_host(build_dir: Path, cflags: str = DEFAULT_CFLAGS, fft_double: bool = False,
                 cc: str = "gcc") -> Path:
    """Compile host_main.c + ea_frontend.c against the header already in build_dir."""
    exe = build_dir / ("ea_frontend_host_f64" if fft_double else "ea_frontend_host")
    cmd = [cc, *cflags.split(), *(["-DEA_FFT_DOUBLE"] if fft_double else []),
           f"-I{build_dir}", f"-I{HERE / 'frontend'}",
           str(HERE / "frontend" / "ea_frontend.c"), str(HERE / "frontend" / "host_main.c"),
           "-o", str(exe), "-lm"]
    subprocess.run(cmd, check=True)
    return exe


def load_audio(n_clips: int, sample_rate: int) -> tuple[np.ndarray, str]:
    audio = sorted((shared_dir() / "data" / "esc50" / "audio").glob("*.flac"))
    if audio:
        import soundfile as sf
        step = max(1, len(audio) // n_clips)
        clips = [sf.read(p, dtype="float32")[0] for p in audio[::step][:n_clips]]
        return np.concatenate(clips), f"{len(clips)} ESC-50 clips"
    rng = np.random.default_rng(0)
    return (0.1 * rng.standard_normal(60 * sample_rate)).astype(np.float32), "60 s of noise"


def bench(exe: Path, wave: np.ndarray, repeats: int, extra=()) -> float:
    """Microseconds per second of audio, as the harness measures it."""
    with tempfile.TemporaryDirectory() as tmp:
        is_int16 = "--int16" in extra
        data = (np.clip(np.round(wave * 32768), -32768, 32767).astype(np.int16)
                if is_int16 else wave)
        src = Path(tmp) / "in.raw"
        data.tofile(src)
        res = subprocess.run([str(exe), *extra, "--bench", str(repeats), str(src),
                              str(Path(tmp) / "out.f32")], capture_output=True, text=True,
                             check=True)
    match = re.search(r"us_per_audio_second=([0-9.]+)", res.stderr)
    if not match:
        raise RuntimeError(f"no timing in harness output: {res.stderr!r}")
    return float(match.group(1))


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clips", type=int, default=12, help="ESC-50 clips (5 s each) to run over")
    p.add_argument("--repeats", type=int, default=20, help="passes over the audio")
    p.add_argument("--cflags", default=DEFAULT_CFLAGS)
    p.add_argument("--spec", help="JSON front end spec (default: edgeaudio's default spec)")
    args = p.parse_args(argv)
    if shutil.which("gcc") is None:
        p.error("gcc not found")

    spec = load_spec(args.spec)
    wave, what = load_audio(args.clips, spec.sample_rate)
    with tempfile.TemporaryDirectory() as tmp:
        build = Path(tmp)
        write_frontend_header(spec, build)
        f32 = compile_host(build, args.cflags)
        f64 = compile_host(build, args.cflags, fft_double=True)
        rows = [
            ("float FFT, whole buffer", bench(f32, wave, args.repeats)),
            ("float FFT, stream int16, 160-sample pushes",
             bench(f32, wave, args.repeats, ("--int16", "--chunk", str(spec.hop_length)))),
            ("double FFT, whole buffer", bench(f64, wave, args.repeats)),
        ]
    seconds = len(wave) / spec.sample_rate
    print(f"C front end cost on {cpu_name()} ({os.cpu_count()} CPUs), "
          f"{args.cflags}, {what} ({seconds:.0f} s of audio), n_fft {spec.n_fft}, "
          f"hop {spec.hop_length}, {spec.n_bins} bins, {args.repeats} passes")
    for name, us in rows:
        print(f"  {name:44s} {us:8.1f} us per second of audio "
              f"({us / (spec.sample_rate / spec.hop_length):.2f} us per frame)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
