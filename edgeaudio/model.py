"""Model: a self-describing model file plus a backend; classify clips, open streams."""
from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from .audio import check_sample_rate, check_waveform, read_blocks, resample, to_mono
from .backends import open_backend
from .errors import ModelFileError
from .frontend import Frontend
from .modelfile import read_model_bytes
from .windows import checked_hop_seconds, hop_samples, iter_chunks, iter_windows, window_starts

DEFAULT_MODEL_NAME = "esc50-student.int8.tflite"  # recipes/esc50_default_model.sh; MODEL_CARD.md


def default_model_path() -> Path:
    """The model bundled inside the package (see edgeaudio/models/MODEL_CARD.md)."""
    path = Path(str(resources.files("edgeaudio.models") / DEFAULT_MODEL_NAME))
    if not path.exists():
        raise ModelFileError(f"the bundled default model is missing ({path}); reinstall "
                             "edgeaudio or pass --model")
    return path


def softmax(x: np.ndarray) -> np.ndarray:
    z = np.exp(x - x.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def activate(raw: np.ndarray, activation: str) -> np.ndarray:
    """A model's raw outputs as class scores, by its metadata's ``output_activation``."""
    if activation == "softmax":
        return softmax(raw)
    if activation == "sigmoid":
        return 1.0 / (1.0 + np.exp(-raw))
    return raw


@dataclass
class ClipResult:
    labels: list
    scores: np.ndarray           # [classes], the clip's pooled scores
    window_scores: np.ndarray    # [windows, classes]

    @property
    def windows(self) -> int:
        return len(self.window_scores)

    @property
    def frames(self) -> int:
        """Old name of ``windows`` (it never counted feature frames); kept for a release."""
        return self.windows

    def top(self, k: int = 3) -> list:
        order = np.argsort(-self.scores)[:k]
        return [(self.labels[i], float(self.scores[i])) for i in order]

    def to_dict(self, k: int = 3, file: str | None = None) -> dict:
        d = {"file": file} if file is not None else {}
        d.update({"top": [{"label": lab, "score": round(s, 4)} for lab, s in self.top(k)],
                  "windows": self.windows,
                  "frames": self.windows})   # old key, kept for one release
        return d


class Model:
    """A loaded model file. ``Model(path)``; ``model.classify(audio)``; ``model.stream()``."""

    def __init__(self, path=None, backend: str = "auto", threads: int = 1):
        path = default_model_path() if path is None else path
        self.path, data, self.format = read_model_bytes(path)
        self.backend = open_backend(self.path, data, self.format, backend, threads)
        self.info = self.backend.info
        self.frontend = Frontend(self.info.frontend)
        if self.info.streaming is not None:
            return  # the backend checked the streaming graph against the metadata
        expected = (1, self.info.n_frames, self.info.frontend.n_bins)
        if tuple(self.backend.input_shape) != expected:
            raise ModelFileError(f"{self.path}: model input {self.backend.input_shape} does not "
                                 f"match its metadata fields n_frames and "
                                 f"frontend.filterbank (expected {expected})")
        outputs = self.backend.output_size
        if outputs is None:  # the file leaves the class count open: ask the graph itself
            outputs = self.backend.run(np.zeros(expected[1:], np.float32)).size
        if outputs != len(self.info.labels):
            raise ModelFileError(f"{self.path}: metadata field labels: {len(self.info.labels)} "
                                 f"labels for a model with {outputs} outputs "
                                 f"{tuple(self.backend.output_shape)}")

    @property
    def labels(self) -> list:
        return self.info.labels

    @property
    def sample_rate(self) -> int:
        return self.info.sample_rate

    @property
    def backend_name(self) -> str:
        return self.backend.name

    def scores_for_features(self, features: np.ndarray) -> np.ndarray:
        """One window of log features ``[n_frames, bins]`` -> class scores."""
        return activate(self.backend.run(features), self.info.output_activation)

    def scores_for_window(self, wave: np.ndarray) -> np.ndarray:
        """Exactly ``window_samples`` of audio at the model rate -> class scores."""
        return self.scores_for_features(self.frontend(wave))

    def window_starts(self, n_samples: int, hop_samples: int) -> list:
        """Window starts covering a clip (``edgeaudio.windows.window_starts``' cover rule)."""
        return window_starts(n_samples, self.info.window_samples, hop_samples)

    def classify(self, audio, sample_rate: int | None = None,
                 hop_seconds: float | None = None) -> ClipResult:
        """A whole recording (path, or waveform with its ``sample_rate``) -> ClipResult.

        A file is decoded, resampled and scored a block at a time, so its length does not
        bound memory (only the ``[windows, classes]`` scores grow: 3 MB for an hour). A
        waveform gets the checks a file gets (layout, rate, NaN / Inf, length). ``hop_seconds``
        (default: the model's) must be at least one front-end frame. A streaming-aware file is
        run once per chunk, the states carried, and its windows are runs of ``window_chunks``
        logit rows (``_streaming_window_scores``)."""
        if isinstance(audio, (str, Path)):
            blocks = read_blocks(audio, self.sample_rate)
        else:
            if sample_rate is None:
                raise ValueError("classify(waveform) needs its sample_rate")
            rate = check_sample_rate(sample_rate, "waveform")
            wave = check_waveform(to_mono(audio), "waveform")
            blocks = [resample(wave, rate, self.sample_rate)]
        if self.info.streaming is not None:
            window_scores = self._streaming_window_scores(blocks, hop_seconds)
        else:
            hop = self.classify_hop(hop_seconds)
            window_scores = np.stack([self.scores_for_window(w) for w in
                                      iter_windows(blocks, self.info.window_samples, hop)])
        pooled = (window_scores.max(axis=0) if self.info.clip_pooling == "max"
                  else window_scores.mean(axis=0))
        return ClipResult(self.labels, pooled, window_scores)

    def classify_hop(self, hop_seconds: float | None = None) -> int:
        """``classify``'s hop in samples: the model's, or ``hop_seconds``; refused below one
        front-end frame (finer hops only repeat nearly equal windows, at any cost)."""
        seconds = checked_hop_seconds(self.info.hop_seconds if hop_seconds is None
                                      else hop_seconds, self.sample_rate,
                                      self.info.frontend.hop_length)
        return hop_samples(seconds, self.sample_rate)

    def chunk_logits(self, blocks) -> np.ndarray:
        """A streaming graph over a waveform arriving as ``blocks``: its raw logits
        ``[chunks, classes]``, one call per chunk, the states carried from zeros."""
        fe, states, rows = self.info.frontend, self.backend.initial_states(), []
        for span in iter_chunks(blocks, self.info.window_samples, self.info.chunk_samples,
                                fe.win_length):
            logits, states = self.backend.run_chunk(self.frontend(span), states)
            rows.append(logits)
        return np.stack(rows)

    def _streaming_window_scores(self, blocks, hop_seconds) -> np.ndarray:
        """Window scores of a streaming graph: activation(mean of ``window_chunks`` logit
        rows), every ``hop_seconds`` rounded to whole chunks (default: one)."""
        rows = self.chunk_logits(blocks)
        hop_chunks = 1
        if hop_seconds is not None:
            seconds = checked_hop_seconds(hop_seconds, self.sample_rate,
                                          self.info.frontend.hop_length)
            hop_chunks = max(1, round(seconds / self.info.chunk_seconds))
        window = min(self.info.streaming["window_chunks"], len(rows))
        starts = window_starts(len(rows), window, hop_chunks)
        means = np.lib.stride_tricks.sliding_window_view(rows, window, axis=0)[starts]
        return activate(means.mean(axis=-1), self.info.output_activation)

    def stream(self, **settings):
        """A streaming engine over this model; see ``edgeaudio.stream.Stream``."""
        from .stream import Stream
        return Stream(self, **settings)


def load_model(path=None, backend: str = "auto", threads: int = 1) -> Model:
    return Model(path, backend=backend, threads=threads)
