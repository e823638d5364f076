"""The student loop under torchrun on this CPU: 2 gloo processes, a tiny student, toy clips.

Real runs (``distributed_worker.py`` under ``python -m torch.distributed.run``): one run
written once by rank 0, read by single-process ``evaluate`` and ``export``; one DDP step equal
to one single-process step on the same global batch; a 2-process run killed mid-epoch and
resumed under torchrun ending where the uninterrupted one ends.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the train room needs torch")

from edgeaudio.train.checkpoint import load_checkpoint  # noqa: E402
from edgeaudio.train.distributed import SINGLE, DistributedError, World  # noqa: E402
from edgeaudio.train.evaluation import evaluate_run  # noqa: E402

from .test_loop import toy_csv  # noqa: E402,F401  (the fixture)

WORKER = Path(__file__).with_name("distributed_worker.py")


def launch(args: list, processes: int = 2, **popen) -> subprocess.Popen:
    """``processes`` ranks of the worker under torchrun (gloo), or the worker alone (1)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    env.pop("WORLD_SIZE", None)
    prefix = [sys.executable]
    if processes > 1:
        prefix += ["-m", "torch.distributed.run", "--standalone",
                   f"--nproc_per_node={processes}"]
    return subprocess.Popen(prefix + [str(WORKER), *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            **popen)


def finish(proc: subprocess.Popen, timeout: float = 240) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-3000:]
    return out


def settings(csv_path, tmp, **kw) -> Path:
    base = dict(data=str(csv_path), fold=2, student="tiny", epochs=3, batch_size=4, lr=3e-3,
                warmup_epochs=1, crop_seconds=0.8, seed=1, keep_teachers=True,
                teachers=["yamnet"], reg="con", kd=0.5, kd_teachers=["efficientat"],
                steps_per_epoch=12, cache=str(tmp / "cache"))
    path = tmp / f"settings-{len(list(tmp.glob('settings-*')))}.json"
    path.write_text(json.dumps({**base, **kw}))
    return path


@pytest.fixture(scope="module")
def two_process_run(toy_csv, tmp_path_factory):  # noqa: F811
    tmp = tmp_path_factory.mktemp("ddp")
    path = settings(toy_csv, tmp)
    finish(launch(["train", path, tmp / "full"]))
    return tmp, path


def test_a_two_process_run_is_written_once_and_read_alone(two_process_run, tmp_path):
    tmp, _ = two_process_run
    run = tmp / "full"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["processes"] == 2 and metrics["backend"] == "gloo"
    assert [r["epoch"] for r in metrics["history"]] == [1, 2, 3]
    log = (run / "train.log").read_text()
    assert log.count("epoch   1 ") == 1 and log.count("done:") == 1  # rank 0 alone logs
    assert not list(run.glob("*.tmp")) and load_checkpoint(run)["epoch"] == 3
    report = evaluate_run(run, progress=False, out=tmp_path / "eval")
    # the same held-out clips scored alone: the two ranks' halves, gathered, batch the clips
    # differently, and a toy trained 3 epochs has near-ties that rounding may flip (one clip
    # of 12 on this session's AMD EPYC, none on earlier machines): at most one clip apart
    assert abs(report["accuracy"] - metrics["accuracy"]) <= 1 / metrics["n_test"] + 1e-9
    from edgeaudio.export.cli import export_checkpoint
    exported = export_checkpoint(run, out=tmp_path / "models", formats=["onnx"], int8=False,
                                 report=False)
    assert Path(exported["files"]["model.onnx"]).stat().st_size > 0


def test_a_run_killed_mid_epoch_resumes_under_torchrun_to_the_uninterrupted_result(
        two_process_run):
    tmp, path = two_process_run
    out = tmp / "killed"
    proc = launch(["train", path, out], start_new_session=True)
    log = out / "train.log"
    deadline = time.time() + 180
    while not (log.exists() and "epoch   1 " in log.read_text()):  # epoch 1 saved
        assert proc.poll() is None and time.time() < deadline, proc.stdout.read()[-3000:]
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # torchrun and both ranks, in epoch 2
    proc.wait()
    assert not (out / "metrics.json").exists() and load_checkpoint(out)["epoch"] in (1, 2)
    finish(launch(["train", path, out, "--resume"]))
    full, resumed = load_checkpoint(tmp / "full"), load_checkpoint(out)
    assert full["model_state"].keys() == resumed["model_state"].keys()
    for key, value in full["model_state"].items():
        assert torch.equal(value, resumed["model_state"][key]), key
    losses = lambda run: [r["loss"] for r in  # noqa: E731
                          json.loads((run / "metrics.json").read_text())["history"]]
    assert losses(tmp / "full") == losses(out)


def test_the_distillation_loop_runs_on_two_processes_written_once(toy_csv, tmp_path):  # noqa: F811
    path = tmp_path / "distill.json"
    path.write_text(json.dumps(dict(data=str(toy_csv), fold=2, student="tiny", init="random",
                                    teacher="efficientat", con_reg=0.5, specaugment=True,
                                    epochs=2, batch_size=4, crop_seconds=0.8, seed=1,
                                    eval_every=1, cache=str(tmp_path / "cache"))))
    finish(launch(["distill", path, tmp_path / "run"]))
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["processes"] == 2 and len(metrics["history"]) == 2
    assert all(np.isfinite(r["con"]) and r["con"] > 0 for r in metrics["history"])
    log = (tmp_path / "run" / "train.log").read_text()
    assert log.count("epoch   2 ") == 1 and load_checkpoint(tmp_path / "run")["epoch"] == 2


def test_two_ranks_streaming_their_own_rows_train_the_in_memory_run(toy_csv, tmp_path):  # noqa: F811
    # no mixup: each rank decodes only the clips of its own rows (zeros stand for the others)
    path = settings(toy_csv, tmp_path, mixup=0.0, epochs=2, steps_per_epoch=4)
    finish(launch(["train", path, tmp_path / "memory"]))
    finish(launch(["train", path, tmp_path / "streamed", "--stream"]))
    a, b = load_checkpoint(tmp_path / "memory"), load_checkpoint(tmp_path / "streamed")
    for key, value in a["model_state"].items():
        assert torch.equal(value, b["model_state"][key]), key
    losses = [[r["loss"] for r in run["train_state"]["history"]] for run in (a, b)]
    assert losses[0] == losses[1] and len(losses[0]) == 2


@pytest.mark.parametrize("mode", ["eval", "ghost"])
def test_one_ddp_step_is_the_single_process_step_on_the_global_batch(toy_csv, tmp_path,  # noqa: F811
                                                                      mode):
    path = settings(toy_csv, tmp_path, mixup=0.3, teachers=[], reg="none", kd=0.0,
                    kd_teachers=[])
    finish(launch(["step", path, tmp_path / "one.pt", mode], processes=1))
    finish(launch(["step", path, tmp_path / "two.pt", mode], processes=2))
    one, two = torch.load(tmp_path / "one.pt"), torch.load(tmp_path / "two.pt")
    assert one["after"].keys() == two["after"].keys()
    for key, value in one["before"].items():  # both started from the same weights
        assert torch.equal(value, two["before"][key]), key
    assert any(not torch.equal(one["before"][k], one["after"][k]) for k in one["after"])
    for key, value in one["after"].items():
        assert torch.allclose(value, two["after"][key], rtol=1e-5, atol=1e-6), key


def test_a_global_batch_divides_among_the_ranks_or_is_refused():
    world = World(rank=1, size=2)
    assert world.local_rows(8) == slice(4, 8) and SINGLE.local_rows(8) == slice(0, 8)
    batch = np.arange(8)
    assert list(world.local(batch)) == [4, 5, 6, 7] and SINGLE.local(batch) is batch
    padded = world.whole_batch(torch.ones(4, 2), 8)
    assert padded[:4].abs().sum() == 0 and torch.equal(padded[4:], torch.ones(4, 2))
    assert world.share(range(5)) == [1, 3]
    with pytest.raises(DistributedError, match="multiple of 2"):
        world.local_rows(7)
