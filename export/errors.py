"""Errors the export room raises, and the one place a failed write becomes one (torch-free).

Errors a user can act on (a layer a converter refuses, no usable calibration audio, an output
folder that cannot be written) are ``ExportError``s: the CLI prints them as one line, exit 2.
"""
from __future__ import annotations

import os
from pathlib import Path

from edgeaudio.errors import EdgeAudioError
from edgeaudio.files import atomic_write_bytes


class ExportError(EdgeAudioError):
    """Export cannot go on: the message says why."""


class ConversionError(ExportError):
    """A converter refused the network (the message names the layer where it can)."""


class CalibrationError(ExportError):
    """No usable calibration or evaluation audio."""


def write_file(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` atomically (``edgeaudio.files``); a full disk or a read-only folder is
    an ExportError naming the file, not a traceback."""
    try:
        return atomic_write_bytes(path, data)
    except OSError as exc:
        raise ExportError(f"cannot write {path}: {exc.strerror or exc}") from exc
