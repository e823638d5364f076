"""The streaming engine on real recordings: an event inserted at a known time is reported
within one hop plus the window of that time; silence gives no event; memory stays bounded."""
import numpy as np
import pytest
import soundfile as sf

from edgeaudio import Model
from edgeaudio.audio import resample
from tests.conftest import PLACEHOLDER, esc50_clip

BACKGROUND = "5-157204-A-16"   # wind, fold 5; the placeholder opens no event on it
DOG = "5-203128-B-0"           # dog, fold 5 (held out from the placeholder's training)
ONSET = 4.0                    # seconds into the stream where the bark is placed
BACKGROUND_GAIN = 0.2          # wind at about -35 dBFS: quiet outdoor ambience


@pytest.fixture(scope="module")
def model():
    return Model(PLACEHOLDER.with_suffix(".tflite"))


def read(stem):
    x, rate = sf.read(esc50_clip(stem), dtype="float32")
    assert rate == 16000
    return x


def first_loud_sample(x, rate=16000, below_peak_db=20.0):
    frame = rate // 100
    energy = np.array([np.mean(x[i:i + frame] ** 2) for i in range(0, len(x) - frame, frame)])
    return int(np.argmax(energy >= energy.max() * 10 ** (-below_peak_db / 10)) * frame)


def scene(esc50):
    """Wind; at ONSET a dog starts barking (its clip trimmed to the first loud 10 ms)."""
    background = read(BACKGROUND) * BACKGROUND_GAIN
    dog = read(DOG)
    dog = dog[first_loud_sample(dog):][:3 * 16000]
    x = np.concatenate([background, background])[: int((ONSET + 5) * 16000)].copy()
    start = int(ONSET * 16000)
    x[start:start + len(dog)] += dog
    return x


def run(stream, x, chunk):
    events = []
    for i in range(0, len(x), chunk):
        events += stream.push(x[i:i + chunk])
    return events + stream.flush()


def test_inserted_event_is_reported_near_its_time(model, esc50):
    stream = model.stream()
    events = run(stream, scene(esc50), 800)
    starts = [e for e in events if e.kind == "start"]
    assert [e.label for e in starts] == ["dog"], events
    dog = starts[0]
    tolerance = stream.hop_seconds + stream.window_seconds
    assert abs(dog.t_start - ONSET) <= tolerance
    assert ONSET <= dog.t_detect <= ONSET + tolerance + stream.hop_seconds * (stream.smooth - 1)
    ends = [e for e in events if e.kind == "end"]
    assert len(ends) == 1 and ends[0].t_end > dog.t_start


def test_same_events_whatever_the_chunk_size(model, esc50):
    x = scene(esc50)
    reference = [e.to_dict() for e in run(model.stream(), x, 4000)]
    for chunk in (37, 1600, 16000 * 3):
        assert [e.to_dict() for e in run(model.stream(), x, chunk)] == reference


def test_stream_resamples_other_input_rates(model, esc50):
    x48 = resample(scene(esc50), 16000, 48000)
    events = run(model.stream(input_rate=48000), x48, 2400)
    starts = [e for e in events if e.kind == "start"]
    assert [e.label for e in starts] == ["dog"]
    assert abs(starts[0].t_start - ONSET) <= 0.25 + 1.0


def test_silence_gives_no_event(model):
    stream = model.stream()
    assert run(stream, np.zeros(10 * 16000, np.float32), 1600) == []
    assert stream.n_inferences == 40
    quiet_noise = np.random.default_rng(0).normal(0, 10 ** (-75 / 20), 5 * 16000)
    assert run(model.stream(), quiet_noise.astype(np.float32), 1600) == []


def test_threshold_patience_and_per_class_thresholds(model, esc50):
    x = scene(esc50)
    assert [e for e in run(model.stream(threshold=0.999), x, 1600) if e.kind == "start"] == []
    per_class = model.stream(threshold={"dog": 0.999})
    assert "dog" not in {e.label for e in run(per_class, x, 1600)}
    slow = model.stream(patience=3)
    fast = model.stream(patience=1)
    t_slow = [e.t_detect for e in run(slow, x, 1600) if (e.kind, e.label) == ("start", "dog")][0]
    t_fast = [e.t_detect for e in run(fast, x, 1600) if (e.kind, e.label) == ("start", "dog")][0]
    assert t_slow == pytest.approx(t_fast + 2 * slow.hop_seconds)


def test_per_class_thresholds_from_the_model_file():
    shipped = Model(PLACEHOLDER.with_suffix(".tflite"))   # its own copy: the metadata is edited
    shipped.info.stream["threshold"] = {"dog": 0.8, "rain": 0.3}
    labels = shipped.labels
    assert shipped.stream().thresholds[labels.index("dog")] == pytest.approx(0.8)
    assert shipped.stream().thresholds[labels.index("rooster")] == pytest.approx(0.5)
    merged = shipped.stream(threshold={"dog": 0.6}).thresholds   # a caller's dict on top
    assert merged[labels.index("dog")] == pytest.approx(0.6)
    assert merged[labels.index("rain")] == pytest.approx(0.3)
    assert set(shipped.stream(threshold=0.4).thresholds) == {np.float32(0.4)}


def test_memory_is_bounded(model):
    stream = model.stream(smooth=4)
    rng = np.random.default_rng(1)
    for _ in range(240):  # a minute of noise in 0.25 s chunks
        stream.push(rng.normal(0, 0.01, 4000).astype(np.float32))
    assert stream.ring.shape == (stream.window,)
    assert len(stream.recent) == 4
    assert stream.time == pytest.approx(60.0)


def test_bad_settings(model):
    with pytest.raises(ValueError, match="unknown labels"):
        model.stream(threshold={"unicorn": 0.5})
    with pytest.raises(ValueError, match="at least 1"):
        model.stream(patience=0)


def test_cached_feature_frames_equal_a_full_recompute(model, esc50):
    stream = model.stream(hop_seconds=0.3)
    assert stream.hop_seconds == pytest.approx(0.3) and stream.hop % 160 == 0
    x = scene(esc50)
    hop = stream.hop
    for i in range(0, len(x) - hop, hop):  # chunk = hop: the features are current after each
        stream.push(x[i:i + hop])
        np.testing.assert_array_equal(stream.features, model.frontend(stream.current_window()))
    assert stream.n_inferences == (len(x) - hop) // hop + (1 if (len(x) - hop) % hop else 0)


def test_hop_snaps_to_whole_frames_and_one_frame_is_the_least(model):
    assert model.stream(hop_seconds=0.2549).hop_seconds == pytest.approx(0.25)
    frame = model.info.frontend.hop_length / model.sample_rate
    assert model.stream(hop_seconds=frame).hop == model.info.frontend.hop_length
    for hop in (1e-6, 0.5 * frame, 0.0, -1.0, float("nan"), "fast"):
        with pytest.raises(ValueError, match="at least one front-end frame"):
            model.stream(hop_seconds=hop)
