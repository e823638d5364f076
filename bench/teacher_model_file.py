#!/usr/bin/env python3
"""The teacher as a model file, for upper-bound rows beside a student's: EfficientAT mn04
(``../shared/weights/efficientat``) with a linear probe fitted on ESC-50's other four folds,
written as a float ONNX file the runtime runs like any student's.

    .venv/bin/python bench/teacher_model_file.py --fold 1   # runs/teacher/mn04-probe-fold1.onnx
    .venv/bin/python bench/streaming.py --model runs/teacher/mn04-probe-fold1.onnx --fold 1 \\
        --json bench/results/streaming_teacher.json --plot docs/streaming_teacher.png

The network is mn04 itself, every weight, on the students' 16 kHz EfficientAT-mel front end
(``mn_student.mn_frontend_spec``; the same input a student's file takes, so the engine, the
windows and the gate are the ones the student is measured with). The head is the probe of
``losses.fit_probe`` (z-normalised, L2-normalised pooled embedding, logistic regression, C = 10)
fitted on the pooled 5-s embeddings of the training folds' clips, written into the graph as it
computes. The window is the students' 4 s; the stream settings follow from the clips' length as
``edgeaudio export`` sets them. Prints the file's held-out accuracy through ``classify``.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np

from _runs import ESC50, REPO, clip_path

N_CLASSES = 50
WINDOW_SECONDS = 4.0
PROBE_C = 10.0


def probe_head(probe):
    """``losses.LinearProbe`` as a torch module: pooled ``[B, D]`` -> logits ``[B, classes]``."""
    import torch
    from torch import nn

    class ProbeHead(nn.Module):
        def __init__(self):
            super().__init__()
            for name in ("mean", "std", "coef", "intercept"):
                self.register_buffer(name, torch.tensor(getattr(probe, name), dtype=torch.float32))

        def forward(self, pooled):
            z = (pooled - self.mean) / self.std
            z = z / torch.clamp(torch.linalg.vector_norm(z, dim=-1, keepdim=True), min=1e-12)
            return z @ self.coef.T + self.intercept

    return ProbeHead()


def teacher_network(mn04, head):
    """log-mel ``[B, T, 128]`` -> mn04's pooled embedding -> the probe's logits."""
    from torch import nn

    class TeacherWithProbe(nn.Module):
        def __init__(self):
            super().__init__()
            self.network, self.head = mn04, head

        def forward(self, x):
            return self.head(self.network.embed(x).mean(dim=1))

    return TeacherWithProbe().eval()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fold", type=int, default=1, help="the held-out ESC-50 fold")
    ap.add_argument("--out", type=Path, default=None,
                    help="model file (default runs/teacher/mn04-probe-fold<K>.onnx)")
    args = ap.parse_args(argv)
    out = args.out or REPO / "runs" / "teacher" / f"mn04-probe-fold{args.fold}.onnx"

    import logging

    import torch

    logging.disable(logging.WARNING)  # clipping warnings from 2000 clips drown the output
    from edgeaudio import __version__, load_model
    from edgeaudio.audio import load_audio
    from edgeaudio.export.model_files import write_model_files
    from edgeaudio.modelfile import ModelInfo
    from edgeaudio.stream_tuning import settings_for_event_length
    from edgeaudio.train.frontend import TorchFrontend
    from edgeaudio.train.losses import fit_probe
    from edgeaudio.train.mn_student import (MNConfig, MNNetwork, MNStudent, SAMPLE_RATE,
                                            inherit_from_mn04, mn_frontend_spec)

    torch.set_num_threads(1)
    rows = list(csv.DictReader(open(ESC50 / "meta" / "esc50.csv")))
    labels = sorted({r["category"] for r in rows})
    train = [r for r in rows if int(r["fold"]) != args.fold]
    test = [r for r in rows if int(r["fold"]) == args.fold]

    config = MNConfig("mn04", "EfficientAT mn04 itself (width 0.4, every weight)", 0.4)
    mn04 = MNStudent(config, TorchFrontend(mn_frontend_spec()), MNNetwork(config, 527))
    inherit_from_mn04(mn04, importance="bn")  # at mn04's own width: every channel, in order
    mn04.eval()

    t0 = time.time()
    pooled = []
    with torch.no_grad():
        for i, row in enumerate(train):
            wave = load_audio(clip_path(row), SAMPLE_RATE)
            pooled.append(mn04.embed(torch.from_numpy(wave[None]))[0].mean(0).numpy())
            if (i + 1) % 200 == 0:
                print(f"embedded {i + 1}/{len(train)} training clips "
                      f"({time.time() - t0:.0f} s)", flush=True)
    targets = np.array([labels.index(r["category"]) for r in train])
    probe = fit_probe(np.stack(pooled), targets, N_CLASSES, PROBE_C)
    network = teacher_network(mn04.network, probe_head(probe))

    spec = mn04.frontend.frozen_spec()
    n_frames = 1 + int(round((WINDOW_SECONDS * SAMPLE_RATE - spec.win_length)
                             / spec.hop_length))
    info = ModelInfo(labels=labels, frontend=spec, n_frames=n_frames,
                     name=f"mn04-probe-fold{args.fold}", version="mn04-probe",
                     provenance={"teacher": "EfficientAT mn04 (every weight)",
                                 "head": f"linear probe (losses.fit_probe, C {PROBE_C:g}) on "
                                         f"ESC-50 folds other than {args.fold}",
                                 "held_out_fold": args.fold,
                                 "exported_by": f"edgeaudio {__version__} "
                                                f"bench/teacher_model_file.py"})
    info.stream.update(settings_for_event_length(5.0, info.hop_seconds))  # ESC-50: 5-s clips
    files = write_model_files(network, info, out.parent, formats=["onnx"],
                              stem=out.name.removesuffix(".onnx"))
    path = next(iter(files.values()))
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, {time.time() - t0:.0f} s)")

    model = load_model(path)
    correct = sum(model.classify(clip_path(r)).top(1)[0][0] == r["category"]
                  for r in test)
    print(json.dumps({"model": str(path.relative_to(REPO)) if path.is_relative_to(REPO)
                      else str(path), "held_out_fold": args.fold,
                      "classify_accuracy": correct / len(test), "clips": len(test)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
