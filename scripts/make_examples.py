#!/usr/bin/env python3
"""Copy the example ESC-10 clips from ../shared and stitch them into examples/scene.flac.

The clips are CC0 on Freesound and part of ESC-10 (CC BY 3.0 as a set); credits in
examples/README.md. Rerun: .venv/bin/python scripts/make_examples.py
"""
import shutil
from pathlib import Path

import numpy as np
import soundfile as sf

from edgeaudio.files import shared_dir

REPO = Path(__file__).resolve().parents[1]
SHARED = shared_dir()
CLIPS = {"dog.flac": "5-203128-B-0", "rooster.flac": "5-200334-A-1",
         "crying_baby.flac": "5-151085-A-20"}
GAP_SECONDS = 1.5


def main():
    out = REPO / "examples"
    out.mkdir(exist_ok=True)
    parts = []
    for name, stem in CLIPS.items():
        src = SHARED / "data" / "esc50" / "audio" / f"{stem}.flac"
        shutil.copy(src, out / name)
        x, rate = sf.read(src, dtype="float32")
        parts += [x, np.zeros(int(GAP_SECONDS * rate), np.float32)]
    sf.write(out / "scene.flac", np.concatenate(parts), rate)
    print(f"wrote {', '.join(CLIPS)} and scene.flac to {out}")


if __name__ == "__main__":
    main()
