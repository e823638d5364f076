"""edgeaudio.event_scoring: hand-made event lists whose right answer is worked out by hand
(detections, misses, confusions, repeats, false alarms per background hour, latency from the
moment a start was EMITTED), then a real stream of the example clips through the placeholder
model, by the library and by `edgeaudio evaluate --model --events`."""
from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import soxr
from click.testing import CliRunner

from edgeaudio import Model
from edgeaudio.event_scoring import (AnnotationError, StreamScore, TrueEvent, alarm_summary,
                                     covered_seconds, evaluate_streams, latency_summary,
                                     model_limited_latencies, read_annotations, score_stream,
                                     streams_table)
from edgeaudio.stream import Event
from tests.conftest import PLACEHOLDER, REPO
from tests.runtime.test_stream import first_loud_sample

RATE = 16000


def start(label, t_detect, t_start=None):
    """A start event emitted at ``t_detect``; its back-dated ``t_start`` is a window earlier."""
    return Event(label, 0.9, t_detect - 4.0 if t_start is None else t_start, None, t_detect,
                 "start")


def test_starts_are_sorted_into_detections_repeats_confusions_and_false_alarms():
    truth = [TrueEvent("dog", 10.0, 11.0), TrueEvent("siren", 30.0, 33.0)]
    # window 4, tail 1: spans dog [10, 16], siren [30, 38]
    events = [start("rain", 2.0),               # the background's own class: counted only
              start("cat", 5.0),                # outside every span: false alarm
              Event("dog", 0.9, 6.5, 9.0, 9.0, "end"),    # end events are not scored
              start("dog", 10.3, t_start=6.5),  # detection, 0.3 s after the onset by emission
              start("cow", 12.0),               # another class during the dog: confusion
              start("dog", 13.0),               # the dog again: repeat
              start("cat", 16.0),               # the span's last moment: still a confusion
              start("siren", 34.5),             # after onset + window: a repeat, not a detection
              start("cat", 50.0)]               # false alarm
    score = score_stream(events, truth, duration=60.0, window=4.0, tail=1.0,
                         background_label="rain")
    assert score.latencies == [pytest.approx(0.3), None]
    assert score.false_alarms == [("cat", 5.0), ("cat", 50.0)]
    assert score.confusions == [("cow", 12.0, "dog"), ("cat", 16.0, "dog")]
    assert score.repeats == 2 and score.background_class_starts == 1
    assert score.background_seconds == pytest.approx(60.0 - 6.0 - 8.0)
    # without a background class, the rain start is an ordinary false alarm
    assert score_stream(events, truth, 60.0, 4.0, 1.0).false_alarms[0] == ("rain", 2.0)


def test_overlapping_annotations_each_start_goes_to_an_event_of_its_own_label():
    # window 1, tail 0.5: dog span [2, 4.5], cat span [2.5, 5.5], union [2, 5.5]
    truth = [TrueEvent("dog", 2.0, 3.0), TrueEvent("cat", 2.5, 4.0)]
    events = [start("dog", 2.4), start("cat", 3.0),
              start("dog", 4.0),                # both spans; its dog already found: repeat
              start("rooster", 5.0)]            # in the cat's span only: confusion with cat
    score = score_stream(events, truth, duration=10.0, window=1.0, tail=0.5)
    assert score.latencies == [pytest.approx(0.4), pytest.approx(0.5)]
    assert score.repeats == 1 and score.confusions == [("rooster", 5.0, "cat")]
    assert score.false_alarms == []
    assert score.background_seconds == pytest.approx(10.0 - 3.5)
    # two barks whose spans overlap ([0, 2] and [1.5, 3.5]): the second start is the second's
    barks = [TrueEvent("dog", 0.0, 1.0), TrueEvent("dog", 1.5, 2.5)]
    score = score_stream([start("dog", 0.5), start("dog", 1.8)], barks, 10.0, 1.0, 0.0)
    assert score.latencies == [pytest.approx(0.5), pytest.approx(0.3)] and score.repeats == 0


def test_background_time_is_outside_the_union_of_spans_within_the_stream():
    assert covered_seconds([(5, 8), (1, 3), (2, 4), (9, 12)], 10.0) == pytest.approx(3 + 3 + 1)
    assert covered_seconds([(11, 13)], 10.0) == 0.0
    assert covered_seconds([], 10.0) == 0.0


def test_summaries_by_hand():
    s = latency_summary([0.3, None, 1.0, 0.5])
    assert (s["events"], s["detected"], s["detection_rate"]) == (4, 3, 0.75)
    assert s["median_latency_s"] == pytest.approx(0.5)
    assert s["p95_latency_s"] == pytest.approx(0.5 + 0.9 * (1.0 - 0.5))   # linear, rank 1.9
    assert latency_summary([None]) == {"events": 1, "detected": 0, "detection_rate": 0.0,
                                       "median_latency_s": None, "p95_latency_s": None}
    half_hours = [StreamScore([], [("cat", 1.0)], [], 0, 0, 1800.0),
                  StreamScore([], [("cat", 2.0), ("cow", 3.0)], [], 0, 0, 1800.0)]
    assert alarm_summary(half_hours) == {"background_hours": 1.0, "false_alarms": 3,
                                         "false_alarms_per_hour": pytest.approx(3.0)}
    assert alarm_summary([StreamScore([], [], [], 0, 0, 0.0)])["false_alarms_per_hour"] is None


def test_model_limited_latency_is_the_first_raw_crossing_within_a_window_of_the_onset():
    labels = ["dog", "cat", "rooster"]
    thresholds = np.array([0.5, 0.5, 0.6], np.float32)
    times = np.arange(1, 41) * 0.25                     # hops at 0.25 ... 10 s
    raw = np.zeros((40, 3), np.float32)
    raw[times == 2.0, 0] = 0.9                          # before the dog's onset: not counted
    raw[times == 3.5, 0] = 0.6                          # 0.6 s after it
    raw[times == 9.0, 1] = 0.5                          # at the threshold, onset + window
    raw[times == 9.25, 1] = 0.9                         # past the window
    raw[times == 2.0, 2] = 0.59                         # under the rooster's own threshold
    truth = [TrueEvent("dog", 2.9, 3.5), TrueEvent("cat", 5.0, 6.0),
             TrueEvent("rooster", 1.0, 2.0)]
    floors = model_limited_latencies(times, raw, thresholds, labels, truth, window=4.0)
    assert floors == [pytest.approx(0.6), pytest.approx(4.0), None]


def test_annotations_csv_resolves_paths_and_sorts_events(tmp_path):
    other = tmp_path / "elsewhere.wav"
    (tmp_path / "annotations.csv").write_text(
        "recording, label, onset, offset\n"
        "a.wav,dog,7.5,8\n"
        f"{other},,,\n"
        "a.wav, cat , 1.25, 2\n")
    got = read_annotations(tmp_path / "annotations.csv")
    assert list(got) == [tmp_path / "a.wav", other]
    assert got[tmp_path / "a.wav"] == [TrueEvent("cat", 1.25, 2.0), TrueEvent("dog", 7.5, 8.0)]
    assert got[other] == []


@pytest.mark.parametrize("text, message", [
    ("", "needs a header"),
    ("recording,label,onset\na.wav,dog,1\n", "needs a header"),
    ("recording,label,onset,offset\na.wav,dog,2,2\n", "not after onset"),
    ("recording,label,onset,offset\na.wav,dog,1,\n", "or none of them"),
    ("recording,label,onset,offset\na.wav,dog,soon,2\n", "not a number"),
    ("recording,label,onset,offset\na.wav,dog,-1,2\n", ">= 0"),
    ("recording,label,onset,offset\n,dog,1,2\n", "no recording"),
])
def test_bad_annotations_name_the_problem_and_the_line(tmp_path, text, message):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(AnnotationError, match=message):
        read_annotations(path)


# ---------------------------------------------------------------- a real stream

CLIPS = ("dog", "rooster", "crying_baby")
LEAD_SECONDS, GAP_SECONDS = 3.0, 4.0


@pytest.fixture(scope="module")
def recordings(tmp_path_factory):
    """kitchen.wav: the example clips with silence between, annotated at each clip's first loud
    frame; yard.wav: a rooster, 48 kHz stereo, annotated as having no events."""
    root = tmp_path_factory.mktemp("streams")
    parts, rows, t = [np.zeros(int(LEAD_SECONDS * RATE), np.float32)], [], LEAD_SECONDS
    for name in CLIPS:
        x, rate = sf.read(REPO / "examples" / f"{name}.flac", dtype="float32")
        assert rate == RATE
        rows.append(f"kitchen.wav,{name},{t + first_loud_sample(x) / RATE},{t + len(x) / RATE}")
        parts += [x, np.zeros(int(GAP_SECONDS * RATE), np.float32)]
        t += (len(x) + GAP_SECONDS * RATE) / RATE
    kitchen = np.concatenate(parts)
    sf.write(root / "kitchen.wav", kitchen, RATE, subtype="FLOAT")
    rooster, _ = sf.read(REPO / "examples" / "rooster.flac", dtype="float32")
    yard = np.concatenate([np.zeros(2 * RATE, np.float32), rooster, np.zeros(3 * RATE, np.float32)])
    yard = soxr.resample(yard, RATE, 48000)
    sf.write(root / "yard.wav", np.stack([yard, yard], axis=1), 48000, subtype="FLOAT")
    (root / "annotations.csv").write_text("recording,label,onset,offset\n" + "\n".join(rows)
                                          + "\nyard.wav,,,\n")
    return root, kitchen


@pytest.fixture(scope="module")
def model():
    return Model(PLACEHOLDER.with_suffix(".tflite"))


def test_evaluate_streams_scores_annotated_recordings_by_emission_time(recordings, model,
                                                                       tmp_path):
    root, kitchen = recordings
    report = evaluate_streams(model, root / "annotations.csv", json_path=tmp_path / "r.json")
    assert json.loads((tmp_path / "r.json").read_text()) == json.loads(json.dumps(report))
    kitchen_row, yard_row = report["recordings"]
    assert kitchen_row["seconds"] == pytest.approx(len(kitchen) / RATE)
    assert yard_row["seconds"] == pytest.approx(10.0, abs=0.01)        # 48 kHz read back right

    # the same audio through a fresh engine pushed in other chunk sizes: the dog (its score
    # far above the threshold) is detected, its latency the emission time minus the onset
    stream = model.stream()
    events = [e for i in range(0, len(kitchen), 1000) for e in stream.push(kitchen[i:i + 1000])]
    dog = next(e for e in kitchen_row["true_events"] if e["label"] == "dog")
    emitted = next(e.t_detect for e in events if e.kind == "start" and e.label == "dog")
    assert dog["onset"] <= emitted <= dog["onset"] + report["detection_window_s"]
    assert dog["latency_s"] == pytest.approx(emitted - dog["onset"])
    assert dog["model_limited_latency_s"] <= dog["latency_s"]

    # the yard's rooster is not annotated: a false alarm over all of its time
    assert yard_row["events"] == 0 and yard_row["background_hours"] == pytest.approx(10.0 / 3600,
                                                                                  abs=1e-5)
    assert "rooster" in [s["label"] for s in yard_row["false_alarm_starts"]]
    assert yard_row["false_alarms_per_hour"] == pytest.approx(
        yard_row["false_alarms"] / yard_row["background_hours"])
    overall = report["overall"]
    assert overall["events"] == len(CLIPS)
    assert overall["detected"] == kitchen_row["detected"] >= 1
    assert overall["false_alarms"] == kitchen_row["false_alarms"] + yard_row["false_alarms"]
    assert set(report["by_class"]) == set(CLIPS)
    table = streams_table(report)
    assert "| kitchen.wav |" in table and "| yard.wav |" in table and "| dog | 1 |" in table


def test_evaluate_streams_refuses_labels_the_model_lacks_and_events_past_the_end(recordings,
                                                                                  model):
    root, _ = recordings
    (root / "owl.csv").write_text("recording,label,onset,offset\nkitchen.wav,owl,1,2\n")
    with pytest.raises(AnnotationError, match="labels the model does not know: owl"):
        evaluate_streams(model, root / "owl.csv")
    (root / "late.csv").write_text("recording,label,onset,offset\nyard.wav,dog,11,12\n")
    with pytest.raises(AnnotationError, match="starts at 11.0 s"):
        evaluate_streams(model, root / "late.csv")


def test_evaluate_cli_scores_an_exported_file_on_streams(recordings, tmp_path):
    pytest.importorskip("torch", reason="`edgeaudio evaluate` is mounted from the train room")
    from edgeaudio.cli import main
    root, _ = recordings
    model_file = PLACEHOLDER.with_suffix(".onnx")
    args = ["evaluate", "--model", str(model_file), "--events", str(root / "annotations.csv"),
            "--out", str(tmp_path)]
    result = CliRunner().invoke(main, args + ["--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    written = tmp_path / f"{model_file.name}.streams.json"
    report = json.loads(result.stdout.splitlines()[0])
    assert report == json.loads(written.read_text())
    assert report["model"]["backend"] == "onnxruntime" and report["overall"]["events"] == 3
    result = CliRunner().invoke(main, args + ["--threshold", "0.99"], catch_exceptions=False)
    assert result.exit_code == 0 and "| **all** |" in result.stdout
    assert json.loads(written.read_text())["settings"]["threshold"] == pytest.approx(0.99)
    result = CliRunner().invoke(main, ["evaluate", "--events", str(root / "annotations.csv")])
    assert result.exit_code == 2 and "--model FILE --events CSV" in result.output
