"""Configuration files (`edgeaudio train --config`): every committed recipe and bench row
builds a valid configuration, the file means what the same flags mean, the command line wins,
unknown keys are refused, and each default has one definition (the configuration class)."""
from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

pytest.importorskip("torch", reason="the train room needs torch")

from edgeaudio.cli import main  # noqa: E402
from edgeaudio.train.cli import UsageError, training_settings  # noqa: E402
from edgeaudio.train.config import ConfigError, TrainConfig, read_config_file  # noqa: E402
from edgeaudio.train.multiview_train import MultiViewConfig  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
COMMITTED = sorted(REPO.glob("bench/configs/**/*.toml")) + sorted(REPO.glob("recipes/*.toml"))


def test_there_are_committed_configuration_files():
    assert (REPO / "recipes" / "esc50_default_model.toml") in COMMITTED
    assert len(COMMITTED) >= 8


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: str(p.relative_to(REPO)))
def test_every_committed_configuration_builds_and_validates(path):
    from edgeaudio.train.distill import DistillConfig, is_distill_config
    cfg, run_options = training_settings(path, {"data": "clips.csv", "fold": 1})
    assert isinstance(cfg, (TrainConfig, MultiViewConfig, DistillConfig))
    assert cfg.data == "clips.csv"
    # loop = "distill" names the online-distillation loop (train/distill.py)
    assert isinstance(cfg, DistillConfig) == is_distill_config(path)
    cfg.validate()
    assert read_config_file(path)["description"]  # every row says what it is


def test_the_default_model_recipe_is_what_train_runs_with_no_options():
    from edgeaudio.train.distill import DistillConfig
    cfg, _ = training_settings(REPO / "recipes" / "esc50_default_model.toml",
                               {"data": "esc50", "fold": 1})
    assert cfg == DistillConfig(data="esc50", layout="esc50", fold=1)
    assert (cfg.student, cfg.init, cfg.teacher) == ("mn04-short320", "mn04", "efficientat")


def test_the_old_default_recipe_means_the_flags_it_replaced():
    cfg, _ = training_settings(REPO / "bench" / "configs" / "train_esc50" / "kd+con.toml",
                               {"data": "esc50", "fold": 1})
    assert cfg == TrainConfig(data="esc50", layout="esc50", fold=1, student="small", epochs=40,
                              seed=0, eval_every=5, teachers=["yamnet", "efficientat"],
                              reg="con", kd=0.7, validation_fraction=0.0, test_curve=True)


def test_command_line_wins_over_the_file_and_the_file_over_defaults(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("epochs: 7\nlr: 0.01\nteachers: [yamnet]\nreg: con\nfolds: 1-2\n")
    cfg, run_options = training_settings(path, {"data": "d", "lr": 0.5, "teachers": None,
                                                "folds": None})
    assert cfg.epochs == 7 and cfg.lr == 0.5 and cfg.teachers == ["yamnet"]
    assert cfg.batch_size == TrainConfig.default("batch_size")
    assert run_options == {"folds": "1-2"}
    # a TOML file with the same keys means the same
    toml = tmp_path / "run.toml"
    toml.write_text('epochs = 7\nlr = 0.01\nteachers = ["yamnet"]\nreg = "con"\nfolds = "1-2"\n')
    assert training_settings(toml, {"data": "d", "lr": 0.5})[0] == cfg


def test_an_old_key_of_a_renamed_setting_still_reads(tmp_path):
    path = tmp_path / "old.toml"
    path.write_text('recipe = "esc50"\nval_fraction = 0.3\n')
    cfg, _ = training_settings(path, {"data": "d"})
    assert cfg.layout == "esc50" and cfg.test_fraction == 0.3


def test_no_flags_means_the_configuration_class_defaults():
    from edgeaudio.train.distill import DistillConfig
    cfg, _ = training_settings(None, {"data": "d", "epochs": None, "teachers": None})
    assert cfg == DistillConfig(data="d")  # the default recipe
    cfg, _ = training_settings(None, {"data": "d", "loop": "student"})
    assert cfg == TrainConfig(data="d")
    mv, _ = training_settings(None, {"data": "d", "student": "multiview"})
    assert mv == MultiViewConfig(data="d")
    text = " ".join(CliRunner().invoke(main, ["train", "--help"]).output.split())
    assert (f"[default: {DistillConfig.default('epochs')} distilling, "
            f"{TrainConfig.default('epochs')} in the student loop]") in text


def test_unknown_or_misplaced_keys_are_refused_by_name(tmp_path):
    path = tmp_path / "typo.toml"
    path.write_text("epochz = 3\n")
    with pytest.raises(UsageError, match="epochz"):
        training_settings(path, {"data": "d"})
    with pytest.raises(UsageError, match="--teacher.*do not apply"):
        training_settings(None, {"data": "d", "student": "multiview", "teachers": ["yamnet"]})
    nested = tmp_path / "nested.toml"
    nested.write_text("[a]\nb = 1\n[c]\nd = 2\n")
    with pytest.raises(ConfigError, match="flat keys"):
        read_config_file(nested)
    broken = tmp_path / "broken.toml"
    broken.write_text("epochs = = 3\n")
    result = CliRunner().invoke(main, ["train", "--config", str(broken)])
    assert result.exit_code == 2 and "cannot parse" in result.output
    result = CliRunner().invoke(main, ["train", "--config", str(path), "--data", "d"])
    assert result.exit_code == 2 and "epochz" in result.output


def test_the_mn_family_and_the_distillation_loop_run_from_the_command_line(tmp_path):
    """An mn student through the old recipe's loop with --init, and a configuration file
    naming the online-distillation loop, both through `edgeaudio train` (one tiny epoch)."""
    from ..conftest import SHARED
    if not (SHARED / "weights" / "efficientat" / "mn04_as_mAP_432.pt").exists():
        pytest.skip("EfficientAT mn04 weights not in the shared folder")
    import csv
    import numpy as np
    import soundfile as sf
    rng = np.random.default_rng(0)
    rows = []
    for c, name in enumerate(["low", "high"]):
        for i in range(4):
            t = np.arange(16000) / 16000
            wave = 0.3 * np.sin(2 * np.pi * (300 + 1500 * c) * t) + rng.normal(0, 0.01, 16000)
            sf.write(tmp_path / f"{name}{i}.wav", wave.astype(np.float32), 16000)
            rows.append((f"{name}{i}.wav", name, i % 2 + 1))
    data = tmp_path / "clips.csv"
    with open(data, "w", newline="") as handle:
        csv.writer(handle).writerows([("path", "label", "fold"), *rows])
    common = ["--data", str(data), "--fold", "2", "--epochs", "1", "--batch-size", "2",
              "--quiet"]
    old = CliRunner().invoke(main, ["train", "--student", "mn01", "--init", "mn04",
                                    "--validation-fraction", "0", "--crop", "1.0",
                                    "--out", str(tmp_path / "old"), *common])
    assert old.exit_code == 0, old.output
    distill = tmp_path / "distill.toml"
    distill.write_text('loop = "distill"\ndescription = "tiny"\nstudent = "mn01"\n'
                       'init = "random"\nteacher = "efficientat"\n')
    new = CliRunner().invoke(main, ["train", "--config", str(distill),
                                    "--out", str(tmp_path / "new"), *common])
    assert new.exit_code == 0, new.output
    from edgeaudio.train.checkpoint import load_student
    for run in ("old", "new"):
        assert load_student(tmp_path / run)[1]["student"] == "mn01"
