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
    from edgeaudio.train.distill import is_distill_config, read_distill_config
    if is_distill_config(path):  # a row of the online-distillation loop (train/distill.py)
        read_distill_config(path, data="clips.csv", fold=1).validate()
        assert read_config_file(path)["description"]
        return
    cfg, run_options = training_settings(path, {"data": "clips.csv", "fold": 1})
    assert isinstance(cfg, (TrainConfig, MultiViewConfig)) and cfg.data == "clips.csv"
    cfg.validate()
    assert read_config_file(path)["description"]  # every row says what it is


def test_the_default_model_recipe_means_the_flags_it_replaced():
    cfg, _ = training_settings(REPO / "recipes" / "esc50_default_model.toml",
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


def test_no_flags_means_the_configuration_class_defaults():
    cfg, _ = training_settings(None, {"data": "d", "epochs": None, "teachers": None})
    assert cfg == TrainConfig(data="d")
    mv, _ = training_settings(None, {"data": "d", "student": "multiview"})
    assert mv == MultiViewConfig(data="d")
    text = CliRunner().invoke(main, ["train", "--help"]).output
    assert f"[default: {TrainConfig.default('epochs')}]" in text


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
