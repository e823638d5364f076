"""Cross-domain contrastive regularization (Lee & Lee): batch-split mixing and NT-Xent.

A labeled and an unlabeled batch are concatenated and shuffled, split in halves s1 and s2, and
each clip is mixed with its partner from the other half at a random circular offset and a random
SNR in [-5, 20] dB, plus one of six coloured noises. NT-Xent (tau = 0.01) then pulls each
clip's projection toward its mixed view's and away from every other clip's; the total loss adds
``lambda * nt_xent`` (lambda = 0.05) to the task loss, after a warm-up on labels alone.

The paper's "coloured noise under 6 dB" is read here as noise at least 6 dB below the mixture:
its SNR is drawn from ``NOISE_SNR_DB`` = [6, 30] dB.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

MIX_SNR_DB = (-5.0, 20.0)
NOISE_SNR_DB = (6.0, 30.0)
TAU = 0.01
LAMBDA = 0.05

# Power spectral density slope in log-log (power ~ f^slope); grey follows inverse A-weighting.
NOISE_SLOPES = {"white": 0.0, "pink": -1.0, "brown": -2.0, "blue": 1.0, "violet": 2.0}
NOISE_COLOURS = tuple(NOISE_SLOPES) + ("grey",)


def a_weighting_gain(freqs: np.ndarray) -> np.ndarray:
    """IEC 61672 A-weighting as a power gain (1 at 1 kHz)."""
    f2 = np.maximum(freqs, 1e-3) ** 2
    ra = (12194.0 ** 2 * f2 ** 2) / ((f2 + 20.6 ** 2) * np.sqrt((f2 + 107.7 ** 2) *
                                                                (f2 + 737.9 ** 2))
                                     * (f2 + 12194.0 ** 2))
    return (ra / 0.7943) ** 2  # 0.7943 ~ A(1 kHz) amplitude, so the gain is 1 there


def coloured_noise(colour: str, n: int, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` samples of unit-RMS noise of the given colour, float32."""
    if colour not in NOISE_COLOURS:
        raise ValueError(f"unknown noise colour {colour!r}; choose from {NOISE_COLOURS}")
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1.0 / sample_rate)
    safe = np.maximum(freqs, freqs[1] if n > 1 else 1.0)  # leave DC at the lowest bin's gain
    if colour == "grey":
        power_gain = 1.0 / np.maximum(a_weighting_gain(safe), 1e-6)
    else:
        power_gain = safe ** NOISE_SLOPES[colour]
    noise = np.fft.irfft(spectrum * np.sqrt(power_gain), n)
    return (noise / (np.sqrt(np.mean(noise ** 2)) + 1e-12)).astype(np.float32)


def scale_to_snr(signal: torch.Tensor, interferer: torch.Tensor, snr_db) -> torch.Tensor:
    """``interferer`` scaled (per row) so that signal power / its power = ``snr_db``."""
    snr_db = torch.as_tensor(snr_db, dtype=signal.dtype, device=signal.device)
    p_signal = signal.pow(2).mean(-1, keepdim=True)
    p_interferer = interferer.pow(2).mean(-1, keepdim=True).clamp_min(1e-12)
    gain = torch.sqrt(p_signal / p_interferer * 10.0 ** (-snr_db.reshape(-1, 1) / 10.0))
    return interferer * gain


def batch_split_mix(waves: torch.Tensor, sample_rate: int, rng: np.random.Generator):
    """Mixed views of a batch ``[B, N]`` (B even): returns (permutation, originals, mixed).

    ``originals = waves[permutation]``; ``mixed[i]`` is ``originals[i]`` plus its partner from the
    other half (offset and SNR random) plus a random coloured noise.
    """
    b, n = waves.shape
    if b % 2:
        raise ValueError("batch-split mixing needs an even batch")
    perm = torch.from_numpy(rng.permutation(b))
    originals = waves[perm]
    half = b // 2
    partners = torch.cat([originals[half:], originals[:half]])
    offsets = rng.integers(0, n, size=b)
    partners = torch.stack([torch.roll(p, int(o)) for p, o in zip(partners, offsets)])
    mix_snr = rng.uniform(*MIX_SNR_DB, size=b)
    mixed = originals + scale_to_snr(originals, partners, torch.from_numpy(mix_snr))
    noise = torch.from_numpy(np.stack([coloured_noise(str(rng.choice(NOISE_COLOURS)), n,
                                                      sample_rate, rng) for _ in range(b)]))
    noise = noise.to(waves.dtype)
    noise_snr = rng.uniform(*NOISE_SNR_DB, size=b)
    mixed = mixed + scale_to_snr(mixed, noise, torch.from_numpy(noise_snr))
    return perm, originals, mixed


class ProjectionHead(nn.Module):
    """FC-BN-ReLU to 64-d, L2-normalized: the space NT-Xent works in (dropped at export)."""

    def __init__(self, in_dim: int, out_dim: int = 64):
        super().__init__()
        self.fc = nn.Linear(in_dim, out_dim)
        self.bn = nn.BatchNorm1d(out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(F.relu(self.bn(self.fc(x))), dim=-1)


def nt_xent(z_a: torch.Tensor, z_b: torch.Tensor, tau: float = TAU) -> torch.Tensor:
    """NT-Xent over 2B samples: (z_a[i], z_b[i]) are positives, every other sample a negative.

    Inputs are L2-normalized ``[B, D]``; cosine similarity is their dot product.
    """
    z = torch.cat([z_a, z_b])
    sim = z @ z.T / tau
    sim.fill_diagonal_(float("-inf"))  # a sample is not its own negative
    b = z_a.shape[0]
    positives = torch.cat([torch.arange(b, 2 * b), torch.arange(0, b)])
    return F.cross_entropy(sim, positives)


def mixed_view_loss(embed: Callable[[torch.Tensor], torch.Tensor], projection: ProjectionHead,
                    labeled: np.ndarray, unlabeled: np.ndarray, sample_rate: int,
                    rng: np.random.Generator, tau: float = TAU) -> torch.Tensor:
    """NT-Xent between every clip of a labeled and an unlabeled batch (crops ``[B, N]``) and
    its batch-split mixed view. ``embed`` maps waveforms ``[M, N]`` to pooled embeddings
    ``[M, D]``; originals and mixed views go through it as one batch."""
    waves = torch.from_numpy(np.concatenate([labeled, unlabeled]).astype(np.float32))
    _, originals, mixed = batch_split_mix(waves, sample_rate, rng)
    z = projection(embed(torch.cat([originals, mixed])))
    return nt_xent(z[:len(waves)], z[len(waves):], tau)
