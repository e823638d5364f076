"""bench/streaming.py's own rules: where a clip's sound begins, which fold a model held out, and
that its placed events are true events the shared scoring (edgeaudio.event_scoring) accepts."""
import numpy as np
import pytest

from bench import streaming
from edgeaudio.event_scoring import score_stream
from edgeaudio.stream import Event

RATE = 16000


def test_onset_is_the_first_loud_frame_and_padding_is_cut():
    rng = np.random.default_rng(0)
    x = np.concatenate([np.zeros(RATE // 4),                              # digital padding
                        1e-3 * rng.standard_normal(RATE // 4),            # -60 dB room tone
                        0.3 * np.sin(np.arange(RATE // 2) * 0.2),         # the sound
                        np.zeros(RATE)]).astype(np.float32)               # trailing padding
    assert streaming.onset_sample(x, RATE) == RATE // 2
    seg = streaming.event_segment(x, RATE)
    assert len(seg) == pytest.approx(RATE // 2, abs=2)                    # onset to last sound
    assert streaming.loud_level_dbfs(seg, RATE) == pytest.approx(
        20 * np.log10(0.3 / np.sqrt(2)), abs=0.1)


def test_held_out_fold_from_either_kind_of_provenance():
    assert streaming.held_out_fold({"held_out_fold": 5}) == 5
    assert streaming.held_out_fold({"config": {"data": "/x/esc50", "recipe": "esc50",
                                               "fold": 1}}) == 1
    assert streaming.held_out_fold({"config": {"data": "/x/esc50", "fold": None}}) == 5
    assert streaming.held_out_fold({"config": {"data": "my_clips/"}}) is None
    assert streaming.held_out_fold({}) is None


def test_placed_events_are_scored_by_their_acoustic_onset_and_background_class():
    placed = [streaming.PlacedEvent(label="dog", onset=10.0, offset=11.0, clip="a",
                                    snr_db=10.0, level_dbfs=-30.0)]
    events = [Event("rain", 0.9, 0.0, None, 2.0, "start"),     # the ambience's own class
              Event("dog", 0.9, 6.5, None, 10.5, "start")]
    score = score_stream(events, placed, duration=30.0, window=4.0, tail=1.0,
                         background_label="rain")
    assert score.latencies == [pytest.approx(0.5)]
    assert score.false_alarms == [] and score.background_class_starts == 1
