"""SpecAugment on log features, shared by the student loops."""
from __future__ import annotations

import numpy as np
import torch


def spec_augment(feats: torch.Tensor, rng: np.random.Generator, cfg,
                 n_harmonics: int) -> torch.Tensor:
    """Time masks and frequency masks (the same semitones in every harmonic) set to each
    clip's mean feature value. ``cfg`` names the masks: ``time_masks``, ``time_mask_frames``,
    ``freq_masks``, ``freq_mask_bins`` (a TrainConfig or MultiViewConfig)."""
    batch, frames, bins = feats.shape
    n_freq = bins // n_harmonics
    mask = np.zeros((batch, frames, n_freq), dtype=bool)
    for b in range(batch):
        for _ in range(cfg.time_masks):
            width = int(rng.integers(0, cfg.time_mask_frames + 1))
            start = int(rng.integers(0, max(1, frames - width + 1)))
            mask[b, start:start + width, :] = True
        for _ in range(cfg.freq_masks):
            width = int(rng.integers(0, cfg.freq_mask_bins + 1))
            start = int(rng.integers(0, max(1, n_freq - width + 1)))
            mask[b, :, start:start + width] = True
    full = torch.from_numpy(np.tile(mask, (1, 1, n_harmonics)))
    fill = feats.mean(dim=(1, 2), keepdim=True)
    return torch.where(full, fill, feats)

