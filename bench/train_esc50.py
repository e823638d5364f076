"""ESC-50 ablation of the train CLI: student alone vs feature-informed regularisation vs
probe-then-distill, same student size and budget.

    # run rows (sequentially, each resumable: a killed row continues from its checkpoint)
    nohup .venv/bin/python bench/train_esc50.py run student con-yamnet --folds 1 > runs/bench-a.log 2>&1 &
    .venv/bin/python bench/train_esc50.py run kd --folds 1-5
    .venv/bin/python bench/train_esc50.py run student kd --folds 1 --fraction 0.1
    # collect what has finished into bench/results/train_esc50.json and print a markdown table
    .venv/bin/python bench/train_esc50.py report
    .venv/bin/python bench/train_esc50.py list        # rows and their equivalent CLI commands

Each row is a configuration file that ``edgeaudio train --config`` runs:
``bench/configs/train_esc50/<row>.toml`` (``kd+con`` is the recipe of the bundled model that
the mn04-short320 student replaced). Runs live in
``runs/bench/train_esc50/<row>[-frac<pct>]/fold<k>`` (gitignored). Run at most two at once on a
2-core machine (each uses one torch thread). Nothing here is hard-coded: the report reads each
run's ``metrics.json``.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import _runs
from _runs import ESC50, REPO, esc50_present, save_report


RUNS = REPO / "runs" / "bench" / "train_esc50"
RESULTS = REPO / "bench" / "results" / "train_esc50.json"
CONFIGS = REPO / "bench" / "configs" / "train_esc50"
# the table's order; every row is a configuration file (same student, epochs, schedule,
# augmentation; the rows differ in teachers and losses only)
ROW_FILES = {row: CONFIGS / f"{row}.toml" for row in (
    "student", "con-yamnet", "con-yamnet+efficientat", "dis-yamnet+efficientat", "kd",
    "kd+con", "kd-mix")}


def row_config(row: str, fold: int, fraction: float):
    return _runs.row_config(ROW_FILES[row], fold=fold, train_fraction=fraction)


def run_dir(row: str, fold: int, fraction: float) -> Path:
    suffix = "" if fraction >= 1.0 else f"-frac{int(round(fraction * 100))}"
    return RUNS / f"{row}{suffix}" / f"fold{fold}"


def cli_command(row: str, fold: int, fraction: float) -> str:
    flags = {"fold": fold, **({"train_fraction": fraction} if fraction < 1.0 else {})}
    return _runs.row_command(ROW_FILES[row], REPO, run_dir(row, fold, fraction), **flags)


def run_rows(rows, folds, fraction, progress):
    import torch
    from edgeaudio.train.loop import train

    torch.set_num_threads(1)
    for row in rows:
        for fold in folds:
            out = run_dir(row, fold, fraction)
            if (out / "metrics.json").exists():
                print(f"[{row} fold {fold} frac {fraction}] done already", flush=True)
                continue
            print(f"[{row} fold {fold} frac {fraction}] {cli_command(row, fold, fraction)}",
                  flush=True)
            t0 = time.time()
            metrics = train(row_config(row, fold, fraction), out,
                            resume=(out / "checkpoint.pt").exists(), progress=progress)
            print(f"[{row} fold {fold} frac {fraction}] accuracy {metrics['accuracy']:.4f} "
                  f"({(time.time() - t0) / 60:.1f} min)", flush=True)


def collect() -> dict:
    results = {"rows": [], "machine": {"platform": platform.platform(),
                                       "processor": platform.processor() or platform.machine(),
                                       "cpus": os.cpu_count()}}
    if not RUNS.exists():
        return results
    for folder in sorted(RUNS.iterdir()):
        name = folder.name
        row, fraction = name, 1.0
        if "-frac" in name:
            row, pct = name.rsplit("-frac", 1)
            fraction = int(pct) / 100
        if row not in ROW_FILES:
            continue
        folds = {}
        for fold, m in _runs.finished_folds(folder):
            folds[fold] = {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"],
                           "train_seconds": m["train_seconds"], "epochs": m["epochs"],
                           "n_train": m["n_train"], "params": m["params"],
                           "macs_per_second": m["macs_per_second"],
                           "probe_test_accuracy": (m.get("kd") or {}).get("probe_test_accuracy"),
                           "command": cli_command(row, fold, fraction)}
        if not folds:
            continue
        accs = [f["accuracy"] for f in folds.values()]
        results["rows"].append({
            "row": row, "description": _runs.row_description(ROW_FILES[row]), "train_fraction": fraction,
            "folds": folds, "accuracy_mean": sum(accs) / len(accs), "n_folds": len(accs)})
    return results


def markdown(results: dict) -> str:
    import statistics

    lines = ["| row | training data | fold 1 | all folds run (mean ± sd: per fold) | params | "
             "MACs / s of audio | CPU training time / fold |",
             "|---|---|---|---|---|---|---|"]
    probe = {}
    order = list(ROW_FILES)
    for r in sorted(results["rows"], key=lambda r: (-r["train_fraction"], order.index(r["row"]))):
        folds = r["folds"]
        one = next(iter(folds.values()))
        fold1 = f"{100 * folds[1]['accuracy']:.1f}" if 1 in folds else "-"
        accs = [folds[k]["accuracy"] for k in sorted(folds)]
        many = "-"
        if len(accs) > 1:
            many = (f"{100 * statistics.mean(accs):.1f} ± {100 * statistics.pstdev(accs):.1f} "
                    f"({', '.join(f'{100 * a:.1f}' for a in accs)})")
        minutes = sum(f["train_seconds"] for f in folds.values()) / len(folds) / 60
        macs = one["macs_per_second"]
        lines.append(f"| {r['description']} | {int(round(r['train_fraction'] * 100))} % | {fold1} | "
                     f"{many} | {one['params']:,} | {macs['network'] / 1e6:.1f} M "
                     f"(+{macs['filterbank'] / 1e6:.1f} M front end) | {minutes:.0f} min |")
        if r["train_fraction"] >= 1.0:
            for k, f in folds.items():
                if f.get("probe_test_accuracy") is not None:
                    probe[k] = f["probe_test_accuracy"]
    if probe:
        accs = [probe[k] for k in sorted(probe)]
        many = "-" if len(accs) < 2 else (
            f"{100 * statistics.mean(accs):.1f} ({', '.join(f'{100 * a:.1f}' for a in accs)})")
        lines.append(f"| reference: EfficientAT mn04 frozen + linear probe (the KD teacher; "
                     f"teacher at inference) | 100 % | "
                     f"{100 * probe[1]:.1f} | {many} | ~0.98 M + probe | - | - |"
                     if 1 in probe else "")
    return "\n".join(line for line in lines if line)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="train rows (sequentially; resumable)")
    run.add_argument("rows", nargs="+", choices=list(ROW_FILES))
    run.add_argument("--folds", default="1")
    run.add_argument("--fraction", type=float, default=1.0)
    run.add_argument("--quiet", action="store_true")
    sub.add_parser("report", help="collect finished runs, write the JSON, print the table")
    sub.add_parser("list", help="rows and their equivalent CLI commands")
    args = parser.parse_args(argv)
    if args.command == "list":
        for row in ROW_FILES:
            print(f"{row:24s} {_runs.row_description(ROW_FILES[row])}\n    {cli_command(row, 1, 1.0)}")
        return 0
    if args.command == "run":
        if not esc50_present(ESC50):
            return 2
        from edgeaudio.train.data import parse_folds
        run_rows(args.rows, parse_folds(args.folds), args.fraction, not args.quiet)
        return 0
    results = collect()
    save_report(results, RESULTS, markdown(results), REPO)
    return 0


if __name__ == "__main__":
    sys.exit(main())
