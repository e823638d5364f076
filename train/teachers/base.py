"""The teacher interface, its helpers, and the concatenation of teachers.

A teacher is a pretrained audio model that turns a clip into a time series of embeddings
``[T_F, B_F]`` (frames x features). Students never see a teacher at inference: teachers run once
per clip into a cache keyed by ``name`` and ``weights_hash`` (see ``Teacher.cache_identity``).
Teachers are found by name in ``edgeaudio.train.teachers.registry``.

Pretrained weights live in the shared folder (``edgeaudio.files.shared_dir``: ``../shared``
from the repository root, or wherever ``$EDGEAUDIO_SHARED`` points). They are never copied into
the repository.
"""
from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Sequence

import numpy as np

from edgeaudio.errors import AudioError, EdgeAudioError
from edgeaudio.files import SHARED_ENV_VAR


class TeacherWeightsError(EdgeAudioError):
    """A teacher's weights file (or its class map) is missing or unreadable."""


def require_file(path: Path, what: str) -> Path:
    """Return ``path`` if it is a file; otherwise raise an error that names it and the fix."""
    if not path.is_file():
        raise TeacherWeightsError(
            f"{what} not found: {path} (set {SHARED_ENV_VAR} to the folder holding "
            f"weights/ and data/, or pass shared_dir=...)")
    return path


def sha256_of_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def as_waveform(waveform, what: str = "waveform") -> np.ndarray:
    """Validate one clip: 1-D, non-empty, finite; returned as contiguous float32."""
    array = np.asarray(waveform)
    if array.ndim != 1:
        raise AudioError(f"{what} must be 1-D mono samples, got shape {array.shape}")
    if array.size == 0:
        raise AudioError(f"{what} is empty")
    array = np.ascontiguousarray(array, dtype=np.float32)
    if not np.all(np.isfinite(array)):
        raise AudioError(f"{what} contains NaN or infinite samples")
    return array


class Teacher(ABC):
    """A pretrained audio model that embeds clips.

    Attributes every teacher sets:
      name          registry name ("yamnet", "efficientat")
      sample_rate   the rate ``embed`` and ``predict`` expect their input at
      hop_seconds   time between consecutive embedding frames
      dim           embedding size B_F
      class_names   the names of the teacher's own output classes (empty if it has none)
      weights_path  the weights file; ``weights_hash`` is its sha256
    """

    name: str
    sample_rate: int
    hop_seconds: float
    dim: int
    class_names: list[str]
    weights_path: Path | None = None
    _weights_hash: str | None = None

    @property
    def weights_hash(self) -> str:
        """sha256 of the weights file (computed once), part of the embedding cache key."""
        if self._weights_hash is None:
            self._weights_hash = sha256_of_file(self.weights_path)
        return self._weights_hash

    def cache_identity(self) -> dict:
        """What identifies this teacher's embeddings in a cache (with the clip's own key)."""
        return {"teacher": self.name, "weights_sha256": self.weights_hash,
                "sample_rate": self.sample_rate, "hop_seconds": self.hop_seconds,
                "dim": self.dim}

    @abstractmethod
    def embed(self, waveforms: Sequence[np.ndarray]) -> list[np.ndarray]:
        """1-D float32 clips at ``self.sample_rate`` -> one ``[T_F, dim]`` float32 array each."""

    @abstractmethod
    def predict(self, waveform: np.ndarray) -> np.ndarray:
        """Clip-level scores over ``class_names`` (probabilities in [0, 1]), for checks."""

    def event_vectors(self) -> np.ndarray:
        """The output layer's weight rows, ``[n_events, dim]``, in the embedding space.

        Only teachers whose classifier is one linear layer on top of the embedding have them.
        """
        raise NotImplementedError(f"teacher {self.name!r} has no linear output layer on its "
                                  f"{self.dim}-d embedding, so no source-event vectors")

    def top_classes(self, waveform: np.ndarray, k: int = 5) -> list[tuple[str, float]]:
        """The ``k`` best-scoring classes of ``predict`` as (name, score), best first."""
        scores = self.predict(waveform)
        order = np.argsort(scores)[::-1][:k]
        return [(self.class_names[i], float(scores[i])) for i in order]

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(name={self.name!r}, sample_rate={self.sample_rate}, "
                f"hop_seconds={self.hop_seconds}, dim={self.dim})")


def align_frames(embedding: np.ndarray, n_frames: int) -> np.ndarray:
    """Resample ``[T_src, D]`` to ``[n_frames, D]`` along time by repetition / average pooling.

    Both sequences are taken to span the same clip, so target frame ``i`` covers the source
    interval ``[i * T_src / n_frames, (i + 1) * T_src / n_frames)`` and gets the mean of the
    source frames that interval touches. A finer source is thereby average-pooled; a coarser
    one is repeated (a target frame that straddles two source frames gets their mean).
    Frame counts, not hops, set the mapping because each teacher pads the clip's end in its own
    way (YAMNet: 10 frames of 0.48 s for 5 s; EfficientAT: 16 frames of 0.32 s).
    """
    t_src = embedding.shape[0]
    if t_src == n_frames:
        return embedding
    scale = t_src / n_frames
    starts = np.floor(np.arange(n_frames) * scale).astype(int)
    ends = np.maximum(starts + 1, np.ceil((np.arange(n_frames) + 1) * scale - 1e-9).astype(int))
    ends = np.minimum(ends, t_src)
    cumulative = np.concatenate([np.zeros((1, embedding.shape[1]), np.float64),
                                 np.cumsum(embedding, axis=0, dtype=np.float64)])
    means = (cumulative[ends] - cumulative[starts]) / (ends - starts)[:, None]
    return means.astype(np.float32)


class ConcatTeacher(Teacher):
    """Several teachers as one: embeddings concatenated along features.

    Time follows the first teacher: its frame count and ``hop_seconds``; the others are brought
    to that frame count by ``align_frames`` (average pooling of finer, repetition of coarser
    sequences), as in Hung & Lerch's combined teachers. All must share one input sample rate.
    """

    def __init__(self, teachers: Sequence[Teacher]):
        if len(teachers) < 2:
            raise ValueError("ConcatTeacher needs at least two teachers")
        rates = {t.sample_rate for t in teachers}
        if len(rates) != 1:
            raise ValueError(f"teachers take different input sample rates {sorted(rates)}; "
                             f"wrap them to a common rate first")
        self.teachers = list(teachers)
        self.name = "+".join(t.name for t in teachers)
        self.sample_rate = teachers[0].sample_rate
        self.hop_seconds = teachers[0].hop_seconds
        self.dim = sum(t.dim for t in teachers)
        self.class_names = []

    @property
    def weights_hash(self) -> str:
        joined = "+".join(t.weights_hash for t in self.teachers)
        return hashlib.sha256(joined.encode("ascii")).hexdigest()

    def embed(self, waveforms: Sequence[np.ndarray]) -> list[np.ndarray]:
        per_teacher = [t.embed(waveforms) for t in self.teachers]
        combined = []
        for clip_embeddings in zip(*per_teacher):
            n_frames = clip_embeddings[0].shape[0]
            combined.append(np.concatenate(
                [align_frames(e, n_frames) for e in clip_embeddings], axis=1))
        return combined

    def predict(self, waveform: np.ndarray) -> np.ndarray:
        raise NotImplementedError("a ConcatTeacher has no classes of its own; call predict on "
                                  "one of its .teachers")
