"""Adaptive gradient blending: weights for a set of losses from how well each generalises.

After Wang et al. (2020, "What makes training multi-modal classification networks hard?") as
adapted by Phan et al. (2021, multi-view audio classification). Every ``every`` training steps
each loss ``k`` is measured twice, on a fixed subset of the training data (``L_tr``) and on the
validation split (``L_val``). With ``L̄(n)`` the mean of the last ``window`` measurements and
``L*`` the best (lowest) smoothed value of earlier measurements,

    G_k = L*_val - L̄_val(n)                                   (generalisation gained)
    O_k = (L*_tr - L̄_tr(n)) - (L*_val - L̄_val(n))            (overfitting gained)
    w_k = max(G_k, 0) / (O_k^2 + eps),  normalised so that sum_k w_k = total

so a loss whose validation value keeps falling as fast as its training value gains weight,
and one whose training value falls while its validation value stalls or rises loses it (a
validation loss above its best gives G <= 0 and the weight's floor). When no loss has
generalised since the references (all G <= 0), the weights are kept.

Nothing here is specific to multi-view networks: ``GradientBlender`` weights any named losses
whose training and validation values can be measured — the heads of a multi-view network
(``edgeaudio.train.multiview``), or a student's task loss against its regularisation terms
(e.g. ``{"task": ce, "con_reg": reg}``). Use:

    blender = GradientBlender(["mel", "cqt", "joint"], window=3, every=50)
    loss = blender.combine({"mel": l1, "cqt": l2, "joint": l3})       # each step
    if blender.due(step):                                              # every 50 steps
        blender.update(step, measure(train_subset), measure(val_split))  # dicts name -> float

``history`` logs every update (weights, G, O, smoothed losses, references); ``save_history``
writes it as JSON lines and ``plot_weights`` draws the weight trajectories.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Mapping, Sequence

import torch


class GradientBlender:
    """Adaptive per-loss weights ``w = G / O^2`` (normalised), recomputed on demand.

    ``names``      the losses to weight, in a fixed order
    ``window``     W, measurements averaged into the smoothed losses
    ``every``      N, steps between measurements (``due(step)`` says when)
    ``initial``    starting weights (default: equal), normalised to ``total``
    ``total``      what the weights sum to (1.0; ``len(names)`` keeps an unweighted sum's scale)
    ``floor``      smallest weight after an update, as a fraction of ``total / len(names)``
                   (0 lets a loss stop entirely; 0.1 keeps every one learning a little)
    ``eps``        added to ``O^2`` so a perfectly generalising loss gets a finite weight
    """

    def __init__(self, names: Sequence[str], window: int = 3, every: int = 100,
                 initial: Mapping[str, float] | None = None, total: float = 1.0,
                 floor: float = 0.0, eps: float = 1e-6):
        names = list(names)
        if not names or len(set(names)) != len(names):
            raise ValueError(f"GradientBlender needs distinct loss names, got {names}")
        if window < 1 or every < 1:
            raise ValueError("window and every must be >= 1")
        if not 0.0 <= floor < 1.0:
            raise ValueError("floor must be in [0, 1)")
        self.names = names
        self.window = int(window)
        self.every = int(every)
        self.total = float(total)
        self.floor = float(floor)
        self.eps = float(eps)
        start = {n: 1.0 for n in names} if initial is None else {n: float(initial[n])
                                                                   for n in names}
        self.initial = self._normalise(start)
        self.weights: dict[str, float] = dict(self.initial)
        self.measurements: list[dict] = []   # raw {"step", "train": {...}, "val": {...}}
        self.best_train: dict[str, float] = {}
        self.best_val: dict[str, float] = {}
        self.history: list[dict] = []

    # ------------------------------------------------------------------------- core

    def _normalise(self, raw: Mapping[str, float]) -> dict[str, float]:
        values = {n: max(0.0, float(raw[n])) for n in self.names}
        z = sum(values.values())
        if z <= 0 or not math.isfinite(z):
            raise ValueError(f"weights must be finite and not all zero: {dict(raw)}")
        weights = {n: self.total * v / z for n, v in values.items()}
        if self.floor > 0:
            # raise the small ones to the floor and take it from the others in proportion,
            # until none is below (a few passes at most)
            minimum = self.floor * self.total / len(self.names)
            low: set[str] = set()
            while True:
                low |= {n for n, w in weights.items() if w < minimum - 1e-12}
                rest = sum(values[n] for n in self.names if n not in low)
                if len(low) == len(self.names) or rest <= 0:
                    weights = {n: self.total / len(self.names) for n in self.names}
                    break
                spare = self.total - minimum * len(low)
                weights = {n: minimum if n in low else spare * values[n] / rest
                           for n in self.names}
                if all(w >= minimum - 1e-12 for w in weights.values()):
                    break
        return weights

    def smoothed(self, split: str) -> dict[str, float]:
        """Mean of the last ``window`` measurements of each loss on ``split`` (train / val)."""
        recent = self.measurements[-self.window:]
        return {n: sum(m[split][n] for m in recent) / len(recent) for n in self.names}

    def due(self, step: int) -> bool:
        """True on the steps where losses should be measured and ``update`` called."""
        return step > 0 and step % self.every == 0

    def update(self, step: int, train_losses: Mapping[str, float],
               val_losses: Mapping[str, float]) -> dict[str, float]:
        """Record one measurement and recompute the weights; returns them.

        ``train_losses`` are measured on a fixed training subset, ``val_losses`` on the
        validation split, each a mean loss per name (floats or 0-d tensors).
        """
        train = self._floats(train_losses, "train")
        val = self._floats(val_losses, "val")
        self.measurements.append({"step": int(step), "train": train, "val": val})
        smooth_train, smooth_val = self.smoothed("train"), self.smoothed("val")
        record = {"step": int(step), "train": train, "val": val,
                  "smoothed_train": smooth_train, "smoothed_val": smooth_val,
                  "ref_train": dict(self.best_train) or None,
                  "ref_val": dict(self.best_val) or None, "G": None, "O": None,
                  "updated": False}
        if self.best_val:
            gains = {n: self.best_val[n] - smooth_val[n] for n in self.names}
            overfit = {n: (self.best_train[n] - smooth_train[n]) - gains[n]
                       for n in self.names}
            raw = {n: max(gains[n], 0.0) / (overfit[n] ** 2 + self.eps) for n in self.names}
            record["G"], record["O"] = gains, overfit
            if sum(raw.values()) > 0:
                self.weights = self._normalise(raw)
                record["updated"] = True
        # references: the best smoothed losses so far (used from the next update on)
        for n in self.names:
            self.best_train[n] = min(self.best_train.get(n, math.inf), smooth_train[n])
            self.best_val[n] = min(self.best_val.get(n, math.inf), smooth_val[n])
        record["weights"] = dict(self.weights)
        self.history.append(record)
        return dict(self.weights)

    def _floats(self, losses: Mapping[str, float], what: str) -> dict[str, float]:
        missing = [n for n in self.names if n not in losses]
        if missing:
            raise KeyError(f"{what} losses lack {missing}")
        values = {n: float(losses[n]) for n in self.names}
        bad = [n for n, v in values.items() if not math.isfinite(v)]
        if bad:
            raise ValueError(f"{what} losses are not finite for {bad}: {values}")
        return values

    def combine(self, losses: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``sum_k w_k * losses[k]`` with the current weights (losses without a weight are an
        error; extra entries are ignored)."""
        missing = [n for n in self.names if n not in losses]
        if missing:
            raise KeyError(f"losses lack {missing}")
        return sum(self.weights[n] * losses[n] for n in self.names)

    # ------------------------------------------------------------------------- state, logs

    def state_dict(self) -> dict:
        return {"names": list(self.names), "window": self.window, "every": self.every,
                "total": self.total, "floor": self.floor, "eps": self.eps,
                "initial": dict(self.initial), "weights": dict(self.weights),
                "measurements": list(self.measurements), "best_train": dict(self.best_train),
                "best_val": dict(self.best_val), "history": list(self.history)}

    def load_state_dict(self, state: Mapping) -> None:
        if list(state["names"]) != self.names:
            raise ValueError(f"blender state is for losses {state['names']}, not {self.names}")
        for key in ("window", "every", "total", "floor", "eps"):
            setattr(self, key, type(getattr(self, key))(state[key]))
        self.initial = dict(state["initial"])
        self.weights = dict(state["weights"])
        self.measurements = list(state["measurements"])
        self.best_train = dict(state["best_train"])
        self.best_val = dict(state["best_val"])
        self.history = list(state["history"])

    @classmethod
    def from_state_dict(cls, state: Mapping) -> "GradientBlender":
        blender = cls(state["names"])
        blender.load_state_dict(state)
        return blender

    def weight_trajectories(self) -> tuple[list[int], dict[str, list[float]]]:
        """Steps (0 for the initial weights) and each loss's weight after every update."""
        steps = [0] + [r["step"] for r in self.history]
        series = {n: [self.initial[n]] + [r["weights"][n] for r in self.history]
                  for n in self.names}
        return steps, series

    def save_history(self, path: str | os.PathLike) -> Path:
        """Every update as one JSON line (step, weights, G, O, smoothed losses, references)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", encoding="utf-8") as handle:
            for record in self.history:
                handle.write(json.dumps(record) + "\n")
        return path


def plot_weights(blender_or_history, path: str | os.PathLike, title: str | None = None
                 ) -> Path:
    """Draw the weight trajectories (one line per loss over training steps) into ``path``
    (.png or .svg). Takes a ``GradientBlender`` or its ``state_dict()``."""
    import matplotlib
    matplotlib.use("Agg", force=False)
    from matplotlib import pyplot as plt

    blender = blender_or_history
    if isinstance(blender, Mapping):
        blender = GradientBlender.from_state_dict(blender)
    steps, series = blender.weight_trajectories()
    figure, axis = plt.subplots(figsize=(6.4, 3.6), dpi=120)
    for name, values in series.items():
        axis.step(steps, values, where="post", label=name, linewidth=1.6)
    axis.set_xlabel("training step")
    axis.set_ylabel("blending weight")
    axis.set_ylim(bottom=0)
    axis.grid(alpha=0.3)
    axis.legend(loc="best", fontsize=8)
    axis.set_title(title or f"adaptive gradient blending (W={blender.window}, "
                            f"N={blender.every})")
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path
