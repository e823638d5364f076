"""The pictures a run folder holds: training curves, confusion matrices, per-fold accuracy."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plot_curves(history: list[dict], path: Path, title: str = "") -> None:
    plt = _pyplot()
    epochs = [h["epoch"] for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for key in ("loss", "ce", "kd", "reg", "contrastive"):
        values = [h.get(key) for h in history]
        if any(v for v in values):
            ax1.plot(epochs, values, label=key)
    for key, label in (("val_loss", "validation CE"), ("test_loss", "test CE")):
        points = [(h["epoch"], h[key]) for h in history if h.get(key) is not None]
        if points:
            ax1.plot(*zip(*points), "--", label=label)
    ax1.set_xlabel("epoch"), ax1.set_ylabel("loss"), ax1.legend(), ax1.grid(alpha=0.3)
    ax2.plot(epochs, [h.get("train_acc") for h in history], label="train (mixed batches)")
    for key, label in (("val_acc", "validation (chooses the epoch)"),
                       ("test_acc", "test (reporting only)")):
        points = [(h["epoch"], h[key]) for h in history if h.get(key) is not None]
        if points:
            ax2.plot(*zip(*points), label=label)
    ax2.set_xlabel("epoch"), ax2.set_ylabel("accuracy"), ax2.set_ylim(0, 1)
    ax2.legend(), ax2.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_confusion(confusion, labels: list, path: Path, title: str = "") -> None:
    plt = _pyplot()
    confusion = np.asarray(confusion, dtype=np.float64)
    rows = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
    n = len(labels)
    size = max(5.0, 0.22 * n + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n)), ax.set_yticks(range(n))
    fontsize = 8 if n <= 20 else 5
    ax.set_xticklabels(labels, rotation=90, fontsize=fontsize)
    ax.set_yticklabels(labels, fontsize=fontsize)
    ax.set_xlabel("predicted"), ax.set_ylabel("true")
    if n <= 20:
        for i in range(n):
            for j in range(n):
                if confusion[i, j]:
                    ax.text(j, i, int(confusion[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if rows[i, j] > 0.5 else "black")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


# ---------------------------------------------------------------------------- training


def plot_fold_accuracies(per_fold: dict, mean: float, std: float, path: Path) -> None:
    """One bar per held-out fold and the mean as a line."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.bar([str(f) for f in per_fold], list(per_fold.values()), color="tab:blue")
    ax.axhline(mean, color="tab:red", label=f"mean {mean:.3f} ± {std:.3f}")
    ax.set_xlabel("held-out fold"), ax.set_ylabel("accuracy"), ax.set_ylim(0, 1)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
