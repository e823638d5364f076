"""Teacher embeddings on disk: teachers run once per clip and setting, training epochs read this.

Location: ``$EDGEAUDIO_CACHE`` or ``~/.cache/edgeaudio``, under ``teachers/<teacher>/``. One
``.npz`` per (teacher identity, settings, clip path); its name is the sha256 of those. Inside:
``embedding [T_F, B_F]`` float32 and ``meta`` (a JSON string: the teacher identity with its
weights sha256, the settings, the clip path, the clip's *fingerprint* (the sha256 of the
decoded waveform the teacher saw), the embedding's shape and its own sha256, ``sha256``).

A lookup is a

- **hit**     the entry exists, reads, and its meta, shape, values and checksum check out;
- **miss**    no entry: the teacher runs and the entry is written (atomically);
- **stale**   the entry exists but the clip's audio changed (fingerprint differs), the meta
              does not match what was asked, or the values no longer match the checksum the
              entry was written with (edited, or written before entries had one): rebuilt;
- **corrupt** the entry cannot be read (truncated, not an npz, meta that is not a JSON object,
              wrong shape, NaN): rebuilt.

New weights (another sha256) or other settings give another key, so they never read old
entries. Concatenated teachers ("yamnet+efficientat") are cached per teacher and combined at
load time (``align_frames`` to the first teacher's frame count), so each part is reused alone.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from edgeaudio.files import atomic_write_bytes

from .teachers.base import align_frames
from .teachers.registry import parse_teacher_names

CACHE_ENV_VAR = "EDGEAUDIO_CACHE"
CACHE_FORMAT = 1


def default_cache_dir() -> Path:
    env = os.environ.get(CACHE_ENV_VAR)
    return Path(env) if env else Path.home() / ".cache" / "edgeaudio"


def fingerprint(array: np.ndarray) -> str:
    """sha256 of a float32 array's shape and values: a clip's fingerprint, an entry's checksum."""
    array = np.ascontiguousarray(array, dtype=np.float32)
    digest = hashlib.sha256()
    digest.update(str(array.shape).encode())
    digest.update(array.tobytes())
    return digest.hexdigest()


@dataclass
class CacheStats:
    hit: int = 0
    miss: int = 0
    stale: int = 0
    corrupt: int = 0

    def add(self, status: str) -> None:
        setattr(self, status, getattr(self, status) + 1)

    def as_dict(self) -> dict:
        return {"hit": self.hit, "miss": self.miss, "stale": self.stale, "corrupt": self.corrupt}


def _entry_status(meta, embedding: np.ndarray, expected: dict, dim: int) -> str:
    """"hit", "stale" or "corrupt" for an entry's decoded meta and embedding."""
    if (not isinstance(meta, dict) or embedding.ndim != 2 or embedding.shape[0] < 1
            or embedding.shape[1] != dim or meta.get("shape") != list(embedding.shape)
            or not np.all(np.isfinite(embedding))):
        return "corrupt"
    if any(meta.get(key) != value for key, value in expected.items()):
        return "stale"
    return "hit" if meta.get("sha256") == fingerprint(embedding) else "stale"


class EmbeddingCache:
    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root) if root is not None else default_cache_dir()

    def entry_path(self, identity: dict, settings: dict, clip: str) -> Path:
        key = json.dumps({"format": CACHE_FORMAT, "identity": identity, "settings": settings,
                          "clip": clip}, sort_keys=True)
        digest = hashlib.sha256(key.encode("utf-8")).hexdigest()
        name = str(identity.get("teacher", "teacher")).replace("/", "_")
        return self.root / "teachers" / name / digest[:2] / f"{digest}.npz"

    def get(self, identity: dict, settings: dict, clip: str, clip_fingerprint: str
            ) -> tuple[np.ndarray | None, str]:
        """(embedding or None, status in {"hit", "miss", "stale", "corrupt"})."""
        path = self.entry_path(identity, settings, clip)
        if not path.exists():
            return None, "miss"
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
                embedding = np.array(data["embedding"], dtype=np.float32)
        except (OSError, ValueError, TypeError, KeyError, EOFError, RecursionError,
                zipfile.BadZipFile):  # json.JSONDecodeError is a ValueError
            return None, "corrupt"
        expected = {"format": CACHE_FORMAT, "identity": identity, "settings": settings,
                    "clip": clip, "fingerprint": clip_fingerprint}
        dim = int(identity.get("dim", embedding.shape[-1] if embedding.ndim else 0))
        status = _entry_status(meta, embedding, expected, dim)
        return (embedding if status == "hit" else None), status

    def put(self, identity: dict, settings: dict, clip: str, clip_fingerprint: str,
            embedding: np.ndarray) -> Path:
        embedding = np.ascontiguousarray(embedding, dtype=np.float32)
        path = self.entry_path(identity, settings, clip)
        meta = {"format": CACHE_FORMAT, "identity": identity, "settings": settings,
                "clip": clip, "fingerprint": clip_fingerprint, "shape": list(embedding.shape),
                "sha256": fingerprint(embedding)}
        buffer = io.BytesIO()
        np.savez(buffer, embedding=embedding, meta=np.array(json.dumps(meta, sort_keys=True)))
        return atomic_write_bytes(path, buffer.getvalue())


def cached_embeddings(teacher, clips: Sequence[str], waves: Sequence[np.ndarray],
                      sample_rate: int, cache: EmbeddingCache, *, settings: dict | None = None,
                      progress: bool = False, stats: CacheStats | None = None
                      ) -> list[np.ndarray]:
    """Embeddings ``[T_F, B_F]`` of every clip by ``teacher``, from the cache or computed once.

    ``clips`` are stable clip keys (resolved paths), ``waves`` the decoded clips at
    ``sample_rate`` (resampled here to the teacher's rate if it differs).
    """
    from edgeaudio.audio import resample

    stats = stats if stats is not None else CacheStats()
    settings = {"input": "whole clip, mono", "sample_rate": int(teacher.sample_rate),
                **(settings or {})}
    identity = teacher.cache_identity()
    out: list[np.ndarray | None] = [None] * len(clips)
    todo = []
    for i, (clip, wave) in enumerate(zip(clips, waves)):
        wave_t = wave if sample_rate == teacher.sample_rate else \
            resample(wave, sample_rate, teacher.sample_rate)
        fp = fingerprint(wave_t)
        embedding, status = cache.get(identity, settings, clip, fp)
        stats.add(status)
        if embedding is None:
            todo.append((i, clip, wave_t, fp))
        else:
            out[i] = embedding
    if todo:
        iterator = todo
        if progress:
            from tqdm import tqdm
            iterator = tqdm(todo, desc=f"teacher {teacher.name} -> cache", unit="clip")
        for i, clip, wave_t, fp in iterator:
            embedding = teacher.embed([wave_t])[0]
            cache.put(identity, settings, clip, fp, embedding)
            out[i] = np.asarray(embedding, dtype=np.float32)
    return out  # type: ignore[return-value]


def teacher_features(names: Sequence[str], clips: Sequence[str], waves: Sequence[np.ndarray],
                     sample_rate: int, cache: EmbeddingCache | None = None, *,
                     progress: bool = False, get_teacher: Callable | None = None,
                     stats: CacheStats | None = None) -> tuple[list[np.ndarray], dict]:
    """Concatenated teacher embeddings per clip (time of the first teacher) and a description
    ``{"teachers": [...], "dims": [...], "dim": total, "weights_sha256": {...}}``."""
    if get_teacher is None:
        from .teachers.registry import get_teacher
    cache = cache or EmbeddingCache()
    parts = parse_teacher_names(names)
    if not parts:
        raise ValueError("no teacher named")
    per_teacher, info = [], {"teachers": [], "dims": [], "weights_sha256": {},
                             "hop_seconds": []}
    for name in parts:
        teacher = get_teacher(name)
        per_teacher.append(cached_embeddings(teacher, clips, waves, sample_rate, cache,
                                             progress=progress, stats=stats))
        info["teachers"].append(teacher.name)
        info["dims"].append(int(teacher.dim))
        info["weights_sha256"][teacher.name] = teacher.weights_hash
        info["hop_seconds"].append(float(teacher.hop_seconds))
    info["dim"] = int(sum(info["dims"]))
    if len(per_teacher) == 1:
        return per_teacher[0], info
    combined = []
    for embeddings in zip(*per_teacher):
        n = embeddings[0].shape[0]
        combined.append(np.concatenate([align_frames(e, n) for e in embeddings], axis=1))
    return combined, info
