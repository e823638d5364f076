"""Cross-domain contrastive regularization (Lee & Lee) on the `small` student: the paper's
ESC-10 label-fraction experiment, and one cross-domain row.

    # rows run sequentially, each fold resumable (a killed run continues from its checkpoint)
    nohup .venv/bin/python bench/contrastive_esc10.py run esc10 --folds 1-5 > runs/bench-c.log 2>&1 &
    .venv/bin/python bench/contrastive_esc10.py run esc10-contrastive-frac10 --folds 1
    .venv/bin/python bench/contrastive_esc10.py run cross-domain --folds 1-5
    # collect finished runs into bench/results/contrastive_esc10.json, print a markdown table
    .venv/bin/python bench/contrastive_esc10.py report
    .venv/bin/python bench/contrastive_esc10.py list      # rows and their equivalent CLI commands
    # seconds per epoch on this machine (2 epochs of one row: a labels-only warm-up epoch,
    # then a contrastive one) and the cost of the whole experiment
    .venv/bin/python bench/contrastive_esc10.py time

ESC-10 rows: the 10 ESC-10 classes labeled, 10 / 25 / 50 / 100 % of each training fold's clips
(stratified, seeded), 5 folds, supervised vs contrastive. The unlabeled pool of a contrastive
row is ESC-40 (`--unlabeled rest`): the 40 other ESC-50 classes from the four training folds,
never the held-out one. Every ESC-10 row takes the same number of optimizer steps: 10 per
epoch (one pass over the full ESC-10 training folds at batch 32; smaller label fractions cycle
through their clips more often), so rows differ in labels, not in training length.
Cross-domain rows: all of ESC-50 labeled, unlabeled = spoken digits (FSDD) + drum one-shots,
vs the plain student with the same schedule.

Held-out accuracy is measured after every epoch; the table reports the best epoch and the
mean of the last 20 epochs (the paper's two figures), each as mean ± sd over the folds run.

Epoch budget, measured by the fold-1 runs on the 2-core development machine (two runs at once,
one thread each; ``train_seconds`` in each run's metrics.json): an ESC-10 epoch (10 steps of 32
clips, 4 s crops) takes 6.4 s on labels alone and about 40 s with the contrastive term (its
step forwards 4 x 32 clips: the labeled and unlabeled originals and their mixed views, against
32 for the labels alone); a contrastive run peaks at about 4 GB of RAM (ESC-40 pool 0.5 GB, the
rest activations). At ``EPOCHS`` = 60 (600 steps, enough for the last-20 mean to sit on the
plateau of the cosine schedule) a supervised ESC-10 run takes 6.4 min and a contrastive one
35-39 min, so the 40 ESC-10 runs cost about 14 h of one core. The cross-domain rows (50 steps
per epoch, ``CROSS_EPOCHS`` = 40, as bench/train_esc50.py) should cost, from 5x those epoch
times, about 2.4 h per fold (0.4 h supervised, 2 h contrastive), 12 h for 5 folds. Two runs
at once: about 7 h for the ESC-10 experiment and 13 h for everything. `time` gives a quick
estimate from 2 epochs.
Nothing here is hard-coded: the report reads each run's ``metrics.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import _runs
from _runs import ESC50, REPO, esc50_present, save_report


RUNS = REPO / "runs" / "bench" / "contrastive_esc10"
RESULTS = REPO / "bench" / "results" / "contrastive_esc10.json"
CURVES_PLOT = REPO / "docs" / "contrastive" / "esc10_label_fractions.png"

EPOCHS = 60          # ESC-10 rows (as their configuration files say): 600 steps of 32 clips
CROSS_EPOCHS = 40    # ESC-50 rows: 2000 steps (the schedule of bench/train_esc50.py)
LAST = 20            # "mean of the last 20 epochs"
FRACTIONS = (0.1, 0.25, 0.5, 1.0)
ESC10_STEPS_PER_EPOCH = 10  # 320 ESC-10 training clips / batch 32
CONFIGS = REPO / "bench" / "configs" / "contrastive_esc10"
# each row is a configuration file that `edgeaudio train --config` runs; this is the table's order
ROWS = {row: CONFIGS / f"{row}.toml" for row in (
    [f"esc10-{arm}-frac{int(round(f * 100))}" for f in FRACTIONS
     for arm in ("supervised", "contrastive")]
    + ["esc50-supervised", "esc50-contrastive-fsdd+drums"])}
GROUPS = {"esc10": [r for r in ROWS if r.startswith("esc10-")],
          "cross-domain": [r for r in ROWS if r.startswith("esc50-")], "all": list(ROWS)}


def row_config(row: str, fold: int, **overrides):
    return _runs.row_config(ROWS[row], fold=fold, **overrides)


def run_dir(row: str, fold: int) -> Path:
    return RUNS / row / f"fold{fold}"


def cli_command(row: str, fold: int) -> str:
    return _runs.row_command(ROWS[row], REPO, run_dir(row, fold), fold=fold)


def run_rows(rows, folds, progress):
    import torch
    from edgeaudio.train.loop import train

    torch.set_num_threads(1)
    for row in rows:
        for fold in folds:
            out = run_dir(row, fold)
            if (out / "metrics.json").exists():
                print(f"[{row} fold {fold}] done already", flush=True)
                continue
            print(f"[{row} fold {fold}] {cli_command(row, fold)}", flush=True)
            t0 = time.time()
            metrics = train(row_config(row, fold), out,
                            resume=(out / "checkpoint.pt").exists(), progress=progress)
            print(f"[{row} fold {fold}] accuracy {metrics['accuracy']:.4f} "
                  f"({(time.time() - t0) / 60:.1f} min)", flush=True)


def held_out_curve(metrics: dict) -> list[float]:
    return [e["test_acc"] for e in metrics["history"] if e.get("test_acc") is not None]


def collect() -> dict:
    results = {"rows": [], "epochs": {"esc10": EPOCHS, "esc50": CROSS_EPOCHS}, "last": LAST,
               "machine": {"platform": platform.platform(),
                           "processor": platform.processor() or platform.machine(),
                           "cpus": os.cpu_count()}}
    for row, path in ROWS.items():
        folds = {}
        for fold, m in _runs.finished_folds(RUNS / row):
            curve = held_out_curve(m)
            folds[fold] = {"best": max(curve), "last_mean": statistics.mean(curve[-LAST:]),
                           "curve": curve,
                           "contrastive_warmup": (m.get("contrastive") or {}).get("warmup_epochs"),
                           "final": m["accuracy"], "epochs_evaluated": len(curve),
                           "n_train": m["n_train"], "train_seconds": m["train_seconds"],
                           "unlabeled_items": ((m.get("contrastive") or {}).get("unlabeled")
                                               or {}).get("items"),
                           "command": cli_command(row, fold)}
        if folds:
            results["rows"].append({"row": row, "description": _runs.row_description(path),
                                    "train_fraction": row_config(row, 1).train_fraction,
                                    "folds": folds})
    return results


def spread(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{100 * values[0]:.1f}"
    return f"{100 * statistics.mean(values):.1f} ± {100 * statistics.pstdev(values):.1f}"


def markdown(results: dict) -> str:
    by_row = {r["row"]: r for r in results["rows"]}
    lines = [f"| labeled data | unlabeled pool | folds | supervised: best | last {LAST} | "
             f"contrastive: best | last {LAST} |", "|---|---|---|---|---|---|---|"]
    pairs = [(f"ESC-10, {int(round(f * 100))} % of the labels", "ESC-40",
              f"esc10-supervised-frac{int(round(f * 100))}",
              f"esc10-contrastive-frac{int(round(f * 100))}") for f in FRACTIONS]
    pairs.append(("ESC-50", "FSDD + drums", "esc50-supervised", "esc50-contrastive-fsdd+drums"))
    for labeled, pool, plain, contrastive in pairs:
        arms = [by_row.get(row, {"folds": {}})["folds"] for row in (plain, contrastive)]
        # a paired comparison: where both arms ran, only the folds both finished
        common = set(arms[0]) & set(arms[1])
        folds_run = common if all(arms) else set(arms[0]) | set(arms[1])
        if not folds_run:
            continue
        cells = []
        for folds in arms:
            chosen = [folds[k] for k in sorted(folds_run) if k in folds]
            cells += [spread([f["best"] for f in chosen]), spread([f["last_mean"] for f in chosen])]
        lines.append(f"| {labeled} | {pool} | {','.join(map(str, sorted(folds_run)))} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_curves(results: dict, path: Path) -> Path | None:
    """Held-out accuracy per epoch (mean over the folds run), one panel per label fraction:
    supervised against contrastive, the contrastive warm-up and the last-20 window marked."""
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    by_row = {r["row"]: r for r in results["rows"]}
    fractions = [f for f in FRACTIONS
                 if any(f"esc10-{arm}-frac{int(round(f * 100))}" in by_row
                        for arm in ("supervised", "contrastive"))]
    if not fractions:
        return None
    figure, axes = plt.subplots(1, len(fractions), figsize=(3.6 * len(fractions), 3.2),
                                sharey=True, squeeze=False)
    for ax, fraction in zip(axes[0], fractions):
        pct = int(round(fraction * 100))
        for arm, colour in (("supervised", "tab:blue"), ("contrastive", "tab:orange")):
            row = by_row.get(f"esc10-{arm}-frac{pct}")
            if not row:
                continue
            curves = [f["curve"] for f in row["folds"].values()]
            length = min(len(c) for c in curves)
            mean = [statistics.mean(c[i] for c in curves) * 100 for i in range(length)]
            folds = sorted(row["folds"])
            ax.plot(range(1, length + 1), mean, color=colour,
                    label=f"{arm} (fold{'s' * (len(folds) > 1)} {','.join(map(str, folds))})")
        ax.axvspan(EPOCHS - LAST + 0.5, EPOCHS + 0.5, color="0.9", zorder=0)
        warmups = {f["contrastive_warmup"] for r in by_row.values() if r["train_fraction"] == fraction
                   for f in r["folds"].values()
                   if r["row"].startswith("esc10-") and f.get("contrastive_warmup")}
        for warmup in warmups:  # as each run recorded it
            ax.axvline(warmup + 0.5, color="0.6", lw=0.8, ls=":")
        ax.set_title(f"ESC-10, {pct} % of the labels", fontsize=10)
        ax.set_xlabel("epoch (10 steps)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("held-out accuracy (%)")
    axes[0][0].legend(fontsize=8, loc="lower right")
    figure.suptitle("Contrastive regularization, ESC-40 unlabeled (dotted: warm-up ends; "
                    f"grey: last {LAST} epochs)", fontsize=10)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def time_epochs(row: str, fold: int) -> dict:
    """Two epochs of ``row`` into a scratch folder: the first on labels alone (the contrastive
    warm-up), the second with the contrastive term; seconds per epoch and the full cost."""
    import torch
    from edgeaudio.train.loop import train

    torch.set_num_threads(1)
    t0, cpu0 = time.time(), time.process_time()
    with tempfile.TemporaryDirectory() as scratch:
        metrics = train(row_config(row, fold, epochs=2, contrastive_warmup=1), scratch,
                        progress=False)
    supervised, contrastive = (e["seconds"] for e in metrics["history"])
    per_pair = supervised + contrastive  # one supervised and one contrastive epoch
    esc50_steps_ratio = 1600 / 32 / ESC10_STEPS_PER_EPOCH  # ESC-50 epochs are 5x longer
    return {"row": row, "fold": fold, "seconds_per_epoch_supervised": supervised,
            "seconds_per_epoch_contrastive": contrastive,
            "wall_seconds": round(time.time() - t0, 1),
            "cpu_seconds": round(time.process_time() - cpu0, 1),
            "esc10_experiment_hours_one_core": round(
                len(FRACTIONS) * 5 * EPOCHS * per_pair / 3600, 1),
            "cross_domain_hours_one_core": round(
                esc50_steps_ratio * CROSS_EPOCHS * 5 * per_pair / 3600, 1)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="train rows (sequentially; resumable)")
    run.add_argument("rows", nargs="+", choices=list(ROWS) + list(GROUPS))
    run.add_argument("--folds", default="1-5")
    run.add_argument("--quiet", action="store_true")
    timing = sub.add_parser("time", help="seconds per epoch (2 epochs of one row) and the cost")
    timing.add_argument("row", nargs="?", default="esc10-contrastive-frac100", choices=list(ROWS))
    timing.add_argument("--fold", type=int, default=1)
    sub.add_parser("report", help="collect finished runs, write the JSON, print the table")
    sub.add_parser("list", help="rows and their equivalent CLI commands")
    args = parser.parse_args(argv)
    if args.command == "list":
        for row, path in ROWS.items():
            print(f"{row:30s} {_runs.row_description(path)}\n    {cli_command(row, 1)}")
        return 0
    if args.command in ("run", "time") and not esc50_present(ESC50):
        return 2
    if args.command == "time":
        print(json.dumps(time_epochs(args.row, args.fold), indent=2))
        return 0
    if args.command == "run":
        from edgeaudio.train.data import parse_folds
        rows = list(dict.fromkeys(r for name in args.rows for r in GROUPS.get(name, [name])))
        run_rows(rows, parse_folds(args.folds), not args.quiet)
        return 0
    results = collect()
    save_report(results, RESULTS, markdown(results), REPO)
    plot = plot_curves(results, CURVES_PLOT)
    if plot:
        print(f"curves: {os.path.relpath(plot, REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
