#!/usr/bin/env python3
"""`edgeaudio classify` on long recordings: peak resident memory and time for 1 minute and 1 hour.

    .venv/bin/python bench/classify_long.py [--model FILE] [--minutes 1 60]

Each recording is made from the real example clips (examples/*.flac, end to end, repeated to
length) and written as a 16 kHz FLAC to a temporary folder; each `edgeaudio classify` runs as its
own process (bundled model unless --model, 1 thread), so its peak RSS is that process's alone.
Writes bench/results/classify_long.json and prints a markdown table. The runtime decodes and
scores a file a block at a time, so the 1-hour peak should stay within 2x the 1-minute one.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import soundfile as sf

from edgeaudio.files import atomic_write_json
from export import peak_rss_mib      # bench/export.py: max RSS of one child process
from runtime import machine          # bench/runtime.py

REPO = Path(__file__).resolve().parents[1]
RATE = 16000


def write_recording(path: Path, seconds: float, clips: list) -> None:
    """``seconds`` of the clips end to end, repeated, written a clip at a time."""
    todo = int(seconds * RATE)
    with sf.SoundFile(str(path), "w", RATE, 1, format="FLAC") as out:
        while todo > 0:
            for clip in clips:
                piece = clip[:todo]
                out.write(piece)
                todo -= len(piece)
                if todo == 0:
                    break


def example_clips() -> list:
    clips = []
    for path in sorted((REPO / "examples").glob("*.flac")):
        x, rate = sf.read(path, dtype="float32", always_2d=True)
        if rate != RATE:
            raise SystemExit(f"{path}: expected {RATE} Hz, found {rate}")
        clips.append(x.mean(axis=1))
    if not clips:
        raise SystemExit("no examples/*.flac found")
    return clips


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="model file (default: the bundled one)")
    parser.add_argument("--minutes", type=float, nargs="+", default=[1.0, 60.0])
    parser.add_argument("--json", type=Path, default=REPO / "bench" / "results" /
                        "classify_long.json")
    args = parser.parse_args()

    edgeaudio = str(Path(sys.executable).parent / "edgeaudio")
    clips = example_clips()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for minutes in args.minutes:
            path = Path(tmp) / f"examples_{minutes:g}min.flac"
            write_recording(path, minutes * 60, clips)
            argv = [edgeaudio, "classify", "--json", str(path)]
            if args.model:
                argv += ["--model", args.model]
            t0 = time.perf_counter()
            rss = peak_rss_mib(argv)
            seconds = time.perf_counter() - t0
            rows.append({"minutes": minutes, "file_mib": round(path.stat().st_size / 2**20, 1),
                         "peak_rss_mib": round(rss, 1), "seconds": round(seconds, 1),
                         "seconds_per_audio_hour": round(seconds / minutes * 60, 1)})
            print(f"{minutes:g} min: {rss:.0f} MiB peak, {seconds:.1f} s", file=sys.stderr)
    ratio = rows[-1]["peak_rss_mib"] / rows[0]["peak_rss_mib"]
    results = {"machine": machine(), "model": args.model or "bundled", "threads": 1,
               "audio": "examples/*.flac end to end, repeated; 16 kHz mono FLAC",
               "rows": rows, "peak_rss_ratio_longest_to_shortest": round(ratio, 2),
               "bounded": bool(ratio <= 2.0)}
    atomic_write_json(args.json, results)
    print("| recording | file | `classify` peak RSS | time | per hour of audio |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['minutes']:g} min | {r['file_mib']} MiB | {r['peak_rss_mib']:.0f} MiB | "
              f"{r['seconds']:.1f} s | {r['seconds_per_audio_hour']:.0f} s |")
    print(f"\npeak RSS ratio {ratio:.2f} (bounded: within 2x: {results['bounded']}); "
          f"{args.json.relative_to(REPO) if args.json.is_relative_to(REPO) else args.json}",
          file=sys.stderr)


if __name__ == "__main__":
    main()
