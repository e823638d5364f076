"""Progress for long work: a bar on a terminal, a few plain lines everywhere else.

Under nohup or a pipe a carriage-return bar fills a log with hundreds of kilobytes of redrawn
lines, and its first rate estimate is noise. There ``progress_bar`` prints one line when a
tenth of the work is done (and at the end) instead, with the rate measured so far.
"""
from __future__ import annotations

import sys
import time


def stderr_is_terminal() -> bool:
    return bool(getattr(sys.stderr, "isatty", lambda: False)())


class LineProgress:
    """The ``tqdm`` calls this project uses (update, set_postfix, close), as plain lines."""

    def __init__(self, total: int, desc: str, unit: str, steps: int = 10):
        self.total, self.desc, self.unit = max(0, int(total)), desc, unit
        self.done, self.postfix, self.t0 = 0, "", time.time()
        self._next = 0
        self._every = max(1, -(-self.total // steps)) if self.total else 1

    def update(self, n: int = 1) -> None:
        self.done += n
        if self.done >= self._next + self._every and self.done < self.total:
            self._next = self.done - self.done % self._every
            self._line()

    def set_postfix(self, values: dict | None = None, **more) -> None:
        items = {**(values or {}), **more}
        self.postfix = ", ".join(f"{k}={v}" for k, v in items.items())

    def close(self) -> None:
        if self.total:
            self._line()

    def _line(self) -> None:
        seconds = max(time.time() - self.t0, 1e-9)
        rate = self.done / seconds
        text = (f"{self.desc}: {self.done}/{self.total} {self.unit} "
                f"({rate:.1f} {self.unit}/s{', ' + self.postfix if self.postfix else ''})")
        print(text, file=sys.stderr, flush=True)


def progress_bar(total: int, desc: str, unit: str = "it", enabled: bool = True,
                 leave: bool = False):
    """A ``tqdm`` bar on a terminal, ``LineProgress`` otherwise, None when not ``enabled``."""
    if not enabled:
        return None
    if stderr_is_terminal():
        from tqdm import tqdm
        return tqdm(total=total, desc=desc, unit=unit, leave=leave, file=sys.stderr,
                    mininterval=0.5)
    return LineProgress(total, desc, unit)
