"""Files: atomic writes and the shared data/weights folder, defined once for every room.

``atomic_write_bytes`` / ``atomic_write_text`` / ``atomic_write_json`` write a sibling
temporary file and rename it over the target (atomic on POSIX: a reader, or a run killed
mid-write, sees the old file or the new one, never half of it). ``atomic_path`` is the same for
writers that want a path (``torch.save``, ``np.savez``). The temporary name carries the process
id, so two processes writing the same target never share a temporary file.

``shared_dir()`` is where real data and pretrained weights live: ``$EDGEAUDIO_SHARED`` when
set, else ``shared/`` beside the repository root (``../shared`` from a checkout).
"""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Iterator

SHARED_ENV_VAR = "EDGEAUDIO_SHARED"
REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_dir(override: str | os.PathLike | None = None) -> Path:
    """The shared data/weights folder: ``override``, else $EDGEAUDIO_SHARED, else ../shared."""
    if override:
        return Path(override)
    env = os.environ.get(SHARED_ENV_VAR)
    return Path(env) if env else REPO_ROOT.parent / "shared"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on a clean exit it replaces ``path``, on an
    error it is removed and ``path`` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, payload, indent: int | None = 2) -> Path:
    return atomic_write_text(path, json.dumps(payload, indent=indent) + "\n")
