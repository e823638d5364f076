"""Audio in: decode (wav/flac/ogg through libsndfile), mono mixdown, resample (soxr), checks.

Recordings are decoded in blocks (``read_blocks``), so a file of any length is read, checked
and resampled in bounded memory; ``load_audio`` joins the blocks for callers that want the
whole clip.
"""
from __future__ import annotations

import logging
import math
import struct
from pathlib import Path
from typing import Iterator

import numpy as np
import soundfile as sf
import soxr

from .errors import AudioError

log = logging.getLogger("edgeaudio")

# Input rates the resampler and the models serve: below 4 kHz nothing of a sound class is left
# to hear (and soxr's ratio to a 16 kHz model grows without bound); above 768 kHz no audio
# interface delivers.
MIN_SAMPLE_RATE = 4000
MAX_SAMPLE_RATE = 768000
# A 2-D array wider than this on both axes is not audio with a channel axis.
MAX_CHANNELS = 64
BLOCK_FRAMES = 1 << 16          # frames decoded per read (about 4 s at 16 kHz)
CLIP_LEVEL = 0.999              # samples at or above this magnitude count as clipped
CLIP_WARN_FRACTION = 0.001


def check_sample_rate(rate, source: str) -> int:
    """A sample rate the resampler and the model can serve, as an int, or an AudioError."""
    if isinstance(rate, bool) or not isinstance(rate, (int, np.integer, float)) \
            or not math.isfinite(rate) or rate != int(rate):
        raise AudioError(f"{source}: sample rate {rate!r} is not a whole number of Hz")
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise AudioError(f"{source}: sample rate {int(rate)} Hz is outside the "
                         f"{MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz that can be served")
    return int(rate)


def to_mono(x, source: str = "waveform") -> np.ndarray:
    """An array of any layout as float32 mono: 1-D as is; 2-D as (samples, channels) or
    (channels, samples), the shorter axis being the channels (a square one is (samples,
    channels), soundfile's layout)."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 1:
        return x
    if x.ndim != 2:
        raise AudioError(f"{source}: a waveform is 1-D or (samples, channels), not shape "
                         f"{x.shape}")
    if min(x.shape) > MAX_CHANNELS:
        raise AudioError(f"{source}: cannot tell channels from samples in shape {x.shape} "
                         f"(more than {MAX_CHANNELS} on both axes)")
    channel_axis = 0 if x.shape[0] < x.shape[1] else 1
    return x.mean(axis=channel_axis, dtype=np.float32)


def mix_frames(frames: np.ndarray) -> np.ndarray:
    """soundfile's ``[frames, channels]`` block as float32 mono (any number of frames)."""
    return frames.mean(axis=1, dtype=np.float32)


def resample(x: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    if from_rate == to_rate:
        return np.asarray(x, np.float32)
    return soxr.resample(np.asarray(x, np.float32), from_rate, to_rate, quality="HQ")


def check_finite(x: np.ndarray, source: str) -> np.ndarray:
    if not np.all(np.isfinite(x)):
        bad = int(np.count_nonzero(~np.isfinite(x)))
        raise AudioError(f"{source}: audio contains {bad} NaN or infinite samples")
    return x


def _warn_clipping(source: str, clipped: int, total: int) -> None:
    if total and clipped / total > CLIP_WARN_FRACTION:
        log.warning("%s: %.1f%% of samples are at full scale (clipping); scores may suffer",
                    source, 100 * clipped / total)


def check_waveform(x: np.ndarray, source: str) -> np.ndarray:
    """Reject audio no model should see; warn about audio a model may misread."""
    if x.size == 0:
        raise AudioError(f"{source}: no audio samples (0-length recording)")
    check_finite(x, source)
    _warn_clipping(source, int(np.count_nonzero(np.abs(x) >= CLIP_LEVEL)), x.size)
    return x


def wav_header_frames(path) -> int | None:
    """The frame count a RIFF/WAVE header promises (its ``data`` chunk size over the block
    size), or None when the file is not a plain WAV or leaves the length open. libsndfile
    reports the frames actually present, so this is the only place a short file shows."""
    try:
        with open(path, "rb") as f:
            head = f.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return None
            block_align = None
            while True:
                chunk = f.read(8)
                if len(chunk) < 8:
                    return None
                name, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
                if name == b"fmt ":
                    fmt = f.read(min(size, 16))
                    if len(fmt) < 14:
                        return None
                    block_align = struct.unpack("<H", fmt[12:14])[0]
                    f.seek(size - len(fmt) + (size & 1), 1)
                elif name == b"data":
                    # 0 and 0xFFFFFFFF: written by a streaming recorder that never came back
                    if not block_align or size in (0, 0xFFFFFFFF):
                        return None
                    return size // block_align
                else:
                    f.seek(size + (size & 1), 1)
    except OSError:
        return None


def read_blocks(path, sample_rate: int, block_frames: int = BLOCK_FRAMES) -> Iterator[np.ndarray]:
    """A recording as float32 mono blocks at ``sample_rate``, decoded and resampled a block at a
    time (memory bounded by the block, not the file). Raises AudioError naming the problem
    (missing, unreadable, empty, truncated, NaN); warns when a WAV holds less than its header
    promises (the frames present are used) and when many samples clip."""
    path = Path(path)
    source = str(path)
    if not path.exists():
        raise AudioError(f"{path}: no such file")
    if path.is_dir():
        raise AudioError(f"{path}: is a folder, not an audio file")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: empty file (0 bytes)")
    try:
        f = sf.SoundFile(source)
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        raise AudioError(f"{path}: cannot read audio ({exc})") from exc
    with f:
        rate = check_sample_rate(f.samplerate, source)
        expected = f.frames
        resampler = (soxr.ResampleStream(rate, sample_rate, 1, dtype="float32", quality="HQ")
                     if rate != sample_rate else None)
        read = clipped = 0
        while True:
            try:
                frames = f.read(block_frames, dtype="float32", always_2d=True)
            except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
                raise AudioError(f"{path}: cannot read audio ({exc})") from exc
            last = len(frames) < block_frames
            mono = check_finite(mix_frames(frames), source)
            read += len(mono)
            clipped += int(np.count_nonzero(np.abs(mono) >= CLIP_LEVEL))
            if resampler is not None:
                mono = resampler.resample_chunk(mono, last=last)
            if len(mono):
                yield mono
            if last:
                break
    if read == 0:
        raise AudioError(f"{path}: no audio samples (0-length recording)")
    if expected > 0 and read < expected:
        raise AudioError(f"{path}: truncated file: read {read} of {expected} frames")
    promised = wav_header_frames(path)
    if promised is not None and promised > read:
        missing = promised - read
        log.warning("%s: truncated: its header promises %d frames (%.2f s), the file holds %d; "
                    "%d frames (%.2f s) are missing, the rest is used", path, promised,
                    promised / rate, read, missing, missing / rate)
    _warn_clipping(source, clipped, read)


def load_audio(path, sample_rate: int) -> np.ndarray:
    """A recording as float32 mono at ``sample_rate``, or an AudioError naming the problem."""
    blocks = list(read_blocks(path, sample_rate))
    if len(blocks) == 1:
        return blocks[0]
    return np.concatenate(blocks) if blocks else np.zeros(0, np.float32)
