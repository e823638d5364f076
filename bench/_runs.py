"""What the training benchmarks share (train_esc50, contrastive_esc10, teacher_fit,
multiview_esc50): the ESC-50 presence check and writing the report."""
from __future__ import annotations

import sys
from pathlib import Path

from edgeaudio.files import atomic_write_json


def esc50_present(esc50: Path) -> bool:
    """True when ESC-50 is at ``esc50``; otherwise says so on stderr."""
    if (esc50 / "meta" / "esc50.csv").exists():
        return True
    print(f"ESC-50 not found at {esc50} (set EDGEAUDIO_SHARED)", file=sys.stderr)
    return False


def save_report(results: dict, path: Path, table: str, repo: Path) -> None:
    """Writes ``results`` as JSON to ``path``, prints the markdown ``table`` and the path."""
    atomic_write_json(path, results)
    print(table)
    print(f"\n{path.relative_to(repo)}", file=sys.stderr)
