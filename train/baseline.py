"""A quick baseline that needs no teacher: a linear probe on the statistics of plain log-mel
features, fitted on the training clips and scored on the validation clips in seconds.

A teacher helps a student only when it knows the sounds. Its linear probe (Kumar et al.'s
recipe, ``edgeaudio.train.losses.fit_probe``) scoring well below this baseline says it does
not: on speech commands, for example, YAMNet's and EfficientAT's probes sit far below what the
student reaches alone. ``edgeaudio train`` compares the two before it trains and leaves such a
distillation teacher out (``--keep-teachers`` keeps it); ``edgeaudio probe`` prints the
baseline beside the teachers.
"""
from __future__ import annotations

import numpy as np

from edgeaudio.frontend import Frontend, FrontendSpec

from .losses import fit_probe

# well below: a teacher this many points under the baseline is left out
MARGIN_POINTS = 5.0
BASELINE_SPEC = dict(sample_rate=16000, n_fft=512, win_length=400, hop_length=160,
                     filterbank={"kind": "mel", "n_bins": 64, "fmin": 50.0, "fmax": 8000.0},
                     log_offset=1e-6)


def baseline_features(waves: list, sample_rate: int) -> np.ndarray:
    """Per clip: the mean and standard deviation over time of 64 log-mel bands ``[N, 128]``."""
    spec = FrontendSpec.from_dict({**BASELINE_SPEC, "sample_rate": sample_rate,
                                   "filterbank": {**BASELINE_SPEC["filterbank"],
                                                  "fmax": sample_rate / 2}})
    frontend = Frontend(spec)
    rows = []
    for wave in waves:
        wave = np.asarray(wave, np.float32)
        if len(wave) < spec.win_length:
            wave = np.pad(wave, (0, spec.win_length - len(wave)))
        feats = frontend(wave)
        rows.append(np.concatenate([feats.mean(axis=0), feats.std(axis=0)]))
    return np.stack(rows)


def probe_accuracy(features: np.ndarray, targets: np.ndarray, train_idx, val_idx,
                   n_classes: int, c: float = 10.0) -> float:
    """Validation accuracy of a linear probe fitted on the training clips."""
    probe = fit_probe(features[train_idx], targets[train_idx], n_classes, c)
    return float((probe.logits(features[val_idx]).argmax(1) == targets[val_idx]).mean())


def teacher_verdict(teacher_accuracy: float, baseline_accuracy: float) -> str | None:
    """Why a teacher should be left out, or None when it knows the sounds well enough."""
    if 100 * (baseline_accuracy - teacher_accuracy) > MARGIN_POINTS:
        return (f"its linear probe scores {100 * teacher_accuracy:.1f} % on the validation "
                f"clips, {100 * (baseline_accuracy - teacher_accuracy):.1f} points below a "
                f"log-mel baseline with no teacher ({100 * baseline_accuracy:.1f} %): it does "
                f"not know these sounds")
    return None
