"""Contrastive regularization pieces against hand computations and signal facts."""
import math

import numpy as np
import pytest
import torch
from scipy.signal import welch

from edgeaudio.train.contrastive import (NOISE_COLOURS, NOISE_SLOPES, ProjectionHead,
                                         a_weighting_gain, batch_split_mix, coloured_noise,
                                         nt_xent, scale_to_snr)

RATE = 16000


def test_nt_xent_equals_a_hand_computation():
    s = 1 / math.sqrt(2)
    z_a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    z_b = torch.tensor([[s, s], [0.0, 1.0]])
    tau = 0.5
    z = [z_a[0], z_a[1], z_b[0], z_b[1]]
    positive = {0: 2, 1: 3, 2: 0, 3: 1}
    total = 0.0
    for i in range(4):
        sims = {k: float(z[i] @ z[k]) / tau for k in range(4) if k != i}
        total += -math.log(math.exp(sims[positive[i]]) / sum(math.exp(v) for v in sims.values()))
    assert nt_xent(z_a, z_b, tau=tau).item() == pytest.approx(total / 4, rel=1e-6)


def test_nt_xent_prefers_matching_views():
    rng = torch.Generator().manual_seed(0)
    z = torch.nn.functional.normalize(torch.randn(8, 16, generator=rng), dim=-1)
    shuffled = z[torch.randperm(8, generator=rng)]
    assert nt_xent(z, z, tau=0.1) < nt_xent(z, shuffled, tau=0.1)


@pytest.mark.parametrize("colour", sorted(NOISE_SLOPES))
def test_coloured_noise_has_its_spectral_slope(colour):
    x = coloured_noise(colour, 4 * RATE, RATE, np.random.default_rng(1))
    assert np.sqrt(np.mean(x ** 2)) == pytest.approx(1.0, rel=1e-4)
    freqs, psd = welch(x, RATE, nperseg=4096)
    band = (freqs > 50) & (freqs < 7000)
    slope = np.polyfit(np.log10(freqs[band]), np.log10(psd[band]), 1)[0]
    assert slope == pytest.approx(NOISE_SLOPES[colour], abs=0.1)


def test_grey_noise_follows_inverse_a_weighting():
    x = coloured_noise("grey", 4 * RATE, RATE, np.random.default_rng(2))
    freqs, psd = welch(x, RATE, nperseg=4096)
    band = (freqs > 50) & (freqs < 7000)
    expected = -np.log10(a_weighting_gain(freqs[band]))
    measured = np.log10(psd[band])
    gain, _ = np.polyfit(expected, measured, 1)  # measured = expected + constant
    assert gain == pytest.approx(1.0, abs=0.05)
    assert psd[np.argmin(abs(freqs - 100))] > 10 * psd[np.argmin(abs(freqs - 2500))]


@pytest.mark.parametrize("snr_db", [-5.0, 0.0, 7.5, 20.0])
def test_mixing_hits_the_requested_snr(snr_db):
    rng = np.random.default_rng(3)
    signal = torch.from_numpy(rng.normal(0, 0.3, (2, RATE)).astype(np.float32))
    other = torch.from_numpy(coloured_noise("pink", RATE, RATE, rng)).repeat(2, 1) * 0.01
    scaled = scale_to_snr(signal, other, torch.tensor([snr_db, snr_db]))
    measured = 10 * torch.log10(signal.pow(2).mean(-1) / scaled.pow(2).mean(-1))
    assert torch.allclose(measured, torch.tensor(snr_db), atol=0.5)


def test_batch_split_mix_pairs_halves():
    rng = np.random.default_rng(4)
    waves = torch.from_numpy(rng.normal(0, 0.1, (6, 8000)).astype(np.float32))
    perm, originals, mixed = batch_split_mix(waves, RATE, rng)
    assert sorted(perm.tolist()) == list(range(6))
    assert torch.equal(originals, waves[perm])
    assert mixed.shape == waves.shape
    residual = mixed - originals
    # what was added is mostly the partner from the other half (SNR <= 20 dB), not silence
    assert torch.all(residual.pow(2).mean(-1) > originals.pow(2).mean(-1) * 10 ** (-2.1))
    with pytest.raises(ValueError, match="even batch"):
        batch_split_mix(waves[:5], RATE, rng)
    assert set(NOISE_COLOURS) == {"white", "pink", "brown", "blue", "violet", "grey"}


def test_projection_head_is_unit_norm_64d():
    head = ProjectionHead(96)
    z = head(torch.randn(5, 96))
    assert z.shape == (5, 64)
    assert torch.allclose(z.norm(dim=-1), torch.ones(5), atol=1e-5)
