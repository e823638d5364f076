"""Audio in: decode (wav/flac/ogg through libsndfile), mono mixdown, resample (soxr), checks."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from .errors import AudioError

log = logging.getLogger("edgeaudio")


def to_mono(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x if x.ndim == 1 else x.mean(axis=1, dtype=np.float32)


def resample(x: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    if from_rate == to_rate:
        return np.asarray(x, np.float32)
    return soxr.resample(np.asarray(x, np.float32), from_rate, to_rate, quality="HQ")


def check_waveform(x: np.ndarray, source: str) -> np.ndarray:
    """Reject audio no model should see; warn about audio a model may misread."""
    if x.size == 0:
        raise AudioError(f"{source}: no audio samples (0-length recording)")
    if not np.all(np.isfinite(x)):
        bad = int(np.count_nonzero(~np.isfinite(x)))
        raise AudioError(f"{source}: audio contains {bad} NaN or infinite samples")
    peak = float(np.max(np.abs(x)))
    if peak >= 0.999:
        clipped = float(np.mean(np.abs(x) >= 0.999))
        if clipped > 0.001:
            log.warning("%s: %.1f%% of samples are at full scale (clipping); scores may suffer",
                        source, 100 * clipped)
    return x


def load_audio(path, sample_rate: int) -> np.ndarray:
    """A recording as float32 mono at ``sample_rate``, or an AudioError naming the problem."""
    path = Path(path)
    if not path.exists():
        raise AudioError(f"{path}: no such file")
    if path.is_dir():
        raise AudioError(f"{path}: is a folder, not an audio file")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: empty file (0 bytes)")
    try:
        with sf.SoundFile(str(path)) as f:
            rate = f.samplerate
            x = f.read(dtype="float32", always_2d=True)
            expected = f.frames
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        raise AudioError(f"{path}: cannot read audio ({exc})") from exc
    if expected > 0 and len(x) < expected:
        raise AudioError(f"{path}: truncated file: read {len(x)} of {expected} frames")
    x = check_waveform(to_mono(x), str(path))
    return resample(x, rate, sample_rate)
