"""Beyond ESC-50, the drum one-shots (the issue on a student worth deploying, acceptance 6): the
default recipe against the former one on the coarse drum classes of ``../shared/data/drums``,
kits held out, with each teacher's linear probe on the same split beside them.

    .venv/bin/python bench/drums_coarse.py run                 # both rows; resumable, skips finished
    .venv/bin/python bench/drums_coarse.py run mn04-short320-distill
    .venv/bin/python bench/drums_coarse.py probe               # edgeaudio probe, YAMNet and mn04
    .venv/bin/python bench/drums_coarse.py report              # bench/results/drums_coarse.json

Data: the one-shots of ``index.csv`` under their ``coarse_class`` (kick, snare, hihat,
cymbal, tom, clap, cowbell, rim/stick, other; a file the index lists twice, once), written
once as a ``path,label,fold`` CSV under ``runs/bench/drums_coarse`` (gitignored). A kit is one fold's: the 14 kits, largest first, go
to whichever of 5 folds holds the fewest clips so far, so a test kit's recording chain and
samples are never heard in training. Fold 1 is the test fold of every row and probe.

Rows (``bench/configs/drums_coarse/<row>.toml``, run as ``edgeaudio train --config FILE --data
CSV --fold 1``): ``mn04-short320-distill`` (the default recipe) and ``small-kdcon`` (the
former default: the ``small`` harmonic student, KD from a probe on mn04, Con-Reg from YAMNet +
mn04). Both train 40 epochs on 1-s crops and keep the last epoch, no validation split (the
ESC-50 rows' protocol). The figure is the float student's accuracy on the held-out kits'
whole clips (the run's ``metrics.json``).
"""
from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
from pathlib import Path

from _runs import REPO

from edgeaudio.files import atomic_write_json, shared_dir

DRUMS = shared_dir() / "data" / "drums"
WORK = REPO / "runs" / "bench" / "drums_coarse"
CONFIGS = REPO / "bench" / "configs" / "drums_coarse"
RESULTS = REPO / "bench" / "results" / "drums_coarse.json"
ROWS = ["mn04-short320-distill", "small-kdcon"]
FOLDS, TEST_FOLD = 5, 1
TEACHERS = ["yamnet", "efficientat"]


def kit_folds(rows: list) -> dict:
    """kit -> fold: the largest kits first, each to the fold with the fewest clips so far."""
    sizes: dict = {}
    for r in rows:
        sizes[r["kit"]] = sizes.get(r["kit"], 0) + 1
    load = [0] * FOLDS
    folds = {}
    for kit in sorted(sizes, key=lambda k: (-sizes[k], k)):
        fold = min(range(FOLDS), key=lambda f: (load[f], f))
        folds[kit] = fold + 1
        load[fold] += sizes[kit]
    return folds


def one_row_per_file(rows: list) -> list:
    """A kit maps some files to several instruments: each file once, under its coarse class;
    a file two coarse classes claim (a closed and a pedal hi-hat share one, say) is kept
    when they agree and left out when they do not."""
    classes: dict = {}
    for r in rows:
        classes.setdefault((r["kit"], r["file"]), set()).add(r["coarse_class"])
    kept, seen = [], set()
    for r in rows:
        key = (r["kit"], r["file"])
        if len(classes[key]) == 1 and key not in seen:
            kept.append(r)
            seen.add(key)
    return kept


def prepare() -> Path:
    """The CSV of the coarse classes by kit fold (made once); the shared files are FLAC."""
    target = WORK / "drums.csv"
    if target.exists():
        return target
    rows = one_row_per_file(list(csv.DictReader(open(DRUMS / "index.csv"))))
    folds = kit_folds(rows)
    WORK.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    with open(tmp, "w", newline="") as handle:
        w = csv.writer(handle)
        w.writerow(["path", "label", "fold"])
        for r in rows:
            path = DRUMS / "drumkits" / r["kit"] / (Path(r["file"]).stem + ".flac")
            if not path.exists():
                raise SystemExit(f"{path}: listed in {DRUMS / 'index.csv'} but not found")
            w.writerow([str(path), r["coarse_class"], folds[r["kit"]]])
    tmp.replace(target)
    return target


def edgeaudio(*args, capture: bool = False) -> str:
    cmd = [sys.executable, "-m", "edgeaudio", *map(str, args)]
    print("$ edgeaudio " + " ".join(map(str, args)), flush=True)
    done = subprocess.run(cmd, check=True, cwd=REPO, text=True,
                          stdout=subprocess.PIPE if capture else None)
    return done.stdout or ""


def run(rows: list) -> None:
    data = prepare()
    for row in rows:
        out = WORK / row
        if (out / "metrics.json").exists():
            print(f"[{row}] finished: skipped", flush=True)
            continue
        edgeaudio("train", "--config", CONFIGS / f"{row}.toml", "--data", data,
                  "--fold", TEST_FOLD, "--out", out,
                  *(["--resume"] if (out / "checkpoint.pt").exists() else []))


def probe() -> list:
    data = prepare()
    args = [a for t in TEACHERS for a in ("--teacher", t)]
    found = json.loads(edgeaudio("probe", *args, "--data", data, "--folds", TEST_FOLD, "--json",
                                 capture=True))
    atomic_write_json(WORK / "probes.json", found)
    return found


def report() -> dict:
    data = prepare()
    clips = list(csv.DictReader(open(data)))
    test = [r for r in clips if int(r["fold"]) == TEST_FOLD]
    previous = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results = {"data": {"clips": len(clips), "test_clips": len(test), "test_fold": TEST_FOLD,
                        "classes": sorted({r["label"] for r in clips}),
                        "test_kits": sorted({Path(r["path"]).parent.name for r in test})},
               "rows": {**previous.get("rows", {})}, "probes": previous.get("probes", [])}
    for row in ROWS:
        path = WORK / row / "metrics.json"
        if path.exists():
            m = json.loads(path.read_text())
            results["rows"][row] = {
                "config": str((CONFIGS / f"{row}.toml").relative_to(REPO)),
                "student": m["student"], "params": m["params"], "epochs": m["epochs"],
                "accuracy": m["accuracy"], "macro_f1": m["macro_f1"],
                "train_seconds": m["train_seconds"],
                "command": f"edgeaudio train --config bench/configs/drums_coarse/{row}.toml "
                           f"--data {data.relative_to(REPO)} --fold {TEST_FOLD}"}
    if (WORK / "probes.json").exists():
        results["probes"] = [{k: p[k] for k in ("teacher", "dim", "mean_accuracy")}
                             for p in json.loads((WORK / "probes.json").read_text())]
    if not results["rows"] and not results["probes"]:
        print("nothing finished: run `run` and `probe` first", file=sys.stderr)
        return results
    atomic_write_json(RESULTS, results)
    print(f"drums, coarse classes, held-out kits (fold {TEST_FOLD}, {len(test)} clips)\n")
    print("| model | params | accuracy | macro F1 | training |\n|---|---|---|---|---|")
    for row, r in results["rows"].items():
        print(f"| {row} ({r['student']}) | {r['params']:,} | {100 * r['accuracy']:.1f} % | "
              f"{100 * r['macro_f1']:.1f} % | {r['train_seconds'] / 60:.0f} min |")
    for p in results["probes"]:
        print(f"| {p['teacher']} embeddings + linear probe | - | "
              f"{100 * p['mean_accuracy']:.1f} % | - | - |")
    print(f"\n{RESULTS.relative_to(REPO)}", file=sys.stderr)
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    ran = sub.add_parser("run", help="train rows (resumable; finished rows are skipped)")
    ran.add_argument("rows", nargs="*", help=f"of {', '.join(ROWS)} (default: every row)")
    sub.add_parser("probe", help="linear probes of the teachers on the same split")
    sub.add_parser("report", help="collect, write the JSON, print the table")
    args = parser.parse_args(argv)
    if not (DRUMS / "index.csv").exists():
        print(f"drum one-shots not found under {DRUMS} (set EDGEAUDIO_SHARED)", file=sys.stderr)
        return 2
    if args.command == "run":
        unknown = sorted(set(args.rows) - set(ROWS))
        if unknown:
            parser.error(f"unknown row(s) {', '.join(unknown)}; rows: {', '.join(ROWS)}")
        run(args.rows or ROWS)
    elif args.command == "probe":
        probe()
    else:
        report()
    return 0


if __name__ == "__main__":
    sys.exit(main())
