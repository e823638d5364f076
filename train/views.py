"""Four views of one waveform for multi-view learning (Phan et al. 2021): log-mel, gammatone,
constant-Q (CQT) and the raw waveform. Plain torch (no torchaudio), filters built here.

Every spectral view maps a batch ``[B, S]`` at ``sample_rate`` to log features ``[B, T, F]``
(frames x bins, the layout of ``edgeaudio.frontend``) with one frame every ``hop_length``
samples; ``RawView`` returns the waveform ``[B, S]`` itself. All views with the same
``hop_length`` and ``win_length`` give the same frame count, ``1 + (S - win_length) // hop``
for the STFT views and the CQT (whose frames are centred on the STFT frames' centres).

``MelView``
    exactly the runtime front end (``edgeaudio.frontend``): periodic Hann window, |FFT|^2,
    triangular HTK-mel filters with peak 1, ``log(. + 1e-6)``. A mel branch can therefore be
    exported and run by the runtime as it is.
``GammatoneView``
    the same power spectrum weighted by 4th-order gammatone filters (an FFT "gammatonegram",
    as in Ellis's fft2gammatonemx): centre frequencies equally spaced on the ERB-rate scale of
    Glasberg & Moore (1990), ``ERB(f) = 24.7 (4.37 f / 1000 + 1)``, bandwidth ``b = 1.019
    ERB(fc)``, power response ``|H(f)|^2 = (1 + ((f - fc) / b)^2)^(-order)`` (the magnitude of
    a gammatone filter's response near its centre frequency), peak 1. Checked against
    ``scipy.signal.gammatone`` (the FIR gammatone's measured response) in the tests: wherever
    a filter is above -20 dB they agree within 0.05 dB for centres from 200 Hz to 5 kHz and
    0.6 dB from 50 Hz to 6 kHz; nearer to Nyquist the digital filter's folded image bends its
    response (this continuous-time one does not), so the centres stop at 7/8 of Nyquist by
    default (64 bands from 50 Hz to 7 kHz at 16 kHz).
``CQTView``
    a constant-Q transform (Brown 1991): bin ``k`` at ``fmin * 2^(k / bins_per_octave)``,
    ``Q = 1 / (2^(1 / bins_per_octave) - 1)``, a Hann-windowed complex exponential of
    ``N_k = ceil(Q * sample_rate / f_k)`` samples centred on the frame centre, normalised so a
    unit-amplitude sinusoid at ``f_k`` gives magnitude 1. Computed as one matrix product per
    octave (frames of that octave's longest kernel times its kernels), so the cost is about
    ``2 * bins_per_octave * sum(longest kernel per octave)`` MACs per frame.
``RawView``
    the waveform, for a branch with a learned 1-D front end.

``build_view(name, **settings)`` makes one by name ("mel", "gammatone", "cqt", "raw").
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from edgeaudio.frontend import FrontendSpec, hann_window, mel_filterbank

from .frontend import TorchFrontend

SAMPLE_RATE = 16000
N_FFT = 1024
WIN_LENGTH = 640   # 40 ms
HOP_LENGTH = 320   # 20 ms: 50 frames per second
LOG_OFFSET = 1e-6


# ----------------------------------------------------------------------------- ERB / gammatone

def hz_to_erb_rate(hz):
    """ERB-rate (number of ERBs below ``hz``), Glasberg & Moore 1990."""
    return 21.4 * np.log10(1.0 + 0.00437 * np.asarray(hz, dtype=np.float64))


def erb_rate_to_hz(erb):
    return (10.0 ** (np.asarray(erb, dtype=np.float64) / 21.4) - 1.0) / 0.00437


def erb_bandwidth(hz):
    """Equivalent rectangular bandwidth at ``hz``: 24.7 (4.37 hz / 1000 + 1)."""
    return 24.7 * (4.37 * np.asarray(hz, dtype=np.float64) / 1000.0 + 1.0)


def gammatone_centres(n_bands: int, fmin: float, fmax: float) -> np.ndarray:
    """``n_bands`` centre frequencies equally spaced in ERB-rate from ``fmin`` to ``fmax``."""
    return erb_rate_to_hz(np.linspace(hz_to_erb_rate(fmin), hz_to_erb_rate(fmax), n_bands))


def gammatone_filterbank(sample_rate: int, n_fft: int, n_bands: int, fmin: float = 50.0,
                         fmax: float | None = None, order: int = 4) -> np.ndarray:
    """Power weights ``[n_bands, n_fft // 2 + 1]`` (float32) of gammatone filters, peak 1."""
    fmax = sample_rate / 2.0 if fmax is None else float(fmax)
    if not 0.0 < fmin < fmax <= sample_rate / 2.0:
        raise ValueError(f"gammatone filterbank needs 0 < fmin < fmax <= {sample_rate / 2}, "
                         f"got fmin={fmin}, fmax={fmax}")
    centres = gammatone_centres(n_bands, fmin, fmax)[:, None]
    bandwidth = 1.019 * erb_bandwidth(centres)
    freqs = np.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1)[None, :]
    weights = (1.0 + ((freqs - centres) / bandwidth) ** 2) ** (-float(order))
    return weights.astype(np.float32)


# ----------------------------------------------------------------------------- CQT kernels

def cqt_frequencies(n_bins: int, fmin: float, bins_per_octave: int) -> np.ndarray:
    return float(fmin) * 2.0 ** (np.arange(n_bins, dtype=np.float64) / bins_per_octave)


def cqt_kernels(sample_rate: int, n_bins: int, fmin: float, bins_per_octave: int,
                filter_scale: float = 1.0) -> list[np.ndarray]:
    """One complex128 kernel per bin, ``N_k`` samples, centred (index ``N_k // 2`` = centre).

    ``kernel_k[n] = 2 w[n] / sum(w) * exp(2 pi i f_k (n - N_k // 2) / sample_rate)`` with ``w``
    a symmetric Hann window, so ``|<x, kernel_k>| = A`` for ``x = A cos(2 pi f_k t)``.
    """
    freqs = cqt_frequencies(n_bins, fmin, bins_per_octave)
    q = float(filter_scale) / (2.0 ** (1.0 / bins_per_octave) - 1.0)
    if freqs[-1] * (1.0 + 0.5 / q) > sample_rate / 2.0:
        raise ValueError(f"the top CQT bin ({freqs[-1]:.0f} Hz) reaches past Nyquist "
                         f"({sample_rate / 2:.0f} Hz): use fewer bins or a lower fmin")
    kernels = []
    for freq in freqs:
        length = int(math.ceil(q * sample_rate / freq))
        length += 1 - length % 2  # odd, so the centre sample is well defined
        n = np.arange(length) - length // 2
        window = 0.5 + 0.5 * np.cos(2.0 * np.pi * n / (length + 1))  # symmetric Hann, no zeros
        kernels.append(2.0 * window / window.sum() * np.exp(2j * np.pi * freq * n / sample_rate))
    return kernels


# ----------------------------------------------------------------------------- views

class _SpectralView(nn.Module):
    name = "spectral"

    def __init__(self, sample_rate: int, win_length: int, hop_length: int):
        super().__init__()
        self.sample_rate = int(sample_rate)
        self.win_length = int(win_length)
        self.hop_length = int(hop_length)

    def n_frames(self, n_samples: int) -> int:
        return 0 if n_samples < self.win_length else 1 + (n_samples - self.win_length) \
            // self.hop_length

    def output_shape(self, n_samples: int) -> tuple[int, int]:
        return (self.n_frames(n_samples), self.n_bins)

    def _check(self, wave: torch.Tensor) -> torch.Tensor:
        if wave.dim() != 2:
            raise ValueError(f"{self.name} view expects [batch, samples], got "
                             f"{tuple(wave.shape)}")
        if wave.shape[1] < self.win_length:
            raise ValueError(f"{self.name} view needs at least {self.win_length} samples, got "
                             f"{wave.shape[1]}")
        return wave


class MelView(_SpectralView):
    """Log-mel ``[B, T, n_mels]``: the runtime front end (``edgeaudio.frontend``) in torch."""

    name = "mel"

    def __init__(self, sample_rate: int = SAMPLE_RATE, n_fft: int = N_FFT,
                 win_length: int = WIN_LENGTH, hop_length: int = HOP_LENGTH, n_mels: int = 64,
                 fmin: float = 50.0, fmax: float | None = None):
        super().__init__(sample_rate, win_length, hop_length)
        self.n_bins = int(n_mels)
        self.spec = FrontendSpec(sample_rate=sample_rate, n_fft=n_fft, win_length=win_length,
                                 hop_length=hop_length, log_offset=LOG_OFFSET,
                                 filterbank={"kind": "mel", "n_bins": n_mels, "fmin": fmin,
                                             "fmax": fmax or sample_rate / 2.0})
        self.frontend = TorchFrontend(self.spec)

    def filterbank(self) -> np.ndarray:
        return mel_filterbank(self.sample_rate, self.spec.n_fft, self.n_bins,
                              self.spec.filterbank["fmin"], self.spec.filterbank["fmax"])

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return self.frontend(self._check(wave))


class GammatoneView(_SpectralView):
    """Log gammatone spectrogram ``[B, T, n_bands]`` (power spectrum x gammatone weights)."""

    name = "gammatone"

    def __init__(self, sample_rate: int = SAMPLE_RATE, n_fft: int = N_FFT,
                 win_length: int = WIN_LENGTH, hop_length: int = HOP_LENGTH, n_bands: int = 64,
                 fmin: float = 50.0, fmax: float | None = None, order: int = 4):
        super().__init__(sample_rate, win_length, hop_length)
        self.n_fft = int(n_fft)
        self.n_bins = int(n_bands)
        self.fmin = float(fmin)
        self.fmax = float(fmax) if fmax is not None else 0.875 * sample_rate / 2.0
        self.order = int(order)
        self.centres = gammatone_centres(n_bands, self.fmin, self.fmax)
        self.register_buffer("window", torch.from_numpy(hann_window(win_length)),
                             persistent=False)
        self.register_buffer("weights", torch.from_numpy(gammatone_filterbank(
            sample_rate, n_fft, n_bands, self.fmin, self.fmax, order)).double(),
            persistent=False)

    def filterbank(self) -> np.ndarray:
        return self.weights.float().numpy()

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        frames = self._check(wave).double().unfold(-1, self.win_length, self.hop_length)
        spectrum = torch.fft.rfft(frames * self.window.double(), n=self.n_fft, dim=-1)
        power = spectrum.real ** 2 + spectrum.imag ** 2
        return torch.log(power @ self.weights.T + LOG_OFFSET).float()


class CQTView(_SpectralView):
    """Log constant-Q power ``[B, T, n_bins]``, frames centred where the STFT views' are.

    Defaults: C1 (32.70 Hz) upward, 12 bins per octave, 94 bins (to 7.04 kHz: the band of
    the top bin stays below the 8 kHz Nyquist frequency). The longest kernel (C1) is 8229
    samples (0.51 s); the clip is zero-padded so every frame has its full support.
    """

    name = "cqt"

    def __init__(self, sample_rate: int = SAMPLE_RATE, win_length: int = WIN_LENGTH,
                 hop_length: int = HOP_LENGTH, fmin: float = 32.703, n_bins: int = 94,
                 bins_per_octave: int = 12, filter_scale: float = 1.0):
        super().__init__(sample_rate, win_length, hop_length)
        self.n_bins = int(n_bins)
        self.fmin = float(fmin)
        self.bins_per_octave = int(bins_per_octave)
        self.frequencies = cqt_frequencies(n_bins, fmin, bins_per_octave)
        kernels = cqt_kernels(sample_rate, n_bins, fmin, bins_per_octave, filter_scale)
        self.kernel_lengths = [len(k) for k in kernels]
        # one dense kernel matrix per octave: [2 * bins, longest kernel], real then imaginary
        self.groups = []
        for index, start in enumerate(range(0, n_bins, bins_per_octave)):
            group = kernels[start:start + bins_per_octave]
            length = max(len(k) for k in group)
            dense = np.zeros((len(group), length), dtype=np.complex128)
            for row, kernel in enumerate(group):
                offset = (length - len(kernel)) // 2
                dense[row, offset:offset + len(kernel)] = kernel
            matrix = np.concatenate([dense.real, dense.imag]).astype(np.float32)
            self.register_buffer(f"kernels{index}", torch.from_numpy(matrix), persistent=False)
            self.groups.append((start, len(group), length))

    def macs_per_frame(self) -> int:
        return sum(2 * count * length for _, count, length in self.groups)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        wave = self._check(wave)
        n_frames = self.n_frames(wave.shape[1])
        first_centre = self.win_length // 2
        outputs = []
        for index, (_, count, length) in enumerate(self.groups):
            half = length // 2
            # frame t covers [centre_t - half, centre_t + half], centre_t = first + t * hop
            start = first_centre - half
            needed = start + (n_frames - 1) * self.hop_length + length
            padded = F.pad(wave, (max(0, -start), max(0, needed - wave.shape[1])))
            offset = max(0, start)
            frames = padded[:, offset:offset + needed - start].unfold(-1, length,
                                                                      self.hop_length)
            response = frames @ getattr(self, f"kernels{index}").T  # [B, T, 2 * count]
            power = response[..., :count] ** 2 + response[..., count:] ** 2
            outputs.append(power)
        return torch.log(torch.cat(outputs, dim=-1) + LOG_OFFSET)


class RawView(nn.Module):
    """The waveform itself, ``[B, S]`` (checked and cast to float32)."""

    name = "raw"
    n_bins = None

    def __init__(self, sample_rate: int = SAMPLE_RATE, hop_length: int = HOP_LENGTH,
                 win_length: int = WIN_LENGTH):
        super().__init__()
        self.sample_rate = int(sample_rate)
        self.hop_length = int(hop_length)
        self.win_length = int(win_length)

    def output_shape(self, n_samples: int) -> tuple[int]:
        return (n_samples,)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        if wave.dim() != 2:
            raise ValueError(f"raw view expects [batch, samples], got {tuple(wave.shape)}")
        return wave.float()


VIEWS = {"mel": MelView, "gammatone": GammatoneView, "cqt": CQTView, "raw": RawView}


def build_view(name: str, **settings) -> nn.Module:
    """A view by name: "mel", "gammatone", "cqt" or "raw"."""
    try:
        cls = VIEWS[name]
    except KeyError:
        raise ValueError(f"unknown view {name!r}; known: {', '.join(VIEWS)}") from None
    return cls(**settings)


def parse_views(spec: str | list[str]) -> list[str]:
    """"mel,gammatone,cqt,raw" -> the list, checked (for a ``--views`` flag)."""
    names = [n.strip().lower() for n in (spec.split(",") if isinstance(spec, str) else spec)]
    names = [n for n in names if n]
    unknown = [n for n in names if n not in VIEWS]
    if unknown or not names:
        raise ValueError(f"unknown or no views {unknown or names}; known: {', '.join(VIEWS)}")
    if len(set(names)) != len(names):
        raise ValueError(f"views repeat: {names}")
    return names
