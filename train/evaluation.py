"""Held-out figures of a student: the classification report, and ``evaluate_run`` (a finished
run's checkpoint scored on its held-out split or on other data: ``edgeaudio evaluate``)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeaudio.files import atomic_write_json

from .checkpoint import load_student
from .config import TrainConfig, TrainError
from .data import Dataset, DatasetError, decode_dataset, load_dataset, split_indices
from .modules import RunModules, predict
from .plots import plot_confusion
from .preparation import load_run_dataset


def classification_report(targets: np.ndarray, predictions: np.ndarray, labels: list) -> dict:
    n = len(labels)
    confusion = np.zeros((n, n), dtype=np.int64)
    np.add.at(confusion, (targets, predictions), 1)
    per_class = {}
    f1s = []
    for c, label in enumerate(labels):
        tp = confusion[c, c]
        support = confusion[c].sum()
        predicted = confusion[:, c].sum()
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[label] = {"precision": round(float(precision), 4),
                            "recall": round(float(recall), 4), "f1": round(float(f1), 4),
                            "support": int(support)}
        if support:
            f1s.append(f1)
    accuracy = float((targets == predictions).mean()) if len(targets) else float("nan")
    return {"accuracy": accuracy, "macro_f1": float(np.mean(f1s)) if f1s else float("nan"),
            "n_clips": int(len(targets)), "per_class": per_class,
            "confusion": confusion.tolist()}


# ---------------------------------------------------------------------------- plots



def evaluate_run(run_dir, data: str | None = None, layout: str | None = None,
                 fold: int | None = None, *, progress: bool = True,
                 out: Path | None = None) -> dict:
    """Score a run's checkpoint on its held-out split (or on ``data``, all of it when it has
    no folds and ``fold`` is not given): accuracy, per-class report, confusion matrix PNG."""
    run_dir = Path(run_dir)
    student, ckpt = load_student(run_dir)
    cfg = TrainConfig.from_dict(ckpt.get("config") or {"data": data or ""})
    if cfg.method != "student":
        raise TrainError(f"{run_dir}: method {cfg.method!r} needs the teacher at inference; "
                         f"its metrics.json holds its held-out figures")
    labels = list(ckpt["labels"])
    rate = student.frontend.spec.sample_rate
    if data is None:
        if not cfg.data:
            raise TrainError(f"{run_dir}: the checkpoint does not record its data; pass --data")
        dataset = load_run_dataset(cfg)[0]
        dataset, waves = decode_dataset(dataset, rate, skip_unreadable=cfg.skip_unreadable,
                                        progress=progress)
        _, indices = split_indices(dataset, cfg.fold, seed=cfg.seed,
                                   test_fraction=cfg.test_fraction)
    else:
        dataset = load_dataset(data, layout)
        unknown = [item for item in dataset.items if item.label not in labels]
        if unknown:
            raise DatasetError(f"{unknown[0].where or unknown[0].path}: label "
                               f"{unknown[0].label!r} is unknown to the model "
                               f"({len(unknown)} file(s) in all; the model knows: "
                               f"{', '.join(labels[:10])}{' ...' if len(labels) > 10 else ''})")
        dataset = Dataset(dataset.items, labels, dataset.kind, dataset.source, dataset.skipped)
        dataset, waves = decode_dataset(dataset, rate, progress=progress)
        if fold is not None:
            folds = np.array([item.fold for item in dataset.items])
            indices = np.flatnonzero(folds == fold)
            if not len(indices):
                raise DatasetError(f"fold {fold} not in {data}")
        else:
            indices = np.arange(len(dataset.items))
    logits = predict(RunModules.student_only(student), waves, indices)
    report = classification_report(dataset.targets[indices], logits.argmax(1), labels)
    out = Path(out) if out else run_dir
    out.mkdir(parents=True, exist_ok=True)
    report.update({"checkpoint_epoch": int(ckpt.get("epoch", 0)), "data": dataset.source,
                   "labels": labels})
    atomic_write_json(out / "evaluation.json", report)
    plot_confusion(report["confusion"], labels, out / "evaluation_confusion.png",
                   f"accuracy {report['accuracy']:.3f} on {len(indices)} clips")
    return report
