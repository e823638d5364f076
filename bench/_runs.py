"""What the training benchmarks share (train_esc50, contrastive_esc10, teacher_fit,
multiview_esc50, mn_student_esc50): where the repository and ESC-50 are, one torch thread per
run that waits passively, the ESC-50 presence check, the rows as configuration files, and
writing the report."""
from __future__ import annotations

import os
import sys
from pathlib import Path

from edgeaudio.files import atomic_write_json, shared_dir

# two 1-thread runs at once beat one 2-thread run; busy-waiting threads would steal the core
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
REPO = Path(__file__).resolve().parents[1]
ESC50 = shared_dir() / "data" / "esc50"


def clip_path(row: dict) -> Path:
    """An ESC-50 metadata row's clip (the shared copy holds them as FLAC)."""
    return ESC50 / "audio" / (Path(row["filename"]).stem + ".flac")


def esc50_present(esc50: Path) -> bool:
    """True when ESC-50 is at ``esc50``; otherwise says so on stderr."""
    if (esc50 / "meta" / "esc50.csv").exists():
        return True
    print(f"ESC-50 not found at {esc50} (set EDGEAUDIO_SHARED)", file=sys.stderr)
    return False


def save_report(results: dict, path: Path, table: str, repo: Path) -> None:
    """Writes ``results`` as JSON to ``path``, prints the markdown ``table`` and the path.
    With no finished run (a fresh checkout) the committed results are left as they are."""
    if not results.get("rows"):
        print(f"no finished runs: {path.relative_to(repo)} left as it is (run the rows first)",
              file=sys.stderr)
        return
    atomic_write_json(path, results)
    print(table)
    print(f"\n{path.relative_to(repo)}", file=sys.stderr)


SHARED_PREFIX = "../shared/"  # how committed configuration files name the shared folder


def _in_shared(value):
    """A path a configuration file gives relative to the repository root, under the shared
    folder wherever $EDGEAUDIO_SHARED puts it."""
    if isinstance(value, list):
        return [_in_shared(v) for v in value]
    if isinstance(value, str) and value.startswith(SHARED_PREFIX):
        from edgeaudio.files import shared_dir
        return str(shared_dir() / value[len(SHARED_PREFIX):])
    return value


def row_description(path: Path) -> str:
    from edgeaudio.train.config import read_config_file
    return read_config_file(path)["description"]


def row_config(path: Path, **given):
    """The configuration ``edgeaudio train --config path`` runs with ``given`` options (data
    defaults to the shared ESC-50): the bench trains exactly what the command line would."""
    from edgeaudio.files import shared_dir
    from edgeaudio.train.cli import training_settings
    given.setdefault("data", str(shared_dir() / "data" / "esc50"))
    cfg, _ = training_settings(path, given)
    for key in ("data", "unlabeled"):
        if hasattr(cfg, key):
            setattr(cfg, key, _in_shared(getattr(cfg, key)))
    return cfg


def row_command(path: Path, repo: Path, out: Path, **flags) -> str:
    """The command line that trains the row: ``edgeaudio train --config ...``."""
    from edgeaudio.train.cli import flag_for
    parts = [f"edgeaudio train --config {path.relative_to(repo)}",
             "--data ../shared/data/esc50"]
    parts += [f"{flag_for(k)} {v}" for k, v in flags.items()]
    parts.append(f"--out {out.relative_to(repo)}")
    return " ".join(parts)


def finished_folds(row_dir: Path):
    """``(fold, metrics)`` of every finished run ``row_dir/fold<k>`` (its metrics.json), by fold."""
    import json
    for fold_dir in sorted(Path(row_dir).glob("fold*"), key=lambda p: int(p.name[4:])):
        path = fold_dir / "metrics.json"
        if path.exists():
            yield int(fold_dir.name[4:]), json.loads(path.read_text())
