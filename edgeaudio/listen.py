"""The listening loop: a source's chunks through a stream engine, events to a callback."""
from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class ListenSummary:
    seconds: float = 0.0
    inferences: int = 0
    events: int = 0
    overflows: int = 0
    dropped_blocks: int = 0
    reconnects: int = 0
    wall_seconds: float = 0.0
    labels_seen: dict = field(default_factory=dict)

    def line(self) -> str:
        seen = ", ".join(f"{k} x{v}" for k, v in sorted(self.labels_seen.items(),
                                                       key=lambda kv: -kv[1])[:5])
        return (f"listened {self.seconds:.1f} s: {self.events} event(s)"
                + (f" ({seen})" if seen else "")
                + f", {self.inferences} inferences, {self.overflows} overflow(s), "
                  f"{self.dropped_blocks} dropped block(s)"
                + (f", {self.reconnects} reconnect(s)" if self.reconnects else ""))


class Listener:
    """Runs sources through one engine; keeps a summary that survives Ctrl-C."""

    def __init__(self, stream, on_event=None, on_hop=None):
        self.stream = stream
        self.on_event = on_event or (lambda e: None)
        self.on_hop = on_hop or (lambda s: None)
        self.summary = ListenSummary()
        self._start = time.monotonic()
        self._base_overflows = 0   # totals of sources already closed (reconnects)
        self._base_dropped = 0

    def run(self, source) -> ListenSummary:
        """Consume ``source`` (an iterable of chunks, possibly endless) until it ends."""
        with source:
            try:
                for chunk in source:
                    before = self.stream.n_inferences
                    for event in self.stream.push(chunk):
                        self._emit(event)
                    if self.stream.n_inferences != before:
                        self.on_hop(self.stream)
                    self._update(source)
            finally:
                self._update(source)
        return self.summary

    def finish(self) -> ListenSummary:
        for event in self.stream.flush():
            self._emit(event)
        self._update(None)
        return self.summary

    def _emit(self, event):
        if event.kind == "start":
            self.summary.labels_seen[event.label] = self.summary.labels_seen.get(event.label, 0) + 1
        self.on_event(event)

    def _update(self, source):
        s = self.summary
        s.seconds = self.stream.time
        s.inferences = self.stream.n_inferences
        s.events = self.stream.n_events
        s.wall_seconds = time.monotonic() - self._start
        if source is not None:
            s.overflows = self._base_overflows + source.overflows
            s.dropped_blocks = self._base_dropped + source.dropped_blocks

    def source_closed(self):
        """Call between sources (after a reconnect) so totals keep accumulating."""
        self._base_overflows = self.summary.overflows
        self._base_dropped = self.summary.dropped_blocks
