"""Streaming defaults that fit a model's own sounds, chosen on its validation clips.

A model file carries the stream settings ``listen`` starts with. Settings built for 4-s ESC-50
windows (smoothing over 3 hops, 2 hops of patience) keep a 1-s word under the threshold: it
fills the window for about one hop. So:

* ``settings_for_event_length``: smoothing and patience from how long the model's sounds last
  (the run's median clip), in hops: an event that spans fewer than 6 hops is neither smoothed
  nor made to wait; up to 12 hops, smoothed over 2 and confirmed by 2; longer ones, 3 and 2.
* ``tune_threshold``: the engine runs over a stream of validation clips, each after a gap of
  background audio (the run's background clips when it has them, else silence), once per
  threshold of a grid; the threshold kept detects the most events while raising at most
  ``max_false_per_10min`` false events per 10 minutes of the gaps (ties: the higher one). The
  scoring is ``edgeaudio.event_scoring``'s, the engine the one ``listen`` runs.

numpy only: it runs wherever the runtime does.
"""
from __future__ import annotations

import numpy as np

from .event_scoring import TrueEvent, alarm_summary, latency_summary, run_stream, score_stream

THRESHOLD_GRID = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def settings_for_event_length(event_seconds: float, hop_seconds: float) -> dict:
    """``smooth`` and ``patience`` for sounds of ``event_seconds`` at a stream hop."""
    hops = event_seconds / hop_seconds
    if hops < 6:
        return {"smooth": 1, "patience": 1}
    if hops < 12:
        return {"smooth": 2, "patience": 2}
    return {"smooth": 3, "patience": 2}


def validation_stream(events: list, background: list, rate: int, gap_seconds: float,
                      seed: int = 0) -> tuple[np.ndarray, list]:
    """(audio, true events): each ``(wave, label)`` of ``events`` after a gap of
    ``gap_seconds``, cut from the ``background`` waves in turn (silence when there are none)."""
    rng = np.random.default_rng([seed, 811])
    gap = int(round(gap_seconds * rate))
    parts, truth, t = [], [], 0
    for k, (wave, label) in enumerate(events):
        filler = np.zeros(gap, np.float32)
        if background:
            source = background[k % len(background)]
            start = int(rng.integers(0, max(1, len(source) - gap + 1)))
            piece = source[start:start + gap]
            filler[:len(piece)] = piece
        parts += [filler, np.asarray(wave, np.float32)]
        truth.append(TrueEvent(label, (t + gap) / rate, (t + gap + len(wave)) / rate))
        t += gap + len(wave)
    parts.append(np.zeros(gap, np.float32))  # the last event's tail
    return np.concatenate(parts), truth


def tune_threshold(model, events: list, background: list, settings: dict, *,
                   gap_seconds: float | None = None, grid=THRESHOLD_GRID,
                   max_false_per_10min: float = 1.0, seed: int = 0) -> dict:
    """The threshold for ``model``'s stream engine at ``settings`` (smooth, patience, hop),
    chosen on ``events`` (``(wave, label)`` at the model rate, the validation clips) placed
    between ``background`` waves. Returns the threshold and the figures of every candidate."""
    gap = (gap_seconds if gap_seconds is not None
           else max(2.0, 2 * model.info.scored_window_seconds))
    audio, truth = validation_stream(events, background, model.sample_rate, gap, seed)
    background_label = (settings.get("background") or [None])[0]
    rows = []
    for threshold in grid:
        run = run_stream(model, audio, {k: v for k, v in settings.items()
                                        if k != "background"} | {"threshold": threshold})
        score = score_stream(run.events, truth, len(audio) / model.sample_rate,
                             model.info.scored_window_seconds, run.tail_seconds, background_label)
        alarms = alarm_summary([score])
        per_10min = (alarms["false_alarms"] / (alarms["background_hours"] * 6)
                     if alarms["background_hours"] else 0.0)
        rows.append({"threshold": threshold, **latency_summary(score.latencies),
                     "false_alarms": alarms["false_alarms"], "confusions": len(score.confusions),
                     "false_alarms_per_10min": per_10min})
    fine = [r for r in rows if r["false_alarms_per_10min"] <= max_false_per_10min]
    best = (max(fine, key=lambda r: (r["detected"], r["threshold"])) if fine
            else min(rows, key=lambda r: (r["false_alarms_per_10min"], -r["detected"])))
    return {"threshold": best["threshold"], "candidates": rows, "events": len(truth),
            "stream_seconds": round(len(audio) / model.sample_rate, 1),
            "gap_seconds": gap, "max_false_per_10min": max_false_per_10min,
            "met": bool(fine)}
