"""What the mn students' export tests share: a student trained one short epoch by the online
distillation loop on real ESC-50 clips (inheriting mn04 when its weights are in ../shared),
then ``edgeaudio export``-ed to the four files."""
from __future__ import annotations

import csv

from click.testing import CliRunner

from edgeaudio.cli import main
from edgeaudio.files import shared_dir
from edgeaudio.train.checkpoint import load_student

from ..conftest import esc50_csv

LABELS = ["dog", "rooster", "rain"]  # ESC-10 classes (CC BY)
FILES = ["model.onnx", "model.int8.onnx", "model.tflite", "model.int8.tflite"]
MN04_WEIGHTS = shared_dir() / "weights" / "efficientat" / "mn04_as_mAP_432.pt"


def train_and_export(root, student: str, export_args: list) -> dict:
    """``{"out": models folder, "output": export's output, "student", "ckpt", "clips": the
    held-out clips}``; ``export_args`` follow ``edgeaudio export RUN --int8``."""
    from edgeaudio.train.distill import DistillConfig, train_distill

    data = esc50_csv(root, LABELS, train_per_class=6, test_per_class=2)
    cfg = DistillConfig(data=str(data), fold=5, student=student, teacher="",
                        init="mn04" if MN04_WEIGHTS.exists() else "random", epochs=1,
                        batch_size=4, steps_per_epoch=3, crop_seconds=1.0, seed=0)
    run = root / "run"
    train_distill(cfg, run, progress=False)
    out = root / "models"
    result = CliRunner().invoke(main, ["export", str(run), "--int8", *export_args,
                                       "--out", str(out)])
    assert result.exit_code == 0, result.output
    student_, ckpt = load_student(run)
    clips = [r["path"] for r in csv.DictReader(open(data)) if r["fold"] == "5"]
    return {"out": out, "output": result.output, "student": student_, "ckpt": ckpt,
            "clips": clips}
