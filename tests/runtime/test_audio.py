"""Audio in: any rate and channel count to the model's; bad input gets a clear error."""
import numpy as np
import pytest
import soundfile as sf

from edgeaudio import AudioError
from edgeaudio.audio import load_audio, resample
from tests.conftest import esc50_clip

TONE_HZ = 1000.0


def tone(rate, seconds=1.0, channels=1):
    t = np.arange(int(rate * seconds)) / rate
    x = 0.5 * np.sin(2 * np.pi * TONE_HZ * t).astype(np.float32)
    return np.stack([x] * channels, axis=1) if channels > 1 else x


def dominant_hz(x, rate):
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return np.argmax(spec) * rate / len(x)


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
@pytest.mark.parametrize("fmt", ["wav", "flac", "ogg"])
def test_any_rate_and_format_to_16k(tmp_path, rate, fmt):
    path = tmp_path / f"tone.{fmt}"
    sf.write(path, tone(rate), rate)
    x = load_audio(path, 16000)
    assert abs(len(x) - 16000) <= 2
    assert dominant_hz(x, 16000) == pytest.approx(TONE_HZ, abs=2)
    amplitude = np.sqrt(2 * np.mean(x[1000:-1000] ** 2))
    assert amplitude == pytest.approx(0.5, abs=0.02)


def test_stereo_mixdown(tmp_path):
    left = tone(16000)
    path = tmp_path / "st.wav"
    sf.write(path, np.stack([left, -left], axis=1), 16000)  # opposite phases cancel
    assert np.max(np.abs(load_audio(path, 16000))) < 1e-4
    sf.write(path, tone(16000, channels=2), 16000)
    np.testing.assert_allclose(load_audio(path, 16000), left, atol=1e-4)


def test_resample_identity_and_length():
    x = tone(48000)
    assert resample(x, 16000, 16000) is not None
    assert len(resample(x, 48000, 16000)) == 16000


def test_unreadable_file(tmp_path):
    p = tmp_path / "notes.wav"
    p.write_text("this is not audio")
    with pytest.raises(AudioError, match="cannot read audio"):
        load_audio(p, 16000)


def test_empty_file(tmp_path):
    p = tmp_path / "empty.wav"
    p.write_bytes(b"")
    with pytest.raises(AudioError, match="empty file"):
        load_audio(p, 16000)


def test_zero_length_recording(tmp_path):
    p = tmp_path / "zero.wav"
    sf.write(p, np.zeros(0, np.float32), 16000)
    with pytest.raises(AudioError, match="0-length"):
        load_audio(p, 16000)


def test_truncated_flac(tmp_path, esc50):
    data = esc50_clip("1-100038-A-14").read_bytes()
    p = tmp_path / "cut.flac"
    p.write_bytes(data[:5000])
    with pytest.raises(AudioError, match="cannot read audio"):
        load_audio(p, 16000)


def test_nan_samples(tmp_path):
    x = tone(16000)
    x[100] = np.nan
    p = tmp_path / "nan.wav"
    sf.write(p, x, 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match="NaN"):
        load_audio(p, 16000)


def test_clipping_warns_but_loads(tmp_path, caplog):
    p = tmp_path / "loud.wav"
    sf.write(p, np.clip(tone(16000) * 4, -1, 1), 16000)
    x = load_audio(p, 16000)
    assert len(x) == 16000
    assert "clipping" in caplog.text


def test_missing_file(tmp_path):
    with pytest.raises(AudioError, match="no such file"):
        load_audio(tmp_path / "gone.wav", 16000)
