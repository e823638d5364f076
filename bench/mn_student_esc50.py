"""ESC-50 ablation of the student family and the recipe (acceptance 4 of the issue on a student
worth deploying): today's harmonic `small` student, the mn02 family from random weights and
from mn04's weights, each with the old recipe (cached probe KD, ``edgeaudio.train.loop``) and
the new one (online patient distillation, ``edgeaudio.train.distill``); the tiny mn01 row and
distillation from the fitted mn04 beside them. Fold 1 first; the best row then on 5 folds.

    .venv/bin/python bench/mn_student_esc50.py list            # rows, commands, estimated cost
    .venv/bin/python bench/mn_student_esc50.py time small-old mn02-inherit-distill
    nohup .venv/bin/python bench/mn_student_esc50.py run mn02-inherit-distill --folds 1 \
        > runs/bench-mn.log 2>&1 &                              # resumable, skips finished
    .venv/bin/python bench/mn_student_esc50.py deploy mn02-stream-inherit-distill   # export,
                                                                # score as classify does
    .venv/bin/python bench/mn_student_esc50.py report          # JSON + markdown table
    .venv/bin/python bench/mn_student_esc50.py sanity          # inherited weights: zero-shot

Each row is a configuration file ``bench/configs/mn_student_esc50/<row>.toml``; those with
``loop = "distill"`` run the distillation loop, the others ``edgeaudio train``'s student loop.
``mn02-inherit-old`` is mn02-random-old's file with ``init = "mn04"`` (``--init mn04``), and
``mn04-short320-inherit-old`` mn04-short320-random-old's.
Runs live in ``runs/bench/mn_student_esc50/<row>/fold<k>`` (gitignored); a killed row continues
from its checkpoint, a finished one (``metrics.json``) is skipped. One torch thread a run: at
most two at once on a 2-core machine. ``time`` runs 3 steps of each row on ESC-10 (the teacher
embeds 400 clips, not 2000) and stores CPU seconds per step and per clip embedded, from which
``list`` estimates a fold's cost. Nothing is hard-coded: ``report`` reads each run's metrics.

``sanity`` shows the inherited weights are meaningful before any training: on ESC-10 (fold 1
held out, 320 / 80 clips), the held-out accuracy of a linear probe on each student's pooled
embedding (inherited, by BN |gamma| and by filter L1, against the same network from random
weights, and mn04 itself through the students' 16 kHz front end), the correlation of the
inherited students' AudioSet logits with mn04's, and the front end's distance to EfficientAT's.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import _runs
from _runs import ESC50, REPO, clip_path, esc50_present, save_report


CONFIGS = REPO / "bench" / "configs" / "mn_student_esc50"
RUNS = REPO / "runs" / "bench" / "mn_student_esc50"
RESULTS = REPO / "bench" / "results" / "mn_student_esc50.json"
TIMING = REPO / "bench" / "results" / "mn_student_esc50_timing.json"
ROWS = ["small-old", "mn02-random-old", "mn02-inherit-old", "small-distill",
        "mn02-random-distill", "mn02-inherit-distill", "mn02-inherit-distill-patient",
        "mn01-inherit-distill", "mn02-inherit-distill-fitted", "mn02-stream-inherit-distill",
        "mn02-stream-inherit-distill-con", "mn04-short-inherit-distill",
        "mn04-short-stream-inherit-distill", "mn04-short320-inherit-distill",
        # the bundled family's own ablation: random weights, and the old recipe
        "mn04-short320-random-distill", "mn04-short320-random-old", "mn04-short320-inherit-old"]
TRAIN_CLIPS, CLIPS = 1600, 2000  # ESC-50, one fold held out
# rows that are another row's file with settings added: row -> (file's row, settings)
DERIVED = {"mn02-inherit-old": ("mn02-random-old", {"init": "mn04"}),
           "mn04-short320-inherit-old": ("mn04-short320-random-old", {"init": "mn04"})}
DESCRIPTIONS = {"mn02-inherit-old": "mn02 inherited from mn04, old recipe (cached probe KD 0.7)",
                "mn04-short320-inherit-old":
                    "mn04-short320 inherited from mn04, old recipe (cached probe KD 0.7)"}


def row_file(row: str) -> Path:
    return CONFIGS / f"{DERIVED.get(row, (row,))[0]}.toml"


def description(row: str) -> str:
    return DESCRIPTIONS.get(row) or _runs.row_description(row_file(row))


def is_distill(row: str) -> bool:
    from edgeaudio.train.distill import is_distill_config
    return is_distill_config(row_file(row))


def row_config(row: str, fold: int, **overrides):
    """The row's settings for ``fold`` (data: the shared ESC-50; a fitted teacher folder is
    relative to the repository)."""
    overrides = {**DERIVED.get(row, (row, {}))[1], **overrides}
    if not is_distill(row):
        return _runs.row_config(row_file(row), fold=fold, **overrides)
    from edgeaudio.train.distill import read_distill_config
    cfg = read_distill_config(row_file(row), data=str(ESC50), fold=fold, **overrides)
    if cfg.teacher and not Path(cfg.teacher).is_absolute() and "/" in cfg.teacher:
        cfg.teacher = str(REPO / cfg.teacher)
    return cfg


def not_runnable(row: str, fold: int) -> str | None:
    """Why a row cannot run yet, or None."""
    try:
        cfg = row_config(row, fold)
    except Exception as exc:  # a setting the student loop does not have yet
        return f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
    teacher = getattr(cfg, "teacher", "")
    if teacher and "/" in teacher and not Path(teacher).exists():
        return f"teacher folder {teacher} missing: run bench/teacher_fit.py first"
    if teacher and "/" in teacher and fold != 1:
        return "the fitted teacher trained on folds 2-5: fold 1 only"
    return None


def run_dir(row: str, fold: int) -> Path:
    return RUNS / row / f"fold{fold}"


def cli_command(row: str, fold: int) -> str:
    return _runs.row_command(row_file(row), REPO, run_dir(row, fold), fold=fold,
                             **DERIVED.get(row, (row, {}))[1])


def train_row(row: str, cfg, out: Path, progress: bool, **kwargs) -> dict:
    resume = (out / "checkpoint.pt").exists()
    if is_distill(row):
        from edgeaudio.train.distill import train_distill
        return train_distill(cfg, out, resume=resume, progress=progress, **kwargs)
    from edgeaudio.train.loop import train
    return train(cfg, out, resume=resume, progress=progress, **kwargs)


def run_rows(rows, folds, progress: bool) -> None:
    for row in rows:
        for fold in folds:
            out = run_dir(row, fold)
            why = not_runnable(row, fold)
            if (out / "metrics.json").exists():
                print(f"[{row} fold {fold}] done already", flush=True)
                continue
            if why:
                print(f"[{row} fold {fold}] skipped: {why}", flush=True)
                continue
            print(f"[{row} fold {fold}] {cli_command(row, fold)}", flush=True)
            t0 = time.time()
            metrics = train_row(row, row_config(row, fold), out, progress)
            print(f"[{row} fold {fold}] accuracy {metrics['accuracy']:.4f} "
                  f"({(time.time() - t0) / 60:.1f} min)", flush=True)


DEPLOYED_FILES = {"int8 TFLite": ("model.int8.tflite", "litert"),
                  "int8 ONNX": ("model.int8.onnx", "onnxruntime"),
                  "float TFLite": ("model.tflite", "litert")}


def deploy_rows(rows, folds, qat_epochs: int = 0, window: float | None = None) -> None:
    """Export each finished fold (``edgeaudio export``: int8 calibrated on 200 windows or
    calls from the training folds) and score the held-out fold's clips through the runtime
    exactly as ``edgeaudio classify`` does; ``deployed.json`` beside the run. With
    ``qat_epochs`` (window graphs), ``edgeaudio export --qat N`` instead: the int8 files
    are quantization-aware fine-tuned when PTQ costs over 0.5 points (on the run's
    validation clips when it has them, else on the held-out fold); ``export-qatN/`` and
    ``deployed-qatN.json``. With ``window`` (seconds), ``--window``: files that take windows
    of that length instead of the training crop (``-wS`` in the names)."""
    import csv

    from edgeaudio import Model
    from edgeaudio.export.cli import export_checkpoint
    from edgeaudio.files import atomic_write_json

    meta = list(csv.DictReader(open(ESC50 / "meta" / "esc50.csv")))
    labels = sorted({r["category"] for r in meta})
    for row in rows:
        for fold in folds:
            run = run_dir(row, fold)
            if not (run / "metrics.json").exists():
                print(f"[{row} fold {fold}] not trained yet", flush=True)
                continue
            suffix = (f"-qat{qat_epochs}" if qat_epochs else "") + \
                (f"-w{window:g}" if window else "")
            out = run / f"export{suffix}"
            if not (out / "model.int8.tflite").exists():
                t0 = time.time()
                # a run with validation clips exports on its own split, so that PTQ or QAT
                # is chosen on those clips; the others on the held-out fold
                validated = json.loads((run / "metrics.json").read_text()).get("n_validation")
                split = {} if validated else {"data": str(ESC50), "test_fold": fold}
                export_checkpoint(run, out, int8=True, calibration=200, **split,
                                  report=bool(qat_epochs),
                                  qat_epochs=qat_epochs, tflm=False, window_seconds=window,
                                  echo=print)
                print(f"[{row} fold {fold}] exported ({time.time() - t0:.0f} s)", flush=True)
            test = [r for r in meta if r["fold"] == str(fold)]
            result = {"clips": len(test), "files": {}}
            for name, (file, backend) in DEPLOYED_FILES.items():
                model = Model(out / file, backend=backend)
                correct = sum(model.classify(clip_path(r)).top(1)[0][0] == r["category"]
                              for r in test)
                result["files"][name] = {"accuracy": correct / len(test),
                                         "bytes": (out / file).stat().st_size,
                                         "backend": backend}
                print(f"[{row} fold {fold}] {name}: {100 * correct / len(test):.2f} % "
                      f"through classify", flush=True)
            assert sorted(model.labels) == labels, "the run's labels are ESC-50's categories"
            atomic_write_json(run / f"deployed{suffix}.json", result)


def time_rows(rows) -> dict:
    """3 training steps of each row on ESC-10 (fold 1 held out): CPU seconds per step, and
    the preparation (teacher embeddings of the clean clips) per clip."""
    import torch
    torch.set_num_threads(1)
    timing = json.loads(TIMING.read_text()) if TIMING.exists() else {"rows": {}}
    for row in rows:
        why = not_runnable(row, 1)
        if why:
            print(f"[{row}] not timed: {why}", flush=True)
            continue
        cfg = row_config(row, 1, classes="esc10", epochs=1, steps_per_epoch=3, eval_every=1)
        out = RUNS / "timing" / row
        shutil.rmtree(out, ignore_errors=True)
        cpu0, t0 = time.process_time(), time.time()
        metrics = train_row(row, cfg, out, progress=False)
        total_cpu = time.process_time() - cpu0
        epoch = metrics["history"][0]
        # the student loop's epochs record wall seconds only: an over-estimate under load
        measure = "cpu" if "cpu_seconds" in epoch else "wall"
        step_cpu = epoch.get("cpu_seconds", epoch["seconds"]) / 3
        clips = len(metrics["labels"]) * 40  # ESC-10: every clip decoded and embedded
        timing["rows"][row] = {
            "cpu_seconds_per_step": round(step_cpu, 3), "step_measure": measure,
            "cpu_seconds_outside_training": round(max(0.0, total_cpu - 3 * step_cpu), 1),
            "clips": clips, "wall_seconds": round(time.time() - t0, 1),
            "load_average": round(os.getloadavg()[0], 2), "params": metrics["params"]}
        hours = estimated_hours(row_config(row, 1), timing["rows"][row])
        print(f"[{row}] {step_cpu:.2f} CPU s / step -> ~{hours:.1f} CPU h for fold 1",
              flush=True)
    timing["threads"] = 1
    TIMING.parent.mkdir(parents=True, exist_ok=True)
    from edgeaudio.files import atomic_write_json
    atomic_write_json(TIMING, timing)
    return timing


def estimated_hours(cfg, measured: dict) -> float:
    """A fold's CPU hours: steps (1,600 training clips / batch x epochs) at the measured cost
    per step, plus the measured preparation and evaluation scaled from ESC-10's clips to
    ESC-50's (decoding, the teacher's clean embeddings; an over-estimate once cached)."""
    steps = TRAIN_CLIPS // cfg.batch_size * cfg.epochs
    outside = measured["cpu_seconds_outside_training"] * CLIPS / measured["clips"]
    return (steps * measured["cpu_seconds_per_step"] + outside) / 3600


def collect() -> dict:
    """Every row's finished folds; a fold whose run is not on this machine (runs/ is not kept
    from one checkout to the next) keeps the figures the results file already has."""
    kept = json.loads(RESULTS.read_text()) if RESULTS.exists() else {"rows": []}
    kept = {r["row"]: {int(k): v for k, v in r["folds"].items()} for r in kept["rows"]}
    results = {"rows": []}
    for row in ROWS:
        folds = dict(kept.get(row, {}))
        for fold, m in _runs.finished_folds(RUNS / row):
            kd = m.get("kd") or {}
            folds[fold] = {
                "accuracy": m["accuracy"], "macro_f1": m["macro_f1"], "params": m["params"],
                "macs_per_second": m["macs_per_second"], "train_seconds": m["train_seconds"],
                "epochs": m["epochs"], "teacher_test_accuracy": kd.get(
                    "teacher_test_accuracy", kd.get("probe_test_accuracy")),
                "command": cli_command(row, fold)}
            deployed = run_dir(row, fold) / "deployed.json"
            if deployed.exists():
                folds[fold]["deployed"] = json.loads(deployed.read_text())
            for variant in sorted(run_dir(row, fold).glob("deployed-*.json")):  # -qatN, -wS
                folds[fold][variant.stem] = json.loads(variant.read_text())
        if folds:
            folds = dict(sorted(folds.items()))
            accs = [f["accuracy"] for f in folds.values()]
            results["rows"].append({"row": row, "description": description(row),
                                    "folds": folds, "accuracy_mean": sum(accs) / len(accs),
                                    "deployed_means": deployed_means(folds)})
    return results


def deployed_means(folds: dict) -> dict:
    """For each deployment (``deployed``, ``deployed-qat2``, ...): its files' accuracy through
    classify averaged over the folds that have it, and which folds those are."""
    means: dict = {}
    for variant in sorted({k for f in folds.values() for k in f if k.startswith("deployed")}):
        have = {k: f[variant]["files"] for k, f in folds.items() if variant in f}
        means[variant] = {"folds": sorted(have), **{
            name: sum(files[name]["accuracy"] for files in have.values()) / len(have)
            for name in DEPLOYED_FILES if all(name in files for files in have.values())}}
    return means


def markdown(results: dict) -> str:
    lines = ["| row | fold 1 | fold 1, int8 TFLite via classify (size) | folds (mean: per "
             "fold) | params | MACs / s of audio | CPU training time / fold | teacher "
             "held-out |", "|---|---|---|---|---|---|---|---|"]
    for r in results["rows"]:
        folds = r["folds"]
        one = next(iter(folds.values()))
        fold1 = f"{100 * folds[1]['accuracy']:.1f}" if 1 in folds else "-"
        many = "-" if len(folds) < 2 else (f"{100 * r['accuracy_mean']:.1f}: " + ", ".join(
            f"{100 * folds[k]['accuracy']:.1f}" for k in sorted(folds)))
        macs = one["macs_per_second"]
        minutes = sum(f["train_seconds"] for f in folds.values()) / len(folds) / 60
        teacher = one["teacher_test_accuracy"]
        def how(variant: str) -> str:  # "deployed-qat2" -> "qat2" (export --qat 2)
            return variant[len("deployed-"):] or "PTQ"

        int8 = {k: v["files"]["int8 TFLite"] for k, v in (folds.get(1) or {}).items()
                if k.startswith("deployed")}
        deployed = ", ".join(f"{100 * f['accuracy']:.2f} {how(k)} ({f['bytes'] / 1000:.0f} KB)"
                             for k, f in int8.items()) or "-"
        means = [f"{100 * m['int8 TFLite']:.1f} {how(k)} (folds {','.join(map(str, m['folds']))})"
                 for k, m in r.get("deployed_means", {}).items() if len(m["folds"]) > 1]
        if means:
            many += "; int8 TFLite via classify: " + ", ".join(means)
        lines.append(f"| {r['description']} | {fold1} | {deployed} | {many} | {one['params']:,} | "
                     f"{macs['network'] / 1e6:.1f} M (+{macs['filterbank'] / 1e6:.1f} M front "
                     f"end) | {minutes:.0f} min | "
                     f"{'-' if teacher is None else f'{100 * teacher:.1f}'} |")
    return "\n".join(lines)


def sanity() -> dict:
    import csv

    import numpy as np
    import torch

    from edgeaudio.audio import load_audio
    from edgeaudio.train.losses import fit_probe
    from edgeaudio.train.frontend import TorchFrontend
    from edgeaudio.train.mn_student import (MNConfig, MNNetwork, MNStudent, build_mn_student,
                                            frontend_agreement, inherit_from_mn04, load_mn04,
                                            mn_frontend_spec)

    torch.set_num_threads(1)
    rows = [r for r in csv.DictReader(open(ESC50 / "meta" / "esc50.csv")) if r["esc10"] == "True"]
    waves = [load_audio(clip_path(r), 16000) for r in rows]
    labels = sorted({r["category"] for r in rows})
    y = np.array([labels.index(r["category"]) for r in rows])
    test = np.array([r["fold"] == "1" for r in rows])
    teacher = load_mn04()

    @torch.no_grad()
    def outputs(student):
        student.eval()
        out = [(student.embed(torch.from_numpy(w[None])), w) for w in waves]
        pooled = np.stack([e[0].mean(0).numpy() for e, _ in out])
        logits = np.stack([student.network.classify(e)[0].numpy() for e, _ in out])
        return pooled, logits

    def probe_accuracy(pooled):
        probe = fit_probe(pooled[~test], y[~test], len(labels), 10.0)
        return float((probe.logits(pooled[test]).argmax(1) == y[test]).mean())

    mn04 = MNStudent(MNConfig("mn04", "", 0.4), TorchFrontend(mn_frontend_spec()),
                     MNNetwork(MNConfig("mn04", "", 0.4), 527))
    inherit_from_mn04(mn04, teacher)
    pooled04, logits04 = outputs(mn04)
    results = {"clips": {"train": int((~test).sum()), "test": int(test.sum())},
               "frontend_vs_efficientat": frontend_agreement(waves[::40]),
               "probe_accuracy": {"mn04": probe_accuracy(pooled04)}, "logit_correlation": {}}
    for name in ("mn02", "mn01"):
        for how in ("bn", "l1", "random"):
            torch.manual_seed(0)  # the random arm's weights (and the heads') seeded
            student = build_mn_student(name, 527)
            if how != "random":
                inherit_from_mn04(student, teacher, how)
            pooled, logits = outputs(student)
            key = f"{name} {'random init' if how == 'random' else 'inherited (' + how + ')'}"
            results["probe_accuracy"][key] = probe_accuracy(pooled)
            results["logit_correlation"][key] = float(np.mean(
                [np.corrcoef(a, b)[0, 1] for a, b in zip(logits, logits04)]))
        print(json.dumps(results, indent=1), flush=True)
    from edgeaudio.files import atomic_write_json
    atomic_write_json(REPO / "bench" / "results" / "mn_student_sanity.json", results)
    return results


def list_rows() -> None:
    timing = json.loads(TIMING.read_text())["rows"] if TIMING.exists() else {}
    for row in ROWS:
        why = not_runnable(row, 1)
        cost = "run `time` for an estimate"
        if row in timing and not why:
            cost = f"~{estimated_hours(row_config(row, 1), timing[row]):.1f} CPU h for fold 1"
        loop = "distill" if is_distill(row) else "student loop"
        print(f"{row:30s} [{loop}] {description(row)}\n"
              f"    {cli_command(row, 1)}\n    {('NOT RUNNABLE: ' + why) if why else cost}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="train rows (sequentially; resumable)")
    run.add_argument("rows", nargs="+", choices=ROWS)
    run.add_argument("--folds", default="1")
    run.add_argument("--quiet", action="store_true")
    timed = sub.add_parser("time", help="3 steps of each row on ESC-10: the cost estimate")
    timed.add_argument("rows", nargs="*", choices=ROWS)
    deploy = sub.add_parser("deploy", help="export finished folds, score them as classify does")
    deploy.add_argument("rows", nargs="+", choices=ROWS)
    deploy.add_argument("--folds", default="1")
    deploy.add_argument("--qat-epochs", type=int, default=0,
                        help="quantization-aware fine-tuning when PTQ costs > 0.5 points")
    deploy.add_argument("--window", type=float, default=None,
                        help="seconds per model window (default: the training crop)")
    sub.add_parser("report", help="collect finished runs, write the JSON, print the table")
    sub.add_parser("list", help="rows, their commands and estimated cost")
    sub.add_parser("sanity", help="inherited weights before training: probe and logits")
    args = parser.parse_args(argv)
    if args.command == "list":
        list_rows()
        return 0
    if not esc50_present(ESC50):
        return 2
    if args.command == "run":
        import torch
        from edgeaudio.train.data import parse_folds
        torch.set_num_threads(1)
        run_rows(args.rows, parse_folds(args.folds), not args.quiet)
    elif args.command == "deploy":
        from edgeaudio.train.data import parse_folds
        deploy_rows(args.rows, parse_folds(args.folds), args.qat_epochs, args.window)
    elif args.command == "time":
        time_rows(args.rows or ROWS)
    elif args.command == "sanity":
        sanity()
    else:
        results = collect()
        save_report(results, RESULTS, markdown(results), REPO)
    return 0


if __name__ == "__main__":
    sys.exit(main())
