"""Event scoring: the events a stream engine emitted against the true events of the stream.

Used by ``bench/streaming.py`` (synthetic streams) and by ``edgeaudio evaluate --model FILE
--events CSV`` (your recordings). numpy only: it runs wherever the runtime does.

The rules, for every "start" event in emission order (``window``: the model window in seconds;
``tail = (smooth + patience) * hop``: how long after an event's audio has left the model window
it can still drive a start):

* A true event's span runs from its onset to ``offset + window + tail``.
* detection: the first start of the true event's label emitted at stream time ``t_detect`` in
  ``[onset, onset + window]``. After one window the onset has left the model's input, so a
  later start was not caused by it.
* latency: ``t_detect - onset``, when the engine *emitted* the start (what a listener learns,
  and when), not the event's back-dated ``t_start``, which precedes the onset by construction.
* false alarm: a start outside every span. Counted per hour of background time: stream time
  outside the union of the spans.
* confusion: a start inside a span (or overlapping spans) of no true event of its label.
* repeat: a further start of a true event's label inside its span (the event closed and
  reopened, or a start after the detection window).
* background class: a start of the background's own class (an ambience playing throughout)
  is right, never a false alarm; it is only counted.
* model-limited latency: the first hop after the onset, within one window, at which the RAW
  (unsmoothed, gated) score of the event's class reaches its threshold. No smoothing or
  patience could detect earlier at that threshold, so it is the model's share of the latency.

Annotations for ``evaluate_streams`` are a CSV with the header ``recording,label,onset,offset``
(seconds; recording paths relative to the CSV's folder, any format and rate the runtime
reads). One row per true event; a row with an empty label, onset and offset lists a recording
that has no events (it counts for false alarms only)::

    recording,label,onset,offset
    kitchen.wav,dog,3.20,4.10
    kitchen.wav,door_wood_knock,12.0,12.6
    street.flac,,,
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .audio import load_audio
from .errors import EdgeAudioError
from .files import atomic_write_json
from .model import Model

ANNOTATION_COLUMNS = ("recording", "label", "onset", "offset")


class AnnotationError(EdgeAudioError):
    """An annotation CSV that cannot be scored against (bad columns, times or labels)."""


@dataclass
class TrueEvent:
    label: str
    onset: float      # seconds into the stream where the sound begins
    offset: float     # seconds into the stream where it ends


@dataclass
class StreamScore:
    latencies: list               # per true event: seconds from onset to the emitted start, or None
    false_alarms: list            # (label, t_detect) outside every span
    confusions: list              # (label, t_detect, true label) inside a span of another label
    repeats: int
    background_class_starts: int
    background_seconds: float     # stream time outside every span


def covered_seconds(spans: list, duration: float) -> float:
    """Seconds of ``[0, duration]`` inside the union of the ``(start, end)`` spans."""
    covered, reach = 0.0, -math.inf
    for a, b in sorted(spans):
        a, b = max(a, reach), min(b, duration)
        if b > a:
            covered += b - a
        reach = max(reach, b)
    return covered


def score_stream(events: list, truth: list, duration: float, window: float, tail: float,
                 background_label: str | None = None) -> StreamScore:
    """Sort one stream's start events into detections, repeats, confusions and false alarms.

    ``events``: the engine's ``Event``s (end events are ignored); ``truth``: ``TrueEvent``s (or
    anything with ``label``, ``onset``, ``offset``); ``duration``: the stream's length in seconds.
    Where spans overlap, a start goes to a true event of its own label, the earliest one still
    undetected whose detection window holds it."""
    spans = [(t.onset, t.offset + window + tail) for t in truth]
    latencies = [None] * len(truth)
    false_alarms, confusions = [], []
    repeats = background_class_starts = 0
    for e in events:
        if e.kind != "start":
            continue
        t = e.t_detect
        if e.label == background_label:
            background_class_starts += 1
            continue
        inside = [i for i, (a, b) in enumerate(spans) if a <= t <= b]
        if not inside:
            false_alarms.append((e.label, t))
            continue
        own = [i for i in inside if truth[i].label == e.label]
        if not own:
            confusions.append((e.label, t, truth[inside[0]].label))
            continue
        hit = next((i for i in own if latencies[i] is None and t <= truth[i].onset + window),
                   None)
        if hit is None:
            repeats += 1
        else:
            latencies[hit] = t - truth[hit].onset
    return StreamScore(latencies, false_alarms, confusions, repeats, background_class_starts,
                       duration - covered_seconds(spans, duration))


def model_limited_latencies(times: np.ndarray, raw: np.ndarray, thresholds: np.ndarray,
                            labels: list, truth: list, window: float) -> list:
    """Per true event, the first hop time in ``(onset, onset + window]`` at which the RAW score
    of its class (``raw[hop, class]``) reaches its threshold, minus the onset; None if none."""
    out = []
    for event in truth:
        i = labels.index(event.label)
        hops = np.flatnonzero((times > event.onset) & (times <= event.onset + window)
                              & (raw[:, i] >= thresholds[i]))
        out.append(float(times[hops[0]] - event.onset) if len(hops) else None)
    return out


# ---------------------------------------------------------------- summaries

def latency_summary(latencies: list) -> dict:
    """Detections and latency over true events (``None``: missed)."""
    hit = [x for x in latencies if x is not None]
    return {"events": len(latencies), "detected": len(hit),
            "detection_rate": len(hit) / len(latencies) if latencies else None,
            "median_latency_s": float(np.median(hit)) if hit else None,
            "p95_latency_s": float(np.percentile(hit, 95)) if hit else None}


def alarm_summary(scores: list) -> dict:
    """False alarms over ``StreamScore``s, per hour of their background time."""
    seconds = sum(s.background_seconds for s in scores)
    n = sum(len(s.false_alarms) for s in scores)
    return {"background_hours": seconds / 3600.0, "false_alarms": n,
            "false_alarms_per_hour": n / (seconds / 3600.0) if seconds else None}


def fmt_or_dash(x, spec: str, none: str = "-") -> str:
    """``format(x, spec)``, or ``none`` for a figure that does not exist (no detections)."""
    return none if x is None else format(x, spec)


# ---------------------------------------------------------------- running the engine

@dataclass
class StreamRun:
    engine: object            # the edgeaudio.stream.Stream, after the stream ended
    events: list              # every start and end event, flush included
    times: np.ndarray         # stream time of each hop
    raw: np.ndarray           # [hops, classes] each hop's scores before smoothing (0 if gated)
    smoothed: np.ndarray      # [hops, classes] what the thresholds saw

    @property
    def tail_seconds(self) -> float:
        """How long after an event's audio left the window it can still drive a start."""
        return (self.engine.smooth + self.engine.patience) * self.engine.hop_seconds


def run_stream(model: Model, audio: np.ndarray, settings: dict | None = None) -> StreamRun:
    """``audio`` (mono, at the model rate) through a fresh engine, one hop at a time, keeping
    every hop's raw and smoothed scores."""
    stream = model.stream(**(settings or {}))
    events, times, raw, smoothed = [], [], [], []
    for i in range(0, len(audio), stream.hop):
        events += stream.push(audio[i:i + stream.hop])
        if len(times) < stream.n_inferences:
            times.append(stream.time)
            raw.append(stream.recent[-1])
            smoothed.append(stream.scores.copy())
    return StreamRun(stream, events + stream.flush(), np.array(times), np.array(raw),
                     np.array(smoothed))


def stream_settings(stream) -> dict:
    """The settings an engine actually ran at (a threshold per class only where they differ)."""
    thresholds = stream.thresholds
    return {"hop_seconds": stream.hop_seconds, "smooth": stream.smooth,
            "patience": stream.patience, "release_ratio": stream.release_ratio,
            "gate_db": stream.gate_db,
            "threshold": (float(thresholds[0]) if np.all(thresholds == thresholds[0])
                          else dict(zip(stream.model.labels, map(float, thresholds))))}


# ---------------------------------------------------------------- annotated recordings

def _seconds(text: str, where: str, column: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise AnnotationError(f"{where}: {column} {text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value < 0:
        raise AnnotationError(f"{where}: {column} {text!r} must be a time >= 0 s")
    return value


def read_annotations(path) -> dict:
    """An annotation CSV (see the module docstring) -> ``{recording path: [TrueEvent, ...]}``,
    recordings in order of first appearance, events by onset."""
    path = Path(path)
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
            header = {c.strip() for c in reader.fieldnames or ()}
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise AnnotationError(f"{path}: cannot read it as a CSV ({exc})") from None
    if not rows or set(ANNOTATION_COLUMNS) - header:
        raise AnnotationError(f"{path}: needs a header {','.join(ANNOTATION_COLUMNS)} and at "
                              f"least one row")
    recordings: dict = {}
    for n, row in enumerate(rows, start=2):
        row = {k.strip(): (v or "").strip() for k, v in row.items() if k}
        where = f"{path}:{n}"
        if not row["recording"]:
            raise AnnotationError(f"{where}: no recording")
        rec = Path(row["recording"])
        events = recordings.setdefault(rec if rec.is_absolute() else path.parent / rec, [])
        if not (row["label"] or row["onset"] or row["offset"]):
            continue                                     # a recording without events
        if not (row["label"] and row["onset"] and row["offset"]):
            raise AnnotationError(f"{where}: give label, onset and offset (or none of them)")
        onset = _seconds(row["onset"], where, "onset")
        offset = _seconds(row["offset"], where, "offset")
        if offset <= onset:
            raise AnnotationError(f"{where}: offset {offset} s is not after onset {onset} s")
        events.append(TrueEvent(row["label"], onset, offset))
    return {rec: sorted(events, key=lambda e: e.onset) for rec, events in recordings.items()}


def evaluate_streams(model, annotations, settings: dict | None = None,
                     json_path=None) -> dict:
    """Score a model file on annotated recordings: each recording through a fresh stream
    engine (``settings`` as ``Model.stream`` takes them; default: the model file's), its start
    events scored against the annotations. Returns the report (written as JSON to
    ``json_path`` when given); ``streams_table`` prints it.

    ``model``: a ``Model`` or a model file path; ``annotations``: the CSV's path."""
    model = model if isinstance(model, Model) else Model(model)
    recordings = read_annotations(annotations)
    unknown = sorted({e.label for events in recordings.values() for e in events}
                     - set(model.labels))
    if unknown:
        raise AnnotationError(f"{annotations}: labels the model does not know: "
                              f"{', '.join(unknown)} (its labels: {', '.join(model.labels)})")
    rows, scores, all_latencies, all_floors, engine = [], [], [], [], None
    by_class: dict = {}
    for path, truth in recordings.items():
        audio = load_audio(path, model.sample_rate)
        duration = len(audio) / model.sample_rate
        late = [e for e in truth if e.onset >= duration]
        if late:
            raise AnnotationError(f"{annotations}: {path.name} is {duration:.2f} s long, but an "
                                  f"event of {late[0].label} starts at {late[0].onset} s")
        run = run_stream(model, audio, settings)
        engine = run.engine
        score = score_stream(run.events, truth, duration, engine.window_seconds,
                             run.tail_seconds)
        floors = model_limited_latencies(run.times, run.raw, engine.thresholds, model.labels,
                                         truth, engine.window_seconds)
        scores.append(score)
        all_latencies += score.latencies
        all_floors += floors
        for event, latency in zip(truth, score.latencies):
            by_class.setdefault(event.label, []).append(latency)
        rows.append({
            "recording": str(path), "seconds": duration,
            **latency_summary(score.latencies), **alarm_summary([score]),
            "confusions": len(score.confusions), "repeats": score.repeats,
            "true_events": [{"label": e.label, "onset": e.onset, "offset": e.offset,
                        "latency_s": lat, "model_limited_latency_s": floor}
                       for e, lat, floor in zip(truth, score.latencies, floors)],
            "false_alarm_starts": [{"label": label, "t_detect": t}
                                   for label, t in score.false_alarms],
            "confusion_starts": [{"label": label, "t_detect": t, "true_label": true}
                                 for label, t, true in score.confusions]})
    false_alarm_labels: dict = {}
    for score in scores:
        for label, _ in score.false_alarms:
            false_alarm_labels[label] = false_alarm_labels.get(label, 0) + 1
    report = {
        "model": {"path": str(model.path), "name": model.info.name,
                  "version": model.info.version, "classes": len(model.labels),
                  "backend": model.backend_name},
        "annotations": str(annotations), "settings": stream_settings(engine),
        "detection_window_s": engine.window_seconds,
        "overall": {**latency_summary(all_latencies), **alarm_summary(scores),
                    "confusions": sum(len(s.confusions) for s in scores),
                    "repeats": sum(s.repeats for s in scores),
                    "model_limited": latency_summary(all_floors)},
        "by_class": {label: latency_summary(lats) for label, lats in sorted(by_class.items())},
        "false_alarm_labels": dict(sorted(false_alarm_labels.items(), key=lambda kv: -kv[1])),
        "recordings": rows,
    }
    if json_path is not None:
        atomic_write_json(json_path, report)
    return report


def streams_table(report: dict) -> str:
    """``evaluate_streams``'s report as markdown tables: per recording, then per class."""
    lines = ["| recording | seconds | events | detected | median latency | p95 latency | "
             "false alarms | per background hour | confusions |",
             "|---|---|---|---|---|---|---|---|---|"]

    def row(name, s, seconds):
        lines.append(f"| {name} | {seconds:.1f} | {s['events']} | "
                     f"{fmt_or_dash(s['detection_rate'], '.1%')} | "
                     f"{fmt_or_dash(s['median_latency_s'], '.2f')} s | "
                     f"{fmt_or_dash(s['p95_latency_s'], '.2f')} s | {s['false_alarms']} | "
                     f"{fmt_or_dash(s['false_alarms_per_hour'], '.1f')} | {s['confusions']} |")
    for r in report["recordings"]:
        row(Path(r["recording"]).name, r, r["seconds"])
    row("**all**", report["overall"], sum(r["seconds"] for r in report["recordings"]))
    lines += ["", "| class | events | detected | median latency |", "|---|---|---|---|"]
    for label, s in report["by_class"].items():
        lines.append(f"| {label} | {s['events']} | {fmt_or_dash(s['detection_rate'], '.1%')} | "
                     f"{fmt_or_dash(s['median_latency_s'], '.2f')} s |")
    m = report["overall"]["model_limited"]
    lines += ["", f"latency from the true onset to the emitted start; detection window "
                  f"{report['detection_window_s']:.2f} s. Raw scores reach the threshold for "
                  f"{fmt_or_dash(m['detection_rate'], '.1%')} of events (median "
                  f"{fmt_or_dash(m['median_latency_s'], '.2f')} s after the onset): the "
                  f"model's share of the latency."]
    return "\n".join(lines)
