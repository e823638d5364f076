"""The teachers' pass shared out: 2 workers (and 2 torchrun ranks) write byte for byte the cache
entries one process writes, for YAMNet and EfficientAT on real ESC-50 clips; a pass stopped
part way resumes from what is cached."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch", reason="the train room needs torch")

from edgeaudio.train.cache import ZIP_DATE, EmbeddingCache, npz_bytes  # noqa: E402
from edgeaudio.train.preparation import extract_teachers  # noqa: E402

from ..conftest import esc50_csv  # noqa: E402

TEACHERS = ["yamnet", "efficientat"]


def entries(root: Path) -> dict:
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*.npz"))}


@pytest.fixture(scope="module")
def clips_csv(esc50, tmp_path_factory):
    return esc50_csv(tmp_path_factory.mktemp("clips"), ["dog", "rain"], 2, 1)  # 6 clips


@pytest.fixture(scope="module")
def one_process(clips_csv, tmp_path_factory):
    # one torch thread, as every process of the CLI by default: EfficientAT's float sums
    # depend on how many threads share them (the workers take this process's count)
    import torch
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("one")
    done = extract_teachers(TEACHERS, clips_csv, cache=EmbeddingCache(root), progress=False)
    assert done["lookups"] == {"hit": 0, "miss": 12, "stale": 0, "corrupt": 0}
    return entries(root)


def test_two_workers_write_the_entries_one_process_writes(clips_csv, one_process, tmp_path):
    done = extract_teachers(TEACHERS, clips_csv, cache=EmbeddingCache(tmp_path), workers=2,
                            progress=False)
    assert done["lookups"]["miss"] == 12
    two = entries(tmp_path)
    assert len(two) == 12 and two.keys() == one_process.keys()
    for name, data in one_process.items():
        assert two[name] == data, name


def test_two_torchrun_ranks_write_the_entries_one_process_writes(clips_csv, one_process,
                                                                  tmp_path):
    env_cache = tmp_path / "cache"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(Path(sys.executable).with_name("edgeaudio")), "teacher", "cache",
           "--teacher", "yamnet+efficientat", "--data", str(clips_csv), "--quiet"]
    out = subprocess.run(cmd, env={**__import__("os").environ, "EDGEAUDIO_CACHE": str(env_cache),
                                   "OMP_NUM_THREADS": "1"},
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "6 clips, 12 embedded, 0 already cached" in out.stdout  # rank 0 reports every rank's
    assert out.stdout.count("6 clips") == 1
    two = entries(env_cache)
    assert two.keys() == one_process.keys()
    for name, data in one_process.items():
        assert two[name] == data, name


def test_a_stopped_pass_resumes_from_what_is_cached(clips_csv, one_process, tmp_path):
    cache = EmbeddingCache(tmp_path)
    part = extract_teachers(["yamnet"], clips_csv, cache=cache, first=2, progress=False)
    assert part["lookups"]["miss"] == 2
    done = extract_teachers(TEACHERS, clips_csv, cache=cache, workers=2, progress=False)
    assert done["lookups"] == {"hit": 2, "miss": 10, "stale": 0, "corrupt": 0}
    assert entries(tmp_path) == one_process


def test_an_entry_has_no_date_in_it():
    import numpy as np
    import io
    import zipfile
    a = npz_bytes({"embedding": np.ones((2, 3), np.float32)})
    assert [m.date_time for m in zipfile.ZipFile(io.BytesIO(a)).infolist()] == [ZIP_DATE]
    with np.load(io.BytesIO(a)) as data:
        assert np.array_equal(data["embedding"], np.ones((2, 3)))
    with pytest.raises(ValueError, match="workers"):
        from edgeaudio.train.cache import fill_cache
        fill_cache(["yamnet"], [], [], 16000, EmbeddingCache("/nonexistent"), workers=0)
