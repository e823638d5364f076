"""The Python API gets the checks files get: array layout, rates, NaN / Inf, hops; and a long
recording is classified in bounded memory."""
import tracemalloc

import numpy as np
import pytest
import soundfile as sf

from edgeaudio import AudioError, Model
from edgeaudio.audio import load_audio
from edgeaudio.listen import ListenSummary
from edgeaudio.windows import window_starts
from tests.conftest import PLACEHOLDER, esc50_clip

DOG = "5-203128-B-0"           # dog, fold 5 (held out from the placeholder's training)


@pytest.fixture(scope="module")
def model():
    return Model(PLACEHOLDER.with_suffix(".tflite"))


@pytest.fixture(scope="module")
def dog(esc50):
    x, rate = sf.read(esc50_clip(DOG), dtype="float32")
    return x, rate


def test_channels_first_and_channels_last_arrays_read_alike(model, dog):
    x, rate = dog
    stereo = np.stack([x, 0.5 * x])                       # (channels, samples)
    mono = model.classify(0.75 * x, rate)
    for layout in (stereo, stereo.T):
        result = model.classify(layout, rate)
        assert result.windows == mono.windows == 17      # 5 s, not "2 samples"
        np.testing.assert_allclose(result.scores, mono.scores, atol=1e-5)


def test_arrays_that_are_not_audio_are_refused(model, dog):
    x, rate = dog
    with pytest.raises(AudioError, match="1-D or"):
        model.classify(x.reshape(2, 2, -1), rate)
    with pytest.raises(AudioError, match="cannot tell channels"):
        model.classify(np.zeros((100, 100), np.float32), rate)
    with pytest.raises(AudioError, match="NaN"):
        model.classify(np.where(np.arange(len(x)) == 9, np.inf, x), rate)
    with pytest.raises(AudioError, match="outside"):
        model.classify(x, 1)


def test_stream_refuses_nan_and_inf_chunks_and_keeps_its_state(model, dog):
    x, rate = dog
    stream = model.stream()
    stream.push(x[:8000])
    for bad in (np.nan, np.inf, -np.inf):
        chunk = x[8000:12000].copy()
        chunk[7] = bad
        with pytest.raises(AudioError, match="NaN or infinite"):
            stream.push(chunk)
    assert stream.time == 0.5                              # nothing of the bad chunks entered
    assert np.all(np.isfinite(stream.current_window()))


def test_stream_reads_a_channels_first_chunk_as_its_mixdown(model, dog):
    x, _ = dog
    one, two = model.stream(), model.stream()
    for i in range(0, len(x), 4000):
        chunk = x[i:i + 4000]
        one.push(chunk)
        two.push(np.stack([chunk, chunk]))                 # (channels, samples)
    assert two.time == one.time == 5.0
    np.testing.assert_allclose(two.scores, one.scores, atol=1e-6)


def test_stream_refuses_bad_rates_and_hops(model):
    with pytest.raises(AudioError, match="outside"):
        model.stream(input_rate=1)
    for hop in (0, -0.25, float("nan")):
        with pytest.raises(ValueError, match="at least one front-end frame"):
            model.stream(hop_seconds=hop)


def test_classify_refuses_a_hop_below_one_frame(model, dog):
    x, rate = dog
    frame = model.info.frontend.hop_length / model.sample_rate
    for hop in (1e-6, 0.5 * frame, 0.0, float("nan")):
        with pytest.raises(ValueError, match="at least one front-end frame"):
            model.classify(x, rate, hop_seconds=hop)
    short = x[:rate + 1234]                                # one frame's hop is many windows
    assert model.classify(short, rate, hop_seconds=frame).windows == len(
        window_starts(len(short), model.info.window_samples, model.info.frontend.hop_length))


def peak_traced_bytes(function, *args, **kwargs):
    tracemalloc.start()
    try:
        result = function(*args, **kwargs)
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_long_recording_is_classified_in_bounded_memory(model, dog, tmp_path):
    """3 minutes of real audio take no more memory than 20 s (decoded whole, the extra 160 s
    alone would be 10 MB of samples): classify holds a block and a window."""
    x, rate = dog
    short_file, long_file = tmp_path / "dog_20s.wav", tmp_path / "dog_3min.wav"
    sf.write(short_file, np.tile(x, 4), rate)
    sf.write(long_file, np.tile(x, 36), rate)
    _, short_peak = peak_traced_bytes(model.classify, short_file, hop_seconds=4.0)
    result, long_peak = peak_traced_bytes(model.classify, long_file, hop_seconds=4.0)
    extra_samples = (36 - 4) * len(x) * 4
    assert long_peak - short_peak < extra_samples / 20, (short_peak, long_peak)
    whole = load_audio(long_file, model.sample_rate)
    reference = model.classify(whole, model.sample_rate, hop_seconds=4.0)
    np.testing.assert_allclose(result.window_scores, reference.window_scores, atol=1e-6)
    assert result.windows == 46 and result.top(1)[0][0] == "dog"


def test_the_summary_names_every_label_of_its_events():
    summary = ListenSummary(events=6, labels_seen={"dog": 1, "rooster": 1, "rain": 1,
                                                   "sea_waves": 1, "crying_baby": 1,
                                                   "sneezing": 1})
    line = summary.line()
    assert sum(f"{label} x1" in line for label in summary.labels_seen) == 6, line
