#!/usr/bin/env python3
"""Streaming benchmark: held-out ESC-50 events at known times over background audio, through
the streaming engine; detection rate, latency from the true onset, false alarms per hour.

    .venv/bin/python bench/streaming.py --model models/model.int8.tflite [--fold K]

Prints a table, writes bench/results/streaming.json and docs/streaming.png, and checks that
`edgeaudio listen --input FILE --json` gives exactly the library's events on a shorter stream.

The teacher's upper-bound row is the same bench on the teacher as a model file (mn04 and a
linear probe on the other folds, float ONNX, run by the same engine):

    .venv/bin/python bench/teacher_model_file.py --fold 1
    .venv/bin/python bench/streaming.py --model runs/teacher/mn04-probe-fold1.onnx --fold 1 \
        --json bench/results/streaming_teacher.json --plot docs/streaming_teacher.png

Design (every random choice comes from ``--seed``):

* Fold. Events and ESC-50 backgrounds come from fold ``--fold`` only, the fold the model did
  not train on (default: the held-out fold named in the model's metadata). The output says
  when the metadata shows the model trained on that fold.
* Event classes (``EVENT_CLASSES``): ESC-50 classes whose sound starts at a definite moment
  and is what a listening device is asked to report: animal calls, human non-speech sounds,
  knocks, glass, alarms, horns, sirens, bells, fireworks. Ambience-like classes (rain, wind,
  engines, vacuum cleaner) and textures without a clear onset (keyboard typing, clock tick,
  footsteps, brushing teeth, snoring) are left out: their "onset" is not an acoustic event.
* True onset. ESC-50 clips often start with near-silence or digital padding. A clip's onset
  is its first 10 ms frame within ``LOUD_BELOW_PEAK_DB`` (20 dB) of its loudest frame; the
  clip is placed from that frame on (trailing digital silence cut), so in the stream the
  sound starts exactly at the placement time and latency is measured from the acoustic onset,
  not from the clip's file start.
* Levels. An event's level is the RMS of its loud frames (same 20 dB rule), set to
  ``BACKGROUND_DBFS + SNR`` for SNR in ``SNRS_DB`` (+20, +10, 0 dB): at +20 dB, -20 dBFS,
  about ESC-50's own levels. Every event clip is placed once at each SNR. An impulsive clip
  whose peak would pass ``PEAK_LIMIT_DBFS`` is turned down instead of clipped, and so is one
  whose sum with the background's peaks would pass full scale (the output counts them).
* Backgrounds (one per synthetic stream, cycled so each kind gets the same number of events):
  - ``ambience``: fold-K clips of ``AMBIENCE_CLASSES`` (rain, sea waves, crackling fire,
    crickets, wind, insects), each at ``BACKGROUND_DBFS`` RMS, shuffled and looped with
    0.5 s equal-power crossfades (8 clips = 40 s of distinct audio per class, so it repeats).
    Detecting the background's own class while it plays is right, not a false alarm.
  - ``speech``: FSDD spoken digits (6 speakers, 8 kHz resampled to 16 kHz, so band-limited
    to 4 kHz) in runs of 3-8 digits with short gaps and longer pauses, each digit at
    ``BACKGROUND_DBFS`` loud-frame RMS. ESC-50 has no speech class, so any event is an alarm.
  - ``noise``: pink noise at ``NOISE_DBFS`` (-50 dBFS, above the engine's -60 dBFS gate: a fan
    or a noisy preamp); the model itself must stay quiet.
  - ``quiet``: pink noise at ``QUIET_DBFS`` (-70 dBFS, below the gate: a quiet room); checks
    the gate and the transitions into and out of events.
* Layout. Events are shuffled into streams of ``EVENTS_PER_STREAM``; each stream starts with
  ``GAP_SECONDS`` of background, and after each event (its end plus one scored window: a
  streaming file's run of chunks, not its chunk) comes a ``GAP_SECONDS`` stretch of background
  alone before the next onset, at a random sample (so the onset falls at a uniformly random
  phase of the hop). Each stream runs through a fresh
  engine (a device starting to listen) at the model's default settings.
* What counts: ``edgeaudio.event_scoring`` (spans, detection within one window of the onset,
  latency from the onset to the moment the start was EMITTED, false alarms per hour of
  background-only time, confusions, repeats, model-limited latency), with the ambience's own
  ESC-50 class as the stream's background class (never a false alarm). Compute time is
  excluded from latency (about 1-3 ms per hop here). False alarms are counted per background
  kind.
* CLI agreement: the first stream of each background kind, 90 s of each, concatenated into a
  float32 WAV, through `edgeaudio listen --input WAV --json --fast` (a subprocess) and through
  the library; the event lines must be identical (class, score, t_start, t_end, order). Done
  at the settings under test and again at ``EVENTFUL_SETTINGS`` (passed as CLI flags), which
  open many more events, so the comparison is not carried by a handful of lines.

Targets (issue 7): median latency <= one hop + 100 ms; <= 1 false alarm per hour of background
at the default threshold.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from edgeaudio import Model
from edgeaudio.audio import load_audio
from edgeaudio.event_scoring import (StreamRun, TrueEvent, alarm_summary, fmt_or_dash,
                                     latency_summary, model_limited_latencies, run_stream,
                                     score_stream, stream_settings)
from edgeaudio.files import atomic_write_json, shared_dir

REPO = Path(__file__).resolve().parents[1]
SHARED = shared_dir()
ESC50 = SHARED / "data" / "esc50"
FSDD = SHARED / "data" / "fsdd" / "recordings"

EVENT_CLASSES = ("dog", "rooster", "pig", "cow", "cat", "hen", "sheep", "crow",
                 "crying_baby", "sneezing", "coughing", "laughing",
                 "door_wood_knock", "can_opening", "glass_breaking", "clock_alarm",
                 "car_horn", "siren", "church_bells", "fireworks")
AMBIENCE_CLASSES = ("rain", "sea_waves", "crackling_fire", "crickets", "wind", "insects")
BACKGROUND_KINDS = ("ambience", "speech", "noise", "quiet")

BACKGROUND_DBFS = -40.0       # ambience and speech level; events sit SNR dB above it
NOISE_DBFS = -50.0            # pink noise above the engine's gate
QUIET_DBFS = -70.0            # pink noise below the gate
SNRS_DB = (20.0, 10.0, 0.0)
PEAK_LIMIT_DBFS = -1.0        # no placed event peaks above this
LOUD_BELOW_PEAK_DB = 20.0     # a frame is "loud" within this of the clip's loudest frame
FRAME_SECONDS = 0.01
DIGITAL_SILENCE = 1e-4        # |sample| below this at a clip's end is padding
EVENTS_PER_STREAM = 10
GAP_SECONDS = (8.0, 16.0)     # background alone before each onset
CROSSFADE_SECONDS = 0.5
CLI_SECONDS_PER_KIND = 90.0
EVENTFUL_SETTINGS = {"threshold": 0.2, "smooth": 1, "patience": 1}
RESULTS = REPO / "bench" / "results" / "streaming.json"
PLOT = REPO / "docs" / "streaming.png"


# ---------------------------------------------------------------- clips, onsets, levels

def frame_energies_db(x: np.ndarray, rate: int) -> np.ndarray:
    frame = int(rate * FRAME_SECONDS)
    n = len(x) // frame
    power = np.mean(np.square(x[:n * frame].reshape(n, frame), dtype=np.float64), axis=1)
    return 10.0 * np.log10(power + 1e-20)


def loud_frames(x: np.ndarray, rate: int) -> np.ndarray:
    """Mask of the 10 ms frames within LOUD_BELOW_PEAK_DB of the loudest one."""
    e = frame_energies_db(x, rate)
    return e >= e.max() - LOUD_BELOW_PEAK_DB


def onset_sample(x: np.ndarray, rate: int) -> int:
    """The first sample of the first loud frame: where the sound clearly begins."""
    return int(np.argmax(loud_frames(x, rate))) * int(rate * FRAME_SECONDS)


def loud_level_dbfs(x: np.ndarray, rate: int) -> float:
    """RMS (dB full scale) over the loud frames: a level that ignores pauses and padding."""
    frame = int(rate * FRAME_SECONDS)
    mask = loud_frames(x, rate)
    frames = x[:len(mask) * frame].reshape(len(mask), frame)[mask]
    return float(10.0 * np.log10(np.mean(np.square(frames, dtype=np.float64)) + 1e-20))


def rms_dbfs(x: np.ndarray) -> float:
    return float(10.0 * np.log10(np.mean(np.square(x, dtype=np.float64)) + 1e-20))


def trim_digital_silence(x: np.ndarray) -> np.ndarray:
    loud = np.flatnonzero(np.abs(x) > DIGITAL_SILENCE)
    return x[loud[0]:loud[-1] + 1] if len(loud) else x[:0]


def event_segment(x: np.ndarray, rate: int) -> np.ndarray:
    """The clip from its onset to its last non-padding sample."""
    x = trim_digital_silence(x)
    return x[onset_sample(x, rate):]


def at_level(x: np.ndarray, dbfs: float, level: float) -> np.ndarray:
    return (x * 10.0 ** ((dbfs - level) / 20.0)).astype(np.float32)


def esc50_rows(fold: int) -> list:
    with open(ESC50 / "meta" / "esc50.csv") as f:
        rows = [r for r in csv.DictReader(f) if int(r["fold"]) == fold]
    return sorted(rows, key=lambda r: r["filename"])


def esc50_audio(row: dict, rate: int) -> np.ndarray:
    return load_audio(ESC50 / "audio" / (Path(row["filename"]).stem + ".flac"), rate)


# ---------------------------------------------------------------- backgrounds

def pink_noise(n: int, dbfs: float, rng: np.random.Generator) -> np.ndarray:
    spectrum = np.fft.rfft(rng.standard_normal(n))
    spectrum[1:] /= np.sqrt(np.arange(1, len(spectrum)))
    spectrum[0] = 0.0
    x = np.fft.irfft(spectrum, n)
    return at_level(x, dbfs, rms_dbfs(x))


def crossfade_concat(pieces: list, n: int, fade: int) -> np.ndarray:
    """Pieces joined with equal-power crossfades until ``n`` samples (pieces are cycled)."""
    out = np.zeros(n + fade, np.float32)
    ramp = np.linspace(0.0, np.pi / 2, fade, dtype=np.float32)
    fade_in, fade_out = np.sin(ramp), np.cos(ramp)
    pos, i = 0, 0
    while pos < n:
        piece = pieces[i % len(pieces)].copy()
        i += 1
        piece[:fade] *= fade_in
        piece[-fade:] *= fade_out
        take = min(len(piece), len(out) - pos)
        out[pos:pos + take] += piece[:take]
        pos += len(piece) - fade
    return out[:n]


def ambience_bed(clips: list, n: int, rate: int, rng: np.random.Generator) -> np.ndarray:
    pieces = []
    for x in clips:
        x = trim_digital_silence(x)
        pieces.append(at_level(x, BACKGROUND_DBFS, rms_dbfs(x)))
    order = [pieces[j] for _ in range(n // (rate * 4) + 2) for j in rng.permutation(len(pieces))]
    return crossfade_concat(order, n, int(CROSSFADE_SECONDS * rate))


def speech_bed(paths: list, n: int, rate: int, rng: np.random.Generator) -> np.ndarray:
    """Runs of 3-8 spoken digits (random speakers), 0.05-0.4 s apart, 0.5-2.5 s pauses."""
    out = np.zeros(n, np.float32)
    pos = int(rng.uniform(0.0, 1.0) * rate)
    while pos < n:
        for _ in range(int(rng.integers(3, 9))):
            x = load_audio(paths[int(rng.integers(len(paths)))], rate)
            x = at_level(x, BACKGROUND_DBFS, loud_level_dbfs(x, rate))
            take = min(len(x), n - pos)
            if take <= 0:
                break
            out[pos:pos + take] += x[:take]
            pos += len(x) + int(rng.uniform(0.05, 0.4) * rate)
        pos += int(rng.uniform(0.5, 2.5) * rate)
    return out


# ---------------------------------------------------------------- streams

@dataclass(kw_only=True)
class PlacedEvent(TrueEvent):
    """A true event (label, onset = the acoustic onset, offset) and how it was placed."""
    clip: str
    snr_db: float         # nominal: the event's loud-frame RMS over BACKGROUND_DBFS
    level_dbfs: float     # as placed: lower than nominal when the peak limit applied


@dataclass
class SyntheticStream:
    name: str
    kind: str                         # one of BACKGROUND_KINDS
    background_label: str | None      # the ambience's ESC-50 class, else None
    audio: np.ndarray = field(repr=False)
    rate: int
    events: list

    @property
    def seconds(self) -> float:
        return len(self.audio) / self.rate


def build_streams(model: Model, fold: int, seed: int, clips_per_class: int | None = None,
                  snrs=SNRS_DB) -> list:
    rate = model.sample_rate
    window = model.info.scored_window_seconds  # a streaming file's window, not its chunk
    rng = np.random.default_rng(seed)
    rows = esc50_rows(fold)
    event_classes = [c for c in EVENT_CLASSES if c in model.labels]
    event_rows = []
    for label in event_classes:
        event_rows += [r for r in rows if r["category"] == label][:clips_per_class]
    segments = {r["filename"]: event_segment(esc50_audio(r, rate), rate) for r in event_rows}
    ambience = {c: [esc50_audio(r, rate) for r in rows if r["category"] == c]
                for c in AMBIENCE_CLASSES}
    speech_paths = sorted(FSDD.glob("*.flac"))
    placements = [(r, snr) for r in event_rows for snr in snrs]
    order = rng.permutation(len(placements))
    groups = [[placements[j] for j in order[i:i + EVENTS_PER_STREAM]]
              for i in range(0, len(order), EVENTS_PER_STREAM)]
    streams = []
    for index, group in enumerate(groups):
        kind = BACKGROUND_KINDS[index % len(BACKGROUND_KINDS)]
        background_label = (AMBIENCE_CLASSES[(index // len(BACKGROUND_KINDS))
                                             % len(AMBIENCE_CLASSES)]
                            if kind == "ambience" else None)
        # lay the events out first, then make a background of the right length
        t = rng.uniform(*GAP_SECONDS)
        placed = []
        for row, snr in group:
            seg = segments[row["filename"]]
            start = int(round(t * rate))
            placed.append((start, row, snr, seg))
            t = (start + len(seg)) / rate + window + rng.uniform(*GAP_SECONDS)
        n = int(round(t * rate))
        if kind == "ambience":
            audio = ambience_bed(ambience[background_label], n, rate, rng)
        elif kind == "speech":
            audio = speech_bed(speech_paths, n, rate, rng)
        else:
            audio = pink_noise(n, NOISE_DBFS if kind == "noise" else QUIET_DBFS, rng)
        events = []
        for start, row, snr, seg in placed:
            loud = loud_level_dbfs(seg, rate)
            # impulsive clips (fireworks, cans) peak up to 24 dB above their loud-frame RMS:
            # turn those down rather than clip them
            crest = 20.0 * np.log10(float(np.max(np.abs(seg)))) - loud
            level = min(BACKGROUND_DBFS + snr, PEAK_LIMIT_DBFS - crest)
            bed = audio[start:start + len(seg)]
            placed_seg = at_level(seg, level, loud)
            while float(np.max(np.abs(bed + placed_seg))) > 1.0:
                # a background peak (a crackle of the fire) would carry the sum past full
                # scale: the event goes down 1 dB at a time until it does not
                level -= 1.0
                placed_seg = at_level(seg, level, loud)
            bed += placed_seg
            events.append(PlacedEvent(label=row["category"], onset=start / rate,
                                      offset=(start + len(seg)) / rate,
                                      clip=row["filename"], snr_db=snr, level_dbfs=level))
        peak = float(np.max(np.abs(audio)))
        if peak > 1.0:           # not expected at these levels; never silently clip
            raise RuntimeError(f"stream {index} peaks at {peak:.2f} (> full scale)")
        name = f"{index:02d}-{kind}" + (f"-{background_label}" if background_label else "")
        streams.append(SyntheticStream(name, kind, background_label, audio, rate, events))
    return streams


# ---------------------------------------------------------------- summaries

def model_limited_summary(floors: list, target: float) -> dict:
    return {**latency_summary(floors),
            "within_target_rate": sum(x is not None and x <= target for x in floors)
            / len(floors) if floors else None}


def summarize(streams: list, scores: list, floors: list, hop_seconds: float) -> dict:
    """``floors``: per stream, ``model_limited_latencies`` of its events."""
    target = hop_seconds + 0.1
    rows = [(s, p, lat) for s, score in zip(streams, scores)
            for p, lat in zip(s.events, score.latencies)]
    out = {"overall": {**latency_summary([lat for _, _, lat in rows]), **alarm_summary(scores),
                       "confusions": sum(len(j.confusions) for j in scores),
                       "repeats": sum(j.repeats for j in scores),
                       "model_limited": model_limited_summary(sum(floors, []), target)}}
    out["by_background"] = {}
    for kind in BACKGROUND_KINDS:
        mine = [i for i, s in enumerate(streams) if s.kind == kind]
        if mine:
            out["by_background"][kind] = {
                **latency_summary([lat for i in mine for lat in scores[i].latencies]),
                **alarm_summary([scores[i] for i in mine]),
                "confusions": sum(len(scores[i].confusions) for i in mine),
                "model_limited": model_limited_summary([x for i in mine for x in floors[i]],
                                                       target)}
    out["by_ambience"] = {}
    for label in AMBIENCE_CLASSES:
        pairs = [(s, j) for s, j in zip(streams, scores) if s.background_label == label]
        if pairs:
            out["by_ambience"][label] = {
                **latency_summary([lat for s, j in pairs for lat in j.latencies]),
                **alarm_summary([j for _, j in pairs]),
                "own_class_starts": sum(j.background_class_starts for _, j in pairs)}
    out["by_snr"] = {f"{snr:+.0f} dB": latency_summary([lat for _, p, lat in rows
                                                         if p.snr_db == snr])
                     for snr in sorted({p.snr_db for _, p, _ in rows}, reverse=True)}
    out["by_class"] = {label: latency_summary([lat for _, p, lat in rows if p.label == label])
                       for label in sorted({p.label for _, p, _ in rows})}
    counts: dict = {}
    for j in scores:
        for label, _ in j.false_alarms:
            counts[label] = counts.get(label, 0) + 1
    out["false_alarm_labels"] = dict(sorted(counts.items(), key=lambda kv: -kv[1]))
    counts = {}
    for j in scores:
        for label, _, true in j.confusions:
            counts[f"{true} -> {label}"] = counts.get(f"{true} -> {label}", 0) + 1
    out["confusion_pairs"] = dict(sorted(counts.items(), key=lambda kv: -kv[1])[:20])
    o = out["overall"]
    out["targets"] = {
        "median_latency_max_s": target,
        "median_latency_met": o["median_latency_s"] is not None
        and o["median_latency_s"] <= target,
        "false_alarms_per_hour_max": 1.0,
        "false_alarms_met": o["false_alarms_per_hour"] is not None
        and o["false_alarms_per_hour"] <= 1.0}
    return out


def table(summary: dict) -> str:
    lines = ["| background | events | detected | median latency | p95 latency | "
             "background h | false alarms | per hour | raw score reaches threshold | "
             "its median latency |",
             "|---|---|---|---|---|---|---|---|---|---|"]

    def row(name, s):
        m = s["model_limited"]
        lines.append(f"| {name} | {s['events']} | {fmt_or_dash(s['detection_rate'], '.1%')} | "
                     f"{fmt_or_dash(s['median_latency_s'], '.2f')} s | "
                     f"{fmt_or_dash(s['p95_latency_s'], '.2f')} s"
                     f" | {s['background_hours']:.2f} | {s['false_alarms']} | "
                     f"{fmt_or_dash(s['false_alarms_per_hour'], '.1f')} | "
                     f"{fmt_or_dash(m['detection_rate'], '.1%')} | "
                     f"{fmt_or_dash(m['median_latency_s'], '.2f')} s |")
    for kind, s in summary["by_background"].items():
        row(kind, s)
    row("**all**", summary["overall"])
    lines += ["", "| SNR | events | detected | median latency | p95 latency |",
              "|---|---|---|---|---|"]
    for snr, s in summary["by_snr"].items():
        lines.append(f"| {snr} | {s['events']} | {fmt_or_dash(s['detection_rate'], '.1%')} | "
                     f"{fmt_or_dash(s['median_latency_s'], '.2f')} s | "
                     f"{fmt_or_dash(s['p95_latency_s'], '.2f')} s |")
    return "\n".join(lines)


# ---------------------------------------------------------------- model provenance

def held_out_fold(provenance: dict):
    """The ESC-50 fold a model's training held out, as its metadata says; None if it does not."""
    if "held_out_fold" in provenance:
        return int(provenance["held_out_fold"])
    config = provenance.get("config") or {}
    if "esc50" not in str(config.get("data", "")).lower() and config.get("recipe") != "esc50":
        return None
    return int(config["fold"]) if config.get("fold") is not None else 5   # trainer's default: the last


def fold_note(model: Model, fold: int) -> str:
    held = held_out_fold(model.info.provenance)
    if held is None:
        return "the model's metadata does not say which folds it trained on"
    if held == fold:
        return f"fold {fold} is the fold the model's training held out"
    return (f"WARNING: the model's metadata says it held out fold {held}, so it TRAINED on "
            f"fold {fold}: these figures are optimistic")


# ---------------------------------------------------------------- CLI agreement

def cli_agreement(model_path: Path, model: Model, streams: list, settings: dict) -> dict:
    """The same WAV through `edgeaudio listen --input --json --fast` and through the library."""
    rate = model.sample_rate
    first = {}
    for s in streams:
        first.setdefault(s.kind, s)
    audio = np.concatenate([s.audio[:int(CLI_SECONDS_PER_KIND * rate)] for s in first.values()])
    flags = {"threshold": "--threshold", "patience": "--patience", "smooth": "--smooth",
             "hop_seconds": "--hop", "gate_db": "--gate-db"}
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "stream.wav"
        sf.write(wav, audio, rate, subtype="FLOAT")
        cmd = [str(Path(sys.executable).parent / "edgeaudio"), "listen", "--input", str(wav),
               "--json", "--fast", "--model", str(model_path)]
        for key, value in settings.items():
            cmd += [flags[key], str(value)]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
        cli_seconds = time.perf_counter() - t0
        cli = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
        read_back, _ = sf.read(wav, dtype="float32")
    library = [e.to_dict() for e in run_stream(model, read_back, settings).events]
    mismatch = next((i for i, (a, b) in enumerate(zip(cli, library)) if a != b), None)
    if mismatch is None and len(cli) != len(library):
        mismatch = min(len(cli), len(library))
    return {"audio_seconds": len(audio) / rate, "backgrounds": list(first),
            "cli_lines": len(cli), "library_lines": len(library),
            "starts": sum(e["event"] == "start" for e in library),
            "identical": mismatch is None, "first_mismatch": mismatch,
            "cli_wall_seconds": round(cli_seconds, 1),
            "command": " ".join(cmd[1:]).replace(str(wav), "stream.wav")}


# ---------------------------------------------------------------- plot

def plot(path: Path, stream: SyntheticStream, run: StreamRun, seconds: float = 75.0) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    engine = run.engine
    rate = engine.rate
    labels = engine.model.labels
    n = min(len(stream.audio), int(seconds * rate))
    placed = [p for p in stream.events if p.onset < seconds]
    starts = [e for e in run.events if e.kind == "start" and e.t_detect < seconds]
    shown = list(dict.fromkeys([p.label for p in placed] + [e.label for e in starts]))
    keep = run.times <= seconds
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(11, 5.5), sharex=True,
                                   gridspec_kw={"height_ratios": [1, 2]})
    level = frame_energies_db(stream.audio[:n], rate)
    ax1.plot(np.arange(len(level)) * FRAME_SECONDS, level, lw=0.5, color="0.3")
    ax1.set_ylim(-80, 0)
    ax1.set_ylabel("level (dBFS)")
    colors = {label: plt.cm.tab10(i % 10) for i, label in enumerate(shown)}
    for p in placed:
        for ax in (ax1, ax2):
            ax.axvspan(p.onset, min(p.offset, seconds), color=colors[p.label], alpha=0.15)
        ax1.text(p.onset, -5, f"{p.label} ({p.snr_db:+.0f} dB)", fontsize=8, va="top")
    for label in shown:
        i = labels.index(label)
        ax2.plot(run.times[keep], run.raw[keep, i], color=colors[label], lw=0.6, alpha=0.5)
        ax2.plot(run.times[keep], run.smoothed[keep, i], color=colors[label], lw=1.4,
                 label=label)
    for e in starts:
        ax2.axvline(e.t_detect, color=colors[e.label], ls="--", lw=1)
        ax2.plot(e.t_detect, 1.02, "v", color=colors[e.label])
    thr = float(engine.thresholds.max())
    ax2.axhline(thr, color="k", lw=0.8, ls=":")
    ax2.set_ylim(0, 1.08)
    ax2.set_ylabel("score (thin: raw, thick: smoothed)")
    ax2.set_xlabel("stream time (s)")
    ax2.legend(loc="upper right", fontsize=8, ncol=2)
    title = stream.kind + (f" ({stream.background_label})" if stream.background_label else "")
    ax1.set_title(f"{title}: true events shaded; starts emitted at the dashed lines "
                  f"(threshold dotted)", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------- main

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, required=True, help=".onnx or .tflite model file")
    ap.add_argument("--fold", type=int, default=None,
                    help="ESC-50 fold for events and ambience (default: the model's held-out fold)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--clips-per-class", type=int, default=None, help="fewer events (quick runs)")
    ap.add_argument("--threshold", type=float, default=None)
    ap.add_argument("--patience", type=int, default=None)
    ap.add_argument("--smooth", type=int, default=None)
    ap.add_argument("--hop", dest="hop_seconds", type=float, default=None)
    ap.add_argument("--gate-db", type=float, default=None)
    ap.add_argument("--json", dest="json_out", type=Path, default=RESULTS)
    ap.add_argument("--plot", type=Path, default=PLOT)
    ap.add_argument("--no-cli", action="store_true", help="skip the CLI agreement check")
    args = ap.parse_args(argv)
    if not (ESC50 / "meta" / "esc50.csv").exists() or not FSDD.is_dir():
        print(f"ESC-50 / FSDD not found under {SHARED} (set EDGEAUDIO_SHARED)", file=sys.stderr)
        return 2
    model = Model(args.model)
    fold = args.fold if args.fold is not None else held_out_fold(model.info.provenance)
    if fold is None:
        print("the model's metadata names no held-out fold: pass --fold", file=sys.stderr)
        return 2
    settings = {k: getattr(args, k) for k in ("threshold", "patience", "smooth", "hop_seconds",
                                               "gate_db") if getattr(args, k) is not None}
    note = fold_note(model, fold)
    print(f"model {args.model} ({model.info.name}, {len(model.labels)} classes, "
          f"{model.backend_name}); fold {fold}: {note}")
    t0 = time.perf_counter()
    streams = build_streams(model, fold, args.seed, args.clips_per_class)
    build_seconds = time.perf_counter() - t0
    total = sum(s.seconds for s in streams)
    placed = [p for s in streams for p in s.events]
    limited = [BACKGROUND_DBFS + p.snr_db - p.level_dbfs for p in placed
               if p.level_dbfs < BACKGROUND_DBFS + p.snr_db - 0.05]
    print(f"{len(streams)} streams, {len(placed)} events ({len(limited)} turned down by up to "
          f"{max(limited, default=0):.1f} dB to peak under {PEAK_LIMIT_DBFS:.0f} dBFS, or under "
          f"full scale over a background's own peak), {total / 3600:.2f} h of audio "
          f"(built in {build_seconds:.0f} s)")

    t0 = time.perf_counter()
    scores, floors, runs = [], [], []
    for s in streams:
        run = run_stream(model, s.audio, settings)
        window = run.engine.window_seconds
        scores.append(score_stream(run.events, s.events, s.seconds, window, run.tail_seconds,
                                   s.background_label))
        floors.append(model_limited_latencies(run.times, run.raw, run.engine.thresholds,
                                              model.labels, s.events, window))
        runs.append(run)
    engine_seconds = time.perf_counter() - t0
    engine = runs[0].engine
    effective = stream_settings(engine)
    summary = summarize(streams, scores, floors, engine.hop_seconds)
    print(f"engine: {total / engine_seconds:.0f}x real time; settings {effective}\n")
    print(table(summary))
    t = summary["targets"]
    o = summary["overall"]
    print(f"\nmedian latency {fmt_or_dash(o['median_latency_s'], '.3f')} s vs target "
          f"<= {t['median_latency_max_s']:.2f} s: "
          f"{'met' if t['median_latency_met'] else 'NOT met'}")
    print(f"false alarms {fmt_or_dash(o['false_alarms_per_hour'], '.1f')} per hour vs target "
          f"<= 1: {'met' if t['false_alarms_met'] else 'NOT met'}")
    m = o["model_limited"]
    print(f"model-limited (raw score, no smoothing or patience): "
          f"{fmt_or_dash(m['detection_rate'], '.1%')} of events reach the threshold, median "
          f"{fmt_or_dash(m['median_latency_s'], '.2f')} s after the onset; "
          f"{m['within_target_rate']:.1%} of events within {t['median_latency_max_s']:.2f} s")
    print(f"false alarm labels: {summary['false_alarm_labels']}")
    print(f"confusions during events: {o['confusions']}, repeats: {o['repeats']}")

    plot_stream = next(i for i, s in enumerate(streams) if s.kind == "ambience")
    plot(args.plot, streams[plot_stream], runs[plot_stream])
    agreement = None
    if not args.no_cli:
        agreement = [cli_agreement(args.model, model, streams, checked)
                     for checked in (settings, {**settings, **EVENTFUL_SETTINGS})]
        for a in agreement:
            print(f"\nCLI vs library on {a['audio_seconds']:.0f} s "
                  f"({', '.join(a['backgrounds'])}), `{a['command']}`: {a['library_lines']} "
                  f"event lines, {'identical' if a['identical'] else 'DIFFERENT'}")

    result = {
        "model": {"path": str(args.model), "name": model.info.name,
                  "version": model.info.version, "classes": len(model.labels),
                  "backend": model.backend_name,
                  "held_out_fold": held_out_fold(model.info.provenance),
                  "provenance": {k: model.info.provenance[k] for k in
                                 ("run", "student", "epoch", "metrics", "data")
                                 if k in model.info.provenance}},
        "fold": fold, "fold_note": note, "seed": args.seed, "settings": effective,
        "design": {"event_classes": [c for c in EVENT_CLASSES if c in model.labels],
                   "ambience_classes": list(AMBIENCE_CLASSES),
                   "background_dbfs": BACKGROUND_DBFS, "noise_dbfs": NOISE_DBFS,
                   "quiet_dbfs": QUIET_DBFS, "snrs_db": list(SNRS_DB),
                   "onset_rule_db": LOUD_BELOW_PEAK_DB, "gap_seconds": list(GAP_SECONDS),
                   "events_per_stream": EVENTS_PER_STREAM,
                   "detection_window_s": engine.window_seconds},
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "streams": len(streams), "audio_hours": total / 3600.0,
        "events_turned_down": {"count": len(limited), "max_db": max(limited, default=0.0)},
        "engine_x_real_time": total / engine_seconds,
        **summary, "cli_agreement": agreement,
    }
    atomic_write_json(args.json_out, result, indent=1)
    print(f"\nwrote {args.json_out} and {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
