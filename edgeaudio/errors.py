"""Errors a user can act on. The CLI prints them as one line and exits with code 2."""


class EdgeAudioError(Exception):
    """Base class: the message is meant for the user, without a traceback."""


class AudioError(EdgeAudioError):
    """Unreadable, empty, truncated or invalid audio."""


class ModelFileError(EdgeAudioError):
    """A model file that is missing, truncated, corrupt, foreign, or whose edgeaudio metadata
    is missing or breaks the schema (``edgeaudio.schema``; the message names the field)."""


class BackendError(EdgeAudioError):
    """No usable inference backend for a model file."""


class DeviceError(EdgeAudioError):
    """An audio input device that is unknown, unusable or went away."""
