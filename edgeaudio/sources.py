"""Where a stream's audio comes from: a microphone, a recording, or raw PCM on stdin.

Each source yields float32 mono chunks at its own ``rate``; the stream engine resamples.
"""
from __future__ import annotations

import queue
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from .audio import check_sample_rate, read_blocks
from .backends import native_stderr_silenced
from .errors import AudioError, DeviceError


def _sounddevice():
    try:
        import sounddevice as sd
    except OSError as exc:  # the PortAudio library itself is missing
        raise DeviceError(f"cannot use audio devices: {exc} (install libportaudio2)") from exc
    return sd


def list_input_devices() -> list:
    sd = _sounddevice()
    try:
        default_in = sd.default.device[0]
        devices = sd.query_devices()
    except sd.PortAudioError as exc:
        raise DeviceError(f"cannot list audio devices: {exc}") from exc
    return [{"index": i, "name": d["name"], "channels": d["max_input_channels"],
             "default_rate": d["default_samplerate"], "default": i == default_in}
            for i, d in enumerate(devices) if d["max_input_channels"] > 0]


def resolve_input_device(spec):
    """An input device index from an index or (part of) a name; None for the default."""
    if spec is None or spec == "":
        return None
    devices = list_input_devices()
    if isinstance(spec, int) or str(spec).isdigit():
        index = int(spec)
        if any(d["index"] == index for d in devices):
            return index
        raise DeviceError(f"no input device with index {index} (see: edgeaudio devices)")
    exact = [d for d in devices if d["name"] == spec]
    matches = exact or [d for d in devices if str(spec).lower() in d["name"].lower()]
    if not matches:
        raise DeviceError(f"no input device named {spec!r} (see: edgeaudio devices)")
    return matches[0]["index"]


class Microphone:
    """A live input device. Iterate for chunks; overflows are counted, never fatal.

    The callback only copies into a bounded queue; when the consumer falls behind, the newest
    block is dropped (and counted) rather than memory growing without bound.
    """

    kind = "microphone"

    def __init__(self, device=None, preferred_rate: int = 16000, block_seconds: float = 0.05,
                 queue_seconds: float = 5.0, stall_seconds: float = 3.0):
        sd = _sounddevice()
        self.sd = sd
        self.device = resolve_input_device(device)
        info = sd.query_devices(self.device, "input")
        self.device_name = info["name"]
        self.channels = 1 if info["max_input_channels"] >= 1 else 0
        self.rate = self._pick_rate(preferred_rate, int(info["default_samplerate"]))
        self.blocksize = max(1, int(self.rate * block_seconds))
        self.queue = queue.Queue(maxsize=max(2, int(queue_seconds / block_seconds)))
        self.overflows = 0
        self.dropped_blocks = 0
        self.stall_seconds = stall_seconds
        self.stream = None

    def _pick_rate(self, preferred: int, default: int) -> int:
        # USB microphones often offer only 44.1/48 kHz: open at a rate the device takes and
        # let the engine resample.
        for rate in (preferred, default, 48000, 44100):
            try:
                self.sd.check_input_settings(self.device, channels=1, samplerate=rate,
                                             dtype="float32")
                return rate
            except Exception:
                continue
        raise DeviceError(f"input device {self.device_name!r} accepts none of the rates "
                          f"{preferred}, {default}, 48000, 44100 Hz")

    def _callback(self, indata, frames, time_info, status):
        if status.input_overflow:
            self.overflows += 1
        try:
            self.queue.put_nowait(indata[:, 0].copy())
        except queue.Full:
            self.dropped_blocks += 1

    def __enter__(self):
        try:
            self.stream = self.sd.InputStream(device=self.device, channels=1,
                                              samplerate=self.rate, blocksize=self.blocksize,
                                              dtype="float32", callback=self._callback)
            self.stream.start()
        except self.sd.PortAudioError as exc:
            raise DeviceError(f"cannot open input device {self.device_name!r}: {exc}") from exc
        return self

    def __exit__(self, *exc):
        if self.stream is not None:
            try:
                with native_stderr_silenced():   # a device already gone makes ALSA complain
                    self.stream.abort()
                    self.stream.close()
            except Exception:
                pass  # the device may already be gone; nothing left to release
            self.stream = None

    def __iter__(self):
        while True:
            try:
                yield self.queue.get(timeout=self.stall_seconds)
            except queue.Empty:
                active = self.stream is not None and self.stream.active
                raise DeviceError(f"input device {self.device_name!r} stopped delivering audio"
                                  + ("" if active else " (it was closed or disconnected)"))


class FileSource:
    """A recording played through the engine: in real time (like a microphone) or fast. It is
    read with ``audio.read_blocks`` (the checks ``classify`` makes), at the file's own rate."""

    kind = "file"

    # played fast, nothing waits on a block: larger reads cut the per-block work (a 50-ms
    # block's read cost a third of a streaming student's CPU); events are timed in stream time,
    # so they do not change
    FAST_BLOCK_SECONDS = 1.0

    def __init__(self, path, realtime: bool = True, block_seconds: float | None = None):
        path = Path(path)
        if block_seconds is None:
            block_seconds = 0.05 if realtime else self.FAST_BLOCK_SECONDS
        try:
            rate = sf.info(str(path)).samplerate
        except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
            raise AudioError(f"{path}: cannot read audio ({exc})") from exc
        self.path = path
        self.rate = check_sample_rate(rate, str(path))
        self.realtime = realtime
        self.blocksize = max(1, int(self.rate * block_seconds))
        self.overflows = 0
        self.dropped_blocks = 0
        self.device_name = str(path)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    def __iter__(self):
        start = time.monotonic()
        sent = 0
        for chunk in read_blocks(self.path, self.rate, self.blocksize):
            yield chunk
            sent += len(chunk)
            if self.realtime:
                ahead = sent / self.rate - (time.monotonic() - start)
                if ahead > 0:
                    time.sleep(ahead)


class StdinSource:
    """Raw signed 16-bit little-endian mono PCM on stdin (``arecord -f S16_LE -c 1 -r 16000``)."""

    kind = "stdin"

    def __init__(self, rate: int, block_seconds: float = 0.05, stdin=None):
        self.rate = check_sample_rate(rate, "stdin PCM (--rate)")
        self.block_bytes = 2 * max(1, int(rate * block_seconds))
        self.stdin = stdin or sys.stdin.buffer
        self.overflows = 0
        self.dropped_blocks = 0
        self.device_name = "stdin"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    def __iter__(self):
        carry = b""
        while True:
            data = self.stdin.read(self.block_bytes)
            if not data:
                return
            data = carry + data
            usable = len(data) - len(data) % 2
            carry = data[usable:]
            yield np.frombuffer(data[:usable], "<i2").astype(np.float32) / 32768.0
