"""The streaming engine: chunks of audio in, events out, in bounded memory.

A ring buffer holds the last model window; every ``hop_seconds`` of new audio the model scores
that window. The hop is snapped to a whole number of front-end frames (at least one), so each
hop computes only its new feature frames and reuses the rest (equal to recomputing the whole
window). Scores are averaged over the last ``smooth`` hops. A class opens an event after
``patience`` consecutive hops at or above its threshold and closes it at the first hop below
``release_ratio * threshold`` (hysteresis, so a score hovering at the threshold does not
flicker). A window whose RMS level is below ``gate_db`` (dB full scale) is not run through the
model and scores zero: a softmax over sound classes always names something, even in silence.
A model trained with a "none of these" class names it in its metadata (``stream.background``):
that class is scored like the others, so it takes the softmax's mass for sounds the model does
not know, but it never opens an event. Times are stream time in seconds since the first sample
pushed.

Event timing: a hop at stream time ``t`` scored the window ``[t - window, t]``. An event's
``t_start`` is the start of the window of the first hop of its above-threshold run (the sound
began no earlier), its ``t_end`` the end of the last window that still scored above release.

A streaming-aware model (metadata ``streaming``) hops one chunk of front-end frames: each hop
computes the chunk's frames (on the grid ``classify`` uses, from the stream's first sample, so
the first hop waits for the first chunk's samples), runs the graph once carrying its states,
and scores the mean of the last ``window_chunks`` logit rows, the window ``classify`` scores
there. The gate measures the audio of those chunks; a gated hop still runs the graph, so its
states never go stale.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np
import soxr

from .audio import check_finite, check_sample_rate, to_mono
from .model import activate
from .modelfile import DEFAULT_STREAM_SETTINGS
from .windows import checked_hop_seconds


@dataclass
class Event:
    label: str
    score: float              # peak smoothed score so far
    t_start: float
    t_end: float | None       # None on the line that opens an event
    t_detect: float           # stream time at which the engine knew (start) or closed it (end)
    kind: str                 # "start" or "end"

    def to_dict(self) -> dict:
        return {"event": self.kind, "label": self.label, "score": round(self.score, 4),
                "t_start": round(self.t_start, 3),
                "t_end": None if self.t_end is None else round(self.t_end, 3)}


class _ClassState:
    __slots__ = ("run", "run_start", "open", "t_start", "peak", "last_above")

    def __init__(self):
        self.run = 0
        self.run_start = 0.0
        self.open = False
        self.t_start = 0.0
        self.peak = 0.0
        self.last_above = 0.0


class Stream:
    """``push(chunk) -> list[Event]``; ``flush()`` closes open events at the end of a stream."""

    def __init__(self, model, hop_seconds: float | None = None, smooth: int | None = None,
                 threshold=None, patience: int | None = None, release_ratio: float | None = None,
                 gate_db: float | None = None, input_rate: int | None = None):
        d = model.info.stream
        self.model = model
        self.rate = model.sample_rate
        self.streaming = model.info.streaming
        frame_hop = model.info.frontend.hop_length
        if self.streaming is None:
            wanted = checked_hop_seconds(hop_seconds if hop_seconds is not None
                                         else d["hop_seconds"], self.rate, frame_hop)
            self.frames_per_hop = max(1, int(round(wanted * self.rate / frame_hop)))
        else:
            self.frames_per_hop = self._chunk_frames(hop_seconds)
        self.hop = self.frames_per_hop * frame_hop
        self.hop_seconds = self.hop / self.rate
        self.smooth = int(smooth if smooth is not None else d["smooth"])
        self.patience = int(patience if patience is not None else d["patience"])
        self.release_ratio = float(release_ratio if release_ratio is not None
                                   else d["release_ratio"])
        self.gate_db = float(gate_db if gate_db is not None else d["gate_db"])
        self.gate_power = 10.0 ** (self.gate_db / 10.0)
        if self.smooth < 1 or self.patience < 1:
            raise ValueError("smooth and patience must be at least 1")
        self.thresholds = self._thresholds(threshold if threshold is not None else d["threshold"])
        self.window = model.info.window_samples   # the ring: a streaming graph's one chunk
        self.ring = np.zeros(self.window, np.float32)   # the stream before t=0 is silence
        self.write_pos = 0
        self.features = model.frontend(self.ring)         # [n_frames, bins], kept up to date
        self.samples = 0            # samples received in all
        self.window_seconds = model.info.scored_window_seconds
        if self.streaming is None:
            self.due = self.hop     # samples still to come before the next inference
        else:
            window_chunks = self.streaming["window_chunks"]
            self.due = self.window  # the first chunk's frames start at the first sample
            self.graph_states = model.backend.initial_states()
            self.logit_rows = np.zeros((window_chunks, len(model.labels)), np.float32)
            self.hop_powers = deque(maxlen=window_chunks)   # mean square of each hop's audio
        self.recent = deque(maxlen=self.smooth)
        self.scores = np.zeros(len(model.labels), np.float32)   # latest smoothed scores
        self.n_inferences = 0
        self.n_events = 0
        self.states = [_ClassState() for _ in model.labels]
        self.active = set()         # classes with an open event or a run under way
        # a trained "none of these" class is scored (it takes the softmax's mass for sounds the
        # model does not know) but never opens an event
        self.background = {model.labels.index(label) for label in d.get("background") or []}
        input_rate = (self.rate if input_rate is None
                      else check_sample_rate(input_rate, "stream input"))
        self.resampler = (soxr.ResampleStream(input_rate, self.rate, 1, dtype="float32")
                          if input_rate != self.rate else None)

    def _chunk_frames(self, hop_seconds) -> int:
        """A streaming graph's hop: its chunk; any other requested hop is refused."""
        info = self.model.info
        if hop_seconds is not None:
            frame_hop = info.frontend.hop_length
            seconds = checked_hop_seconds(hop_seconds, self.rate, frame_hop)
            if abs(seconds * self.rate - info.chunk_samples) > frame_hop / 2:
                raise ValueError(f"hop_seconds {hop_seconds!r}: this streaming-aware model "
                                 f"hops one chunk of {info.chunk_seconds:g} s "
                                 f"({self.streaming['chunk_frames']} frames)")
        return self.streaming["chunk_frames"]

    def _thresholds(self, threshold) -> np.ndarray:
        labels = self.model.labels
        if isinstance(threshold, dict):
            unknown = set(threshold) - set(labels)
            if unknown:
                raise ValueError(f"thresholds for unknown labels: {sorted(unknown)}")
            # labels the dict leaves out keep the model's own threshold, which may itself be
            # per class (a dict in the model file), else the library default
            shipped = self.model.info.stream["threshold"]
            per_class = shipped if isinstance(shipped, dict) else {}
            default = (float(DEFAULT_STREAM_SETTINGS["threshold"]) if isinstance(shipped, dict)
                       else float(shipped))
            return np.array([float(threshold.get(lab, per_class.get(lab, default)))
                             for lab in labels], np.float32)
        return np.full(len(labels), float(threshold), np.float32)

    @property
    def time(self) -> float:
        return self.samples / self.rate

    def push(self, chunk: np.ndarray) -> list:
        """Audio in (mono, or a 2-D array in either layout: see ``audio.to_mono``), events out.
        A chunk with NaN or infinite samples is refused whole (AudioError), before any of it
        enters the window."""
        chunk = check_finite(to_mono(chunk, "stream chunk"), "stream chunk")
        if self.resampler is not None:
            chunk = self.resampler.resample_chunk(chunk)
        events = []
        pos = 0
        while pos < len(chunk):
            take = min(self.due, len(chunk) - pos)
            self._write(chunk[pos:pos + take])
            self.due -= take
            self.samples += take
            pos += take
            if self.due == 0:
                self.due = self.hop
                events.extend(self._infer() if self.streaming is None else self._infer_chunk())
        return events

    def _write(self, piece: np.ndarray) -> None:
        piece = piece[-self.window:]
        end = self.write_pos + len(piece)
        if end <= self.window:
            self.ring[self.write_pos:end] = piece
        else:
            split = self.window - self.write_pos
            self.ring[self.write_pos:] = piece[:split]
            self.ring[:end - self.window] = piece[split:]
        self.write_pos = end % self.window

    def current_window(self) -> np.ndarray:
        """The last ``window`` samples, oldest first."""
        return np.concatenate((self.ring[self.write_pos:], self.ring[:self.write_pos]))

    def _update_features(self, window: np.ndarray) -> None:
        """Compute the hop's new frames only; older frames moved by exactly that many."""
        n_new = self.frames_per_hop
        if n_new >= len(self.features):
            self.features = self.model.frontend(window)
            return
        fe = self.model.info.frontend
        fresh = self.model.frontend(window[-(fe.win_length + (n_new - 1) * fe.hop_length):])
        self.features = np.concatenate((self.features[n_new:], fresh))

    def _infer(self) -> list:
        window = self.current_window()
        self._update_features(window)
        if float(np.mean(np.square(window, dtype=np.float64))) < self.gate_power:
            raw = np.zeros(len(self.model.labels), np.float32)
        else:
            raw = self.model.scores_for_features(self.features)
        return self._scored(raw)

    def _infer_chunk(self) -> list:
        """A streaming graph's hop: the chunk's frames, one call, the window of rows."""
        window = self.current_window()
        self.features = self.model.frontend(window)
        logits, self.graph_states = self.model.backend.run_chunk(self.features,
                                                                 self.graph_states)
        rows = self.logit_rows
        rows[self.n_inferences % len(rows)] = logits
        n_rows = min(self.n_inferences + 1, len(rows))
        fresh = window[-self.hop:].astype(np.float64)
        self.hop_powers.append(float(fresh @ fresh) / self.hop)
        if sum(self.hop_powers) / len(self.hop_powers) < self.gate_power:
            raw = np.zeros(len(self.model.labels), np.float32)
        else:
            raw = activate(np.add.reduce(rows[:n_rows]) / n_rows,
                           self.model.info.output_activation)
        return self._scored(raw)

    def _scored(self, raw: np.ndarray) -> list:
        """A hop's raw scores in: smoothing, thresholds, patience, events out."""
        self.recent.append(raw)
        # equal to np.mean(self.recent, axis=0), bit for bit, at a quarter of its cost
        self.scores = sum(self.recent) / len(self.recent)
        self.n_inferences += 1
        t = self.time
        events = []
        # only a class above its threshold or in a run / event can change: the rest stay put
        above = np.flatnonzero(self.scores >= self.thresholds).tolist()
        for i in sorted(self.active.union(above)) if self.active else above:
            if i in self.background:
                continue
            st = self.states[i]
            s = float(self.scores[i])
            thr = self.thresholds[i]
            if st.open:
                if s >= thr * self.release_ratio:
                    st.peak = max(st.peak, s)
                    st.last_above = t
                else:
                    st.open = False
                    st.run = 0
                    events.append(Event(self.model.labels[i], st.peak, st.t_start,
                                        st.last_above, t, "end"))
            elif s >= thr:
                if st.run == 0:
                    st.run_start = max(0.0, t - self.window_seconds)
                    st.peak = 0.0
                st.run += 1
                st.peak = max(st.peak, s)
                if st.run >= self.patience:
                    st.open, st.t_start, st.last_above = True, st.run_start, t
                    self.n_events += 1
                    events.append(Event(self.model.labels[i], st.peak, st.t_start, None, t,
                                        "start"))
            else:
                st.run = 0
            if st.open or st.run:
                self.active.add(i)
            else:
                self.active.discard(i)
        return events

    def flush(self) -> list:
        """Close every open event at the current stream time."""
        events = []
        for i, st in enumerate(self.states):
            if st.open:
                st.open = False
                st.run = 0
                self.active.discard(i)
                events.append(Event(self.model.labels[i], st.peak, st.t_start, self.time,
                                    self.time, "end"))
        return events

    def top(self, k: int = 3) -> list:
        order = np.argsort(-self.scores)[:k]
        return [(self.model.labels[i], float(self.scores[i])) for i in order]
