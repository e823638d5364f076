"""Run checkpoints run no code: every command that loads a student checkpoint or a
teacher-fit progress file (`export RUN`, `evaluate RUN`, `train --resume`,
`teacher fit --resume`) refuses a hostile pickle with exit 2 before its payload runs, and the
files training writes are plain data that load with ``weights_only=True``.

The hostile files carry a live payload (``__reduce__`` -> ``open(marker, "w")``): a control
load with ``weights_only=False`` creates the marker, so a path that slipped back to a full
unpickle would fail these tests.
"""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the train room needs torch")

from click.testing import CliRunner  # noqa: E402

from edgeaudio.cli import main  # noqa: E402
from edgeaudio.train.checkpoint import (CheckpointError, load_checkpoint,  # noqa: E402
                                        save_checkpoint, to_plain)

from .test_loop import toy_csv  # noqa: E402,F401  (the fixture)
from .test_teacher_files import CreatesMarker  # noqa: E402


def hostile_checkpoint(path, marker):
    """A file shaped like a student checkpoint whose metrics carry the payload."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": "edgeaudio-checkpoint", "format_version": 1, "student": "tiny",
                "frontend_settings": {}, "labels": ["a", "b"], "window_frames": 10,
                "model_state": {}, "epoch": 1, "config": {},
                "metrics": {"note": CreatesMarker(marker)}, "train_state": None}, path)
    return path


def test_the_payload_is_live_under_a_full_unpickle(tmp_path):
    marker = tmp_path / "ran"
    torch.load(hostile_checkpoint(tmp_path / "run" / "checkpoint.pt", marker),
               weights_only=False)
    assert marker.exists()


def test_a_hostile_checkpoint_is_refused_by_the_library(tmp_path):
    marker = tmp_path / "ran"
    path = hostile_checkpoint(tmp_path / "run" / "checkpoint.pt", marker)
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(path)
    assert not marker.exists()


@pytest.mark.parametrize("command", ["export", "evaluate", "train --resume"])
def test_every_command_refuses_a_hostile_checkpoint_with_exit_2(command, toy_csv, tmp_path):
    marker = tmp_path / "ran"
    run = tmp_path / "run"
    hostile_checkpoint(run / "checkpoint.pt", marker)
    args = {"export": ["export", str(run), "--format", "onnx", "--out", str(tmp_path / "x")],
            "evaluate": ["evaluate", str(run)],
            "train --resume": ["train", "--data", str(toy_csv), "--student", "tiny",
                               "--out", str(run), "--resume", "--quiet"]}[command]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert "refused" in result.output and "Traceback" not in result.output
    assert not marker.exists()


def test_teacher_fit_resume_refuses_a_hostile_progress_file(toy_csv, tmp_path):
    from ..conftest import SHARED
    if not (SHARED / "weights" / "efficientat" / "mn04_as_mAP_432.pt").exists():
        pytest.skip("EfficientAT mn04 weights not in the shared folder")
    out = tmp_path / "teacher"
    args = ["teacher", "fit", "--arch", "efficientat_mn04", "--data", str(toy_csv),
            "--fold", "2", "--epochs", "2", "--batch-size", "4", "--crop", "0.5",
            "--out", str(out), "--quiet"]
    first = CliRunner().invoke(main, args + ["--stop-after", "1"])
    assert first.exit_code == 0, first.output
    progress = out / "progress" / "member-0.pt"
    assert torch.load(progress, weights_only=True)["epoch"] == 1  # what fit writes is plain
    marker = tmp_path / "ran"
    torch.save({"model_state": {}, "epoch": 1, "note": CreatesMarker(marker)}, progress)
    result = CliRunner().invoke(main, args + ["--resume"])
    assert result.exit_code == 2, result.output
    assert "refused" in result.output and not marker.exists()


def test_checkpoints_training_writes_are_plain_data(tmp_path):
    state = {"w": torch.ones(2)}
    path = save_checkpoint(tmp_path / "c.pt", student_name="tiny", frontend_settings={"n": 1},
                           labels=["a", "b"], window_frames=np.int64(5), model_state=state,
                           epoch=1, config={"lr": np.float32(0.5)},
                           metrics={"acc": np.float64(0.25), "curve": np.arange(3)},
                           train_state={"history": [{"loss": np.float64(1.5)}],
                                        "pair": (1, 2)})
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["metrics"] == {"acc": 0.25, "curve": [0, 1, 2]}
    assert ckpt["train_state"]["history"][0]["loss"] == 1.5 and ckpt["window_frames"] == 5
    assert torch.equal(ckpt["model_state"]["w"], state["w"])
    with pytest.raises(TypeError, match="plain data and tensors only"):
        to_plain({"x": object()})
    # atomic: nothing but the checkpoint is left beside it
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]
