"""`edgeaudio train` / `edgeaudio evaluate` end to end on a handful of real ESC-50 clips with a
real teacher (YAMNet), through the real CLI group; user errors exit 2 with one line."""
from __future__ import annotations

import csv
import json

import pytest
from click.testing import CliRunner

pytest.importorskip("torch", reason="the train room needs torch")

from edgeaudio.cli import main  # noqa: E402
from edgeaudio.files import shared_dir  # noqa: E402

from ..conftest import esc50_clip, esc50_rows  # noqa: E402

CLASSES = ("dog", "rooster", "rain")


@pytest.fixture(scope="module")
def small_csv(esc50, tmp_path_factory):
    """4 clips of each of 3 ESC-50 classes from folds 1 and 2, as a path,label,fold CSV."""
    rows = []
    for cat in CLASSES:
        picked = [r for r in esc50_rows() if r["category"] == cat and r["fold"] in ("1", "2")]
        picked = [r for r in picked if r["fold"] == "1"][:2] + \
                 [r for r in picked if r["fold"] == "2"][:2]
        rows += [(str(esc50_clip(r["filename"])), cat, r["fold"]) for r in picked]
    path = tmp_path_factory.mktemp("cli") / "labels.csv"
    with open(path, "w", newline="") as handle:
        w = csv.writer(handle)
        w.writerow(["path", "label", "fold"])
        w.writerows(rows)
    return path


def invoke(*args, env=None):
    return CliRunner().invoke(main, [str(a) for a in args], env=env, catch_exceptions=False)


def test_list_students_and_teachers():
    result = invoke("train", "--list-students")
    assert result.exit_code == 0 and "small" in result.output and "tiny" in result.output
    result = invoke("train", "--list-teachers")
    assert result.exit_code == 0 and "yamnet" in result.output and "efficientat" in result.output


def test_train_then_evaluate_on_real_clips_with_a_real_teacher(small_csv, tmp_path):
    env = {"EDGEAUDIO_CACHE": str(tmp_path / "cache"), "OMP_WAIT_POLICY": "PASSIVE"}
    out = tmp_path / "run"
    args = ["train", "--data", small_csv, "--fold", 2, "--student", "tiny", "--teacher",
            "yamnet", "--reg", "con", "--epochs", 2, "--batch-size", 4, "--crop", 2.0,
            "--out", out, "--quiet"]
    result = invoke(*args[:-3], "--stop-after", 1, *args[-3:], env=env)
    assert result.exit_code == 0, result.output
    assert "continue with --resume" in result.output
    assert len(list((tmp_path / "cache" / "teachers" / "yamnet").rglob("*.npz"))) == 12
    result = invoke(*args, "--resume", env=env)
    assert result.exit_code == 0, result.output
    assert "held-out accuracy" in result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_test"] == 6 and metrics["epochs"] == 2
    assert metrics["teachers"]["teachers"] == ["yamnet"]
    assert metrics["teachers"]["dims"] == [1024]
    assert json.loads((out / "data_report.json").read_text())["cache"]["hit"] == 12
    for name in ("curves.png", "confusion.png", "checkpoint.pt"):
        assert (out / name).exists()

    result = invoke("evaluate", out, env=env)
    assert result.exit_code == 0, result.output
    assert f"accuracy {metrics['accuracy']:.4f}" in result.output
    assert all(c in result.output for c in CLASSES)
    result = invoke("evaluate", out, "--json", env=env)
    assert json.loads(result.output)["accuracy"] == metrics["accuracy"]


@pytest.mark.parametrize("args, message", [
    (["train"], "--data is required"),
    (["train", "--data", "/nonexistent/folder"], "no such file or folder"),
    (["train", "--data", ".", "--teacher", "vggish", "--reg", "con"], "unknown teacher 'vggish'"),
    (["train", "--data", ".", "--reg", "con"], "needs at least one --teacher"),
    (["train", "--data", ".", "--student", "huge"], "unknown student 'huge'"),
    (["train", "--data", ".", "--contrastive"], "--contrastive needs unlabeled audio"),
    (["train", "--data", ".", "--contrastive", "--unlabeled", "rest"], "give --classes"),
    (["evaluate", "/nonexistent/run"], "checkpoint not found"),
])
def test_user_errors_are_one_line_and_exit_2(args, message, tmp_path):
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_bad_dataset_error_names_the_file(tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_text("path,label\nmissing.wav,dog\n")
    result = CliRunner().invoke(main, ["train", "--data", str(labels), "--out",
                                       str(tmp_path / "run")])
    assert result.exit_code == 2
    assert "labels.csv line 2: audio file not found" in result.output


@pytest.fixture(scope="module")
def unlabeled_folder(tmp_path_factory):
    from .test_contrastive import other_domain_folder
    return other_domain_folder(tmp_path_factory.mktemp("unlabeled"))


def test_contrastive_run_with_con_reg_and_kd_on_real_clips(small_csv, unlabeled_folder,
                                                           tmp_path):
    env = {"EDGEAUDIO_CACHE": str(tmp_path / "cache"), "OMP_WAIT_POLICY": "PASSIVE"}
    out = tmp_path / "run"
    result = invoke("train", "--data", small_csv, "--fold", 2, "--student", "tiny",
                    "--teacher", "yamnet", "--reg", "con", "--kd", 0.5, "--kd-teacher", "yamnet", "--keep-teachers",
                    "--contrastive", "--unlabeled", unlabeled_folder / "speech",
                    "--unlabeled", unlabeled_folder / "drums", "--contrastive-warmup", 1,
                    "--epochs", 2, "--batch-size", 4, "--crop", 1.0, "--out", out, "--quiet",
                    env=env)
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    first, second = metrics["history"]
    assert first["contrastive"] == 0.0 and second["contrastive"] > 0
    assert second["reg"] > 0 and second["kd"] > 0
    # validation accuracy every epoch; the test split only once, at the end
    assert "val_acc" in first and "val_acc" in second and "test_acc" not in second
    assert 0.0 <= metrics["accuracy"] <= 1.0 and metrics["selected_epoch"] in (1, 2)
    assert metrics["contrastive"]["unlabeled"]["items"] == 6
    assert json.loads((out / "data_report.json").read_text())["unlabeled"]["items"] == 6
    assert "contrastive 0.0000" in (out / "train.log").read_text()


def test_an_unlabeled_folder_without_audio_is_a_one_line_error(small_csv, tmp_path):
    empty = tmp_path / "no-audio"
    empty.mkdir()
    (empty / "readme.txt").write_text("no recordings here")
    result = CliRunner().invoke(main, ["train", "--data", str(small_csv), "--contrastive",
                                       "--unlabeled", str(empty), "--out", str(tmp_path / "r")])
    assert result.exit_code == 2, result.output
    assert len(result.output.strip().splitlines()) == 1
    assert f"--unlabeled {empty}: no audio files" in result.output


@pytest.mark.parametrize("given, loop", [
    ({}, "distill"),
    ({"fold": 2, "epochs": 3, "lr": 1e-4}, "distill"),     # settings both loops have
    ({"student": "mn02"}, "distill"),
    ({"background": ["silence"], "validation_fold": 5}, "distill"),
    ({"select": "best"}, "student"),                         # the epoch kept on validation
    ({"student": "tiny"}, "student"),                        # a harmonic student
    ({"teachers": ["yamnet"], "reg": "con"}, "student"),     # the student loop's settings
    ({"folds": "1-5"}, "student"),                           # cross-validation
    ({"loop": "student"}, "student"),
    ({"loop": "distill", "student": "mn01"}, "distill"),
])
def test_the_command_line_picks_the_distillation_recipe_unless_told_otherwise(given, loop):
    from edgeaudio.train.cli import training_settings
    from edgeaudio.train.distill import DistillConfig

    cfg, _ = training_settings(None, {"data": "clips.csv", **given})
    assert isinstance(cfg, DistillConfig) == (loop == "distill")
    if loop == "distill" and "student" not in given:
        assert (cfg.student, cfg.init, cfg.teacher) == ("mn04-short320", "mn04", "efficientat")
    if given == {"loop": "student"}:
        assert cfg.student == "small"


def test_a_setting_the_chosen_loop_lacks_is_named():
    from edgeaudio.train.cli import UsageError, training_settings
    with pytest.raises(UsageError, match="online-distillation loop has no such setting: --reg"):
        training_settings(None, {"data": "clips.csv", "loop": "distill", "reg": "con"})


MN04_WEIGHTS = shared_dir() / "weights" / "efficientat" / "mn04_as_mAP_432.pt"


@pytest.mark.skipif(not MN04_WEIGHTS.exists(), reason="mn04 weights not in the shared folder")
def test_the_default_recipe_distils_mn04_into_mn04_short_on_real_clips(small_csv, tmp_path):
    env = {"EDGEAUDIO_CACHE": str(tmp_path / "cache"), "OMP_WAIT_POLICY": "PASSIVE"}
    out = tmp_path / "run"
    result = invoke("train", "--data", small_csv, "--fold", 2, "--epochs", 1,
                    "--steps-per-epoch", 1, "--batch-size", 4, "--crop", 1.0, "--out", out,
                    "--quiet", env=env)
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_test"] == 6
    from edgeaudio.train.checkpoint import load_student
    _, meta = load_student(out)
    assert meta["student"] == "mn04-short320"
