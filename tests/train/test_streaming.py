"""Clips streamed from disk train the run the in-memory path trains; what streaming refuses."""
from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the train room needs torch")

from edgeaudio.train.checkpoint import load_checkpoint  # noqa: E402
from edgeaudio.train.data import DatasetError, decode_dataset, load_dataset  # noqa: E402
from edgeaudio.train.streaming import epoch_clips, index_dataset  # noqa: E402

from .test_loop import fakes, run, toy_config, toy_csv  # noqa: E402,F401  (fixtures)


def test_a_streamed_index_decodes_like_memory_and_a_step_holds_its_own_clips(toy_csv):  # noqa: F811
    dataset = load_dataset(toy_csv)
    _, waves = decode_dataset(dataset, 16000)
    _, streamed = index_dataset(dataset, 16000, loader_workers=1)
    assert len(streamed) == len(waves)
    assert [streamed.length(i) for i in range(len(waves))] == [len(w) for w in waves]
    assert np.array_equal(streamed[3], waves[3])
    order = np.arange(8)
    steps = list(epoch_clips(streamed, order, 2, 4, loader_workers=1))
    assert [sorted(s) for s in steps] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert np.array_equal(steps[1][5], waves[5])
    # a rank that cuts rows 2..3 only: the other clips are zeros of their length
    mine = next(epoch_clips(streamed, order, 1, 4, rows=slice(2, 4), loader_workers=0))
    assert np.array_equal(mine[2], waves[2]) and not mine[0].any()
    assert len(mine[0]) == len(waves[0])


@pytest.mark.parametrize("extra", [{}, {"teachers": ["yamnet"], "reg": "con", "kd": 0.5,
                                        "kd_teachers": ["efficientat"], "speed": 0.1}])
def test_a_streamed_run_is_the_in_memory_run(toy_csv, tmp_path, fakes, extra):  # noqa: F811
    cfg = toy_config(toy_csv, **extra)
    memory = run(cfg, tmp_path / "memory", tmp_path, fakes)
    streamed = run(cfg, tmp_path / "streamed", tmp_path, fakes, stream=True, loader_workers=1)
    assert [r["loss"] for r in memory["history"]] == [r["loss"] for r in streamed["history"]]
    assert memory["accuracy"] == streamed["accuracy"]
    a, b = load_checkpoint(tmp_path / "memory"), load_checkpoint(tmp_path / "streamed")
    for key, value in a["model_state"].items():
        assert torch.equal(value, b["model_state"][key]), key
    report = json.loads((tmp_path / "streamed" / "data_report.json").read_text())
    assert report["n_items"] == 24


def test_streaming_refuses_what_needs_every_clip_in_memory(toy_csv, tmp_path, fakes):  # noqa: F811
    cfg = toy_config(toy_csv, teachers=["yamnet"], reg="con", kd=0.5, kd_mixtures=2)
    with pytest.raises(DatasetError, match="--kd-mixtures"):
        run(cfg, tmp_path / "mixtures", tmp_path, fakes, stream=True)


def test_the_scaling_options_refuse_what_they_cannot_mean(toy_csv, tmp_path):  # noqa: F811
    from click.testing import CliRunner

    from edgeaudio.cli import main

    def invoke(*args):
        return CliRunner().invoke(main, ["train", "--data", str(toy_csv), "--out",
                                         str(tmp_path / "run"), *args])
    for args, message in ((["--workers", "0"], "--workers must be >= 1"),
                          (["--loader-workers", "2"], "--loader-workers is for --stream"),
                          (["--stream", "--loader-workers", "-1"], "must be >= 0"),
                          (["--stream", "--contrastive", "--unlabeled", str(toy_csv.parent)],
                           "--contrastive")):
        result = invoke(*args)
        assert result.exit_code == 2 and message in result.output, (args, result.output)
    assert not (tmp_path / "run" / "checkpoint.pt").exists()
