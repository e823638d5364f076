"""Multi-view training end to end on real ESC-50 clips: `edgeaudio train --student multiview`
through the real CLI, blending weights logged and plotted, the self-ensemble read out, resume
equal to an uninterrupted run."""
from __future__ import annotations

import csv
import json

import pytest
from click.testing import CliRunner

torch = pytest.importorskip("torch", reason="the train room needs torch")

from edgeaudio.cli import main  # noqa: E402
from edgeaudio.train.multiview_train import MultiViewConfig, train_multiview  # noqa: E402

from ..conftest import esc50_clip, esc50_rows  # noqa: E402

CLASSES = ("dog", "rooster", "rain")
SMALL = {"branch": {"channels": [4, 8], "rnn_hidden": 8},
         "raw_branch": {"channels": [4, 8, 8], "rnn_hidden": 8}}


@pytest.fixture(scope="module")
def small_csv(esc50, tmp_path_factory):
    """5 training clips (fold 1) and 2 held-out clips (fold 2) of 3 ESC-50 classes."""
    rows = []
    for cat in CLASSES:
        mine = [r for r in esc50_rows() if r["category"] == cat]
        rows += [(str(esc50_clip(r["filename"])), cat, 1) for r in mine if r["fold"] == "1"][:5]
        rows += [(str(esc50_clip(r["filename"])), cat, 2) for r in mine if r["fold"] == "2"][:2]
    path = tmp_path_factory.mktemp("mv") / "labels.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "fold"])
        writer.writerows(rows)
    return path


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_cli_trains_with_adaptive_blending_and_logs_the_weights(small_csv, tmp_path):
    out = tmp_path / "run"
    result = invoke("train", "--data", small_csv, "--fold", 2, "--student", "multiview",
                    "--views", "mel,raw", "--blend", "adaptive", "--blend-every", 1,
                    "--blend-floor", 0.5, "--epochs", 2, "--batch-size", 4, "--crop", 2.0,
                    "--out", out, "--quiet")
    assert result.exit_code == 0, result.output
    assert "held-out accuracy" in result.output and "self-ensemble" in result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["views"] == ["mel", "raw"] and metrics["mode"] == "blend"
    assert (metrics["n_train"], metrics["n_blend_validation"], metrics["n_test"]) == (12, 3, 6)
    blending = metrics["blending"]
    # 12 clips / batch 4 = 3 steps an epoch, weights measured every step
    assert [r["step"] for r in blending["history"]] == [1, 2, 3, 4, 5, 6]
    assert all(abs(sum(r["weights"].values()) - 1) < 1e-9 for r in blending["history"])
    # --blend-floor 0.5 of an equal share (1/3): no head stops learning
    assert blending["floor"] == 0.5
    assert all(w >= 0.5 / 3 - 1e-9 for r in blending["history"] for w in r["weights"].values())
    assert set(blending["final_weights"]) == {"mel", "raw", "joint"}
    assert [h["weights"] for h in metrics["history"]][-1] == blending["final_weights"]
    readouts = metrics["accuracy_by_readout"]
    assert readouts["self_ensemble"] == metrics["accuracy"]
    assert set(readouts["heads"]) == {"mel", "raw", "joint"} and "late_mean" in readouts
    costs = metrics["costs_per_crop"]
    assert costs["mel"]["params"] > 0 and costs["raw"]["macs"] > 0
    assert metrics["train_seconds"] > 0 and metrics["seconds_per_epoch"] > 0
    for name in ("weights.png", "curves.png", "confusion.png", "checkpoint.pt"):
        assert (out / name).stat().st_size > 0, name


def test_cli_refuses_what_multiview_does_not_do(small_csv, tmp_path):
    result = CliRunner().invoke(main, ["train", "--data", str(small_csv), "--student",
                                       "multiview", "--views", "mel", "--blend", "adaptive",
                                       "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "--blend none" in result.output
    result = CliRunner().invoke(main, ["train", "--data", str(small_csv), "--student",
                                       "multiview", "--teacher", "yamnet", "--reg", "con"])
    assert result.exit_code == 2 and "without teachers" in result.output
    result = CliRunner().invoke(main, ["train", "--data", str(small_csv), "--student",
                                       "multiview", "--views", "mel,spectrogram"])
    assert result.exit_code == 2 and "unknown" in result.output


def test_resume_gives_the_uninterrupted_run(small_csv, tmp_path):
    def config(blend):
        return MultiViewConfig(data=str(small_csv), fold=2, views="mel,gammatone", blend=blend,
                               epochs=3, batch_size=4, crop_seconds=1.5, blend_every=2,
                               **SMALL)

    whole = train_multiview(config("adaptive"), tmp_path / "whole", progress=False)
    stopped = train_multiview(config("adaptive"), tmp_path / "cut", progress=False,
                              stop_after_epoch=1)
    assert stopped == {"stopped_after_epoch": 1}
    resumed = train_multiview(config("adaptive"), tmp_path / "cut", resume=True, progress=False)
    for key in ("loss", "test_acc", "test_loss", "weights"):
        assert [h[key] for h in resumed["history"]] == [h[key] for h in whole["history"]], key
    assert resumed["blending"]["history"] == whole["blending"]["history"]
    with pytest.raises(Exception, match="differ"):
        train_multiview(config("late"), tmp_path / "cut", resume=True, progress=False)
    # concatenation fusion trains the joint head alone: no blending, no view heads
    concat = train_multiview(config("none"), tmp_path / "concat", progress=False)
    assert "blending" not in concat and set(concat["accuracy_by_readout"]["heads"]) == {"joint"}
