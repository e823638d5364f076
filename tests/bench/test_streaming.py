"""bench/streaming.py's rules: where a clip's sound begins, and how start events are judged
(detections, latency from emission, false alarms, the background's own class)."""
import importlib.util
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from edgeaudio.stream import Event
from tests.conftest import REPO

spec = importlib.util.spec_from_file_location("bench_streaming", REPO / "bench" / "streaming.py")
bench = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = bench        # dataclasses look their module up there
spec.loader.exec_module(bench)

RATE = 16000


def start(label, t_detect):
    return Event(label, 0.9, max(0.0, t_detect - 4.0), None, t_detect, "start")


def test_onset_is_the_first_loud_frame_and_padding_is_cut():
    rng = np.random.default_rng(0)
    x = np.concatenate([np.zeros(RATE // 4),                              # digital padding
                        1e-3 * rng.standard_normal(RATE // 4),            # -60 dB room tone
                        0.3 * np.sin(np.arange(RATE // 2) * 0.2),         # the sound
                        np.zeros(RATE)]).astype(np.float32)               # trailing padding
    assert bench.onset_sample(x, RATE) == RATE // 2
    seg = bench.event_segment(x, RATE)
    assert len(seg) == pytest.approx(RATE // 2, abs=2)                    # onset to last sound
    assert bench.loud_level_dbfs(seg, RATE) == pytest.approx(20 * np.log10(0.3 / np.sqrt(2)),
                                                             abs=0.1)


def test_judge_counts_detections_by_emission_time_and_spares_the_background_class():
    placed = [bench.PlacedEvent("dog", "a", 10.0, -30.0, onset=10.0, end=11.0),
              bench.PlacedEvent("siren", "b", 0.0, -40.0, onset=30.0, end=33.0)]
    events = [start("rain", 2.0),        # the ambience's own class: right, not an alarm
              start("cat", 5.0),         # outside every span: false alarm
              start("dog", 10.3),        # detection, 0.3 s after the onset
              start("cow", 12.0),        # another class during the dog: confusion
              start("dog", 13.0),        # the dog again: repeat
              start("siren", 34.5),      # after onset + window: not a detection
              start("cat", 50.0)]        # false alarm
    window, tail = 4.0, 1.0
    j = bench.judge(events, placed, "rain", duration=60.0, window=window, tail=tail)
    assert j.detections == [pytest.approx(0.3), None]
    assert j.false_alarms == [("cat", 5.0), ("cat", 50.0)]
    assert j.confusions == [("cow", 12.0, "dog")]
    assert j.repeats == 2 and j.background_class_starts == 1
    assert j.background_seconds == pytest.approx(60.0 - (1.0 + window + tail) - (3.0 + window + tail))


def test_held_out_fold_from_either_kind_of_provenance():
    assert bench.held_out_fold({"held_out_fold": 5}) == 5
    assert bench.held_out_fold({"config": {"data": "/x/esc50", "recipe": "esc50", "fold": 1}}) == 1
    assert bench.held_out_fold({"config": {"data": "/x/esc50", "fold": None}}) == 5
    assert bench.held_out_fold({"config": {"data": "my_clips/"}}) is None
    assert bench.held_out_fold({}) is None


def test_model_limited_latency_is_the_first_raw_crossing_after_the_onset():
    engine = SimpleNamespace(model=SimpleNamespace(labels=["dog", "cat"]),
                             thresholds=np.array([0.5, 0.5], np.float32))
    times = np.arange(1, 41) * 0.25                     # hops at 0.25 ... 10 s
    raw = np.zeros((40, 2), np.float32)
    raw[times == 2.0, 0] = 0.9                          # before the onset: not counted
    raw[times == 3.5, 0] = 0.6                          # 0.6 s after the onset
    run = bench.EngineRun(engine, [], times, raw, raw)
    placed = [bench.PlacedEvent("dog", "a", 0.0, -40.0, onset=2.9, end=3.5),
              bench.PlacedEvent("cat", "b", 0.0, -40.0, onset=5.0, end=6.0)]
    floors = bench.model_limited_latencies(run, placed, window=4.0)
    assert floors[0] == pytest.approx(0.6) and floors[1] is None
