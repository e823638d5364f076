"""The three-channel multi-resolution log-mel "image" of Palanisamy et al. (2020), plain torch.

``MultiResolutionLogMel``: waveform ``[B, S]`` -> ``[B, 3, n_mels, n_frames]``. Channel ``c`` is
a log-mel spectrogram with its own (window, hop): (25, 10), (50, 25) and (100, 50) ms by
default, 128 mel bands each; the three native spectrograms (500, 200 and 100 frames for 5 s)
are resized along time to one shape (bilinear, anti-aliased), by default 50 frames per second
of audio (250 frames for a 5 s clip, the paper's 128 x 250). So channel 0 has the sharpest time
resolution and channel 2 the sharpest frequency resolution, as the paper intends. Each channel
is then standardised with a per-channel mean and std (buffers that ``fit_normalization`` sets
from training clips and that travel in the state_dict; the default settings start from ESC-50
statistics, ``DEFAULT_NORMALIZATION``), which puts the image in the N(0, 1)-ish range that
ImageNet networks expect of their inputs.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from edgeaudio.frontend import hann_window, mel_filterbank


# (window, hop) in milliseconds per channel, from Palanisamy et al. 2020
PALANISAMY_RESOLUTIONS_MS: tuple[tuple[float, float], ...] = ((25.0, 10.0), (50.0, 25.0),
                                                              (100.0, 50.0))


# Per-channel mean / std of the default image, measured by ``fit_normalization`` on 100 ESC-50
# clips of folds 2-5 (every 16th row of esc50.csv). Used until a fine-tuning run refits them.
DEFAULT_NORMALIZATION = ((-5.88, -4.55, -3.19), (5.26, 5.62, 5.95))


def _next_pow2(n: int) -> int:
    return 1 << max(0, int(n - 1).bit_length())


class MultiResolutionLogMel(nn.Module):
    """Waveform ``[B, S]`` -> three-channel log-mel image ``[B, 3, n_mels, n_frames]``.

    Per channel: frames of ``win`` samples every ``hop`` samples (centred: the clip is
    reflect-padded by ``win // 2`` at both ends, so frame ``t`` is centred on sample
    ``t * hop``), periodic Hann window, power spectrum with ``n_fft`` the next power of two,
    HTK mel filters (``edgeaudio.frontend.mel_filterbank``, the runtime's definition),
    ``log(mel + log_offset)``. The three native spectrograms are resized along time only to
    ``n_frames`` (bilinear, anti-aliased when shrinking); ``n_frames`` is fixed if given, else
    ``round(duration * frames_per_second)`` but at least ``min_frames`` (32, the networks'
    output stride, so a short clip still gives one embedding frame). Finally each channel is
    standardised with the ``mean`` / ``std`` buffers.
    """

    def __init__(self, sample_rate: int = 16000, n_mels: int = 128,
                 resolutions_ms: Sequence[tuple[float, float]] = PALANISAMY_RESOLUTIONS_MS,
                 fmin: float = 0.0, fmax: float | None = None,
                 frames_per_second: float = 50.0, n_frames: int | None = None,
                 log_offset: float = 1e-6, min_frames: int = 32):
        super().__init__()
        self.sample_rate = int(sample_rate)
        self.n_mels = int(n_mels)
        self.resolutions_ms = tuple((float(w), float(h)) for w, h in resolutions_ms)
        self.fmin, self.fmax = float(fmin), (None if fmax is None else float(fmax))
        self.frames_per_second = float(frames_per_second)
        self.n_frames = None if n_frames is None else int(n_frames)
        self.log_offset = float(log_offset)
        self.min_frames = int(min_frames)
        self.wins, self.hops, self.n_ffts = [], [], []
        for index, (win_ms, hop_ms) in enumerate(self.resolutions_ms):
            win = int(round(win_ms * self.sample_rate / 1000.0))
            hop = int(round(hop_ms * self.sample_rate / 1000.0))
            n_fft = _next_pow2(win)
            self.wins.append(win)
            self.hops.append(hop)
            self.n_ffts.append(n_fft)
            self.register_buffer(f"window{index}", torch.from_numpy(hann_window(win)),
                                 persistent=False)
            self.register_buffer(f"mel{index}", torch.from_numpy(mel_filterbank(
                self.sample_rate, n_fft, self.n_mels, self.fmin, self.fmax)), persistent=False)
        channels = len(self.resolutions_ms)
        default = (self.sample_rate == 16000 and self.n_mels == 128 and self.fmin == 0.0
                   and self.fmax in (None, 8000.0) and self.log_offset == 1e-6
                   and self.resolutions_ms == PALANISAMY_RESOLUTIONS_MS)
        mean, std = DEFAULT_NORMALIZATION if default else ((0.0,) * channels, (1.0,) * channels)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32))

    @property
    def n_channels(self) -> int:
        return len(self.resolutions_ms)

    def settings(self) -> dict:
        """Keyword arguments that rebuild this module (JSON-safe)."""
        return {"sample_rate": self.sample_rate, "n_mels": self.n_mels,
                "resolutions_ms": [list(r) for r in self.resolutions_ms], "fmin": self.fmin,
                "fmax": self.fmax, "frames_per_second": self.frames_per_second,
                "n_frames": self.n_frames, "log_offset": self.log_offset,
                "min_frames": self.min_frames}

    def output_frames(self, n_samples: int) -> int:
        if self.n_frames is not None:
            return self.n_frames
        return max(self.min_frames,
                   int(round(n_samples / self.sample_rate * self.frames_per_second)))

    def native(self, wave: torch.Tensor) -> list[torch.Tensor]:
        """The un-resized log-mel spectrograms, one ``[B, n_mels, frames_c]`` per channel;
        ``frames_c = 1 + S // hop_c``."""
        if wave.dim() != 2:
            raise ValueError(f"expected a waveform batch [B, samples], got {tuple(wave.shape)}")
        out = []
        for index, (win, hop, n_fft) in enumerate(zip(self.wins, self.hops, self.n_ffts)):
            pad = win // 2
            mode = "reflect" if wave.shape[1] > pad else "constant"
            padded = F.pad(wave.unsqueeze(1), (pad, pad), mode=mode).squeeze(1)
            frames = padded.unfold(-1, win, hop)  # [B, T, win]
            spec = torch.fft.rfft(frames * getattr(self, f"window{index}"), n=n_fft, dim=-1)
            power = spec.real ** 2 + spec.imag ** 2
            mel = power @ getattr(self, f"mel{index}").T  # [B, T, n_mels]
            out.append(torch.log(mel + self.log_offset).transpose(1, 2))
        return out

    def unnormalized(self, wave: torch.Tensor) -> torch.Tensor:
        """``[B, 3, n_mels, n_frames]`` before standardisation."""
        n_out = self.output_frames(wave.shape[-1])
        channels = []
        for spec in self.native(wave):
            frames = spec.shape[-1]
            resized = F.interpolate(spec.unsqueeze(1), size=(self.n_mels, n_out),
                                    mode="bilinear", align_corners=False,
                                    antialias=n_out < frames)
            channels.append(resized.squeeze(1))
        return torch.stack(channels, dim=1)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        image = self.unnormalized(wave)
        return (image - self.mean[None, :, None, None]) / self.std[None, :, None, None]

    @torch.no_grad()
    def fit_normalization(self, waves: Iterable[torch.Tensor]) -> None:
        """Set ``mean`` / ``std`` per channel from batches ``[B, S]`` of training audio."""
        total = torch.zeros(self.n_channels, dtype=torch.float64)
        total_sq = torch.zeros_like(total)
        count = 0
        for wave in waves:
            image = self.unnormalized(torch.as_tensor(wave, dtype=torch.float32)).double()
            total += image.sum(dim=(0, 2, 3))
            total_sq += (image ** 2).sum(dim=(0, 2, 3))
            count += image.shape[0] * image.shape[2] * image.shape[3]
        if count == 0:
            raise ValueError("fit_normalization got no audio")
        mean = total / count
        std = (total_sq / count - mean ** 2).clamp_min(1e-12).sqrt()
        self.mean.copy_(mean.float())
        self.std.copy_(std.float())

