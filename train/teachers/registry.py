"""Teachers by name: the one place that knows teacher names, aliases, "a+b" and fitted folders.

A teacher name is

- a registry name, in any case: ``list_teachers()`` ("efficientat", "yamnet"), or an alias of
  one (``ALIASES``: "mn04", "mn04_as" for "efficientat");
- the path of a fitted teacher: a folder written by ``edgeaudio teacher fit``, or one of its
  member ``.pt`` files (``is_fitted_teacher_path``);
- several of those joined by "+" ("yamnet+efficientat"): their ``ConcatTeacher``, on the time
  grid of the first. A whole name that is a fitted teacher's path is never split (a path may
  hold a "+").

``parse_teacher_names`` flattens names into their parts (what the embedding cache keys one
teacher at a time), ``validate_teacher_names`` checks names before any teacher loads (the CLI's
check), ``get_teacher`` builds one. The teacher modules are imported only when a teacher is
built, and none of them imports this module: the arrows point one way, YAMNet works without
torch, and no weights load until asked.
"""
from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Callable, Iterable, Sequence

from edgeaudio.errors import EdgeAudioError

from .base import ConcatTeacher, Teacher

# registry name -> (module under teachers/, class); the class takes shared_dir=...
_TEACHER_CLASSES: dict[str, tuple[str, str]] = {
    "efficientat": ("efficientat", "EfficientATTeacher"),
    "yamnet": ("yamnet", "YamnetTeacher"),
}
ALIASES = {"mn04": "efficientat", "mn04_as": "efficientat"}


class UnknownTeacherError(EdgeAudioError, ValueError):
    """A teacher name that is neither a registry name, an alias nor a fitted teacher's path."""


def list_teachers() -> list[str]:
    """Canonical registry names (the aliases in ``ALIASES`` also work)."""
    return sorted(_TEACHER_CLASSES)


def registry_name(name: str) -> str | None:
    """The canonical registry name of ``name`` or of the alias it is; None for anything else."""
    key = str(name).strip().lower()
    key = ALIASES.get(key, key)
    return key if key in _TEACHER_CLASSES else None


def is_fitted_teacher_path(name: str) -> bool:
    """True when ``name`` is the path of a fitted teacher (a folder written by ``edgeaudio
    teacher fit``, or one member ``.pt`` file) rather than a registry name."""
    text = str(name).strip()
    if not text or registry_name(text) is not None:
        return False
    path = Path(text)
    return path.is_dir() or (path.is_file() and path.suffix == ".pt")


def _split(name: str) -> list[str]:
    """One name -> its parts, in order: registry names lower-cased, fitted paths as given."""
    text = str(name).strip()
    pieces = [text] if is_fitted_teacher_path(text) else text.split("+")
    parts = []
    for piece in pieces:
        piece = piece.strip()
        if piece:
            parts.append(piece if is_fitted_teacher_path(piece) else piece.lower())
    return parts


def parse_teacher_names(names: str | Iterable[str]) -> list[str]:
    """["yamnet", "efficientat"] or ["yamnet+efficientat"] -> ["yamnet", "efficientat"]: every
    part once, in order of first appearance. Registry names are lower-cased (aliases are kept
    as written); the path of a fitted teacher is kept as it is."""
    if isinstance(names, (str, os.PathLike)):
        names = [names]
    parts: list[str] = []
    for name in names:
        for part in _split(str(name)):
            if part not in parts:
                parts.append(part)
    return parts


def _known_names() -> str:
    aliases = ", ".join(sorted(ALIASES))
    return (f"known: {', '.join(list_teachers())} (aliases {aliases}), or the folder of a "
            f"fitted teacher (edgeaudio teacher fit)")


def _check_part(part: str) -> None:
    if registry_name(part) is not None or is_fitted_teacher_path(part):
        return
    if "/" in part or os.sep in part or part.endswith(".pt"):
        raise UnknownTeacherError(f"fitted teacher not found: {part} (no such folder or .pt "
                                  f"file); {_known_names()}")
    raise UnknownTeacherError(f"unknown teacher {part!r}; {_known_names()}")


def validate_teacher_names(names: str | Iterable[str]) -> list[str]:
    """``parse_teacher_names(names)``, each part checked without loading anything: raises
    ``UnknownTeacherError`` (a user error, exit 2) naming the part and the known names."""
    parts = parse_teacher_names(names)
    for part in parts:
        _check_part(part)
    return parts


def _build(part: str, shared_dir: str | os.PathLike | None) -> Teacher:
    _check_part(part)
    canonical = registry_name(part)
    if canonical is None:
        from .fitted import FittedTeacher
        return FittedTeacher(part)
    module_name, class_name = _TEACHER_CLASSES[canonical]
    module = importlib.import_module(f".{module_name}", __package__)
    return getattr(module, class_name)(shared_dir=shared_dir)


def get_teacher(name: str, shared_dir: str | os.PathLike | None = None) -> Teacher:
    """A teacher by registry name or alias, or by the path of a fitted teacher; "a+b" gives
    the ``ConcatTeacher`` of a and b (time of a). ``shared_dir``: where the registry teachers'
    weights are (default ``edgeaudio.files.shared_dir()``)."""
    parts = _split(name)
    if not parts:
        raise UnknownTeacherError(f"no teacher named in {name!r}; {_known_names()}")
    teachers = [_build(part, shared_dir) for part in parts]
    return teachers[0] if len(teachers) == 1 else ConcatTeacher(teachers)


def kd_head_for(names: Sequence[str], labels: Sequence[str],
                teacher_by_name: Callable[[str], Teacher] | None = None):
    """The KD teachers' own heads (``FittedTeacherHead``) when ``names`` is one fitted
    teacher whose classes are ``labels`` in order; None otherwise (the loop then fits linear
    probes). ``teacher_by_name`` replaces ``get_teacher`` (tests pass fakes)."""
    if len(names) != 1 or not is_fitted_teacher_path(names[0]):
        return None
    from .fitted import FittedTeacher
    teacher = (teacher_by_name or get_teacher)(names[0])
    if not isinstance(teacher, FittedTeacher) or list(teacher.class_names) != list(labels):
        return None
    return teacher.kd_head()
