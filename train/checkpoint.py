"""Student checkpoints: what training writes every epoch and export reads.

A run folder holds ``checkpoint.pt`` (the latest epoch, written atomically so a kill mid-write
leaves the previous one intact) and ``best.pt`` where training keeps a best epoch. A checkpoint
is a dict:

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

import os
from pathlib import Path

import torch

from edgeaudio.errors import EdgeAudioError

FORMAT = "edgeaudio-checkpoint"
FORMAT_VERSION = 1
REQUIRED = ("student", "frontend_settings", "labels", "window_frames", "model_state")


class CheckpointError(EdgeAudioError):
    pass


def save_checkpoint(path, *, student_name: str, frontend_settings: dict, labels: list,
                    window_frames: int, model_state: dict, epoch: int, config: dict,
                    metrics: dict | None = None, train_state: dict | None = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, "student": student_name,
               "frontend_settings": dict(frontend_settings), "labels": list(labels),
               "window_frames": int(window_frames), "model_state": model_state,
               "epoch": int(epoch), "config": dict(config), "metrics": dict(metrics or {}),
               "train_state": train_state}
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)  # atomic on POSIX: a reader sees the old file or the new one
    return path


def resolve_checkpoint(path) -> Path:
    """A checkpoint file, or a run folder (its best.pt, else checkpoint.pt)."""
    path = Path(path)
    if path.is_dir():
        for name in ("best.pt", "checkpoint.pt"):
            if (path / name).exists():
                return path / name
        raise CheckpointError(f"{path}: no best.pt or checkpoint.pt in this run folder")
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    return path


def load_checkpoint(path) -> dict:
    path = resolve_checkpoint(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises many kinds for a damaged file
        raise CheckpointError(f"{path}: cannot read checkpoint (truncated or corrupt?): "
                              f"{str(exc)[:200]}") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
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
