#!/usr/bin/env python3
"""ESC-50 5-fold linear-probe accuracy of each teacher, alone and concatenated.

    .venv/bin/python bench/probe_esc50.py [--teachers yamnet efficientat yamnet+efficientat]

Protocol (train/probe.py): mean-pooled teacher embeddings from the cache, z-normalized with the
training folds' statistics, L2-normalized, logistic regression with C chosen on a held-out
training fold (never the test fold). Writes bench/results/probe_esc50.json, the analysis plots
into docs/probes/esc50/<teacher>/, and prints a markdown table.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teachers", nargs="+", default=["yamnet", "efficientat",
                                                      "yamnet+efficientat"])
    ap.add_argument("--esc50", type=Path, default=None, help="ESC-50 folder (default: shared)")
    ap.add_argument("--json", type=Path, default=REPO / "bench/results/probe_esc50.json")
    ap.add_argument("--plots", type=Path, default=REPO / "docs/probes/esc50")
    args = ap.parse_args()

    import os
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    logging.disable(logging.WARNING)  # clipping warnings from 2000 clips drown the table
    from edgeaudio.files import shared_dir
    from edgeaudio.train.data import load_dataset, load_waveforms
    from edgeaudio.train.probe import probe_teacher

    esc50 = args.esc50 or shared_dir() / "data" / "esc50"
    dataset = load_dataset(esc50, "esc50")
    waves, _ = load_waveforms(dataset.items, 16000, progress=True)
    clips = [str(Path(it.path).resolve()) for it in dataset.items]
    results = []
    for name in args.teachers:
        t0 = time.time()
        r = probe_teacher([name], dataset, waves, clips, [1, 2, 3, 4, 5],
                          args.plots / name.replace("+", "_"), echo=print)
        r["seconds"] = round(time.time() - t0, 1)
        results.append(r)
        print(f"{name}: {100 * r['mean_accuracy']:.1f} % ({r['seconds']} s)", flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"dataset": "ESC-50 (16 kHz copy), 5 folds",
                                     "results": results}, indent=2))
    print("\n| teacher | dim | 5-fold accuracy | per fold |\n|---|---|---|---|")
    for r in results:
        print(f"| {r['teacher']} | {r['dim']} | {100 * r['mean_accuracy']:.1f} ± "
              f"{100 * r['std_accuracy']:.1f} % | "
              + ", ".join(f"{100 * f['accuracy']:.1f}" for f in r["per_fold"]) + " |")
    print(f"\nwrote {args.json}", file=sys.stderr)


if __name__ == "__main__":
    main()
