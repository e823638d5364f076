"""Shared test fixtures: where the real data, weights and test model files are."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest

from edgeaudio.files import shared_dir

REPO = Path(__file__).resolve().parents[1]
TEST_DATA = REPO / "tests" / "data"
SHARED = shared_dir()
ESC50 = SHARED / "data" / "esc50"
PLACEHOLDER = TEST_DATA / "esc10-placeholder"   # .onnx / .tflite, made by scripts/make_placeholder_model.py


@pytest.fixture(scope="session")
def esc50():
    if not (ESC50 / "meta" / "esc50.csv").exists():
        pytest.skip(f"ESC-50 not found at {ESC50} (set EDGEAUDIO_SHARED to the shared folder)")
    return ESC50


def esc50_rows():
    return list(csv.DictReader(open(ESC50 / "meta" / "esc50.csv")))


def esc50_clip(stem_or_filename: str) -> Path:
    return ESC50 / "audio" / (Path(stem_or_filename).stem + ".flac")


def esc50_csv(root: Path, labels, train_per_class: int, test_per_class: int) -> Path:
    """A path,label,fold CSV over real ESC-50 clips of ``labels``: the first
    ``train_per_class`` clips of folds 1-4 for training, ``test_per_class`` of fold 5 held out."""
    rows = sorted(esc50_rows(), key=lambda r: r["filename"])
    out = []
    for label in labels:
        mine = [r for r in rows if r["category"] == label]
        out += [r for r in mine if r["fold"] != "5"][:train_per_class]
        out += [r for r in mine if r["fold"] == "5"][:test_per_class]
    path = root / "clips.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "fold"])
        for r in out:
            w.writerow([esc50_clip(r["filename"]), r["category"], r["fold"]])
    return path
