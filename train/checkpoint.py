"""Student checkpoints: what training writes every epoch and export reads.

A run folder holds ``checkpoint.pt``: the latest epoch, written atomically so a kill
mid-write leaves the previous one intact. A checkpoint is a dict of plain data and tensors
only, read back with ``torch.load(weights_only=True)``: a checkpoint handed to a user (a shared
run folder, a downloaded student) cannot run code when it is loaded, and one whose pickle asks
for any other object is refused.

    format           "edgeaudio-checkpoint"
    format_version   1
    student          student name for ``build_student`` (e.g. "small")
    frontend_settings  keyword arguments ``build_student`` takes (sample rate, STFT, grid)
    labels           class names, in output order
    window_frames    frames per model window (the exported input is [1, window_frames, bins])
    model_state      the student's state_dict (front end + network)
    epoch            epochs completed
    config           the run's settings (CLI flags), JSON-safe
    metrics          JSON-safe figures so far
    train_state      optional: optimizer / scheduler / RNG states for resuming
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from edgeaudio.errors import EdgeAudioError
from edgeaudio.files import atomic_path

FORMAT = "edgeaudio-checkpoint"
FORMAT_VERSION = 1
REQUIRED = ("student", "frontend_settings", "labels", "window_frames", "model_state")


class CheckpointError(EdgeAudioError):
    pass


def to_plain(value):
    """``value`` with numpy scalars and arrays turned into Python numbers and lists, tuples
    into lists: what ``torch.load(weights_only=True)`` reads back. Tensors stay tensors."""
    if isinstance(value, torch.Tensor) or value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    raise TypeError(f"a checkpoint holds plain data and tensors only, not {type(value).__name__}")


def save_plain(payload: dict, path) -> Path:
    """``payload`` (plain data and tensors) to ``path``, atomically."""
    with atomic_path(path) as tmp:
        torch.save(to_plain(payload), tmp)
    return Path(path)


def load_plain(path, error: type[Exception] = None, what: str = "checkpoint",
               map_location="cpu") -> dict:
    """A file written by ``save_plain``: tensors and plain data only, never code. Anything
    else (a pickle naming other objects, a truncated file, another format) raises ``error``."""
    error = error or CheckpointError
    path = Path(path)
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        raise error(f"{path}: refused: this {what} holds objects other than tensors and plain "
                    f"data (loading it could run code); only files written by edgeaudio "
                    f"load") from None
    except Exception as exc:  # torch raises many kinds for a damaged file
        raise error(f"{path}: cannot read {what} (truncated or corrupt?): "
                    f"{str(exc)[:200]}") from None
    if not isinstance(payload, dict):
        raise error(f"{path}: not an edgeaudio {what}")
    return payload


def save_checkpoint(path, *, student_name: str, frontend_settings: dict, labels: list,
                    window_frames: int, model_state: dict, epoch: int, config: dict,
                    metrics: dict | None = None, train_state: dict | None = None) -> Path:
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, "student": student_name,
               "frontend_settings": dict(frontend_settings), "labels": list(labels),
               "window_frames": int(window_frames), "model_state": model_state,
               "epoch": int(epoch), "config": dict(config), "metrics": dict(metrics or {}),
               "train_state": train_state}
    return save_plain(payload, path)


def resolve_checkpoint(path) -> Path:
    """A checkpoint file, or a run folder (its checkpoint.pt)."""
    path = Path(path)
    if path.is_dir():
        if (path / "checkpoint.pt").exists():
            return path / "checkpoint.pt"
        raise CheckpointError(f"{path}: no checkpoint.pt in this run folder")
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    return path


def load_checkpoint(path) -> dict:
    path = resolve_checkpoint(path)
    ckpt = load_plain(path)
    if ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an edgeaudio checkpoint")
    missing = [k for k in REQUIRED if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks {', '.join(missing)}")
    return ckpt


def load_student(path):
    """(student module in eval mode, checkpoint dict) from a checkpoint file or run folder."""
    from .students import build_student, list_students

    ckpt = load_checkpoint(path)
    known = [s["name"] for s in list_students()]
    if ckpt["student"] not in known:
        raise CheckpointError(f"checkpoint is from an unknown student {ckpt['student']!r} "
                              f"(known: {', '.join(known)})")
    student = build_student(ckpt["student"], len(ckpt["labels"]), **ckpt["frontend_settings"])
    student.load_state_dict(ckpt["model_state"])
    return student.eval(), ckpt
