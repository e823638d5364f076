"""A fine-tuned ImageNet-CNN ensemble (Palanisamy et al. 2020) as a teacher.

``ImageNetCNNTeacher`` wraps one or more members: ``ImageNetAudioClassifier`` models
(EfficientNet-Lite0 or DenseNet-121 on the three-channel multi-resolution log-mel image of
``edgeaudio.train.imagenet``) that were initialised from ImageNet and fine-tuned on the target
task, each saved by ``edgeaudio.train.imagenet.save_imagenet_member``. A deep ensemble is N such
members differing only in seed and batch order; the later ``edgeaudio teacher fit`` command
writes them into one folder (``member-0.pt``, ``member-1.pt``, ...), which this class reads.

What it gives the student:

- ``embed``: per clip ``[T_F, dim]`` float32 — each member's final feature map averaged over
  frequency (one frame per 32 image columns: ``hop_seconds`` = 0.64 s at the default 50 image
  frames per second), the members concatenated along features (``dim`` = N x 1280 for
  EfficientNet-Lite0) for ``combine="concat"``, or averaged for ``combine="mean"`` (only
  meaningful for a single member or members that share a feature space). Its mean over time is
  each member's classifier input, so these are the "pooled embeddings" for Con-Reg / Dis-Reg.
- ``predict`` / ``predict_batch``: the ensemble's class probabilities, the mean of the members'
  softmax outputs over ``class_names`` (the task labels): the targets for logit distillation.
- ``logits_batch``: the members' mean logits, for distillation with a temperature.
- ``event_vectors``: for a single member, its classifier rows ``[n_classes, dim]`` (the head is
  one linear layer on the time-mean of the embedding).

Members must agree on labels, sample rate and front end. ``weights_hash`` is the sha256 of the
members' file hashes, so a re-fitted ensemble gets a new embedding cache.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .base import Teacher, TeacherWeightsError, as_waveform, sha256_of_file


def member_files(path: str | os.PathLike) -> list[Path]:
    """A member file itself, or the ``*.pt`` members of an ensemble folder, sorted by name."""
    path = Path(path)
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.glob("*.pt") if p.is_file())
        if not files:
            raise TeacherWeightsError(f"{path}: no fine-tuned member files (*.pt) in this "
                                      f"folder (write them with `edgeaudio teacher fit`)")
        return files
    raise TeacherWeightsError(f"ImageNet-CNN teacher not found: {path}")


class ImageNetCNNTeacher(Teacher):
    """One or more fine-tuned ImageNet CNNs on multi-resolution log-mel images, as a teacher.

    ``source``: an ensemble folder, one member file, or a list of member files.
    ``combine``: "concat" (default) or "mean" for the members' embeddings.
    ``batch_size``: clips of equal length run together, this many at a time.
    """

    def __init__(self, source, combine: str = "concat", batch_size: int = 8,
                 name: str | None = None, device: str = "cpu"):
        from ..imagenet import load_imagenet_member  # torch-heavy import, on demand

        if combine not in ("concat", "mean"):
            raise ValueError(f"combine must be 'concat' or 'mean', got {combine!r}")
        files = ([Path(p) for p in source] if isinstance(source, (list, tuple))
                 else member_files(source))
        if not files:
            raise TeacherWeightsError("an ImageNet-CNN teacher needs at least one member")
        self.members, infos = [], []
        for file in files:
            if not file.is_file():
                raise TeacherWeightsError(f"ImageNet-CNN teacher member not found: {file}")
            try:
                model, info = load_imagenet_member(file)
            except ValueError as exc:
                raise TeacherWeightsError(str(exc)) from exc
            self.members.append(model.to(device))
            infos.append(info)
        first = infos[0]
        for file, info in zip(files[1:], infos[1:]):
            for key in ("labels", "frontend", "arch"):
                if info[key] != first[key]:
                    raise TeacherWeightsError(f"{file}: its {key} differ from {files[0]}'s; "
                                              f"ensemble members must agree")
        self.member_paths = files
        self.device = device
        self.combine = combine
        self.batch_size = int(batch_size)
        self.arch = first["arch"]
        self.name = name or f"imagenet-{self.arch}-x{len(files)}"
        self.class_names = list(first["labels"])
        lead = self.members[0]
        self.sample_rate = lead.sample_rate
        self.hop_seconds = lead.embedding_hop_seconds
        per_member = lead.feature_dim
        self.dim = per_member * len(files) if combine == "concat" else per_member
        self.weights_path = files[0]

    @property
    def weights_hash(self) -> str:
        if self._weights_hash is None:
            joined = "+".join(sha256_of_file(p) for p in self.member_paths) + f"|{self.combine}"
            self._weights_hash = hashlib.sha256(joined.encode("ascii")).hexdigest()
        return self._weights_hash

    def cache_identity(self) -> dict:
        return {**super().cache_identity(), "members": len(self.members),
                "combine": self.combine, "arch": self.arch}

    # -------------------------------------------------------------------------- batching

    def _groups(self, clips: list[np.ndarray]):
        """Indices of equal-length clips, in chunks of ``batch_size``."""
        by_length: dict[int, list[int]] = {}
        for index, clip in enumerate(clips):
            by_length.setdefault(clip.shape[0], []).append(index)
        for indices in by_length.values():
            for start in range(0, len(indices), self.batch_size):
                yield indices[start:start + self.batch_size]

    def _clips(self, waveforms: Sequence[np.ndarray]) -> list[np.ndarray]:
        return [as_waveform(w, f"clip {i}") for i, w in enumerate(waveforms)]

    # -------------------------------------------------------------------------- outputs

    @torch.no_grad()
    def embed(self, waveforms: Sequence[np.ndarray]) -> list[np.ndarray]:
        clips = self._clips(waveforms)
        out: list[np.ndarray | None] = [None] * len(clips)
        for indices in self._groups(clips):
            wave = torch.from_numpy(np.stack([clips[i] for i in indices])).to(self.device)
            per_member = [member.embed(wave) for member in self.members]  # [b, T', C] each
            if self.combine == "concat":
                combined = torch.cat(per_member, dim=2)
            else:
                combined = torch.stack(per_member).mean(dim=0)
            for row, index in enumerate(indices):
                out[index] = combined[row].float().cpu().numpy()
        return out

    @torch.no_grad()
    def logits_batch(self, waveforms: Sequence[np.ndarray]) -> np.ndarray:
        """``[N, n_classes]``: the members' mean logits."""
        return self._over_members(waveforms, probabilities=False)

    @torch.no_grad()
    def predict_batch(self, waveforms: Sequence[np.ndarray]) -> np.ndarray:
        """``[N, n_classes]``: the ensemble's probabilities (mean of member softmaxes)."""
        return self._over_members(waveforms, probabilities=True)

    def predict(self, waveform: np.ndarray) -> np.ndarray:
        return self.predict_batch([waveform])[0]

    def _over_members(self, waveforms, probabilities: bool) -> np.ndarray:
        clips = self._clips(waveforms)
        out = np.zeros((len(clips), len(self.class_names)), dtype=np.float32)
        for indices in self._groups(clips):
            wave = torch.from_numpy(np.stack([clips[i] for i in indices])).to(self.device)
            outputs = [member(wave) for member in self.members]
            if probabilities:
                outputs = [o.softmax(dim=-1) for o in outputs]
            out[indices] = torch.stack(outputs).mean(dim=0).float().cpu().numpy()
        return out

    def event_vectors(self) -> np.ndarray:
        if len(self.members) != 1 or self.combine != "concat":
            return super().event_vectors()
        return self.members[0].backbone.classifier.weight.detach().cpu().numpy().copy()


def load_imagenet_teacher(path: str | os.PathLike, **kwargs) -> ImageNetCNNTeacher:
    """The registry hook: an ensemble folder or a member file -> ``ImageNetCNNTeacher``."""
    return ImageNetCNNTeacher(path, **kwargs)
