"""The runtime's window grid: where a clip's model windows start, defined once for every room.

``classify``, the export calibration and the firmware check all score the windows that
``window_starts`` names, so they agree on what "a clip's windows" means. ``cut_windows`` cuts
a waveform into them; ``iter_windows`` yields them from a waveform arriving in blocks (a long
recording decoded a block at a time), on the same grid.

The cover rule (issue 21): windows start every ``hop`` samples, ``0, hop, 2*hop, ...``, as long
as the window fits inside the clip. What is left after the last such window, the uncovered
remainder ``r`` (``0 <= r < hop``), is handled so that no window is mostly zero padding:

- a clip no longer than the window is one window at 0, zero-padded to the window;
- ``r == 0``: the grid covers the clip exactly, nothing is added;
- ``r < hop / 2``: the remainder is dropped (a clip of window + 8 ms is one window; at most
  half a hop of audio at the very end goes unscored);
- ``r >= hop / 2``: one more window is added, shifted to end exactly at the clip's end
  (start ``n_samples - window``), so it holds no padding at all.

Only a clip shorter than the window is ever padded.

A streaming-aware model (metadata ``streaming``) is called once per chunk of front-end frames
instead; ``iter_chunks`` cuts the samples each chunk's frames come from, every ``chunk`` samples
from 0, the waveform zero-padded at the end so that its frames make a whole number of chunks
(at least one). Its window grid is over the chunks' logit rows: ``window_starts(rows,
window_chunks, hop_chunks)``, the same cover rule.
"""
from __future__ import annotations

import math

from typing import Iterable, Iterator

import numpy as np


def window_starts(n_samples: int, window: int, hop: int) -> list[int]:
    """Start positions (in samples) of the model windows covering ``n_samples``; see the
    module docstring for the cover rule."""
    if window < 1 or hop < 1:
        raise ValueError(f"window ({window}) and hop ({hop}) must be at least one sample")
    if n_samples <= window:
        return [0]
    last = (n_samples - window) // hop * hop          # last start whose window fits
    starts = list(range(0, last + 1, hop))
    remainder = n_samples - (last + window)
    if 2 * remainder >= hop:                          # exact integers: r >= hop / 2
        starts.append(n_samples - window)
    return starts


def iter_windows(blocks: Iterable[np.ndarray], window: int, hop: int) -> Iterator[np.ndarray]:
    """The windows of a mono waveform that arrives as ``blocks`` (any sizes), yielded as soon as
    each is complete, on exactly the grid ``window_starts`` gives for the whole waveform. Holds
    at most one window plus one block, so a recording of any length windows in bounded memory."""
    if window < 1 or hop < 1:
        raise ValueError(f"window ({window}) and hop ({hop}) must be at least one sample")
    held = np.zeros(0, np.float32)   # the waveform from sample ``held_from`` on
    held_from = 0
    total = 0
    next_start = 0
    for block in blocks:
        held = np.concatenate((held, np.asarray(block, np.float32)))
        total += len(block)
        while next_start + window <= total:
            yield held[next_start - held_from:next_start - held_from + window]
            next_start += hop
        # keep what the next grid window and a possible tail window (the last ``window``
        # samples) still need
        keep_from = max(held_from, min(next_start, total - window))
        held = held[keep_from - held_from:]
        held_from = keep_from
    if next_start == 0:              # shorter than one window: nothing yielded yet
        yield np.concatenate((held, np.zeros(window - total, np.float32)))
        return
    remainder = total - (next_start - hop + window)
    if 2 * remainder >= hop:
        yield held[total - window - held_from:]


def iter_chunks(blocks: Iterable[np.ndarray], span: int, chunk: int,
                first_frame: int) -> Iterator[np.ndarray]:
    """The ``span`` samples each chunk's frames are computed from (``span``: one chunk of
    frames; ``chunk``: samples between chunks; ``first_frame``: one frame's samples), for a
    mono waveform arriving as ``blocks``. A chunk is yielded while its first frame lies inside
    the waveform, zero-padded past its end, and at least one chunk; that is the waveform
    zero-padded so that its frames make a whole number of chunks. Holds at most one span plus
    one block."""
    if not 1 <= chunk <= span or not 1 <= first_frame <= span:
        raise ValueError(f"chunk ({chunk}) and frame ({first_frame}) must be between one "
                         f"sample and the span ({span})")
    held = np.zeros(0, np.float32)   # the waveform from sample ``next_start`` on
    total = 0
    next_start = 0
    for block in blocks:
        held = np.concatenate((held, np.asarray(block, np.float32)))
        total += len(block)
        while next_start + span <= total:
            yield held[:span]
            held = held[chunk:]
            next_start += chunk
    while next_start == 0 or next_start + first_frame <= total:
        yield np.concatenate((held[:span], np.zeros(span - len(held[:span]), np.float32)))
        held = held[chunk:]
        next_start += chunk


def cut_windows(wave: np.ndarray, window: int, hop: int) -> np.ndarray:
    """The windows of a mono ``wave`` on the grid above: ``[windows, window]`` float32, the
    only padded case (a wave shorter than the window) zero-padded at the end."""
    return np.stack(list(iter_windows([wave], window, hop)))


def checked_hop_seconds(hop_seconds, sample_rate: int, frame_hop: int) -> float:
    """``hop_seconds`` as seconds, refused (ValueError) unless it is a finite number of at
    least one front-end frame (``frame_hop`` samples): finer hops only repeat nearly equal
    windows, at any cost."""
    try:
        seconds = float(hop_seconds)
    except (TypeError, ValueError):
        seconds = math.nan
    if not math.isfinite(seconds) or seconds * sample_rate < frame_hop:
        raise ValueError(f"hop_seconds {hop_seconds!r}: must be at least one front-end frame "
                         f"({frame_hop / sample_rate:g} s)")
    return seconds


def hop_samples(hop_seconds: float, sample_rate: int) -> int:
    """A hop in seconds as whole samples at ``sample_rate`` (rounded, at least one)."""
    return max(1, int(round(hop_seconds * sample_rate)))
