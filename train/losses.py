"""Feature-informed regularisers (Hung & Lerch), the paper's fusion baselines, and
probe-then-distill (a linear probe on teacher embeddings, then logit distillation from it).

Shapes: the student embedding ``l`` is ``[B, T_E, B_E]``; teacher features ``v`` are
``[B, T_E, B_F]`` after time alignment (``align_to``: repeat a coarser teacher, average-pool a
finer one, see ``edgeaudio.train.teachers.base.align_frames``).

- **Con-Reg**: ``mean_{b,t} d_cos(l[b,t], f(v)[b,t])`` with ``f`` a kernel-size-1 ``Conv1d``
  from B_F to B_E (trained with the student, dropped at export) and ``d_cos = 1 - cos``.
- **Dis-Reg**: ``mean_{i != j} |d_cos(l_i, l_j) - d_cos(v_i, v_j)|`` over the pairs of a batch,
  each embedding sequence flattened to one vector (time stays aligned, so this compares whole
  clips frame by frame).
- Baselines that need the teacher at inference too (so they are for comparison only, never
  exported): ``feature-only`` (a classifier on the projected teacher features), ``concat``
  (student and projected teacher embeddings concatenated before the classifier) and ``film``
  (``l' = gamma(v) * l + beta(v)``, gamma and beta linear in v).
- **KD**: ``T^2 KL(p_T || softmax(z / T))`` with ``p_T`` the probe's probabilities at
  temperature T.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

REGULARIZERS = ("none", "con", "dis")
DEFAULT_ALPHA = {"none": 0.0, "con": 5.0, "dis": 1.0}
METHODS = ("student", "feature-only", "concat", "film")


def cosine_distance(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """``1 - cos(a, b)`` along the last axis."""
    return 1.0 - F.cosine_similarity(a, b, dim=-1, eps=eps)


def con_reg_loss(l: torch.Tensor, fv: torch.Tensor) -> torch.Tensor:
    """Mean cosine distance between ``l`` and the projected teacher features ``f(v)``, both
    ``[B, T, D]``."""
    if l.shape != fv.shape:
        raise ValueError(f"shapes differ: student {tuple(l.shape)} vs projected teacher "
                         f"{tuple(fv.shape)}")
    return cosine_distance(l, fv).mean()


def pairwise_cosine_distance(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """``[B, ...]`` -> ``[B, B]`` cosine distances between the flattened rows."""
    flat = x.reshape(x.shape[0], -1)
    unit = flat / flat.norm(dim=1, keepdim=True).clamp_min(eps)
    return 1.0 - unit @ unit.T


def dis_reg_loss(l: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Mean over pairs i != j of ``|d_cos(l_i, l_j) - d_cos(v_i, v_j)|``; 0 for a batch of 1."""
    if l.shape[0] != v.shape[0]:
        raise ValueError(f"batch sizes differ: {l.shape[0]} vs {v.shape[0]}")
    n = l.shape[0]
    if n < 2:
        return l.sum() * 0.0
    diff = (pairwise_cosine_distance(l) - pairwise_cosine_distance(v)).abs()
    off_diagonal = ~torch.eye(n, dtype=torch.bool, device=l.device)
    return diff[off_diagonal].mean()


class Projection(nn.Module):
    """``f``: kernel-size-1 Conv1d from B_F to B_E, applied per frame: ``[B, T, B_F] -> [B, T, B_E]``."""

    def __init__(self, teacher_dim: int, student_dim: int):
        super().__init__()
        self.conv = nn.Conv1d(teacher_dim, student_dim, kernel_size=1)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        return self.conv(v.transpose(1, 2)).transpose(1, 2)


class Regularizer(nn.Module):
    """``kind`` in {"none", "con", "dis"}; ``forward(l, v)`` -> the unweighted loss."""

    def __init__(self, kind: str, teacher_dim: int = 0, student_dim: int = 0):
        super().__init__()
        if kind not in REGULARIZERS:
            raise ValueError(f"unknown regulariser {kind!r} (known: {', '.join(REGULARIZERS)})")
        self.kind = kind
        self.projection = Projection(teacher_dim, student_dim) if kind == "con" else None

    def forward(self, l: torch.Tensor, v: torch.Tensor | None) -> torch.Tensor:
        if self.kind == "none" or v is None:
            return l.sum() * 0.0
        if self.kind == "con":
            return con_reg_loss(l, self.projection(v))
        return dis_reg_loss(l, v)


class FusionHead(nn.Module):
    """The paper's baselines, which use the teacher at inference (comparison only).

    ``forward(network, l, v)`` -> logits, with ``network`` the student's HarmonicCNN.
    """

    def __init__(self, method: str, teacher_dim: int, student_dim: int, n_classes: int,
                 dropout: float = 0.2):
        super().__init__()
        if method not in METHODS or method == "student":
            raise ValueError(f"FusionHead method must be one of {METHODS[1:]}, got {method!r}")
        self.method = method
        self.project = Projection(teacher_dim, student_dim)
        if method == "film":
            self.beta = Projection(teacher_dim, student_dim)
            self.head = None
        else:
            width = student_dim * (2 if method == "concat" else 1)
            self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(2 * width, n_classes))

    def forward(self, network, l: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        fv = self.project(v)
        if self.method == "film":
            return network.classify(fv * l + self.beta(v))
        x = fv if self.method == "feature-only" else torch.cat([l, fv], dim=-1)
        return self.head(torch.cat([x.mean(dim=1), x.amax(dim=1)], dim=1))


def kd_loss(logits: torch.Tensor, target_probs: torch.Tensor, temperature: float = 1.0
            ) -> torch.Tensor:
    """``T^2 * KL(target || softmax(logits / T))``, mean over the batch."""
    log_p = F.log_softmax(logits / temperature, dim=1)
    target = target_probs.clamp_min(1e-12)
    kl = (target * (target.log() - log_p)).sum(dim=1)
    return kl.mean() * temperature ** 2


def mixup_cross_entropy(logits: torch.Tensor, y_a: torch.Tensor, y_b: torch.Tensor,
                        lam: float) -> torch.Tensor:
    return lam * F.cross_entropy(logits, y_a) + (1.0 - lam) * F.cross_entropy(logits, y_b)


# ----------------------------------------------------------------------- linear probes


@dataclass
class LinearProbe:
    """Kumar et al.'s recipe: pooled teacher embedding, z-normalised with training statistics,
    then L2-normalised, then one linear classifier (multinomial logistic regression)."""

    mean: np.ndarray
    std: np.ndarray
    coef: np.ndarray        # [n_classes, dim]
    intercept: np.ndarray   # [n_classes]
    c: float

    def normalize(self, pooled: np.ndarray) -> np.ndarray:
        z = (np.asarray(pooled, np.float64) - self.mean) / self.std
        return z / np.maximum(np.linalg.norm(z, axis=-1, keepdims=True), 1e-12)

    def logits(self, pooled: np.ndarray) -> np.ndarray:
        return self.normalize(pooled) @ self.coef.T + self.intercept

    def probabilities(self, pooled: np.ndarray, temperature: float = 1.0) -> np.ndarray:
        z = self.logits(pooled) / temperature
        z -= z.max(axis=-1, keepdims=True)
        p = np.exp(z)
        return p / p.sum(axis=-1, keepdims=True)


def fit_probe(pooled: np.ndarray, targets: np.ndarray, n_classes: int, c: float = 10.0,
              max_iter: int = 2000) -> LinearProbe:
    from sklearn.linear_model import LogisticRegression

    pooled = np.asarray(pooled, np.float64)
    mean = pooled.mean(axis=0)
    std = pooled.std(axis=0) + 1e-6
    probe = LinearProbe(mean, std, np.zeros((n_classes, pooled.shape[1])), np.zeros(n_classes),
                        float(c))
    x = probe.normalize(pooled)
    model = LogisticRegression(C=c, max_iter=max_iter, tol=1e-5)
    model.fit(x, targets)
    # classes absent from ``targets`` keep zero weights and a very low intercept
    probe.intercept[:] = -30.0
    probe.coef[model.classes_] = model.coef_ if len(model.classes_) > 2 else \
        np.vstack([-model.coef_[0] / 2, model.coef_[0] / 2])
    probe.intercept[model.classes_] = model.intercept_ if len(model.classes_) > 2 else \
        np.array([-model.intercept_[0] / 2, model.intercept_[0] / 2])
    return probe


class DistillationTarget(Protocol):
    """Soft targets for distillation: class probabilities at ``temperature`` for the pooled
    teacher embeddings ``pooled [N, dim]`` of dataset items ``items [N]``."""

    def soft_targets(self, pooled: np.ndarray, items: Sequence[int],
                     temperature: float) -> np.ndarray:
        ...


@dataclass
class CrossFitProbes:
    """K probes, each fitted without one part of the training clips, so that every training
    clip gets soft targets from a probe that never saw it (out-of-fold), plus one probe on all
    training clips (for clips outside the training set and for reporting)."""

    probes: list[LinearProbe]
    assignment: dict[int, int]     # dataset item index -> index into probes (out-of-fold)
    full: LinearProbe
    c: float
    oof_accuracy: float
    c_scores: dict

    def probe_for(self, item_index: int) -> LinearProbe:
        k = self.assignment.get(int(item_index))
        return self.full if k is None else self.probes[k]

    def soft_targets(self, pooled: np.ndarray, items: Sequence[int],
                     temperature: float) -> np.ndarray:
        """Each item's targets from the probe that never saw it."""
        return np.stack([self.probe_for(i).probabilities(pooled[r:r + 1], temperature)[0]
                         for r, i in enumerate(items)])


def fit_crossfit_probes(pooled: np.ndarray, targets: np.ndarray, train_indices: np.ndarray,
                        n_classes: int, *, k: int = 5, seed: int = 0,
                        c_grid=(1.0, 10.0, 100.0)) -> CrossFitProbes:
    """Fit out-of-fold probes on the training items (``pooled`` and ``targets`` indexed by
    dataset item); C chosen from ``c_grid`` by out-of-fold accuracy (training data only)."""
    train_indices = np.asarray(train_indices)
    rng = np.random.default_rng([seed, 31337])
    parts = np.empty(len(train_indices), dtype=np.int64)
    for c in np.unique(targets[train_indices]):   # stratified part assignment
        where = np.flatnonzero(targets[train_indices] == c)
        where = where[rng.permutation(len(where))]
        parts[where] = np.arange(len(where)) % k
    k = max(1, min(k, int(parts.max()) + 1))
    best = None
    scores = {}
    for c in c_grid:
        probes, correct = [], 0
        for part in range(k):
            fit_on = train_indices[parts != part] if k > 1 else train_indices
            held = train_indices[parts == part]
            probe = fit_probe(pooled[fit_on], targets[fit_on], n_classes, c)
            probes.append(probe)
            correct += int((probe.logits(pooled[held]).argmax(1) == targets[held]).sum())
        scores[float(c)] = correct / len(train_indices)
        if best is None or scores[float(c)] > scores[best[0]]:
            best = (float(c), probes)
    c, probes = best
    assignment = {int(i): int(p) for i, p in zip(train_indices, parts)}
    full = fit_probe(pooled[train_indices], targets[train_indices], n_classes, c)
    return CrossFitProbes(probes, assignment, full, c, scores[c], scores)
