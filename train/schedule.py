"""What every training loop's optimisation shares: the learning-rate schedule, the epoch's
draw order, and AdamW with weight decay on weights but not on biases and norms."""
from __future__ import annotations

import math
from typing import Iterable

import numpy as np
import torch


def epoch_order(indices: np.ndarray, n_needed: int, rng: np.random.Generator) -> np.ndarray:
    """``indices`` shuffled, in as many passes (each reshuffled) as ``n_needed`` draws take."""
    passes = max(1, -(-n_needed // len(indices)))
    return np.concatenate([indices[rng.permutation(len(indices))] for _ in range(passes)])


def lr_factor(step: int, steps_per_epoch: int, epochs: int, warmup_epochs: int) -> float:
    """Linear warm-up then cosine decay to 0, as a function of the global step."""
    total = max(1, steps_per_epoch * epochs)
    warm = min(total - 1, steps_per_epoch * warmup_epochs)
    if step < warm:
        return (step + 1) / (warm + 1)
    progress = (step - warm) / max(1, total - warm)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def schedule_step(optimizer: torch.optim.Optimizer, cfg, epoch: int, step: int,
                  steps_per_epoch: int) -> int:
    """Set every parameter group's learning rate for ``step`` of ``epoch`` (``cfg``: lr,
    epochs, warmup_epochs); returns the global step (0-based)."""
    global_step = (epoch - 1) * steps_per_epoch + step
    for group in optimizer.param_groups:
        group["lr"] = cfg.lr * lr_factor(global_step, steps_per_epoch, cfg.epochs,
                                         cfg.warmup_epochs)
    return global_step


def adamw(parameters: Iterable[torch.nn.Parameter], lr: float,
          weight_decay: float) -> torch.optim.AdamW:
    """AdamW whose weight decay applies to matrices and kernels (``ndim > 1``) only."""
    decay, no_decay = [], []
    for p in parameters:
        (decay if p.ndim > 1 else no_decay).append(p)
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=lr)
