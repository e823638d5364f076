"""Streaming defaults chosen for a model's own sounds (edgeaudio.stream_tuning): smoothing and
patience from the sounds' length, the threshold on validation clips through the real engine."""
from __future__ import annotations

import numpy as np
import pytest

from edgeaudio import load_model
from edgeaudio.audio import load_audio
from edgeaudio.stream_tuning import (settings_for_event_length, tune_threshold,
                                     validation_stream)
from tests.conftest import PLACEHOLDER, REPO

MODEL = PLACEHOLDER.with_suffix(".tflite")
EXAMPLES = {"dog": "dog.flac", "rooster": "rooster.flac", "crying_baby": "crying_baby.flac"}


@pytest.mark.parametrize("seconds, hop, expected", [
    (1.0, 0.25, (1, 1)),     # a 1-s word fills the window for a hop or two: no waiting
    (2.5, 0.25, (2, 2)),
    (5.0, 0.25, (3, 2)),     # ESC-50's 5-s clips: the old defaults
])
def test_smoothing_and_patience_follow_the_length_of_the_sounds(seconds, hop, expected):
    got = settings_for_event_length(seconds, hop)
    assert (got["smooth"], got["patience"]) == expected


def test_the_validation_stream_places_each_clip_after_a_gap():
    rate = 100
    events = [(np.ones(50, np.float32), "a"), (np.ones(30, np.float32), "b")]
    audio, truth = validation_stream(events, [], rate, gap_seconds=1.0)
    assert len(audio) == 100 + 50 + 100 + 30 + 100
    assert [(t.label, t.onset, t.offset) for t in truth] == [("a", 1.0, 1.5), ("b", 2.5, 2.8)]
    assert np.all(audio[:100] == 0) and np.all(audio[100:150] == 1)
    noisy, _ = validation_stream(events, [np.full(400, 0.5, np.float32)], rate, 1.0)
    assert np.all(noisy[:100] == 0.5)  # gaps cut from the background audio


def test_the_threshold_is_chosen_on_real_clips_through_the_engine():
    model = load_model(MODEL)
    events = [(load_audio(REPO / "examples" / name, model.sample_rate), label)
              for label, name in EXAMPLES.items()] * 2
    settings = {"hop_seconds": 0.25, "smooth": 1, "patience": 1}
    tuned = tune_threshold(model, events, [], settings, max_false_per_10min=1.0)
    rows = {r["threshold"]: r for r in tuned["candidates"]}
    assert tuned["events"] == 6 and tuned["threshold"] in rows
    chosen = rows[tuned["threshold"]]
    if tuned["met"]:
        assert chosen["false_alarms_per_10min"] <= 1.0
        assert chosen["detected"] == max(r["detected"] for r in rows.values()
                                         if r["false_alarms_per_10min"] <= 1.0)
    assert max(r["detected"] for r in rows.values()) >= 4  # the clips are the model's own
    # an impossible bound: nothing meets it, the fewest false alarms win
    strict = tune_threshold(model, events, [], settings, max_false_per_10min=-1.0)
    assert not strict["met"]
    assert rows[strict["threshold"]]["false_alarms_per_10min"] == min(
        r["false_alarms_per_10min"] for r in rows.values())
