"""Harmonic filterbank of Won et al. 2020, "Data-driven harmonic filters for audio
representation learning" (ICASSP 2020).

For every fundamental ``f0`` on a semitone grid and every harmonic ``h = 1..H``, one triangular
band-pass filter centred on ``h * f0``. Its full width at the base follows the linear ERB rule
(Glasberg & Moore's ERB, 24.7 * (4.37 f / 1000 + 1) = 0.1079 f + 24.7 Hz) divided by a learnable
quality factor ``Q``::

    bw(f) = (0.1079 * f + 24.7) / Q                       # Hz, Q initialised to 1.0
    w(k)  = max(0, min(1 + 2 (k - f) / bw, 1 - 2 (k - f) / bw))   # k: FFT bin frequency

so the triangle peaks at 1 on ``f`` and reaches 0 at ``f +- bw / 2``. This is the paper's
"only Q" variant (one scalar Q shared by all filters; the authors' code initialises it to 1.0).
Here Q is stored as ``log Q`` so that no optimiser step can make it zero or negative.

The matrix is ``[H * F, n_fft // 2 + 1]`` in harmonic-major order: rows ``h*F .. (h+1)*F - 1``
hold harmonic ``h + 1``, so a ``[.., H * F]`` feature vector reshapes to ``[.., H, F]`` with the
harmonics as channels. Filters centred above Nyquist are kept as all-zero rows (the shape must not
depend on the sample rate), and with the defaults (C1 = 32.7 Hz, 64 semitones, up to D#6 =
1244.5 Hz) the 6th harmonic tops out at 7467 Hz, under 16 kHz's Nyquist, as in the paper (C1 up to
the note nearest sr / (2 H)).

Frequency resolution: at Q = 1 the narrowest filter (32.7 Hz) is 28.2 Hz wide, 14.1 Hz each side.
With ``n_fft = 512`` at 16 kHz (31.25 Hz bins) some low filters fall between two bins and come
out empty; ``n_fft = 1024`` (a 512-sample window zero-padded, 15.6 Hz bins) keeps every filter
non-empty, which is why the students use it.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

ERB_ALPHA = 0.1079  # Hz per Hz: slope of the linearised ERB
ERB_BETA = 24.7     # Hz: ERB at 0 Hz
C1_HZ = 440.0 * 2.0 ** ((24 - 69) / 12.0)  # 32.703 Hz, the paper's lowest f0


def semitone_grid(f0_min: float, n_semitones: int, bins_per_semitone: int = 1) -> np.ndarray:
    """``n_semitones * bins_per_semitone`` fundamentals from ``f0_min``, equally spaced in pitch."""
    steps = np.arange(n_semitones * bins_per_semitone, dtype=np.float64) / bins_per_semitone
    return f0_min * 2.0 ** (steps / 12.0)


class HarmonicFilterbank(nn.Module):
    """Learnable-Q harmonic filterbank; ``forward()`` returns the ``[H*F, n_fft//2+1]`` matrix."""

    def __init__(self, sample_rate: int, n_fft: int, n_harmonics: int = 6, n_semitones: int = 64,
                 f0_min: float = C1_HZ, bins_per_semitone: int = 1, learn_q: bool = True,
                 q_init: float = 1.0):
        super().__init__()
        if n_harmonics < 1 or n_semitones < 1 or bins_per_semitone < 1:
            raise ValueError("n_harmonics, n_semitones and bins_per_semitone must be >= 1")
        if not 0.0 < f0_min < sample_rate / 2.0:
            raise ValueError(f"f0_min must lie in (0, {sample_rate / 2}), got {f0_min}")
        if q_init <= 0.0:
            raise ValueError(f"q_init must be positive, got {q_init}")
        self.sample_rate = int(sample_rate)
        self.n_fft = int(n_fft)
        self.n_harmonics = int(n_harmonics)
        self.n_semitones = int(n_semitones)
        self.bins_per_semitone = int(bins_per_semitone)
        self.f0_min = float(f0_min)
        self.learn_q = bool(learn_q)

        f0 = semitone_grid(f0_min, n_semitones, bins_per_semitone)
        harmonics = np.arange(1, n_harmonics + 1, dtype=np.float64)
        centres = (harmonics[:, None] * f0[None, :]).reshape(-1)  # harmonic-major
        nyquist = sample_rate / 2.0
        fft_freqs = np.linspace(0.0, nyquist, n_fft // 2 + 1)
        self.register_buffer("centres_hz", torch.tensor(centres, dtype=torch.float32))
        self.register_buffer("fft_freqs_hz", torch.tensor(fft_freqs, dtype=torch.float32))
        self.register_buffer("below_nyquist",
                             torch.tensor(centres <= nyquist, dtype=torch.float32)[:, None])
        log_q = torch.tensor([math.log(q_init)], dtype=torch.float32)
        if learn_q:
            self.log_q = nn.Parameter(log_q)
        else:
            self.register_buffer("log_q", log_q)

    @property
    def n_freq(self) -> int:
        """Filters per harmonic (F)."""
        return self.n_semitones * self.bins_per_semitone

    @property
    def n_bins(self) -> int:
        return self.n_harmonics * self.n_freq

    @property
    def q(self) -> torch.Tensor:
        return self.log_q.exp()

    def bandwidths_hz(self) -> torch.Tensor:
        return (ERB_ALPHA * self.centres_hz + ERB_BETA) / self.q

    def forward(self) -> torch.Tensor:
        half_width = (self.bandwidths_hz() / 2.0)[:, None]
        distance = (self.fft_freqs_hz[None, :] - self.centres_hz[:, None]).abs()
        triangle = torch.relu(1.0 - distance / half_width)
        return triangle * self.below_nyquist

    def describe(self) -> dict:
        return {"kind": "harmonic", "reference": "Won et al. 2020",
                "sample_rate": self.sample_rate, "n_fft": self.n_fft,
                "n_harmonics": self.n_harmonics, "n_semitones": self.n_semitones,
                "bins_per_semitone": self.bins_per_semitone, "f0_min": self.f0_min,
                "q": float(self.q.detach()), "learn_q": self.learn_q,
                "bandwidth": f"({ERB_ALPHA} * f + {ERB_BETA}) / q"}
