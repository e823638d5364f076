"""ESC-50 fold 1: fitted teachers (``edgeaudio teacher fit``) and a student distilled from them.

Questions, each on the same budget within a question:

1. pretrained vs random init: EfficientNet-Lite0 from ImageNet vs from random weights;
   EfficientAT mn04 from AudioSet vs from random weights (same epochs, one member each);
2. ensemble vs single: the Lite0 ensemble's held-out accuracy against its first member's and
   the mean member's (``teacher.json`` holds the ensemble of the first 1..N members);
3. student distilled from the fitted teacher vs student alone: the ``small`` harmonic student,
   40 epochs, KD weight 0.7 from the teacher's own heads (the ``kd`` row of
   ``bench/train_esc50.py`` with the fitted teacher in place of the EfficientAT linear probe);
   the student-alone and probe-KD rows are read from ``runs/bench/train_esc50``.

    .venv/bin/python bench/teacher_fit.py list          # rows, CLI commands, measured cost
    .venv/bin/python bench/teacher_fit.py time          # one short timing run per teacher row
    nohup nice .venv/bin/python bench/teacher_fit.py run mn04 mn04-random \\
        > runs/bench-teacher-fit.log 2>&1 &            # sequential, each resumable
    .venv/bin/python bench/teacher_fit.py run lite0-x2 lite0-random student-kd-lite0
    .venv/bin/python bench/teacher_fit.py report        # JSON + markdown table

Teachers live in ``runs/bench/teacher_fit/<row>`` and students in
``runs/bench/teacher_fit/<row>/fold1`` (gitignored). A student row needs its teacher row
finished (``run`` orders them). One torch thread per run.

Cost, measured by ``time`` (``bench/results/teacher_fit_timing.json``): CPU seconds of one
torch thread, one epoch on 100 training clips (5 %) scaled to the 1600 of a full epoch, plus
one held-out evaluation of 400 clips; 2-core Xeon VM shared with other trainings at the time
(wall time ran 1.5-3x the CPU time):

    row                  CPU s / epoch   evaluation   budget            run
    mn04                       99            9 s       20 epochs         ~36 min
    mn04-random                98           10 s       20 epochs         ~36 min
    lite0-x2                  168           14 s       2 x 10 epochs     ~61 min
    lite0-random              166           13 s       10 epochs         ~30 min
    densenet121-random        351           29 s       10 epochs         ~63 min  (optional)
    student-kd-mn04      teacher embeds 2000 clips once (~1 min) + 40 student epochs ~37 min
    student-kd-lite0     2 members embed 2000 clips (~3 min) + 40 student epochs     ~39 min
    total without DenseNet                                                ~4.0 CPU hours

(the student figure is the reference ``kd`` run's training time from bench/train_esc50.py).
``list`` prints the estimates for the current budget. The DenseNet row is optional: with no
ImageNet DenseNet weights on these machines it only shows what a random-init DenseNet reaches.
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

from _runs import ESC50, REPO, esc50_present, save_report


RUNS = REPO / "runs" / "bench" / "teacher_fit"
STUDENT_RUNS = REPO / "runs" / "bench" / "train_esc50"
RESULTS = REPO / "bench" / "results" / "teacher_fit.json"
TIMING = REPO / "bench" / "results" / "teacher_fit_timing.json"
FOLD = 1

# teacher rows: name -> (description, TeacherFitConfig overrides)
TEACHERS = {
    "mn04": ("EfficientAT mn04, AudioSet init", {"arch": "efficientat_mn04", "epochs": 20}),
    "mn04-random": ("EfficientAT mn04, random init",
                    {"arch": "efficientat_mn04", "epochs": 20, "pretrained": False}),
    "lite0-x2": ("EfficientNet-Lite0, ImageNet init, ensemble of 2",
                 {"arch": "efficientnet_lite0", "epochs": 10, "ensemble": 2}),
    "lite0-random": ("EfficientNet-Lite0, random init",
                     {"arch": "efficientnet_lite0", "epochs": 10, "pretrained": False}),
    # optional: no ImageNet DenseNet weights exist here, so only its random-init baseline
    "densenet121-random": ("DenseNet-121, random init (no ImageNet weights here)",
                           {"arch": "densenet121", "epochs": 10, "pretrained": False}),
}
# student rows: name -> (description, teacher row); the student recipe is bench/train_esc50's
STUDENTS = {
    "student-kd-mn04": ("small student + KD from the fitted mn04's head", "mn04"),
    "student-kd-lite0": ("small student + KD from the fitted Lite0 ensemble's heads",
                         "lite0-x2"),
}
STUDENT = {"layout": "esc50", "student": "small", "epochs": 40, "seed": 0, "kd": 0.7,
           "eval_every": 5}
REFERENCE_ROWS = {"student": "small student alone (bench/train_esc50.py)",
                  "kd": "small student + KD from the frozen EfficientAT linear probe "
                        "(bench/train_esc50.py)"}
COST = "run `time` first: it writes the measured CPU seconds per epoch"


def teacher_config(row: str, **overrides):
    from edgeaudio.train.teacher_fit import TeacherFitConfig
    return TeacherFitConfig(data=str(ESC50), layout="esc50", fold=FOLD,
                            **{**TEACHERS[row][1], **overrides})


def teacher_dir(row: str) -> Path:
    return RUNS / row


def student_config(row: str):
    from edgeaudio.train.loop import TrainConfig
    return TrainConfig(data=str(ESC50), fold=FOLD, kd_teachers=[str(teacher_dir(
        STUDENTS[row][1]))], **STUDENT)


def student_dir(row: str) -> Path:
    return RUNS / row / f"fold{FOLD}"


def cli_command(row: str) -> str:
    if row in STUDENTS:
        teacher = teacher_dir(STUDENTS[row][1]).relative_to(REPO)
        return (f"edgeaudio train --data ../shared/data/esc50 --layout esc50 --fold {FOLD} "
                f"--student {STUDENT['student']} --epochs {STUDENT['epochs']} --seed 0 "
                f"--kd {STUDENT['kd']} --kd-teacher {teacher} "
                f"--out {student_dir(row).relative_to(REPO)}")
    cfg = TEACHERS[row][1]
    parts = [f"edgeaudio teacher fit --arch {cfg['arch']}",
             f"--ensemble {cfg.get('ensemble', 1)}",
             f"--data ../shared/data/esc50 --layout esc50 --fold {FOLD}",
             f"--epochs {cfg['epochs']}"]
    if cfg.get("pretrained") is False:
        parts.append("--random-init")
    parts.append(f"--out {teacher_dir(row).relative_to(REPO)}")
    return " ".join(parts)


def run_rows(rows, progress: bool) -> None:
    import torch
    from edgeaudio.train.loop import train
    from edgeaudio.train.teacher_fit import fit_teacher
    from edgeaudio.train.teachers.fitted import read_manifest

    torch.set_num_threads(1)
    # teachers first, then the students that need them
    for row in sorted(rows, key=lambda r: r in STUDENTS):
        t0 = time.time()
        if row in TEACHERS:
            out = teacher_dir(row)
            manifest = read_manifest(out) if out.is_dir() else None
            if manifest is not None and manifest.get("complete"):
                print(f"[{row}] done already", flush=True)
                continue
            print(f"[{row}] {cli_command(row)}", flush=True)
            result = fit_teacher(teacher_config(row), out, resume=manifest is not None,
                                 progress=progress)
            print(f"[{row}] ensemble accuracy {result['ensemble_test_accuracy']:.4f} "
                  f"({(time.time() - t0) / 60:.1f} min)", flush=True)
            continue
        teacher = teacher_dir(STUDENTS[row][1])
        manifest = read_manifest(teacher) if teacher.is_dir() else None
        if manifest is None or not manifest.get("complete"):
            print(f"[{row}] needs the teacher row {STUDENTS[row][1]} finished first",
                  flush=True)
            continue
        out = student_dir(row)
        if (out / "metrics.json").exists():
            print(f"[{row}] done already", flush=True)
            continue
        print(f"[{row}] {cli_command(row)}", flush=True)
        metrics = train(student_config(row), out, resume=(out / "checkpoint.pt").exists(),
                        progress=progress)
        print(f"[{row}] accuracy {metrics['accuracy']:.4f} ({(time.time() - t0) / 60:.1f} min)",
              flush=True)


def reference_student_seconds() -> float | None:
    path = STUDENT_RUNS / "kd" / f"fold{FOLD}" / "metrics.json"
    return json.loads(path.read_text())["train_seconds"] if path.exists() else None


def full_training_clips() -> int:
    from edgeaudio.train.data import load_dataset, split_indices
    return len(split_indices(load_dataset(ESC50, "esc50"), FOLD)[0])


def time_rows(rows, fraction: float) -> dict:
    """One epoch of one member on ``fraction`` of the training clips per teacher row."""
    import torch
    from edgeaudio.train.teacher_fit import fit_teacher

    torch.set_num_threads(1)
    timing = json.loads(TIMING.read_text()) if TIMING.exists() else {}
    timing.setdefault("rows", {})
    for row in rows:
        out = RUNS / "timing" / row
        shutil.rmtree(out, ignore_errors=True)
        load_before = os.getloadavg()[0]
        t0 = time.time()
        result = fit_teacher(teacher_config(row, epochs=1, ensemble=1, train_fraction=fraction),
                             out, progress=False)
        member = result["per_member"][0]
        first = member["history"][0]
        # CPU seconds (the cost on a free core), scaled by clips: a step's cost is per clip
        per_epoch = first["cpu_seconds"] * full_training_clips() / result["n_train"]
        eval_s = first["eval_cpu_seconds"]
        timing["rows"][row] = {
            "fraction": fraction, "n_train": result["n_train"],
            "measured_epoch_cpu_seconds": first["cpu_seconds"],
            "full_training_clips": full_training_clips(),
            "measured_epoch_wall_seconds": first["seconds"],
            "cpu_seconds_per_epoch": round(per_epoch, 1),
            "eval_cpu_seconds_400_clips": eval_s, "params": member["params"],
            "wall_seconds": round(time.time() - t0, 1),
            "load_average_before": round(load_before, 2)}
        print(f"[{row}] {per_epoch:.0f} CPU s / epoch (measured {first['cpu_seconds']:.0f} s "
              f"on {result['n_train']} clips), held-out eval {eval_s:.0f} s -> "
              f"~{estimated_minutes(row, timing['rows']):.0f} min at this budget", flush=True)
    timing.update({"machine": machine(), "threads": 1})
    TIMING.parent.mkdir(parents=True, exist_ok=True)
    TIMING.write_text(json.dumps(timing, indent=2) + "\n")
    return timing


def estimated_minutes(row: str, measured: dict) -> float | None:
    """CPU minutes of a row at this budget from the measured per-epoch figures: members x
    epochs x (a training epoch + a held-out evaluation); a student row: its teacher embedding
    the 2000 clips once (5 x the 400-clip evaluation, per member) plus the reference student
    run's training time (bench/train_esc50.py's kd row)."""
    if row in TEACHERS:
        if row not in measured:
            return None
        cfg, m = TEACHERS[row][1], measured[row]
        return cfg.get("ensemble", 1) * cfg["epochs"] * (
            m["cpu_seconds_per_epoch"] + m["eval_cpu_seconds_400_clips"]) / 60
    teacher_row = STUDENTS[row][1]
    student_s = reference_student_seconds()
    if teacher_row not in measured or student_s is None:
        return None
    members = TEACHERS[teacher_row][1].get("ensemble", 1)
    return (5 * measured[teacher_row]["eval_cpu_seconds_400_clips"] * members + student_s) / 60


def machine() -> dict:
    return {"platform": platform.platform(), "cpus": os.cpu_count(),
            "processor": platform.processor() or platform.machine()}


def collect() -> dict:
    from edgeaudio.train.teachers.fitted import read_manifest

    results = {"teachers": [], "students": [], "fold": FOLD, "machine": machine()}
    for row, (description, _) in TEACHERS.items():
        manifest = read_manifest(teacher_dir(row)) if teacher_dir(row).is_dir() else None
        if manifest is None or not manifest.get("complete"):
            continue
        members = manifest["per_member"]
        results["teachers"].append({
            "row": row, "description": description, "arch": manifest["arch"],
            "pretrained": manifest["pretrained"], "members": len(members),
            "epochs": manifest["config"]["epochs"],
            "member_accuracy": [m["test_accuracy"] for m in members],
            "ensemble_accuracy": manifest["ensemble_test_accuracy"],
            "ensemble_accuracy_by_size": manifest["ensemble_test_accuracy_by_size"],
            "params": members[0]["params"], "train_seconds": manifest["train_seconds"],
            "command": cli_command(row)})
    for row, description in REFERENCE_ROWS.items():
        path = STUDENT_RUNS / row / f"fold{FOLD}" / "metrics.json"
        if path.exists():
            m = json.loads(path.read_text())
            results["students"].append({"row": row, "description": description,
                                        "accuracy": m["accuracy"],
                                        "train_seconds": m["train_seconds"]})
    for row, (description, teacher_row) in STUDENTS.items():
        path = student_dir(row) / "metrics.json"
        if path.exists():
            m = json.loads(path.read_text())
            results["students"].append({
                "row": row, "description": description, "accuracy": m["accuracy"],
                "teacher_accuracy": (m.get("kd") or {}).get("teacher_test_accuracy"),
                "train_seconds": m["train_seconds"], "command": cli_command(row)})
    return results


def markdown(results: dict) -> str:
    lines = ["| teacher | epochs | held-out accuracy | members (each) | params / member | "
             "CPU fitting time |", "|---|---|---|---|---|---|"]
    for t in results["teachers"]:
        each = ", ".join(f"{100 * a:.1f}" for a in t["member_accuracy"])
        lines.append(f"| {t['description']} | {t['epochs']} | "
                     f"{100 * t['ensemble_accuracy']:.1f} % | {each} | {t['params']:,} | "
                     f"{t['train_seconds'] / 60:.0f} min |")
    lines += ["", "| student (small, 40 epochs) | fold 1 | teacher held-out | CPU training time |",
              "|---|---|---|---|"]
    for s in results["students"]:
        teacher = s.get("teacher_accuracy")
        lines.append(f"| {s['description']} | {100 * s['accuracy']:.1f} % | "
                     f"{'-' if teacher is None else f'{100 * teacher:.1f} %'} | "
                     f"{s['train_seconds'] / 60:.0f} min |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    rows = list(TEACHERS) + list(STUDENTS)
    run = sub.add_parser("run", help="fit teachers / train students (sequentially; resumable)")
    run.add_argument("rows", nargs="+", choices=rows)
    run.add_argument("--quiet", action="store_true")
    timing = sub.add_parser("time", help="one short timing epoch per teacher row")
    timing.add_argument("rows", nargs="*", help=f"default: all of {', '.join(TEACHERS)}")
    timing.add_argument("--fraction", type=float, default=0.05,
                        help="share of the training clips in the timing epoch")
    sub.add_parser("report", help="collect finished rows, write the JSON, print the tables")
    sub.add_parser("list", help="rows, their CLI commands and the measured cost")
    args = parser.parse_args(argv)
    if args.command == "list":
        measured = json.loads(TIMING.read_text())["rows"] if TIMING.exists() else {}
        total = 0.0
        for row in rows:
            description = (TEACHERS.get(row) or STUDENTS[row])[0]
            cost = estimated_minutes(row, measured)
            total += cost or 0.0
            print(f"{row:20s} {description}" + (f"  (~{cost:.0f} min)" if cost else "")
                  + f"\n    {cli_command(row)}")
        print(f"estimated total: ~{total / 60:.1f} CPU hours" if total else COST)
        return 0
    if args.command in ("run", "time") and not esc50_present(ESC50):
        return 2
    if args.command == "run":
        run_rows(args.rows, not args.quiet)
        return 0
    if args.command == "time":
        unknown = [r for r in args.rows if r not in TEACHERS]
        if unknown:
            parser.error(f"unknown teacher rows {unknown}; known: {', '.join(TEACHERS)}")
        time_rows(args.rows or list(TEACHERS), args.fraction)
        return 0
    results = collect()
    save_report(results, RESULTS, markdown(results), REPO)
    return 0


if __name__ == "__main__":
    sys.exit(main())
