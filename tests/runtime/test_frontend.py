"""The numpy front end against values checked by hand."""
import numpy as np
import pytest

from edgeaudio.frontend import (Frontend, FrontendSpec, decode_matrix, encode_matrix, hann_window,
                                hz_to_mel, mel_filterbank, mel_to_hz)


def test_htk_mel_scale_known_points():
    # 2595 * log10(1 + 1000/700) = 999.985...; the HTK scale is ~linear below 1 kHz
    assert hz_to_mel(1000.0) == pytest.approx(999.985, abs=1e-3)
    assert hz_to_mel(0.0) == 0.0
    assert mel_to_hz(hz_to_mel(4321.0)) == pytest.approx(4321.0)


def test_periodic_hann_window():
    w = hann_window(4)
    np.testing.assert_allclose(w, [0.0, 0.5, 1.0, 0.5], atol=1e-7)


def test_mel_filters_are_triangles_peaking_at_their_centres():
    fb = mel_filterbank(16000, 512, n_mels=10, fmin=0.0, fmax=8000.0)
    assert fb.shape == (10, 257)
    assert fb.min() >= 0.0 and fb.max() <= 1.0
    freqs = np.linspace(0, 8000, 257)
    centres = mel_to_hz(np.linspace(0, hz_to_mel(8000), 12))[1:-1]
    for row, centre in zip(fb, centres):
        peak = freqs[np.argmax(row)]
        assert abs(peak - centre) <= 8000 / 256  # within one FFT bin
        # each filter is non-zero only between its neighbours' centres
        assert np.all(np.diff(np.flatnonzero(row)) == 1)


def test_frame_count_and_no_centre_padding():
    spec = FrontendSpec()
    assert spec.n_frames(399) == 0
    assert spec.n_frames(400) == 1
    assert spec.n_frames(16000) == 1 + (16000 - 400) // 160 == 98
    assert spec.samples_for_frames(98) == 400 + 97 * 160


def test_power_of_a_bin_centred_sine():
    # A sine at FFT bin k with amplitude A, Hann window of length N (= n_fft): the one-sided
    # power at bin k is (A * sum(w) / 2)^2 = (A * N / 4)^2.
    spec = FrontendSpec(n_fft=512, win_length=512, hop_length=256)
    k, amp = 32, 0.5
    t = np.arange(4096) / spec.sample_rate
    wave = amp * np.sin(2 * np.pi * (k * spec.sample_rate / 512) * t)
    power = Frontend(spec).power_spectrum(wave)
    np.testing.assert_allclose(power[:, k], (amp * 512 / 4) ** 2, rtol=1e-6)
    assert power[0, k + 3] < 1e-6 * power[0, k]  # Hann side lobes fall away fast


def test_log_features_of_silence_are_log_offset():
    spec = FrontendSpec()
    feats = Frontend(spec)(np.zeros(16000, np.float32))
    assert feats.shape == (98, 64) and feats.dtype == np.float32
    np.testing.assert_allclose(feats, np.log(spec.log_offset), rtol=1e-6)


def test_tone_lands_in_the_mel_bin_that_holds_it():
    spec = FrontendSpec()
    t = np.arange(16000) / 16000
    feats = Frontend(spec)(0.3 * np.sin(2 * np.pi * 1000 * t))
    fb = spec.filterbank_matrix()
    expected = np.argmax(fb[:, round(1000 / (16000 / 512))])
    assert np.argmax(feats.mean(axis=0)) == expected


def test_stored_matrix_filterbank_round_trips():
    m = np.random.default_rng(0).random((12, 257)).astype(np.float32)
    spec = FrontendSpec(filterbank={"kind": "matrix", **encode_matrix(m)})
    np.testing.assert_array_equal(decode_matrix(spec.filterbank), m)
    assert spec.n_bins == 12
    assert Frontend(spec)(np.ones(1000, np.float32)).shape == (4, 12)


def test_sparse_filterbank_encoding_is_exact_and_small():
    fb = mel_filterbank(16000, 1024, 128)
    fb[5] = 0.0  # an empty band survives the round trip
    enc = encode_matrix(fb)
    np.testing.assert_array_equal(decode_matrix(enc), fb)
    dense_b64_bytes = fb.size * 4 * 4 / 3
    assert len(enc["data_b64"]) < dense_b64_bytes / 10


def test_dense_and_malformed_matrices():
    import base64
    m = np.arange(6, dtype="<f4").reshape(2, 3)
    dense = {"shape": [2, 3], "data_b64": base64.b64encode(m.tobytes()).decode()}
    np.testing.assert_array_equal(decode_matrix(dense), m)
    bad = {**encode_matrix(m), "lengths": [3, 9]}
    from edgeaudio import ModelFileError
    with pytest.raises(ModelFileError, match="malformed"):
        decode_matrix(bad)
