"""The listening loop: a source's chunks through a stream engine, events to a callback.

Besides events, the loop watches its input: a capture source (microphone, PCM on stdin) that
stays digital silence for ``SILENCE_NOTICE_SECONDS`` gets one notice (no microphone, a muted
one, or the monitor of an idle sink all look like this), and for a microphone the audio that
never arrived (device gone, stalled, blocks dropped) is counted as lost: the wall time since
the first chunk minus the stream time heard (a device's start-up latency before its first
chunk is not counted; a reopened one's is).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from .audio import to_mono

SILENCE_NOTICE_SECONDS = 3.0
DIGITAL_SILENCE_PEAK = 2.0 ** -15     # below one 16-bit step: no analog input reaches it
LOST_REPORT_SECONDS = 0.25            # block delivery jitter stays below this
SILENCE_NOTICE = ("the input has been digital silence for {:.0f} s: no microphone, a muted one, "
                  "or the monitor of an idle sink (see: edgeaudio devices)")


@dataclass
class ListenSummary:
    seconds: float = 0.0
    inferences: int = 0
    events: int = 0
    overflows: int = 0
    dropped_blocks: int = 0
    reconnects: int = 0
    lost_seconds: float = 0.0
    wall_seconds: float = 0.0
    labels_seen: dict = field(default_factory=dict)

    def line(self) -> str:
        # every label, so the counts add up to the events
        seen = ", ".join(f"{k} x{v}" for k, v in sorted(self.labels_seen.items(),
                                                       key=lambda kv: (-kv[1], kv[0])))
        return (f"listened {self.seconds:.1f} s: {self.events} event(s)"
                + (f" ({seen})" if seen else "")
                + f", {self.inferences} inferences, {self.overflows} overflow(s), "
                  f"{self.dropped_blocks} dropped block(s)"
                + (f", {self.reconnects} reconnect(s)" if self.reconnects else "")
                + (f", {self.lost_seconds:.1f} s of audio lost"
                   if self.lost_seconds >= LOST_REPORT_SECONDS else ""))


class Listener:
    """Runs sources through one engine; keeps a summary that survives Ctrl-C."""

    def __init__(self, stream, on_event=None, on_hop=None, on_notice=None):
        self.stream = stream
        self.on_event = on_event or (lambda e: None)
        self.on_hop = on_hop or (lambda s: None)
        self.on_notice = on_notice or (lambda message: None)
        self.summary = ListenSummary()
        self._start = time.monotonic()
        self._base_overflows = 0   # totals of sources already closed (reconnects)
        self._base_dropped = 0
        self._silent_seconds = 0.0
        self._silence_noticed = False
        self._clock_start = None   # (wall, stream time) at a microphone's first chunk

    def run(self, source) -> ListenSummary:
        """Consume ``source`` (an iterable of chunks, possibly endless) until it ends."""
        with source:
            try:
                for chunk in source:
                    self._watch(source, chunk)
                    for piece in self._hop_pieces(chunk):
                        before = self.stream.n_inferences
                        for event in self.stream.push(piece):
                            self._emit(event)
                        if self.stream.n_inferences != before:
                            self.on_hop(self.stream)
                    self._update(source)
            finally:
                self._update(source)
        return self.summary

    def _hop_pieces(self, chunk):
        """A block cut where hops fall, so that ``on_hop`` sees every hop even when a block
        holds several (a file read fast in long blocks); a block the stream resamples goes in
        whole (its hops are not on the block's sample grid)."""
        stream = self.stream
        if stream.resampler is not None or len(chunk) <= stream.due:
            yield chunk
            return
        chunk = to_mono(chunk, "stream chunk")  # cut along time, whatever the layout
        pos = 0
        while pos < len(chunk):
            take = stream.due  # push() resets it after each hop
            yield chunk[pos:pos + take]
            pos += take

    def finish(self) -> ListenSummary:
        for event in self.stream.flush():
            self._emit(event)
        self._update(None)
        return self.summary

    def _watch(self, source, chunk):
        kind = getattr(source, "kind", "file")
        if kind == "microphone" and self._clock_start is None:
            self._clock_start = (time.monotonic(), self.stream.time)
        if kind == "file" or self._silence_noticed or not len(chunk):
            return
        if float(np.max(np.abs(chunk))) < DIGITAL_SILENCE_PEAK:
            self._silent_seconds += len(chunk) / source.rate
            if self._silent_seconds >= SILENCE_NOTICE_SECONDS:
                self._silence_noticed = True
                self.on_notice(SILENCE_NOTICE.format(self._silent_seconds))
        else:
            self._silent_seconds = 0.0

    def _emit(self, event):
        if event.kind == "start":
            self.summary.labels_seen[event.label] = self.summary.labels_seen.get(event.label, 0) + 1
        self.on_event(event)

    def _update(self, source):
        s = self.summary
        s.seconds = self.stream.time
        s.inferences = self.stream.n_inferences
        s.events = self.stream.n_events
        now = time.monotonic()
        s.wall_seconds = now - self._start
        if self._clock_start is not None:
            wall0, heard0 = self._clock_start
            s.lost_seconds = max(0.0, (now - wall0) - (self.stream.time - heard0))
        if source is not None:
            s.overflows = self._base_overflows + source.overflows
            s.dropped_blocks = self._base_dropped + source.dropped_blocks

    def source_closed(self):
        """Call between sources (after a reconnect) so totals keep accumulating."""
        self._base_overflows = self.summary.overflows
        self._base_dropped = self.summary.dropped_blocks
