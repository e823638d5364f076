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

An entry's bytes depend on nothing but its contents (the zip members carry a fixed date), and
each clip's embedding is computed alone, so the teachers' pass can be shared out:
``teacher_features(..., workers=N)`` gives every N-th clip to each of N processes on this
machine, and under torchrun each rank takes its share (then waits for the others); each
writes its entries into the same cache, and a cache built by N workers is byte for byte the
one a single process builds (with as many torch threads per process: a network's float sums
depend on how many threads share them; workers take their parent's count, the CLI's default
is 1). Entries are written as they are computed, so a killed pass
resumes where it stopped: what is there is a hit.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from edgeaudio.files import atomic_write_bytes

from .progress import progress_bar
from .teachers.base import align_frames
from .teachers.registry import parse_teacher_names

CACHE_ENV_VAR = "EDGEAUDIO_CACHE"
CACHE_FORMAT = 1
ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # the zip format's first date: entries carry no write time


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


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """The ``.npz`` that ``np.savez`` writes (stored members, ``np.load`` reads it), with a fixed
    member date instead of the time of writing: equal arrays give equal bytes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, array in arrays.items():
            member = io.BytesIO()
            np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=ZIP_DATE)
            info.external_attr = 0o600 << 16
            archive.writestr(info, member.getvalue())
    return buffer.getvalue()


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
        return atomic_write_bytes(path, npz_bytes(
            {"embedding": embedding, "meta": np.array(json.dumps(meta, sort_keys=True))}))


def cached_embeddings(teacher, clips: Sequence[str], waves: Sequence[np.ndarray],
                      sample_rate: int, cache: EmbeddingCache, *, settings: dict | None = None,
                      progress: bool = False, stats: CacheStats | None = None,
                      keep: bool = True) -> list[np.ndarray]:
    """Embeddings ``[T_F, B_F]`` of every clip by ``teacher``, from the cache or computed once.

    ``clips`` are stable clip keys (resolved paths), ``waves`` the decoded clips at
    ``sample_rate`` (resampled here to the teacher's rate if it differs; any sequence, one
    that decodes on access too: no clip is held longer than its turn). ``keep=False`` only
    fills the cache (and returns an empty list).
    """
    from edgeaudio.audio import resample

    stats = stats if stats is not None else CacheStats()
    settings = {"input": "whole clip, mono", "sample_rate": int(teacher.sample_rate),
                **(settings or {})}
    identity = teacher.cache_identity()
    out: list[np.ndarray | None] = [None] * len(clips)

    def at_teacher_rate(i: int) -> np.ndarray:
        wave = waves[i]
        return wave if sample_rate == teacher.sample_rate else \
            resample(wave, sample_rate, teacher.sample_rate)

    todo = []
    for i, clip in enumerate(clips):
        fp = fingerprint(at_teacher_rate(i))
        embedding, status = cache.get(identity, settings, clip, fp)
        stats.add(status)
        if embedding is None:
            todo.append((i, clip, fp))
        elif keep:
            out[i] = embedding
    if todo:
        bar = progress_bar(len(todo), f"teacher {teacher.name} -> cache", unit="clip",
                           enabled=progress)
        for i, clip, fp in todo:
            embedding = teacher.embed([at_teacher_rate(i)])[0]
            cache.put(identity, settings, clip, fp, embedding)
            if keep:
                out[i] = np.asarray(embedding, dtype=np.float32)
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
    return out if keep else []  # type: ignore[return-value]


def clip_subset(waves: Sequence, positions: Sequence[int]) -> Sequence:
    """The clips at ``positions``, to hand to another process: a decoding sequence's own
    ``subset`` (paths, not samples), else the arrays themselves."""
    if hasattr(waves, "subset"):
        return waves.subset(positions)
    return [waves[i] for i in positions]


def _fill_share(job: tuple) -> dict:
    """One worker's share of the teachers' pass: its clips' entries into the cache, one teacher
    after the other (each built once); its counts."""
    names, clips, waves, sample_rate, root, get_teacher, threads = job
    try:
        import torch
        torch.set_num_threads(threads)  # as many as the single process: the same arithmetic
    except ImportError:
        pass
    if get_teacher is None:
        from .teachers.registry import get_teacher
    stats = CacheStats()
    for name in names:
        cached_embeddings(get_teacher(name), clips, waves, sample_rate, EmbeddingCache(root),
                          stats=stats, keep=False)
    return stats.as_dict()


def fill_cache(names: Sequence[str], clips: Sequence[str], waves: Sequence, sample_rate: int,
               cache: EmbeddingCache, *, workers: int = 1, world=None,
               get_teacher: Callable | None = None, progress: bool = False) -> CacheStats:
    """The entries of the teachers ``names`` (single teachers, as ``parse_teacher_names``
    gives them) for every clip, the clips shared out: under torchrun (``world``) each rank
    takes every ``size``-th clip and waits for the others; each rank's share goes to
    ``workers`` processes (spawned, each building every teacher once; ``get_teacher`` must
    then be picklable). Returns the counts of the lookups made."""
    from .distributed import SINGLE

    world = world or SINGLE
    if workers < 1:
        raise ValueError(f"--workers must be >= 1, got {workers}")
    mine = world.share(range(len(clips)))
    stats = CacheStats()
    if workers == 1 or len(mine) <= 1:
        if get_teacher is None:
            from .teachers.registry import get_teacher
        for name in names:
            cached_embeddings(get_teacher(name), [clips[i] for i in mine],
                              clip_subset(waves, mine), sample_rate, cache, stats=stats,
                              progress=progress, keep=False)
    else:
        import multiprocessing

        try:
            import torch
            threads = torch.get_num_threads()
        except ImportError:
            threads = 1
        shares = [mine[k::workers] for k in range(workers) if mine[k::workers]]
        jobs = [(list(names), [clips[i] for i in share], clip_subset(waves, share),
                 sample_rate, str(cache.root), get_teacher, threads) for share in shares]
        bar = None
        if progress:
            bar = progress_bar(len(jobs), f"teachers {'+'.join(names)} -> cache, "
                                          f"{len(jobs)} workers", "share")
        with ProcessPoolExecutor(len(jobs),
                                 mp_context=multiprocessing.get_context("spawn")) as pool:
            for counts in pool.map(_fill_share, jobs):
                for status, n in counts.items():
                    setattr(stats, status, getattr(stats, status) + n)
                if bar is not None:
                    bar.update(1)
        if bar is not None:
            bar.close()
    world.barrier()  # every rank's share is in the cache
    return stats


def teacher_features(names: Sequence[str], clips: Sequence[str], waves: Sequence[np.ndarray],
                     sample_rate: int, cache: EmbeddingCache | None = None, *,
                     progress: bool = False, get_teacher: Callable | None = None,
                     stats: CacheStats | None = None, workers: int = 1, world=None
                     ) -> tuple[list[np.ndarray], dict]:
    """Concatenated teacher embeddings per clip (time of the first teacher) and a description
    ``{"teachers": [...], "dims": [...], "dim": total, "weights_sha256": {...}}``. With
    ``workers`` > 1 or several torchrun ranks (``world``), ``fill_cache`` shares the pass out
    first; the counts in ``stats`` are then those of the shares."""
    shared = workers > 1 or (world is not None and world.size > 1)
    fill_getter = get_teacher
    if get_teacher is None:
        from .teachers.registry import get_teacher
    cache = cache or EmbeddingCache()
    parts = parse_teacher_names(names)
    if not parts:
        raise ValueError("no teacher named")
    per_teacher, info = [], {"teachers": [], "dims": [], "weights_sha256": {},
                             "hop_seconds": []}
    if shared:
        counts = fill_cache(parts, clips, waves, sample_rate, cache, workers=workers,
                            world=world, get_teacher=fill_getter, progress=progress)
        if stats is not None:
            for status, n in counts.as_dict().items():
                setattr(stats, status, getattr(stats, status) + n)
    for name in parts:
        teacher = get_teacher(name)
        reading = CacheStats()
        per_teacher.append(cached_embeddings(teacher, clips, waves, sample_rate, cache,
                                             progress=progress and not shared, stats=reading))
        if stats is not None:  # after shared filling, a read that is not a hit is news
            for status, n in reading.as_dict().items():
                if status != "hit" or not shared:
                    setattr(stats, status, getattr(stats, status) + n)
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
