"""The numpy front end: waveform -> log filterbank features.

This is the single definition of the features every edgeaudio model sees. The training room
re-implements the same steps in torch and a test holds the two equal (max abs diff <= 1e-4).

Steps, in order (no centre padding, so a stream and a clip frame the same way):

1. frames of ``win_length`` samples every ``hop_length`` samples;
2. times a periodic Hann window, zero-padded at the end to ``n_fft``, real FFT;
3. power spectrum ``|X|^2`` -> ``[frames, n_fft // 2 + 1]``;
4. a filterbank matrix ``[n_bins, n_fft // 2 + 1]`` (mel from parameters, or any matrix the
   model file carries, such as a trained harmonic filterbank);
5. ``log(power @ fb.T + log_offset)``.
"""
from __future__ import annotations

import base64
from dataclasses import dataclass, field

import numpy as np

from .errors import ModelFileError


def hz_to_mel(hz):
    """HTK mel scale."""
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def mel_to_hz(mel):
    return 700.0 * (10.0 ** (np.asarray(mel, dtype=np.float64) / 2595.0) - 1.0)


def fft_frequencies(sample_rate: int, n_fft: int) -> np.ndarray:
    return np.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1)


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float = 0.0,
                   fmax: float | None = None) -> np.ndarray:
    """Triangular filters equally spaced on the HTK mel scale, peak 1 (no area norm).

    Returns float32 ``[n_mels, n_fft // 2 + 1]``.
    """
    fmax = sample_rate / 2.0 if fmax is None else float(fmax)
    if not 0.0 <= fmin < fmax <= sample_rate / 2.0:
        raise ValueError(f"mel filterbank needs 0 <= fmin < fmax <= {sample_rate / 2}, "
                         f"got fmin={fmin}, fmax={fmax}")
    freqs = fft_frequencies(sample_rate, n_fft)
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (freqs[None, :] - lower) / (centre - lower)
    falling = (upper - freqs[None, :]) / (upper - centre)
    return np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32)


def hann_window(length: int) -> np.ndarray:
    """Periodic Hann window (the STFT convention, equal to torch.hann_window's default)."""
    n = np.arange(length, dtype=np.float64)
    return (0.5 - 0.5 * np.cos(2.0 * np.pi * n / length)).astype(np.float32)


def encode_matrix(matrix: np.ndarray) -> dict:
    """A float32 filterbank matrix as JSON-safe data (for the model file's metadata).

    Filterbanks are mostly zeros (each row is one band), so each row keeps only the span from
    its first to its last non-zero entry: a 384 x 513 harmonic filterbank takes ~40 KB instead
    of 1 MB of base64.
    """
    m = np.ascontiguousarray(matrix, dtype="<f4")
    if m.ndim != 2:
        raise ValueError(f"filterbank matrix must be 2-D, got shape {m.shape}")
    starts, lengths, spans = [], [], []
    for row in m:
        nz = np.flatnonzero(row)
        start, stop = (int(nz[0]), int(nz[-1]) + 1) if len(nz) else (0, 0)
        starts.append(start)
        lengths.append(stop - start)
        spans.append(row[start:stop])
    data = np.concatenate(spans) if spans else np.zeros(0, "<f4")
    return {"shape": list(m.shape), "dtype": "float32", "encoding": "row-spans",
            "starts": starts, "lengths": lengths,
            "data_b64": base64.b64encode(data.astype("<f4").tobytes()).decode("ascii")}


def decode_matrix(spec: dict) -> np.ndarray:
    """The matrix back from ``encode_matrix`` data (also reads plain dense data)."""
    try:
        raw = np.frombuffer(base64.b64decode(spec["data_b64"]), dtype="<f4")
        rows, cols = (int(n) for n in spec["shape"])
        if spec.get("encoding", "dense") == "dense":
            return raw.reshape(rows, cols).astype(np.float32)
        if spec["encoding"] != "row-spans":
            raise ValueError(f"unknown encoding {spec['encoding']!r}")
        starts, lengths = spec["starts"], spec["lengths"]
        if len(starts) != rows or len(lengths) != rows or sum(lengths) != raw.size:
            raise ValueError("row spans do not match the data")
        m = np.zeros((rows, cols), np.float32)
        offset = 0
        for r, (start, length) in enumerate(zip(starts, lengths)):
            if start < 0 or start + length > cols:
                raise ValueError(f"row {r} span exceeds {cols} columns")
            m[r, start:start + length] = raw[offset:offset + length]
            offset += length
        return m
    except (KeyError, ValueError, TypeError) as exc:
        raise ModelFileError(f"front end filterbank matrix is malformed: {exc}") from exc


@dataclass
class FrontendSpec:
    """Everything needed to turn a waveform into the model's input features."""

    sample_rate: int = 16000
    n_fft: int = 512
    win_length: int = 400
    hop_length: int = 160
    filterbank: dict = field(default_factory=lambda: {"kind": "mel", "n_bins": 64,
                                                      "fmin": 50.0, "fmax": 8000.0})
    log_offset: float = 1e-6

    def __post_init__(self):
        if self.win_length > self.n_fft:
            raise ValueError(f"win_length {self.win_length} exceeds n_fft {self.n_fft}")
        if self.hop_length <= 0 or self.win_length <= 0:
            raise ValueError("win_length and hop_length must be positive")

    @classmethod
    def from_dict(cls, d: dict) -> "FrontendSpec":
        try:
            return cls(sample_rate=int(d["sample_rate"]), n_fft=int(d["n_fft"]),
                       win_length=int(d["win_length"]), hop_length=int(d["hop_length"]),
                       filterbank=dict(d["filterbank"]), log_offset=float(d["log_offset"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelFileError(f"front end spec is incomplete or malformed: {exc}") from exc

    def to_dict(self) -> dict:
        return {"sample_rate": self.sample_rate, "n_fft": self.n_fft,
                "win_length": self.win_length, "hop_length": self.hop_length,
                "window": "hann", "filterbank": self.filterbank, "log_offset": self.log_offset}

    def filterbank_matrix(self) -> np.ndarray:
        fb = self.filterbank
        kind = fb.get("kind")
        if kind == "mel":
            return mel_filterbank(self.sample_rate, self.n_fft, int(fb["n_bins"]),
                                  float(fb.get("fmin", 0.0)), fb.get("fmax"))
        if kind == "matrix":
            m = decode_matrix(fb)
            if m.ndim != 2 or m.shape[1] != self.n_fft // 2 + 1:
                raise ModelFileError(f"filterbank matrix has shape {m.shape}, expected "
                                     f"[bins, {self.n_fft // 2 + 1}]")
            return m
        raise ModelFileError(f"unknown filterbank kind {kind!r} (known: mel, matrix)")

    @property
    def n_bins(self) -> int:
        fb = self.filterbank
        return int(fb["n_bins"]) if fb.get("kind") == "mel" else int(fb["shape"][0])

    def n_frames(self, n_samples: int) -> int:
        """Frames that ``n_samples`` of audio give (0 when shorter than one window)."""
        if n_samples < self.win_length:
            return 0
        return 1 + (n_samples - self.win_length) // self.hop_length

    def samples_for_frames(self, n_frames: int) -> int:
        return self.win_length + (n_frames - 1) * self.hop_length


class Frontend:
    """Callable numpy front end; precomputes the window and filterbank once."""

    def __init__(self, spec: FrontendSpec):
        self.spec = spec
        self.window = hann_window(spec.win_length).astype(np.float64)
        self.fb_t = np.ascontiguousarray(spec.filterbank_matrix().T, dtype=np.float64)

    def power_spectrum(self, wave: np.ndarray) -> np.ndarray:
        s = self.spec
        # float64 from framing to log: quiet bins sit ~20 nats below a frame's peak, beyond
        # float32's reach, and the training twin computes the same way.
        wave = np.asarray(wave, dtype=np.float64)
        n = s.n_frames(len(wave))
        if n == 0:
            return np.zeros((0, s.n_fft // 2 + 1), np.float64)
        frames = np.lib.stride_tricks.sliding_window_view(wave, s.win_length)[::s.hop_length][:n]
        spec = np.fft.rfft(frames * self.window, n=s.n_fft, axis=-1)
        return spec.real ** 2 + spec.imag ** 2

    def __call__(self, wave: np.ndarray) -> np.ndarray:
        """``[samples]`` float waveform -> ``[frames, bins]`` float32 log features."""
        power = self.power_spectrum(wave)
        return np.log(power @ self.fb_t + self.spec.log_offset).astype(np.float32)
