#!/usr/bin/env python3
"""Train the small placeholder model on real ESC-10 clips and write it as .onnx and .tflite.

It serves two purposes until the real default model lands: the bundled default of
``edgeaudio listen`` and the real model files the runtime tests run (tests/data). It is
deliberately small and quick (a couple of minutes on 2 CPU cores):

    .venv/bin/python scripts/make_placeholder_model.py --out tests/data --out edgeaudio/models

Data: ESC-10 (the esc10=True rows of ESC-50, CC BY 3.0), folds 1-4 train, fold 5 held out.
"""
from __future__ import annotations

import argparse
import csv
import json
import shutil
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from edgeaudio.files import shared_dir
from edgeaudio.frontend import Frontend, FrontendSpec
from edgeaudio.modelfile import ModelInfo
from edgeaudio.train.logmel_cnn import LogMelCNN
from edgeaudio.export.writers import write_onnx, write_tflite

SHARED = shared_dir()
WINDOW_FRAMES = 98  # 400 + 97 * 160 samples = 0.995 s at 16 kHz
NAME = "esc10-placeholder"


def load_esc10(esc50: Path):
    rows = [r for r in csv.DictReader(open(esc50 / "meta" / "esc50.csv")) if r["esc10"] == "True"]
    labels = sorted({r["category"] for r in rows})
    clips = []
    for r in rows:
        wave, rate = sf.read(esc50 / "audio" / (Path(r["filename"]).stem + ".flac"),
                             dtype="float32")
        assert rate == 16000, rate
        clips.append((wave, labels.index(r["category"]), int(r["fold"])))
    return labels, clips


def loud_crops(feats: np.ndarray, n: int, rng) -> list:
    """Window starts weighted toward loud parts: ESC clips are often padded with silence."""
    energy = feats.mean(axis=1)
    starts = np.arange(0, max(1, len(feats) - WINDOW_FRAMES + 1))
    window_energy = np.array([energy[s:s + WINDOW_FRAMES].max() for s in starts])
    p = np.exp(window_energy - window_energy.max())
    return list(rng.choice(starts, size=n, p=p / p.sum()))


def clip_windows(feats: np.ndarray, hop_frames: int = 25) -> np.ndarray:
    starts = range(0, max(1, len(feats) - WINDOW_FRAMES + 1), hop_frames)
    return np.stack([feats[s:s + WINDOW_FRAMES] for s in starts])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", action="append", type=Path, required=True,
                    help="folder to write esc10-placeholder.{onnx,tflite} into (repeatable)")
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    torch.set_num_threads(2)
    rng = np.random.default_rng(args.seed)

    spec = FrontendSpec()
    frontend = Frontend(spec)
    labels, clips = load_esc10(SHARED / "data" / "esc50")
    feats = [(frontend(w), y, fold) for w, y, fold in clips]
    train = [(f, y) for f, y, fold in feats if fold != 5]
    test = [(f, y) for f, y, fold in feats if fold == 5]

    net = LogMelCNN(spec.n_bins, len(labels))
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=args.epochs * 20)
    t0 = time.time()
    for epoch in range(args.epochs):
        net.train()
        xs, ys = [], []
        for f, y in train:
            for s in loud_crops(f, 2, rng):
                xs.append(f[s:s + WINDOW_FRAMES])
                ys.append(y)
        order = rng.permutation(len(xs))
        x_all = torch.from_numpy(np.stack(xs)[order])
        y_all = torch.tensor(ys)[order]
        # gain augmentation is a constant offset on log features
        x_all = x_all + torch.empty(len(x_all), 1, 1).uniform_(-1.5, 1.5)
        for b in range(20):
            sl = slice(b * len(x_all) // 20, (b + 1) * len(x_all) // 20)
            loss = torch.nn.functional.cross_entropy(net(x_all[sl]), y_all[sl],
                                                     label_smoothing=0.1)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        print(f"epoch {epoch + 1}/{args.epochs} loss {loss.item():.3f} "
              f"({time.time() - t0:.0f} s)", flush=True)

    net.eval()
    with torch.no_grad():
        correct = sum(int(torch.softmax(net(torch.from_numpy(clip_windows(f))), -1)
                          .mean(0).argmax()) == y for f, y in test)
    accuracy = correct / len(test)
    print(f"ESC-10 fold 5 accuracy: {accuracy:.3f} ({correct}/{len(test)})")

    info = ModelInfo(labels=labels, frontend=spec, n_frames=WINDOW_FRAMES, name=NAME,
                     version="0.1.0",
                     provenance={"trained_by": "scripts/make_placeholder_model.py",
                                 "data": "ESC-10 (ESC-50 esc10 rows, CC BY 3.0), folds 1-4",
                                 "held_out_fold": 5, "held_out_accuracy": round(accuracy, 4),
                                 "epochs": args.epochs, "seed": args.seed,
                                 "network": "LogMelCNN", "params": sum(
                                     p.numel() for p in net.parameters())})
    first, *rest = args.out
    first.mkdir(parents=True, exist_ok=True)
    onnx_path = write_onnx(net, info, first / f"{NAME}.onnx")
    tflite_path = write_tflite(net, info, first / f"{NAME}.tflite")
    for folder in rest:
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(onnx_path, folder / onnx_path.name)
        shutil.copy(tflite_path, folder / tflite_path.name)
    print(json.dumps({"accuracy": accuracy, "files": [str(onnx_path), str(tflite_path)]}))


if __name__ == "__main__":
    main()
