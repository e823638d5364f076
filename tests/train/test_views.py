"""The four views: shapes, filters against references, known signals in the right bins."""
from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the train room needs torch")

from edgeaudio.train.views import (  # noqa: E402
    CQTView, GammatoneView, MelView, RawView, build_view, cqt_kernels, erb_bandwidth,
    gammatone_filterbank, hz_to_erb_rate, parse_views)

torch.set_num_threads(1)
SR = 16000


def tone(freq: float, seconds: float = 1.0, amplitude: float = 1.0) -> torch.Tensor:
    t = torch.arange(int(seconds * SR), dtype=torch.float64) / SR
    return (amplitude * torch.sin(2 * math.pi * freq * t)).float()[None]


def test_each_view_output_shape():
    wave = torch.randn(3, 5 * SR) * 0.1
    expected = {"mel": (3, 249, 64), "gammatone": (3, 249, 64), "cqt": (3, 249, 94),
                "raw": (3, 5 * SR)}
    for name, shape in expected.items():
        view = build_view(name)
        out = view(wave)
        assert tuple(out.shape) == shape, name
        assert out.dtype == torch.float32 and torch.isfinite(out).all(), name
        assert view.output_shape(5 * SR) == shape[1:], name
    # one frame every 20 ms for all spectral views, also for a short clip
    assert {build_view(n)(wave[:, :SR]).shape[1] for n in ("mel", "gammatone", "cqt")} == {49}
    assert parse_views("mel, gammatone,cqt,raw") == ["mel", "gammatone", "cqt", "raw"]
    with pytest.raises(ValueError, match="unknown"):
        parse_views("mel,mfcc")
    with pytest.raises(ValueError, match="at least 640 samples"):
        MelView()(torch.zeros(1, 100))
    with pytest.raises(ValueError, match=r"\[batch, samples\]"):
        RawView()(torch.zeros(100))


def test_mel_view_is_the_runtime_front_end():
    from edgeaudio.frontend import Frontend

    view = MelView()
    rng = np.random.default_rng(0)
    wave = (rng.standard_normal(2 * SR) * 0.05).astype(np.float32)
    reference = Frontend(view.spec)(wave)
    ours = view(torch.from_numpy(wave)[None])[0].numpy()
    assert ours.shape == reference.shape
    assert np.abs(ours - reference).max() <= 1e-4


# ----------------------------------------------------------------------------- gammatone

def test_erb_scale_matches_glasberg_and_moore():
    assert erb_bandwidth(1000.0) == pytest.approx(132.639, abs=1e-3)  # 24.7 * 5.37
    assert erb_bandwidth(0.0) == pytest.approx(24.7)
    assert hz_to_erb_rate(1000.0) == pytest.approx(15.62, abs=0.01)


def test_gammatone_filters_match_scipy_reference():
    """Each filter's power response equals that of scipy's FIR gammatone (order 4, bandwidth
    1.019 ERB, unit gain at the centre) wherever it is above -20 dB: within 0.05 dB for
    centres from 200 Hz to 5 kHz, 0.6 dB from 50 Hz to 6 kHz (below 200 Hz the real filter's
    negative-frequency image adds a little near DC)."""
    from scipy.signal import gammatone

    view = GammatoneView()
    weights = gammatone_filterbank(SR, 1024, 64, 50.0, 7000.0).astype(np.float64)
    assert np.allclose(weights, view.filterbank())
    checked = 0
    for band, centre in enumerate(view.centres):
        if centre > 6000.0:
            continue  # the digital filter's folded image bends it near Nyquist
        b, a = gammatone(centre, "fir", fs=SR, numtaps=8192)
        assert a.tolist() == [1.0]
        response = np.fft.rfft(b, n=16 * 1024)[::16]  # at the 513 bins of a 1024-point FFT
        power = np.abs(response) ** 2
        passband = weights[band] > 0.01
        error_db = np.abs(10 * np.log10(power[passband] / weights[band][passband]))
        tolerance = 0.05 if 200.0 <= centre <= 5000.0 else 0.6
        assert error_db.max() < tolerance, (band, centre, error_db.max())
        checked += 1
    assert checked == 61


@pytest.mark.parametrize("band", [0, 10, 25, 40, 63])
def test_pure_tone_lands_in_its_gammatone_band(band):
    view = GammatoneView()
    centre = float(view.centres[band])
    out = view(tone(centre))[0]
    assert int(out[len(out) // 2].argmax()) == band
    # and a tone between two centres lands in the nearer one on the ERB-rate scale
    if band < 63:
        upper = float(view.centres[band + 1])
        between = float(np.interp(0.3, [0, 1], [hz_to_erb_rate(centre),
                                                hz_to_erb_rate(upper)]))
        freq = (10 ** (between / 21.4) - 1) / 0.00437
        out = view(tone(freq))[0]
        assert int(out[len(out) // 2].argmax()) == band


# ----------------------------------------------------------------------------- CQT

def test_cqt_kernels_have_constant_q_and_peak_at_their_bin():
    view = CQTView()
    kernels = cqt_kernels(SR, 94, 32.703, 12)
    ratios = []
    for k in (0, 12, 30, 50, 70, 93):
        kernel = kernels[k]
        n_fft = 1 << 17
        spectrum = np.abs(np.fft.fft(kernel, n_fft))[: n_fft // 2]
        freqs = np.arange(n_fft // 2) * SR / n_fft
        peak = int(spectrum.argmax())
        assert abs(freqs[peak] - view.frequencies[k]) < 0.5 * SR / n_fft + 1e-9
        assert spectrum[peak] == pytest.approx(2.0, rel=1e-3)  # unit-amplitude cosine -> 1
        above = np.flatnonzero(spectrum >= spectrum[peak] / math.sqrt(2))  # -3 dB
        ratios.append((freqs[above[-1]] - freqs[above[0]]) / view.frequencies[k])
    # constant Q: the -3 dB bandwidth is the same fraction of the centre frequency everywhere,
    # about 1.44 (the Hann main lobe) / Q, Q = 1 / (2^(1/12) - 1) = 16.8
    assert max(ratios) / min(ratios) < 1.05, ratios
    assert np.mean(ratios) == pytest.approx(1.44 * (2 ** (1 / 12) - 1), rel=0.05)


def test_cqt_equals_the_direct_definition():
    """Frames against Brown's definition evaluated directly in numpy (float64)."""
    view = CQTView(n_bins=60)
    rng = np.random.default_rng(1)
    wave = rng.standard_normal(2 * SR) * 0.1
    ours = view(torch.from_numpy(wave.astype(np.float32))[None])[0].double().numpy()
    kernels = cqt_kernels(SR, 60, 32.703, 12)
    for frame in (0, 37, ours.shape[0] - 1):
        centre = view.win_length // 2 + frame * view.hop_length
        for k in (0, 17, 59):
            kernel = kernels[k]
            half = len(kernel) // 2
            segment = np.zeros(len(kernel))
            lo, hi = centre - half, centre + half + 1
            segment[max(0, -lo): len(kernel) - max(0, hi - len(wave))] = \
                wave[max(0, lo): min(len(wave), hi)]
            expected = np.log(np.abs(np.sum(segment * np.conj(kernel))) ** 2 + 1e-6)
            assert ours[frame, k] == pytest.approx(expected, abs=2e-3), (frame, k)


@pytest.mark.parametrize("k", [0, 9, 24, 45, 69, 93])
def test_pure_tone_lands_in_its_cqt_bin(k):
    view = CQTView()
    freq = float(view.frequencies[k])
    out = view(tone(freq, seconds=1.5, amplitude=0.5))[0]
    middle = out[out.shape[0] // 2]
    assert int(middle.argmax()) == k
    assert float(middle[k].exp().sqrt()) == pytest.approx(0.5, rel=0.01)  # amplitude kept
    # a quarter tone up still lands in bin k or k + 1, never further
    out = view(tone(freq * 2 ** (0.4 / 12)))[0]
    assert int(out[out.shape[0] // 2].argmax()) == k
