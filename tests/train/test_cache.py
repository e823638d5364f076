"""The teacher embedding cache: hit, miss, stale, corrupt, keys, concatenation."""
from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("torch", reason="the train room needs torch")

from edgeaudio.train.cache import (  # noqa: E402
    CacheStats, EmbeddingCache, cached_embeddings, default_cache_dir, fingerprint,
    teacher_features)
from edgeaudio.train.teachers.base import Teacher  # noqa: E402
from edgeaudio.train.teachers.registry import parse_teacher_names  # noqa: E402


class FakeTeacher(Teacher):
    """Frames = mean of 0.25 s blocks, repeated to ``dim``; counts its calls."""

    sample_rate = 16000

    def __init__(self, name="fake", dim=4, hop=0.25, weights="w1"):
        self.name, self.dim, self.hop_seconds = name, dim, hop
        self.class_names = []
        self._weights_hash = weights
        self.calls = 0

    def embed(self, waveforms):
        out = []
        for w in waveforms:
            self.calls += 1
            block = int(self.hop_seconds * self.sample_rate)
            n = max(1, len(w) // block)
            means = np.array([w[i * block:(i + 1) * block].mean() for i in range(n)])
            out.append(np.repeat(means[:, None], self.dim, axis=1).astype(np.float32)
                       + np.arange(self.dim, dtype=np.float32))
        return out

    def predict(self, waveform):
        raise NotImplementedError


@pytest.fixture
def clips():
    rng = np.random.default_rng(0)
    waves = [rng.normal(0, 0.1, 16000).astype(np.float32) for _ in range(3)]
    return [f"/data/clip{i}.wav" for i in range(3)], waves


def test_default_location_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("EDGEAUDIO_CACHE", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    assert EmbeddingCache().root == tmp_path / "c"
    monkeypatch.delenv("EDGEAUDIO_CACHE")
    assert default_cache_dir().parts[-2:] == (".cache", "edgeaudio")


def test_miss_then_hit_runs_the_teacher_once(tmp_path, clips):
    names, waves = clips
    cache, teacher = EmbeddingCache(tmp_path), FakeTeacher()
    first_stats, second_stats = CacheStats(), CacheStats()
    first = cached_embeddings(teacher, names, waves, 16000, cache, stats=first_stats)
    assert teacher.calls == 3 and first_stats.as_dict() == {"hit": 0, "miss": 3, "stale": 0,
                                                            "corrupt": 0}
    second = cached_embeddings(teacher, names, waves, 16000, cache, stats=second_stats)
    assert teacher.calls == 3 and second_stats.hit == 3
    for a, b in zip(first, second):
        assert a.shape == (4, 4) and np.array_equal(a, b)
    files = list((tmp_path / "teachers" / "fake").rglob("*.npz"))
    assert len(files) == 3 and not list(tmp_path.rglob("*.tmp"))


def test_changed_audio_is_stale_and_rebuilt(tmp_path, clips):
    names, waves = clips
    cache, teacher = EmbeddingCache(tmp_path), FakeTeacher()
    cached_embeddings(teacher, names, waves, 16000, cache)
    changed = [waves[0] * 0.5] + waves[1:]
    stats = CacheStats()
    out = cached_embeddings(teacher, names, changed, 16000, cache, stats=stats)
    assert (stats.stale, stats.hit, teacher.calls) == (1, 2, 4)
    assert np.allclose(out[0], teacher.embed([changed[0]])[0])
    stats = CacheStats()
    cached_embeddings(teacher, names, changed, 16000, cache, stats=stats)
    assert stats.hit == 3   # rebuilt entry is current again


def test_stale_when_the_stored_meta_disagrees(tmp_path, clips):
    names, waves = clips
    cache, teacher = EmbeddingCache(tmp_path), FakeTeacher()
    identity, settings = teacher.cache_identity(), {"input": "x"}
    fp = fingerprint(waves[0])
    cache.put(identity, settings, names[0], fp, np.zeros((2, 4), np.float32))
    path = cache.entry_path(identity, settings, names[0])
    with np.load(path) as data:
        meta = json.loads(str(data["meta"]))
        emb = data["embedding"]
    meta["identity"]["weights_sha256"] = "old"
    np.savez(path, embedding=emb, meta=np.array(json.dumps(meta)))
    assert cache.get(identity, settings, names[0], fp)[1] == "stale"


@pytest.mark.parametrize("damage", ["truncate", "garbage", "nan", "wrong_dim"])
def test_corrupt_entries_are_detected_and_rebuilt(tmp_path, clips, damage):
    names, waves = clips
    cache, teacher = EmbeddingCache(tmp_path), FakeTeacher()
    good = cached_embeddings(teacher, names[:1], waves[:1], 16000, cache)[0]
    identity = teacher.cache_identity()
    settings = {"input": "whole clip, mono", "sample_rate": 16000}
    path = cache.entry_path(identity, settings, names[0])
    assert path.exists()
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:100])
    elif damage == "garbage":
        path.write_bytes(b"not an npz at all")
    else:
        with np.load(path) as data:
            meta = json.loads(str(data["meta"]))
        bad = np.full((2, 4), np.nan, np.float32) if damage == "nan" else np.zeros((2, 3),
                                                                                   np.float32)
        meta["shape"] = list(bad.shape)
        np.savez(path, embedding=bad, meta=np.array(json.dumps(meta)))
    assert cache.get(identity, settings, names[0], fingerprint(waves[0]))[1] == "corrupt"
    stats = CacheStats()
    again = cached_embeddings(teacher, names[:1], waves[:1], 16000, cache, stats=stats)[0]
    assert stats.corrupt == 1 and teacher.calls == 2 and np.array_equal(again, good)
    assert cache.get(identity, settings, names[0], fingerprint(waves[0]))[1] == "hit"


def test_new_weights_or_settings_never_read_old_entries(tmp_path, clips):
    names, waves = clips
    cache = EmbeddingCache(tmp_path)
    cached_embeddings(FakeTeacher(weights="w1"), names, waves, 16000, cache)
    stats = CacheStats()
    other = FakeTeacher(weights="w2")
    cached_embeddings(other, names, waves, 16000, cache, stats=stats)
    assert stats.miss == 3 and other.calls == 3
    stats = CacheStats()
    cached_embeddings(FakeTeacher(weights="w1"), names, waves, 16000, cache, stats=stats,
                      settings={"crop": "centre"})
    assert stats.miss == 3
    stats = CacheStats()
    cached_embeddings(FakeTeacher(weights="w1"), names, waves, 16000, cache, stats=stats)
    assert stats.hit == 3  # the first entries are still there


def test_teachers_are_cached_apart_and_concatenated_on_the_first_ones_time(tmp_path, clips):
    names, waves = clips
    made = {"a": FakeTeacher("a", dim=2, hop=0.25), "b": FakeTeacher("b", dim=3, hop=0.5)}
    cache = EmbeddingCache(tmp_path)
    feats, info = teacher_features(["a+b"], names, waves, 16000, cache,
                                   get_teacher=lambda n: made[n])
    assert info["teachers"] == ["a", "b"] and info["dims"] == [2, 3] and info["dim"] == 5
    assert feats[0].shape == (4, 5)            # 4 frames of a, b's 2 frames repeated
    b = made["b"].embed([waves[0]])[0]
    assert np.allclose(feats[0][:2, 2:], b[0]) and np.allclose(feats[0][2:, 2:], b[1])
    stats = CacheStats()
    feats_b, _ = teacher_features(["b"], names, waves, 16000, cache,
                                  get_teacher=lambda n: made[n], stats=stats)
    assert stats.hit == 3                       # b alone reuses the entries of "a+b"
    assert parse_teacher_names(["yamnet", "YAMNet+efficientat"]) == ["yamnet", "efficientat"]


def _rewrite_entry(path, embedding=None, meta=None, raw_meta=None):
    """Rewrite an entry in place, keeping what is not given."""
    with np.load(path) as data:
        old_meta, old_embedding = str(data["meta"]), data["embedding"]
    text = raw_meta if raw_meta is not None else (
        json.dumps(meta) if meta is not None else old_meta)
    np.savez(path, embedding=old_embedding if embedding is None else embedding,
             meta=np.array(text))


def _one_entry(tmp_path, clips):
    names, waves = clips
    cache, teacher = EmbeddingCache(tmp_path), FakeTeacher()
    good = cached_embeddings(teacher, names[:1], waves[:1], 16000, cache)[0]
    settings = {"input": "whole clip, mono", "sample_rate": 16000}
    key = (teacher.cache_identity(), settings, names[0], fingerprint(waves[0]))
    return cache, teacher, good, key, cache.entry_path(*key[:3])


def test_changed_values_with_intact_meta_are_stale_and_rewritten(tmp_path, clips):
    names, waves = clips
    cache, teacher, good, key, path = _one_entry(tmp_path, clips)
    _rewrite_entry(path, embedding=good * 1.2)   # finite, right shape, meta untouched
    assert cache.get(*key) == (None, "stale")
    stats = CacheStats()
    again = cached_embeddings(teacher, names[:1], waves[:1], 16000, cache, stats=stats)[0]
    assert stats.stale == 1 and teacher.calls == 2 and np.array_equal(again, good)
    hit, status = cache.get(*key)
    assert status == "hit" and np.array_equal(hit, good)


def test_entries_without_a_checksum_are_stale(tmp_path, clips):
    cache, _, good, key, path = _one_entry(tmp_path, clips)
    with np.load(path) as data:
        meta = json.loads(str(data["meta"]))
    assert meta["sha256"] == fingerprint(good)
    del meta["sha256"]                           # as written before entries had one
    _rewrite_entry(path, meta=meta)
    assert cache.get(*key) == (None, "stale")


@pytest.mark.parametrize("raw_meta", [
    "[1, 2, 3]", '"a string"', "42", "null", '{"shape": 5}', '{"shape": [1, "x"]}',
    "[" * 100000 + "]" * 100000, "{not json"],
    ids=["list", "string", "number", "null", "shape-int", "shape-mixed", "deep", "broken"])
def test_malformed_meta_is_corrupt_and_rebuilt_never_a_traceback(tmp_path, clips, raw_meta):
    names, waves = clips
    cache, teacher, good, key, path = _one_entry(tmp_path, clips)
    _rewrite_entry(path, raw_meta=raw_meta)
    assert cache.get(*key) == (None, "corrupt")
    stats = CacheStats()
    again = cached_embeddings(teacher, names[:1], waves[:1], 16000, cache, stats=stats)[0]
    assert stats.corrupt == 1 and np.array_equal(again, good)
    assert cache.get(*key)[1] == "hit"


def test_caching_progress_is_plain_lines_when_stderr_is_not_a_terminal(tmp_path, clips, capsys):
    names, waves = clips
    cached_embeddings(FakeTeacher(), names, waves, 16000, EmbeddingCache(tmp_path),
                      progress=True)
    err = capsys.readouterr().err
    assert "\r" not in err and "teacher fake -> cache: 3/3 clip" in err
