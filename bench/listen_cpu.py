"""CPU while listening: `edgeaudio listen --fast` with the student against YAMNet run as a
streaming classifier, at the same hop, on the same recording (the issue on a student worth
deploying, acceptance 2: the student at most 1/10 of YAMNet's CPU per second of audio).

    .venv/bin/python bench/listen_cpu.py                 # bundled model; bench/results/listen_cpu.json
    .venv/bin/python bench/listen_cpu.py --model FILE --repeats 5

The recording: 24 ESC-50 clips drawn (seeded) from fold 1, classes 0-11, 5 s each, end to end:
120 s at 16 kHz, written once under ``runs/bench/listen_cpu``.

The two processes, each on 1 thread, LiteRT:

* student: ``edgeaudio listen --input REC --fast --backend litert --threads 1 --json`` (front
  end included: the runtime's numpy front end computes each hop's new frames, then the
  network scores the whole window, or, for a streaming file, runs once on the hop's chunk
  with its carried states; its hop is then one chunk, 0.32 s, and YAMNet gets the same);
* YAMNet: this file's ``yamnet`` command, the streaming classifier a user would write:
  ``yamnet_waveform.tflite`` from ``../shared`` with its input resized to one 0.975-s window
  (15,600 samples), the recording pushed in 50-ms chunks, YAMNet run on the last window every
  hop, its 521 scores averaged over ``--smooth`` hops.

CPU is user + system time of the whole process (``getrusage`` of the child); start-up (imports,
model load, decoding) is subtracted by running each process on the first 2 s of the recording
too and dividing the difference by the difference in audio: CPU ms per second of audio in the
steady state. The two alternate, ``--repeats`` times each; the median is reported. The
student's split between front end and network is timed in process beside it.
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

from _runs import ESC50, REPO, esc50_present
from runtime import machine, timed

from edgeaudio.files import atomic_write_json, shared_dir

WORK = REPO / "runs" / "bench" / "listen_cpu"
RESULTS = REPO / "bench" / "results" / "listen_cpu.json"
YAMNET = shared_dir() / "weights" / "yamnet" / "yamnet_waveform.tflite"
RATE = 16000
YAMNET_WINDOW = 15600          # 0.975 s: YAMNet's own patch
SHORT_SECONDS = 2.0            # the start-up run
CLIPS, CLASSES = 24, 12


def recording() -> tuple[Path, Path]:
    """(the 120-s recording, its first 2 s), made once from ESC-50 fold 1."""
    from edgeaudio.audio import load_audio
    full, short = WORK / "recording.wav", WORK / "recording-2s.wav"
    if full.exists() and short.exists():
        return full, short
    rows = [line.split(",") for line in (ESC50 / "meta" / "esc50.csv").read_text().splitlines()[1:]]
    rows = [r for r in rows if r[1] == "1" and int(r[2]) < CLASSES]    # filename, fold, target
    rng = np.random.default_rng(0)
    picked = [rows[i] for i in rng.permutation(len(rows))[:CLIPS]]
    # the shared copy stores the clips as FLAC under the CSV's .wav names
    wave = np.concatenate([load_audio(ESC50 / "audio" / (Path(r[0]).stem + ".flac"), RATE)
                           for r in picked])
    WORK.mkdir(parents=True, exist_ok=True)
    sf.write(full, wave, RATE, subtype="PCM_16")
    sf.write(short, wave[:int(SHORT_SECONDS * RATE)], RATE, subtype="PCM_16")
    return full, short


def yamnet_listen(path: Path, hop_seconds: float, smooth: int) -> dict:
    """YAMNet as a streaming classifier over ``path``: its window every hop, scores smoothed."""
    from ai_edge_litert.interpreter import Interpreter
    interpreter = Interpreter(model_path=str(YAMNET), num_threads=1)
    inp = interpreter.get_input_details()[0]["index"]
    interpreter.resize_tensor_input(inp, [YAMNET_WINDOW], strict=False)
    interpreter.allocate_tensors()
    scores_out = interpreter.get_output_details()[0]["index"]
    wave, rate = sf.read(path, dtype="float32")
    assert rate == RATE, f"{path}: {rate} Hz, YAMNet needs {RATE}"
    ring = np.zeros(YAMNET_WINDOW, np.float32)
    hop, chunk = int(round(hop_seconds * RATE)), RATE // 20
    pending, recent, inferences = 0, [], 0
    for start in range(0, len(wave), chunk):
        piece = wave[start:start + chunk]
        ring = np.concatenate((ring[len(piece):], piece))
        pending += len(piece)
        while pending >= hop:
            pending -= hop
            interpreter.set_tensor(inp, ring)
            interpreter.invoke()
            recent = (recent + [interpreter.get_tensor(scores_out).mean(axis=0)])[-smooth:]
            np.mean(recent, axis=0).argmax()  # the smoothed top class, as a listener decides it
            inferences += 1
    return {"inferences": inferences, "seconds": len(wave) / RATE}


def child_cpu(args: list) -> float:
    """CPU seconds (user + system) of one child process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(args, cwd=REPO, check=True, capture_output=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def student_command(model: Path, audio: Path) -> list:
    return [sys.executable, "-m", "edgeaudio", "listen", "--input", str(audio), "--fast",
            "--json", "--backend", "litert", "--threads", "1", "--model", str(model)]


def yamnet_command(audio: Path, hop: float, smooth: int) -> list:
    return [sys.executable, str(Path(__file__).resolve()), "yamnet", str(audio),
            "--hop", str(hop), "--smooth", str(smooth)]


def student_split(model_path: Path, audio: Path) -> dict:
    """In process: the student's front end and network per second of audio at its hop."""
    from edgeaudio import Model
    model = Model(model_path, backend="litert", threads=1)
    wave, _ = sf.read(audio, dtype="float32")
    stream = model.stream()
    chunk = RATE // 20
    for start in range(0, len(wave), chunk):
        stream.push(wave[start:start + chunk])
    fe = model.info.frontend
    hop_samples = int(round(model.info.hop_seconds * RATE))
    n_new = max(1, hop_samples // fe.hop_length)
    window = wave[:model.info.window_samples]
    fresh = window[-(fe.win_length + (n_new - 1) * fe.hop_length):]
    feats = model.frontend(window)
    per_second = 1.0 / model.info.hop_seconds

    frontend_ms = 1e3 * timed(lambda: model.frontend(fresh), 200)
    if model.info.streaming is None:
        network_ms = 1e3 * timed(lambda: model.backend.run(feats), 200)
    else:  # one call on the hop's chunk, carrying the states
        states = model.backend.initial_states()
        network_ms = 1e3 * timed(lambda: model.backend.run_chunk(feats, states), 200)
    return {"hop_seconds": model.info.hop_seconds, "window_seconds": model.info.window_seconds,
            "new_frames_per_hop": n_new, "inferences": stream.n_inferences,
            "frontend_ms_per_audio_s": frontend_ms * per_second,
            "network_ms_per_audio_s": network_ms * per_second}


def measure(model: Path, repeats: int) -> dict:
    full, short = recording()
    seconds = sf.info(full).duration - sf.info(short).duration
    from edgeaudio import Model
    info = Model(model, backend="litert").info
    hop, smooth = info.hop_seconds, int(info.stream.get("smooth", 1))
    runs = {"student": [], "yamnet": []}
    for k in range(repeats):
        for name, command in (("student", lambda a: student_command(model, a)),
                              ("yamnet", lambda a: yamnet_command(a, hop, smooth))):
            cpu = child_cpu(command(full)) - child_cpu(command(short))
            runs[name].append(1e3 * cpu / seconds)
            print(f"  run {k + 1}/{repeats} {name}: {runs[name][-1]:.2f} ms CPU per s of audio",
                  file=sys.stderr, flush=True)
    student_ms, yamnet_ms = (statistics.median(runs[n]) for n in ("student", "yamnet"))
    return {"machine": machine(), "recording_seconds": sf.info(full).duration,
            "model": str(model.relative_to(REPO) if model.is_relative_to(REPO) else model),
            "model_bytes": model.stat().st_size, "hop_seconds": hop, "smooth": smooth,
            "repeats": repeats, "threads": 1, "backend": "litert",
            "cpu_ms_per_audio_s": {"student": student_ms, "yamnet": yamnet_ms},
            "runs_ms_per_audio_s": runs, "student_over_yamnet": student_ms / yamnet_ms,
            "target_student_over_yamnet": 0.1,
            "student_split_in_process": student_split(model, full)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command")
    y = sub.add_parser("yamnet", help="YAMNet as a streaming classifier over one file")
    y.add_argument("audio", type=Path)
    y.add_argument("--hop", type=float, default=0.25)
    y.add_argument("--smooth", type=int, default=1)
    ap.add_argument("--model", type=Path, default=REPO / "edgeaudio/models/esc50-student.int8.tflite",
                    help="student .tflite file (default: the bundled model)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    if args.command == "yamnet":
        print(json.dumps(yamnet_listen(args.audio, args.hop, args.smooth)))
        return 0
    if not esc50_present(ESC50) or not YAMNET.exists():
        print(f"ESC-50 or {YAMNET} missing (set EDGEAUDIO_SHARED)", file=sys.stderr)
        return 2
    result = measure(args.model.resolve(), args.repeats)
    cpu = result["cpu_ms_per_audio_s"]
    split = result["student_split_in_process"]
    print(f"machine: {result['machine']}")
    print(f"{result['recording_seconds']:.0f}-s recording, hop {result['hop_seconds']} s, "
          f"1 thread, LiteRT, start-up subtracted, median of {args.repeats}\n")
    print("| process | CPU ms per s of audio |\n| --- | --- |")
    print(f"| student (`edgeaudio listen --fast`) | {cpu['student']:.2f} |")
    print(f"| YAMNet streaming classifier | {cpu['yamnet']:.2f} |")
    print(f"\nstudent / YAMNet = {result['student_over_yamnet']:.2f} (target <= 0.10); student "
          f"in process: front end {split['frontend_ms_per_audio_s']:.2f} + network "
          f"{split['network_ms_per_audio_s']:.2f} ms per s of audio")
    atomic_write_json(args.json, result)
    print(f"\nwrote {args.json.relative_to(REPO) if args.json.is_relative_to(REPO) else args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
