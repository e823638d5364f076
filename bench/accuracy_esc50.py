#!/usr/bin/env python3
"""ESC-50 5-fold accuracy of the deployed int8 files, side by side with the float student, the
plain student and the linear probes a user would pick instead.

    .venv/bin/python bench/accuracy_esc50.py export      # export each fold's student (resumable)
    .venv/bin/python bench/accuracy_esc50.py report      # table + bench/results/accuracy_esc50.json

Rows, all under ESC-50's own five folds (each model scored on the fold it did not train on):

- the deployed recipe (``--row``, default ``kd+con`` of bench/train_esc50.py): its int8
  ``.tflite`` and int8 ``.onnx`` files from ``edgeaudio export`` (PTQ, 200 calibration windows
  from the training folds), scored through the runtime exactly as ``edgeaudio classify`` does
  (runtime windows, numpy front end, mean of window scores), and its torch float network the
  same way (the export report's "torch float");
- the plain student (row ``student``: no teachers), torch float, as trained
  (``metrics.json``);
- YAMNet and EfficientAT mn04 frozen embeddings + a linear classifier (bench/probe_esc50.py:
  C chosen on a validation split of the training folds, never the test fold).

Training runs come from ``bench/train_esc50.py run <row> --folds 1-5``; a fold not trained yet
is shown as missing, not estimated. Exports go to ``runs/bench/accuracy/<row>/fold<k>``.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from edgeaudio.files import atomic_write_json  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TRAIN_RUNS = REPO / "runs" / "bench" / "train_esc50"
EXPORTS = REPO / "runs" / "bench" / "accuracy"
FOLDS = (1, 2, 3, 4, 5)
INT8_FILES = {"int8 TFLite": ("model.int8.tflite", "litert"),
              "int8 ONNX": ("model.int8.onnx", "onnxruntime")}


def export_fold(row: str, fold: int, calibration: int, window: float | None) -> Path | None:
    from edgeaudio.export.cli import export_checkpoint
    from edgeaudio.export.report import JSON_NAME

    run = TRAIN_RUNS / row / f"fold{fold}"
    out = EXPORTS / row / f"fold{fold}"
    if (out / JSON_NAME).exists():
        return out
    if not (run / "metrics.json").exists():
        print(f"{row} fold {fold}: not trained yet ({run})", file=sys.stderr)
        return None
    export_checkpoint(run, out, ["onnx", "tflite"], True, calibration, tflm=False,
                      window_seconds=window,
                      echo=lambda m: print(f"{row} fold {fold}: {m}", file=sys.stderr, flush=True))
    return out


def file_accuracy(report: dict, name: str, backend: str) -> float | None:
    for f in report["files"]:
        if Path(f["file"]).name == name:
            for b in f["backends"]:
                if b["backend"] == backend:
                    return b.get("accuracy")
    return None


def summary(per_fold: dict) -> dict:
    values = [v for v in per_fold.values() if v is not None]
    return {"per_fold": per_fold, "n_folds": len(values),
            "mean": statistics.fmean(values) if values else None,
            "std": statistics.pstdev(values) if len(values) > 1 else None}


def collect(row: str) -> dict:
    from edgeaudio.export.report import JSON_NAME

    rows = {}
    reports = {k: json.loads((EXPORTS / row / f"fold{k}" / JSON_NAME).read_text())
               for k in FOLDS if (EXPORTS / row / f"fold{k}" / JSON_NAME).exists()}
    for label, (name, backend) in INT8_FILES.items():
        rows[f"{row} student, {label}"] = summary(
            {k: file_accuracy(r, name, backend) for k, r in reports.items()})
    rows[f"{row} student, float (torch, runtime windows)"] = summary(
        {k: r["torch_float"].get("accuracy") for k, r in reports.items()})

    def trained(name):
        out = {}
        for k in FOLDS:
            metrics = TRAIN_RUNS / name / f"fold{k}" / "metrics.json"
            if metrics.exists():
                out[k] = json.loads(metrics.read_text())["accuracy"]
        return out
    rows[f"{row} student, float (torch, whole clips, as trained)"] = summary(trained(row))
    rows["plain student (no teachers), float"] = summary(trained("student"))
    probes = json.loads((REPO / "bench" / "results" / "probe_esc50.json").read_text())
    names = {"yamnet": "YAMNet embeddings + linear classifier",
             "efficientat": "EfficientAT mn04 embeddings + linear classifier"}
    for result in probes["results"]:
        if result["teacher"] in names:
            rows[names[result["teacher"]]] = summary(
                {p["fold"]: p["accuracy"] for p in result["per_fold"]})
    model = next(iter(reports.values()))["model"] if reports else {}
    return {"row": row, "rows": rows, "student_params": model.get("params"),
            "window_seconds": model.get("window_seconds")}


def pct(x) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["export", "report"])
    ap.add_argument("--row", default="kd+con", help="bench/train_esc50.py row deployed")
    ap.add_argument("--folds", default="1-5")
    ap.add_argument("--calibration", type=int, default=200)
    ap.add_argument("--window", type=float, default=None,
                    help="export window in seconds (default: the training crop)")
    ap.add_argument("--json", type=Path, default=REPO / "bench/results/accuracy_esc50.json")
    args = ap.parse_args()
    lo, _, hi = args.folds.partition("-")
    folds = range(int(lo), int(hi or lo) + 1)

    if args.command == "export":
        import torch
        torch.set_num_threads(1)
        for k in folds:
            export_fold(args.row, k, args.calibration, args.window)
        return

    from edgeaudio.export.report import machine

    result = collect(args.row)
    result["machine"] = machine()
    result["command"] = " ".join([Path(sys.argv[0]).name] + sys.argv[1:])
    print(f"ESC-50, 5 folds (each scored on the fold it did not train on); {result['machine']}")
    print("| model | mean ± sd | " + " | ".join(f"fold {k}" for k in FOLDS) + " |")
    print("|---|---|" + "---|" * len(FOLDS))
    for name, s in result["rows"].items():
        spread = "" if s["std"] is None else f" ± {100 * s['std']:.1f}"
        partial = "" if s["n_folds"] == len(FOLDS) else f" ({s['n_folds']} of {len(FOLDS)} folds)"
        print(f"| {name} | {pct(s['mean'])}{spread}{partial} | "
              + " | ".join(pct(s["per_fold"].get(k)) for k in FOLDS) + " |")
    atomic_write_json(args.json, result)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
