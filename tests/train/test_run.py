"""The run scaffold (edgeaudio.train.run) on its own: the run folder's guards, epochs seeded by
(seed, epoch) whatever came before, the non-finite check, the stop-after hook, the epoch
record and log, and progress as plain lines when stderr is not a terminal."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the train room needs torch")

from edgeaudio.train.config import Settings  # noqa: E402
from edgeaudio.train.progress import LineProgress  # noqa: E402
from edgeaudio.train.run import EpochLoop, RunFolder  # noqa: E402

from .test_loop import toy_csv  # noqa: E402,F401  (the fixture)


class RunError(Exception):
    pass


@dataclass
class Toy(Settings):
    lr: float = 0.1
    epochs: int = 3


def toy_state(path):
    return json.loads(path.read_text())


def test_the_run_folder_guards_and_names_what_differs(tmp_path):
    with pytest.raises(RunError, match="no state.json"):
        RunFolder(tmp_path / "r", Toy(), resume=True, error=RunError, marker="state.json",
                  read_state=toy_state)
    run = RunFolder(tmp_path / "r", Toy(), resume=False, error=RunError, marker="state.json")
    run.write_json("state.json", {"config": Toy().to_dict()})
    with pytest.raises(RunError, match="already holds a run"):
        RunFolder(tmp_path / "r", Toy(), resume=False, error=RunError, marker="state.json")
    with pytest.raises(RunError, match=r"lr \(0.1 -> 0.2\)"):
        RunFolder(tmp_path / "r", Toy(lr=0.2), resume=True, error=RunError,
                  marker="state.json", read_state=toy_state)
    # epochs may grow on a resume (the default ignore list)
    again = RunFolder(tmp_path / "r", Toy(epochs=9), resume=True, error=RunError,
                      marker="state.json", read_state=toy_state)
    assert again.state["config"]["lr"] == 0.1
    log = (tmp_path / "r" / "train.log").read_text().splitlines()
    assert len(log) == 2 and all(line.startswith("run ") for line in log)


def draws(run, start_epoch, stop_after=None):
    """What each epoch draws from its generator and from torch, and the records kept."""
    seen, history = {}, []
    for ep in EpochLoop(run, seed=7, epochs=4, steps=1, start_epoch=start_epoch,
                        progress=False, stop_after=stop_after):
        seen[ep.epoch] = (ep.rng.integers(0, 10**9), float(torch.rand(1)))
        ep.check_finite(torch.tensor(1.0), 0)
        ep.finish({"loss": 0.5, **ep.training_done()}, history, lambda k, r: None,
                  "epoch {epoch} loss {loss} held-out {test}")
        if ep.stop:
            break
    return seen, history


def test_epochs_are_seeded_by_seed_and_epoch_and_the_stop_hook_ends_early(tmp_path):
    run = RunFolder(tmp_path / "a", Toy(), resume=False, error=RunError)
    whole, history = draws(run, 0)
    assert [h["epoch"] for h in history] == [1, 2, 3, 4] and "seconds" in history[0]
    np.random.seed(123), torch.manual_seed(5)  # what ran before must not matter
    resumed, _ = draws(run, 2)
    assert resumed == {k: v for k, v in whole.items() if k > 2}
    stopped, kept = draws(run, 0, stop_after=2)
    assert list(stopped) == [1, 2] and len(kept) == 2
    assert "epoch 1 loss 0.5 held-out -" in (tmp_path / "a" / "train.log").read_text()


def test_a_non_finite_loss_is_refused_with_its_epoch_and_step(tmp_path):
    run = RunFolder(tmp_path / "a", Toy(), resume=False, error=RunError)
    ep = next(iter(EpochLoop(run, seed=0, epochs=2, steps=1, progress=False)))
    with pytest.raises(RunError, match="loss became nan at epoch 1, step 3"):
        ep.check_finite(torch.tensor(float("nan")), 3)


def test_line_progress_prints_about_ten_lines_whatever_the_total(capsys):
    bar = LineProgress(1000, "decoding audio", "clip")
    for _ in range(1000):
        bar.update(1)
    bar.close()
    lines = capsys.readouterr().err.strip().splitlines()
    assert 9 <= len(lines) <= 11 and lines[-1].startswith("decoding audio: 1000/1000 clip")


def test_train_with_stderr_redirected_writes_one_line_per_epoch(toy_csv, tmp_path):
    log = tmp_path / "train.err"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(log, "w") as handle:
        done = subprocess.run(
            [sys.executable, "-m", "edgeaudio", "train", "--data", str(toy_csv), "--fold", "2",
             "--student", "tiny", "--epochs", "3", "--batch-size", "4", "--crop", "0.8",
             "--out", str(tmp_path / "run")], stdout=subprocess.PIPE, stderr=handle,
            text=True, env=env, timeout=300)
    assert done.returncode == 0, log.read_text()
    text = log.read_text()
    assert "\r" not in text  # no redrawn bars in a log file
    epoch_lines = [line for line in text.splitlines() if line.startswith("epoch ")]
    assert [line.split()[1] for line in epoch_lines] == ["1", "2", "3"]
