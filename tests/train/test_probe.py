"""Linear probes: the protocol's pieces on hand-made data, and the CLI on a few real clips."""
import csv
import json

import numpy as np
import pytest
from click.testing import CliRunner

from edgeaudio.train.probe import (ProbeNorm, cross_validate, pool, probe_command, top_events,
                                   validation_split)
from tests.conftest import ESC50, esc50_rows


def test_pool_and_norm_use_training_statistics_only():
    x = np.array([[1.0, 10.0], [3.0, 30.0]])
    norm = ProbeNorm.fit(x)
    np.testing.assert_allclose(norm.mean, [2.0, 20.0])
    z = norm(np.array([[2.0, 40.0]]))  # a test point normalized with training stats
    np.testing.assert_allclose(np.linalg.norm(z), 1.0)
    assert z[0, 0] == pytest.approx(0.0, abs=1e-6) and z[0, 1] > 0
    assert pool([np.ones((3, 2)), np.zeros((5, 2))]).tolist() == [[1, 1], [0, 0]]


def test_validation_split_stays_inside_the_training_folds():
    folds = np.repeat([1, 2, 3, 4, 5], 4)
    y = np.tile([0, 1], 10)
    for test_fold in range(1, 6):
        train = np.flatnonzero(folds != test_fold)
        fit, val = validation_split(train, folds, test_fold, y, seed=0)
        assert test_fold not in set(folds[fit]) | set(folds[val])
        assert len(set(folds[val])) == 1 and not set(fit) & set(val)


def test_cross_validation_on_separable_data():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 20)
    x = rng.normal(0, 1, (60, 8)) + 3 * np.eye(8)[y]
    folds = np.tile([1, 2, 3, 4], 15)
    result = cross_validate(x, y, folds, [1, 2, 3, 4])
    assert result["mean_accuracy"] > 0.9 and len(result["per_fold"]) == 4


def test_top_events_finds_the_matching_direction():
    events = np.eye(4)
    classes = np.array([[0.1, 0.0, 0.9, 0.0], [0.0, 1.0, 0.0, 0.2]])
    tops = top_events(classes, events, ["a", "b"], ["e0", "e1", "e2", "e3"], k=1)
    assert tops["a"][0][0] == "e2" and tops["b"][0][0] == "e1"


@pytest.mark.slow
def test_probe_cli_on_real_clips(tmp_path, esc50, monkeypatch):
    monkeypatch.setenv("EDGEAUDIO_CACHE", str(tmp_path / "cache"))
    wanted = {"dog": 0, "rooster": 0, "rain": 0}
    rows = []
    for r in esc50_rows():
        if r["category"] in wanted and wanted[r["category"]] < 8:
            wanted[r["category"]] += 1
            rows.append([str(ESC50 / "audio" / (r["filename"][:-4] + ".flac")), r["category"],
                         wanted[r["category"]] % 4 + 1])
    table = tmp_path / "labels.csv"
    with open(table, "w", newline="") as f:
        csv.writer(f).writerows([["path", "label", "fold"]] + rows)
    out = tmp_path / "probe"
    result = CliRunner().invoke(probe_command, ["--teacher", "yamnet", "--data", str(table),
                                                "--out", str(out)])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "yamnet" / "metrics.json").read_text())
    assert metrics["mean_accuracy"] >= 0.75 and len(metrics["per_fold"]) == 4
    assert (out / "yamnet" / "dendrogram.png").stat().st_size > 1000
    assert (out / "yamnet" / "class_event_similarity.png").stat().st_size > 1000
    assert {"Bark", "Dog", "Bow-wow", "Howl", "Yip"} & set(metrics["top_events"]["dog"])
    assert any(line.startswith("yamnet ") for line in result.output.splitlines())
