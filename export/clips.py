"""Clips and model windows for export: calibration sets, QAT windows, evaluation (torch-free).

Every window here is one the runtime itself scores: ``runtime_windows`` cuts a clip on the
runtime's grid (``edgeaudio.windows``), so calibration, quantization-aware training and the
export report see exactly what ``edgeaudio.Model.classify`` sees.

- ``calibration_windows``: model inputs from the *training* clips, one window per clip (a random
  position on the grid) while clips last;
- ``labeled_windows``: labeled windows for quantization-aware fine-tuning, loudest-biased.
"""
from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeaudio.audio import load_audio
from edgeaudio.errors import AudioError
from edgeaudio.frontend import Frontend
from edgeaudio.modelfile import ModelInfo
from edgeaudio.windows import cut_windows, hop_samples

from .errors import CalibrationError

log = logging.getLogger("edgeaudio.export")


@dataclass(frozen=True)
class Clip:
    path: Path
    label: int | None = None   # index into the model's labels; None: unlabeled
    fold: int | None = None


def list_audio_files(folder) -> list:
    """Audio files under ``folder`` (recursive), sorted; CalibrationError when there are none."""
    from edgeaudio.train.data import DatasetError, audio_files_under

    try:
        return audio_files_under(folder)
    except DatasetError as exc:
        raise CalibrationError(str(exc)) from None


def unlabeled_clips(folder) -> list:
    """Every audio file under ``folder`` as an unlabeled clip (enough for calibration)."""
    return [Clip(path) for path in list_audio_files(folder)]


def dataset_clips(dataset, labels: list, indices=None) -> list:
    """Clips of a ``edgeaudio.train.data.Dataset`` (its items at ``indices``), labeled by the
    model's ``labels`` (by name)."""
    index = {name: i for i, name in enumerate(labels)}
    items = dataset.items if indices is None else [dataset.items[i] for i in indices]
    return [Clip(Path(item.path), index.get(item.label), item.fold) for item in items]


def runtime_windows(info: ModelInfo, wave: np.ndarray) -> np.ndarray:
    """The audio windows ``Model.classify`` scores for a clip: ``[windows, window_samples]``."""
    return cut_windows(wave, info.window_samples, hop_samples(info.hop_seconds, info.sample_rate))


def read_clip(clip: Clip, info: ModelInfo) -> np.ndarray | None:
    """A clip's waveform at the model's rate, or None (with a warning) when it cannot be read.
    The runtime's per-file clipping warnings are held back: data sets such as ESC-50 clip
    often."""
    runtime_log = logging.getLogger("edgeaudio")
    level = runtime_log.level
    runtime_log.setLevel(logging.ERROR)
    try:
        return load_audio(clip.path, info.sample_rate)
    except AudioError as exc:
        log.warning("skipping %s", exc)
        return None
    finally:
        runtime_log.setLevel(level)


def calibration_windows(clips: list, info: ModelInfo, n: int = 200, seed: int = 0,
                        frontend: Frontend | None = None) -> np.ndarray:
    """``n`` model inputs ``[n, n_frames, bins]`` (float32 log features) from training clips.

    Clips are shuffled; each gives one window (a random position on the runtime's hop grid)
    until ``n`` are drawn, cycling through the clips again when there are fewer than ``n``.
    Unreadable clips are skipped with a warning; none readable is a CalibrationError.
    """
    if n < 1:
        raise CalibrationError(f"calibration needs at least 1 window, got {n}")
    if not clips:
        raise CalibrationError("no clips to draw calibration windows from")
    frontend = frontend or Frontend(info.frontend)
    rng = random.Random(seed)
    order = list(clips)
    rng.shuffle(order)
    out, bad, i = [], set(), 0
    while len(out) < n and len(bad) < len(order):
        clip = order[i % len(order)]
        i += 1
        if clip.path in bad:
            continue
        wave = read_clip(clip, info)
        if wave is None:
            bad.add(clip.path)
            continue
        windows = runtime_windows(info, wave)
        out.append(frontend(windows[rng.randrange(len(windows))]))
    if not out:
        raise CalibrationError(f"none of the {len(order)} calibration clips could be read")
    return np.stack(out).astype(np.float32)


def labeled_windows(clips: list, info: ModelInfo, per_clip: int = 2, seed: int = 0,
                    frontend: Frontend | None = None):
    """Training windows for QAT: ``per_clip`` random runtime windows of each labeled clip,
    loudest-biased (ESC clips are often padded with silence). Returns (x, y)."""
    frontend = frontend or Frontend(info.frontend)
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for clip in clips:
        if clip.label is None:
            continue
        wave = read_clip(clip, info)
        if wave is None:
            continue
        windows = runtime_windows(info, wave)
        rms = np.sqrt(np.mean(windows.astype(np.float64) ** 2, axis=1)) + 1e-6
        p = rms / rms.sum()
        for k in rng.choice(len(windows), size=min(per_clip, len(windows)), replace=False, p=p):
            xs.append(frontend(windows[k]))
            ys.append(clip.label)
    if not xs:
        raise CalibrationError("no labeled training clips for quantization-aware training")
    return np.stack(xs).astype(np.float32), np.asarray(ys, np.int64)
