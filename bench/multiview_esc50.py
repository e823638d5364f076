"""ESC-50 fold 1: single views vs multi-view fusion vs adaptive gradient blending (Phan et al.).

Rows (same CRNN branch per view: 3 conv blocks 16/32/64 + a bidirectional GRU of 64, ~86 K
parameters; the raw branch ~75 K; same data, crops, mixup, SpecAugment, schedule and epochs;
the blending validation split, 10 % of the training clips, is held out in every row):

    mel, gammatone, cqt, raw   one view, its joint head alone (``--blend none``)
    concat                     4 views, concatenation fusion: the joint head (``--blend none``)
    late                       4 views, each view head trained alone, mean of their
                               probabilities (``--blend late``)
    blend                      4 views, every head trained with adaptive gradient-blending
                               weights, read out as the self-ensemble (``--blend adaptive``);
                               its metrics also give the joint head alone, the self-ensemble
                               with equal weights and the mean of the view heads

    .venv/bin/python bench/multiview_esc50.py list               # rows and their CLI commands
    .venv/bin/python bench/multiview_esc50.py time               # one short timing run per row
    nohup nice .venv/bin/python bench/multiview_esc50.py run mel gammatone cqt raw \\
        > runs/bench-multiview-a.log 2>&1 &                      # resumable, sequential
    .venv/bin/python bench/multiview_esc50.py run concat late blend
    .venv/bin/python bench/multiview_esc50.py report             # JSON + markdown table, and
                                                                 # the weight plot into docs/

Runs live in ``runs/bench/multiview_esc50/<row>/fold1`` (gitignored), each resumable (a killed
row continues from its last epoch). One torch thread per run; at most two runs at once on a
2-core machine.

Cost, measured by ``time`` (``bench/results/multiview_esc50_timing.json``): CPU seconds of one
torch thread, one epoch on a quarter of the training clips scaled to the 1450 of a full
epoch, 2-core Xeon VM shared with two other trainings at the time (wall time ran 1-2.5x the
CPU time). At 20 epochs (half the student's 40, to fit the 4-view rows in a CPU session)
with a held-out evaluation every 5:

    row         CPU s / epoch   evaluation (400 clips)   run
    mel               16              3 s               ~5 min
    gammatone         16              3 s               ~5 min
    cqt               24              5 s               ~8 min
    raw               32              3 s              ~11 min
    concat            98             17 s              ~34 min
    late             102             17 s              ~35 min
    blend            107             16 s              ~37 min  (measuring for blending: ~8 %)
    blend-floor      as blend (same network and work)              ~37 min
    total                                              ~2.9 CPU hours, ~1.5 h on two free cores

plus about a minute per run to decode ESC-50. ``list`` prints the estimates for the current
budget.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import _runs
from _runs import ESC50, REPO, esc50_present, save_report


RUNS = REPO / "runs" / "bench" / "multiview_esc50"
RESULTS = REPO / "bench" / "results" / "multiview_esc50.json"
TIMING = REPO / "bench" / "results" / "multiview_esc50_timing.json"
WEIGHTS_PLOT = REPO / "docs" / "multiview" / "esc50_fold1_blending_weights.png"

CONFIGS = REPO / "bench" / "configs" / "multiview_esc50"
# the table's order; each row is a configuration file that `edgeaudio train --config` runs
ROWS = {row: CONFIGS / f"{row}.toml" for row in
        ("mel", "gammatone", "cqt", "raw", "concat", "late", "blend", "blend-floor")}
TIMED_AS = {"blend-floor": "blend"}  # same network and work: its cost is blend's
FOLD = 1
COST_NOTE = "run `time` first: it writes the measured CPU seconds per epoch"


def row_config(row: str, **overrides):
    return _runs.row_config(ROWS[row], fold=FOLD, **overrides)


def run_dir(row: str) -> Path:
    return RUNS / row / f"fold{FOLD}"


def cli_command(row: str) -> str:
    return _runs.row_command(ROWS[row], REPO, run_dir(row), fold=FOLD)


def run_rows(rows, progress: bool) -> None:
    import torch
    from edgeaudio.train.multiview_train import train_multiview

    torch.set_num_threads(1)
    for row in rows:
        out = run_dir(row)
        if (out / "metrics.json").exists():
            print(f"[{row}] done already", flush=True)
            continue
        print(f"[{row}] {cli_command(row)}", flush=True)
        t0 = time.time()
        metrics = train_multiview(row_config(row), out, resume=(out / "checkpoint.pt").exists(),
                                  progress=progress)
        print(f"[{row}] accuracy {metrics['accuracy']:.4f} ({(time.time() - t0) / 60:.1f} min)",
              flush=True)


def full_training_clips() -> int:
    """Training clips of a full run: fold 1 held out, then the blending validation split."""
    from edgeaudio.train.data import load_dataset, split_indices, validation_split
    dataset = load_dataset(ESC50, "esc50")
    cfg = row_config("mel")
    train, _ = split_indices(dataset, FOLD, seed=cfg.seed)
    return len(validation_split(dataset, train, fraction=cfg.val_fraction, seed=cfg.seed)[0])


def time_rows(rows, fraction: float) -> dict:
    """One epoch on ``fraction`` of the training clips per row; seconds scaled to a full epoch."""
    import torch
    from edgeaudio.train.multiview_train import train_multiview

    torch.set_num_threads(1)
    timing = json.loads(TIMING.read_text()) if TIMING.exists() else {}
    timing.setdefault("rows", {})
    for row in rows:
        out = RUNS / "timing" / row
        shutil.rmtree(out, ignore_errors=True)
        load_before = os.getloadavg()[0]
        t0 = time.time()
        metrics = train_multiview(row_config(row, epochs=1, eval_every=1,
                                             train_fraction=fraction), out, progress=False)
        wall = time.time() - t0
        first = metrics["history"][0]
        # CPU seconds of this process: what a run costs on a free core (wall time is longer
        # while other jobs share the cores), scaled by training clips
        per_epoch = first["cpu_seconds"] * full_training_clips() / metrics["n_train"]
        eval_s = first.get("eval_cpu_seconds", 0.0)
        timing["rows"][row] = {
            "fraction": fraction, "n_train": metrics["n_train"],
            "measured_epoch_cpu_seconds": first["cpu_seconds"],
            "full_training_clips": full_training_clips(),
            "measured_epoch_wall_seconds": first["seconds"],
            "cpu_seconds_per_epoch": round(per_epoch, 1),
            "eval_cpu_seconds_400_clips": eval_s, "wall_seconds": round(wall, 1),
            "params": metrics["params"], "macs_per_second": metrics["macs_per_second"],
            "load_average_before": round(load_before, 2)}
        print(f"[{row}] {per_epoch:.0f} CPU s / epoch (measured {first['cpu_seconds']:.0f} s on "
              f"{metrics['n_train']} clips), eval {eval_s:.0f} s -> {row_config(row).epochs} epochs "
              f"~{estimated_minutes(timing['rows'][row]):.0f} min", flush=True)
    timing.update({"machine": machine(), "threads": 1})
    TIMING.parent.mkdir(parents=True, exist_ok=True)
    TIMING.write_text(json.dumps(timing, indent=2) + "\n")
    return timing


def estimated_minutes(measured: dict) -> float:
    """A row's CPU minutes at this budget: its epochs plus a held-out evaluation every
    ``eval_every`` epochs and after the last."""
    cfg = row_config("mel")
    evals = -(-cfg.epochs // cfg.eval_every)
    return (cfg.epochs * measured["cpu_seconds_per_epoch"]
            + evals * measured["eval_cpu_seconds_400_clips"]) / 60


def machine() -> dict:
    return {"platform": platform.platform(), "cpus": os.cpu_count(),
            "processor": platform.processor() or platform.machine()}


def collect() -> dict:
    results = {"rows": [], "fold": FOLD, "epochs": row_config("mel").epochs, "machine": machine()}
    for row, path in ROWS.items():
        description = _runs.row_description(path)
        path = run_dir(row) / "metrics.json"
        if not path.exists():
            continue
        m = json.loads(path.read_text())
        results["rows"].append({
            "row": row, "description": description, "views": m["views"], "blend": m["blend"],
            "accuracy": m["accuracy"], "macro_f1": m["macro_f1"],
            "accuracy_by_readout": m["accuracy_by_readout"], "params": m["params"],
            "macs_per_second": m["macs_per_second"], "train_seconds": m["train_seconds"],
            "seconds_per_epoch": m["seconds_per_epoch"],
            "final_weights": (m.get("blending") or {}).get("final_weights"),
            "command": cli_command(row)})
    return results


def markdown(results: dict) -> str:
    lines = ["| row | fold 1 | other read-outs of the same run | params | MACs / s of audio | "
             "CPU training time |", "|---|---|---|---|---|---|"]
    for r in results["rows"]:
        extra = []
        acc = r["accuracy_by_readout"]
        if r["blend"] != "none" or len(r["views"]) > 1:
            if "joint" in acc["heads"] and r["blend"] != "none":
                extra.append(f"joint head {100 * acc['heads']['joint']:.1f}")
            if "self_ensemble_uniform" in acc:
                extra.append(f"equal-weight ensemble {100 * acc['self_ensemble_uniform']:.1f}")
            if "late_mean" in acc and r["blend"] != "late":
                extra.append(f"mean of view heads {100 * acc['late_mean']:.1f}")
            views = {k: v for k, v in acc["heads"].items() if k != "joint"}
            if views:
                extra.append("view heads " + ", ".join(f"{k} {100 * v:.1f}"
                                                      for k, v in views.items()))
        if r.get("final_weights"):
            extra.append("final weights " + ", ".join(f"{k} {v:.2f}"
                                                      for k, v in r["final_weights"].items()))
        lines.append(f"| {r['description']} | {100 * r['accuracy']:.1f} % | "
                     f"{'; '.join(extra) or '-'} | {r['params']:,} | "
                     f"{r['macs_per_second'] / 1e6:.0f} M | {r['train_seconds'] / 60:.0f} min |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="train rows (sequentially; resumable)")
    run.add_argument("rows", nargs="+", choices=list(ROWS))
    run.add_argument("--quiet", action="store_true")
    timing = sub.add_parser("time", help="one short timing epoch per row")
    timing.add_argument("rows", nargs="*", help=f"default: all of {', '.join(ROWS)}")
    timing.add_argument("--fraction", type=float, default=0.25,
                        help="share of the training clips in the timing epoch")
    sub.add_parser("report", help="collect finished runs, write the JSON, print the table")
    sub.add_parser("list", help="rows, their CLI commands and the measured cost")
    args = parser.parse_args(argv)
    if args.command == "list":
        measured = json.loads(TIMING.read_text())["rows"] if TIMING.exists() else {}
        total = 0.0
        for row, path in ROWS.items():
            description = _runs.row_description(path)
            timed = measured.get(TIMED_AS.get(row, row))
            cost = estimated_minutes(timed) if timed else None
            total += cost or 0.0
            print(f"{row:10s} {description}"
                  + (f"  (~{cost:.0f} min)" if cost else "") + f"\n    {cli_command(row)}")
        print(f"estimated total: ~{total / 60:.1f} CPU hours" if total else COST_NOTE)
        return 0
    if args.command in ("run", "time") and not esc50_present(ESC50):
        return 2
    if args.command == "run":
        run_rows(args.rows, not args.quiet)
        return 0
    if args.command == "time":
        unknown = [r for r in args.rows if r not in ROWS]
        if unknown:
            parser.error(f"unknown rows {unknown}; known: {', '.join(ROWS)}")
        time_rows(args.rows or list(ROWS), args.fraction)
        return 0
    results = collect()
    blend_plot = run_dir("blend") / "weights.png"
    if blend_plot.exists():
        WEIGHTS_PLOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(blend_plot, WEIGHTS_PLOT)
        print(f"{WEIGHTS_PLOT.relative_to(REPO)}", file=sys.stderr)
    save_report(results, RESULTS, markdown(results), REPO)
    return 0


if __name__ == "__main__":
    sys.exit(main())
