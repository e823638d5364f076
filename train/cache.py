"""Teacher embeddings on disk: teachers run once per clip and setting, training epochs read this.

Location: ``$EDGEAUDIO_CACHE`` or ``~/.cache/edgeaudio``, under ``teachers/<teacher>/``. One
``.npz`` per (teacher identity, settings, clip path); its name is the sha256 of those. Inside:
``embedding [T_F, B_F]`` float32 and ``meta`` (a JSON string: the teacher identity with its
weights sha256, the settings, the clip path and the clip's *fingerprint*, the sha256 of the
decoded waveform the teacher saw).

A lookup is a

- **hit**     the entry exists, reads, and its meta, shape and values check out;
- **miss**    no entry: the teacher runs and the entry is written (atomically: tmp + rename);
- **stale**   the entry exists but the clip's audio changed (fingerprint differs) or the meta
              does not match what was asked: rebuilt;
- **corrupt** the entry cannot be read (truncated, not an npz, wrong shape, NaN): rebuilt.

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

CACHE_ENV_VAR = "EDGEAUDIO_CACHE"
CACHE_FORMAT = 1


def default_cache_dir() -> Path:
    env = os.environ.get(CACHE_ENV_VAR)
    return Path(env) if env else Path.home() / ".cache" / "edgeaudio"


def fingerprint(wave: np.ndarray) -> str:
    array = np.ascontiguousarray(wave, dtype=np.float32)
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
    events: list = field(default_factory=list)   # (status, path) of non-hits, for reports

    def add(self, status: str, clip: str = "") -> None:
        setattr(self, status, getattr(self, status) + 1)
        if status != "hit":
            self.events.append((status, clip))

    def as_dict(self) -> dict:
        return {"hit": self.hit, "miss": self.miss, "stale": self.stale, "corrupt": self.corrupt}


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
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile,
                json.JSONDecodeError):
            return None, "corrupt"
        if (embedding.ndim != 2 or embedding.shape[0] < 1
                or embedding.shape[1] != int(identity.get("dim", embedding.shape[1]))
                or tuple(meta.get("shape", ())) != embedding.shape
                or not np.all(np.isfinite(embedding))):
            return None, "corrupt"
        if (meta.get("format") != CACHE_FORMAT or meta.get("identity") != identity
                or meta.get("settings") != settings or meta.get("clip") != clip
                or meta.get("fingerprint") != clip_fingerprint):
            return None, "stale"
        return embedding, "hit"

    def put(self, identity: dict, settings: dict, clip: str, clip_fingerprint: str,
            embedding: np.ndarray) -> Path:
        embedding = np.ascontiguousarray(embedding, dtype=np.float32)
        path = self.entry_path(identity, settings, clip)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"format": CACHE_FORMAT, "identity": identity, "settings": settings,
                "clip": clip, "fingerprint": clip_fingerprint, "shape": list(embedding.shape)}
        buffer = io.BytesIO()
        np.savez(buffer, embedding=embedding, meta=np.array(json.dumps(meta, sort_keys=True)))
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as handle:
            handle.write(buffer.getvalue())
        os.replace(tmp, path)
        return path


def split_teacher_names(names: Sequence[str]) -> list[str]:
    """["yamnet", "efficientat"] or ["yamnet+efficientat"] -> ["yamnet", "efficientat"].
    Registry names are lower-cased; the path of a fitted teacher is kept as it is."""
    from .teachers.base import is_fitted_teacher_path

    parts = []
    for name in names:
        pieces = [name] if is_fitted_teacher_path(name) else str(name).split("+")
        for part in pieces:
            part = str(part).strip()
            part = part if is_fitted_teacher_path(part) else part.lower()
            if part and part not in parts:
                parts.append(part)
    return parts


def cached_embeddings(teacher, clips: Sequence[str], waves: Sequence[np.ndarray],
                      sample_rate: int, cache: EmbeddingCache, *, settings: dict | None = None,
                      progress: bool = False, stats: CacheStats | None = None,
                      on_compute: Callable | None = None) -> list[np.ndarray]:
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
        stats.add(status, clip)
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
            if on_compute is not None:
                on_compute(clip)
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
    from .teachers.base import align_frames
    if get_teacher is None:
        from .teachers.base import get_teacher
    cache = cache or EmbeddingCache()
    parts = split_teacher_names(names)
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
