"""Retraining on 1-s clips, as a user meets it (issue 21): FSDD spoken digits cut or padded to
1 s, a background class, int8 export, then `classify` and `listen`.

    .venv/bin/python bench/short_clips_fsdd.py run ROW...     # data, training (resumable), export
    .venv/bin/python bench/short_clips_fsdd.py report ROW...  # measure; bench/results/short_clips_fsdd.json
    .venv/bin/python bench/short_clips_fsdd.py run ROW --qat 2      # also an int8 file after 2
    .venv/bin/python bench/short_clips_fsdd.py report ROW --qat 2   # QAT epochs: row ROW-qat2
    .venv/bin/python bench/short_clips_fsdd.py probe          # each teacher's linear probe

A row is a configuration file ``bench/configs/short_clips_fsdd/<row>.toml`` run through
``edgeaudio train --config`` (then ``edgeaudio export --int8``); its ``data`` names the split's
CSV and its ``fold`` the test split. Data (written under ``runs/bench/short_clips_fsdd``,
gitignored):

* Digits: the 3,000 FSDD recordings (8 kHz, resampled to 16 kHz), each cut to its loudest
  second or zero-padded to 1.000 s, in two ``path,label,fold`` CSVs:
  - ``digits.csv``, speakers held out: one fold per speaker (george 1, jackson 2, lucas 3,
    nicolas 4, theo 5, yweweler 6); fold 6 is the test split, fold 5 the validation speaker
    (rows ``small``, ``small-speed``, ``mn02-inherit``; the default recipe against the former
    one: ``mn04-short320-distill`` and ``small-kdcon``, whose teacher's probe on the same split
    the distillation run's metrics carry; ``mn04-short320-distill-shift``, the default recipe
    with crops shifted as in ``small-shift``). Four training speakers: this measures how a student
    generalises to a new voice.
  - ``digits-takes.csv``, FSDD's own split: its test set, takes 0-4 of every speaker and
    digit (fold 1, 300 clips), takes 5-9 as validation (fold 2), takes 10-49 for training
    (row ``small-takes``). The voices are known: this measures what the deployed file and its
    streaming defaults lose against the student itself.
  The test split is scored once, at the end; the validation clips make every choice (the epoch
  kept, the stream threshold).
* Background class (``--background``): quiet clips the run makes (``silence``), ESC-50
  ambience from folds 1-4 (rain, sea waves, crackling fire, crickets, wind, insects) and the
  drum one-shots of the first half of the kits.
* The held-out stream: every test digit, each after a gap of 3-6 s (seeded) of digital
  silence, quiet noise, ESC-50 ambience from fold 5 or a one-shot from the other half of the
  drum kits (audio the model never trained on), at the digits' own level.

``--qat N`` exports a second int8 file after N epochs of quantization-aware fine-tuning
(``edgeaudio export --qat N``, ``models-qatN/``), reported as the row ``ROW-qatN``. ``probe``
runs ``edgeaudio probe --teacher yamnet --teacher efficientat`` on the speakers split's digits
(no background class; fold 6 tested) into bench/results/short_clips_fsdd_probes.json.

The exported file's own streaming defaults (smoothing and patience from the 1-s clips, the
threshold chosen on the validation clips) are what `listen` uses. Measured:

* ``classify``: accuracy of the int8 TFLite file through ``Model.classify`` (the runtime's
  windows) against the same file on each clip trimmed or padded to exactly one model window.
* ``listen``: `edgeaudio listen --input STREAM --fast --json` (a subprocess) with the file's
  defaults; digits found (a start of the right label within one window of the onset,
  ``edgeaudio.event_scoring``) and false events per 10 minutes of the gaps.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from edgeaudio.files import atomic_write_json, shared_dir

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
REPO = Path(__file__).resolve().parents[1]
SHARED = shared_dir()
WORK = REPO / "runs" / "bench" / "short_clips_fsdd"
CONFIGS = REPO / "bench" / "configs" / "short_clips_fsdd"   # one row a file: small, mn02-inherit
RESULTS = REPO / "bench" / "results" / "short_clips_fsdd.json"
PROBES = REPO / "bench" / "results" / "short_clips_fsdd_probes.json"
RATE = 16000
SPEAKERS = ("george", "jackson", "lucas", "nicolas", "theo", "yweweler")
# two splits of the same clips, one CSV each; a row's configuration names its CSV (``data``,
# default the speakers split) and its test ``fold``
SPLITS = {"speakers": "digits.csv",          # fold = speaker (1-6)
          "takes": "digits-takes.csv"}       # fold 1 = takes 0-4, 2 = takes 5-9, 3 = the rest
# gaps long enough that the background between digits (the time no digit's window touches)
# adds up to more than 10 minutes: the false-event rate is per 10 minutes
GAP_SECONDS = (3.0, 6.0)
AMBIENCE = ("rain", "sea_waves", "crackling_fire", "crickets", "wind", "insects")
SEED = 0


def one_second(wave: np.ndarray) -> np.ndarray:
    """The loudest 1.000 s of ``wave`` (16 kHz), or ``wave`` zero-padded to it, centred."""
    n = RATE
    if len(wave) >= n:
        energy = np.convolve(wave.astype(np.float64) ** 2, np.ones(n // 10), "valid")
        centre = int(np.argmax(energy)) + n // 20
        start = int(np.clip(centre - n // 2, 0, len(wave) - n))
        return wave[start:start + n].astype(np.float32)
    out = np.zeros(n, np.float32)
    pad = (n - len(wave)) // 2
    out[pad:pad + len(wave)] = wave
    return out


def read16k(path: Path) -> np.ndarray:
    from edgeaudio.audio import load_audio
    return load_audio(path, RATE)


def drum_kits() -> tuple[list, list]:
    """(training kits' files, held-out kits' files): the kits sorted by name, split in half."""
    rows = list(csv.DictReader(open(SHARED / "data" / "drums" / "index.csv")))
    kits = sorted({r["kit"] for r in rows})
    first = set(kits[:len(kits) // 2])
    files = {k: sorted((SHARED / "data" / "drums" / "drumkits" / k).rglob("*.flac")) for k in kits}
    return ([f for k in kits if k in first for f in files[k]],
            [f for k in kits if k not in first for f in files[k]])


def ambience(folds) -> list:
    meta = SHARED / "data" / "esc50" / "meta" / "esc50.csv"
    return [SHARED / "data" / "esc50" / "audio" / (Path(r["filename"]).stem + ".flac")
            for r in csv.DictReader(open(meta))
            if r["category"] in AMBIENCE and int(r["fold"]) in folds]


def prepare() -> Path:
    """The 1-s digit clips, the CSV of each split and the training background folder (made
    once); returns the speakers split's CSV."""
    labels_csv, takes_csv = (WORK / name for name in SPLITS.values())
    if labels_csv.exists() and takes_csv.exists():
        return labels_csv
    clips = WORK / "digits"
    clips.mkdir(parents=True, exist_ok=True)
    by_speaker, by_take = [], []
    for path in sorted((SHARED / "data" / "fsdd" / "recordings").glob("*.flac")):
        digit, speaker, take = path.stem.split("_")
        out = clips / f"{path.stem}.wav"
        if not out.exists():
            sf.write(out, one_second(read16k(path)), RATE, subtype="FLOAT")
        by_speaker.append((f"digits/{out.name}", digit, SPEAKERS.index(speaker) + 1))
        # FSDD's own test set is takes 0-4 of every speaker and digit
        by_take.append((f"digits/{out.name}", digit, 1 if int(take) < 5 else
                        2 if int(take) < 10 else 3))
    background = WORK / "background-train"
    background.mkdir(exist_ok=True)
    train_drums, _ = drum_kits()
    for k, path in enumerate(ambience((1, 2, 3, 4)) + train_drums):
        sf.write(background / f"{k:04d}-{path.stem}.wav", read16k(path), RATE, subtype="FLOAT")
    for target, rows in ((takes_csv, by_take), (labels_csv, by_speaker)):  # speakers' last:
        tmp = target.with_suffix(".tmp")                                   # it marks "done"
        with open(tmp, "w", newline="") as handle:
            w = csv.writer(handle)
            w.writerow(["path", "label", "fold"])
            w.writerows(rows)
        tmp.replace(target)
    return labels_csv


def row_split(row: str) -> tuple[Path, int]:
    """(the row's CSV, its test fold), from its configuration file."""
    import tomllib
    config = tomllib.loads((CONFIGS / f"{row}.toml").read_text())
    data = REPO / config["data"] if "data" in config else WORK / SPLITS["speakers"]
    return data, int(config["fold"])


def test_rows(row: str) -> list:
    data, fold = row_split(row)
    return [r for r in csv.DictReader(open(data)) if int(r["fold"]) == fold]


def edgeaudio(*args, log: Path | None = None) -> None:
    cmd = [sys.executable, "-m", "edgeaudio", *map(str, args)]
    print("$ edgeaudio " + " ".join(map(str, args)), flush=True)
    if log:
        log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") if log else open(os.devnull, "w") as out:
        subprocess.run(cmd, check=True, cwd=REPO, stderr=out if log else None)


def row_dirs(row: str, qat_epochs: int = 0) -> tuple[Path, Path]:
    """(run folder, model folder) of a row; the first row keeps the folders it was run in.
    With ``qat_epochs`` the model folder is the quantization-aware file's."""
    base = WORK if row == "small" else WORK / row
    return base / "run", base / ("models" + (f"-qat{qat_epochs}" if qat_epochs else ""))


def run(row: str, qat_epochs: int = 0) -> None:
    prepare()
    data, _ = row_split(row)
    run_dir, models = row_dirs(row)
    if not (run_dir / "metrics.json").exists():
        edgeaudio("train", "--config", CONFIGS / f"{row}.toml", "--data", data, "--out", run_dir,
                  "--background", "silence", "--background", WORK / "background-train",
                  *(["--resume"] if (run_dir / "checkpoint.pt").exists() else []),
                  log=run_dir.parent / "train.err")
    if not (models / "model.int8.tflite").exists():
        edgeaudio("export", run_dir, "--int8", "--format", "tflite", "--calibration", 200,
                  "--out", models, log=run_dir.parent / "export.err")
    qat_models = row_dirs(row, qat_epochs)[1]
    if qat_epochs and not (qat_models / "model.int8.tflite").exists():
        # --qat-threshold 0: fine-tune whenever PTQ loses anything (export keeps the QAT file
        # only if it does better; the row's "quantization" says which file it measured)
        edgeaudio("export", run_dir, "--int8", "--format", "tflite", "--calibration", 200,
                  "--qat", qat_epochs, "--qat-threshold", 0, "--out", qat_models,
                  log=run_dir.parent / "export.err")


def probe() -> int:
    """Each teacher's linear probe (and the log-mel baseline) on the digits, speakers held out."""
    data = prepare()
    done = subprocess.run([sys.executable, "-m", "edgeaudio", "probe", "--teacher", "yamnet",
                           "--teacher", "efficientat", "--data", str(data), "--folds", "6",
                           "--json"], capture_output=True, text=True, check=True, cwd=REPO)
    probes = json.loads(done.stdout)
    atomic_write_json(PROBES, probes)
    for r in probes:
        print(f"| {r['teacher']} + linear probe | {100 * r['mean_accuracy']:.1f} % |")
    print(f"\n{PROBES.relative_to(REPO)}", file=sys.stderr)
    return 0


def held_out_stream(rows: list, window_seconds: float) -> tuple[np.ndarray, list, dict]:
    """(audio, true events, what the gaps hold): every test digit (``rows``) after a gap."""
    from edgeaudio.event_scoring import TrueEvent
    rng = np.random.default_rng([SEED, 61])
    _, held_out_drums = drum_kits()
    ambience_clips = ambience((5,))
    level = lambda x: float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) + 1e-12  # noqa: E731
    parts, truth, kinds, t = [], [], {"silence": 0, "noise": 0, "ambience": 0, "drum": 0}, 0
    for k, row in enumerate(rng.permutation(rows)):
        wave = sf.read(WORK / row["path"], dtype="float32")[0]
        gap = np.zeros(int(rng.uniform(*GAP_SECONDS) * RATE), np.float32)
        kind = ("silence", "noise", "ambience", "drum")[k % 4]
        kinds[kind] += 1
        if kind == "noise":
            gap += rng.standard_normal(len(gap)).astype(np.float32) * 10 ** (-45 / 20)
        elif kind == "ambience":
            source = read16k(ambience_clips[int(rng.integers(len(ambience_clips)))])
            piece = source[:len(gap)]
            gap[:len(piece)] = piece * (level(wave) / level(piece))
        elif kind == "drum":
            hit = read16k(held_out_drums[int(rng.integers(len(held_out_drums)))])[:len(gap)]
            at = int(rng.integers(0, max(1, len(gap) - len(hit))))
            gap[at:at + len(hit)] = hit * (level(wave) / level(hit))
        parts += [np.clip(gap, -1, 1), wave]
        truth.append(TrueEvent(row["label"], (t + len(gap)) / RATE,
                               (t + len(gap) + len(wave)) / RATE))
        t += len(gap) + len(wave)
    parts.append(np.zeros(int(2 * window_seconds * RATE), np.float32))
    return np.concatenate(parts), truth, kinds


def report(row: str, qat_epochs: int = 0) -> dict | None:
    from edgeaudio import load_model
    from edgeaudio.event_scoring import alarm_summary, latency_summary, score_stream
    from edgeaudio.stream import Event

    run_dir, models = row_dirs(row, qat_epochs)
    path = models / "model.int8.tflite"
    if not path.exists():
        qat = f" --qat {qat_epochs}" if qat_epochs else ""
        print(f"{path} not found: run `bench/short_clips_fsdd.py run {row}{qat}` first",
              file=sys.stderr)
        return None
    model = load_model(path, backend="litert")
    win = model.info.window_samples
    rows = test_rows(row)
    hit_classify = hit_window = 0
    windows = []
    for r in rows:
        clip = WORK / r["path"]
        result = model.classify(clip)
        windows.append(result.windows)
        hit_classify += result.top(1)[0][0] == r["label"]
        wave = sf.read(clip, dtype="float32")[0][:win]
        one = np.zeros(win, np.float32)
        one[:len(wave)] = wave
        scores = model.scores_for_window(one)
        hit_window += model.labels[int(np.argmax(scores))] == r["label"]
    acc_classify, acc_window = hit_classify / len(rows), hit_window / len(rows)

    audio, truth, kinds = held_out_stream(rows, model.info.window_seconds)
    stream_path = WORK / "held_out_stream.wav"
    sf.write(stream_path, audio, RATE, subtype="FLOAT")
    t0 = time.time()
    done = subprocess.run([sys.executable, "-m", "edgeaudio", "listen", "--input", str(stream_path),
                           "--fast", "--json", "--model", str(path)], capture_output=True,
                          text=True, check=True, cwd=REPO)
    listen_seconds = time.time() - t0
    events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    # listen prints an event when it opens, back-dated to the start of the window of the first
    # hop above threshold; it was emitted ``patience`` hops later, at that window's end
    settings = model.info.stream
    emitted = model.info.window_seconds + (settings["patience"] - 1) * settings["hop_seconds"]
    starts = [Event(e["label"], e["score"], e["t_start"], None, e["t_start"] + emitted, "start")
              for e in events if e["event"] == "start"]
    tail = (settings["smooth"] + settings["patience"]) * settings["hop_seconds"]
    score = score_stream(starts, truth, len(audio) / RATE, model.info.window_seconds, tail)
    found = latency_summary(score.latencies)
    alarms = alarm_summary([score])
    per_10min = alarms["false_alarms"] / (alarms["background_hours"] * 6)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    # what export did: PTQ, or QAT when PTQ cost more than the threshold and QAT did better
    export_report = models / "export_report.json"
    quantization = (json.loads(export_report.read_text()).get("quantization")
                    if export_report.exists() else None)
    results = {
        "machine": {"platform": platform.platform(),
                    "processor": platform.processor() or platform.machine(),
                    "cpus": os.cpu_count()},
        "row": row + (f"-qat{qat_epochs}" if qat_epochs else ""),
        "config": str((CONFIGS / f"{row}.toml").relative_to(REPO)), "qat_epochs": qat_epochs,
        "student": metrics["student"], "params": metrics["params"],
        "selected_epoch": metrics["selected_epoch"], "epochs": metrics["epochs"],
        "validation_accuracy": metrics["validation_accuracy"],
        "test_accuracy_float_whole_clips": metrics["accuracy"],
        "model": {"file": str(path.relative_to(REPO)), "bytes": path.stat().st_size,
                  "window_seconds": model.info.window_seconds, "stream": settings,
                  "quantization": quantization},
        "classify": {"clips": len(rows), "accuracy_classify": acc_classify,
                     "accuracy_one_window": acc_window,
                     "difference_points": 100 * (acc_classify - acc_window),
                     "windows_per_clip": sorted(set(windows))},
        "listen": {"events": len(truth), "found": found["detected"],
                   "found_rate": found["detection_rate"],
                   "median_latency_s": found["median_latency_s"],
                   "false_events": alarms["false_alarms"], "confusions": len(score.confusions),
                   "repeats": score.repeats,
                   "background_minutes": alarms["background_hours"] * 60,
                   "false_events_per_10min": per_10min,
                   "stream_minutes": len(audio) / RATE / 60, "gaps": kinds,
                   "gap_seconds": list(GAP_SECONDS),
                   "listen_wall_seconds": round(listen_seconds, 1)},
    }
    c, li = results["classify"], results["listen"]
    row = results["row"]
    print(f"| {row}: int8 TFLite through classify | {100 * c['accuracy_classify']:.1f} % "
          f"| same file, one window per clip | {100 * c['accuracy_one_window']:.1f} % "
          f"| difference {c['difference_points']:+.1f} points |")
    print(f"| {row}: listen on {li['stream_minutes']:.0f} min of held-out digits and gaps | "
          f"found {li['found']}/{li['events']} ({100 * li['found_rate']:.1f} %) | "
          f"{li['false_events']} false events in {li['background_minutes']:.1f} min of gaps "
          f"({li['false_events_per_10min']:.2f} per 10 min) | {li['confusions']} confusions |")
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["run", "report", "probe"])
    parser.add_argument("rows", nargs="*", default=["small"],
                        help=f"rows (configuration files in {CONFIGS.relative_to(REPO)}); "
                             f"default: small")
    parser.add_argument("--qat", type=int, default=0, metavar="EPOCHS",
                        help="run: also export an int8 file after EPOCHS of quantization-aware "
                             "fine-tuning; report: measure that file (row ROW-qatEPOCHS)")
    args = parser.parse_args(argv)
    if not (SHARED / "data" / "fsdd" / "recordings").is_dir():
        print(f"FSDD not found under {SHARED} (set EDGEAUDIO_SHARED)", file=sys.stderr)
        return 2
    if args.qat < 0:
        parser.error("--qat must be >= 0 epochs")
    if args.command == "probe":
        return probe()
    if args.command == "run":
        for row in args.rows:
            run(row, args.qat)
        return 0
    rows = [r for r in (report(row, args.qat) for row in args.rows) if r is not None]
    if not rows:
        return 2
    previous = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    kept = {r["row"]: r for r in previous.get("rows", [])} if "rows" in previous else {}
    # a row measured on another stream design is not comparable: it goes (git keeps it)
    for name in [n for n, r in kept.items() if r["listen"].get("gap_seconds") != list(GAP_SECONDS)]:
        print(f"dropping row {name}: measured with other gaps; rerun its report", file=sys.stderr)
        del kept[name]
    kept.update({r["row"]: r for r in rows})
    atomic_write_json(RESULTS, {"rows": list(kept.values())})
    print(f"\n{RESULTS.relative_to(REPO)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
