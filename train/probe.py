"""Linear probes of pretrained embeddings (Kumar et al.) and their analyses.

Protocol: each clip's teacher embedding (from the cache) is pooled over time (mean),
z-normalized with the training folds' statistics, then L2-normalized; one logistic-regression
classifier per test fold. Its C is chosen on a validation split of the training folds (one
training fold held out, or 20 % stratified without folds), never on the test fold, then the
classifier is refitted on all training folds.

Analyses (PNG): a dendrogram of the classifier's class vectors (average linkage, cosine), and a
heat map of cosine similarity between target-class vectors and the teacher's source-event
vectors (its output-layer rows: YAMNet's 521 AudioSet classes), both mean-centred and unit-norm,
rows and columns ordered by their dendrograms; the top source events per class also as text.
Both kinds of vector are compared in the probe's z-normalized space: an event row ``e`` acts on
a raw embedding ``x = mean + std * z`` as ``(e * std) . z``, so ``e * std`` is its direction
there. (Comparing ``w / std`` with ``e`` in raw space instead was tried on ESC-50 and put speech
and music events next to "dog"; in z space dog's nearest events are Bark, Howl, Yip, Bow-wow.)
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np

from edgeaudio.files import atomic_write_json, atomic_write_text

C_GRID = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0)


@dataclass
class ProbeNorm:
    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray) -> "ProbeNorm":
        return cls(x.mean(axis=0), x.std(axis=0) + 1e-8)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        z = (x - self.mean) / self.std
        return z / (np.linalg.norm(z, axis=1, keepdims=True) + 1e-12)


def pool(embeddings) -> np.ndarray:
    """Mean over time of each clip's ``[T, B]`` embedding -> ``[clips, B]``."""
    return np.stack([np.asarray(e, np.float32).mean(axis=0) for e in embeddings])


def fit_probe(x: np.ndarray, y: np.ndarray, c: float, seed: int = 0):
    from sklearn.linear_model import LogisticRegression

    norm = ProbeNorm.fit(x)
    clf = LogisticRegression(C=c, max_iter=3000, random_state=seed)
    clf.fit(norm(x), y)
    return norm, clf


def choose_c(x, y, train_idx, val_idx, seed=0, grid=C_GRID) -> tuple[float, dict]:
    scores = {}
    for c in grid:
        norm, clf = fit_probe(x[train_idx], y[train_idx], c, seed)
        scores[c] = float((clf.predict(norm(x[val_idx])) == y[val_idx]).mean())
    best = max(grid, key=lambda c: (scores[c], -abs(np.log10(c))))  # ties: nearer C = 1
    return best, scores


def validation_split(train_idx: np.ndarray, folds: np.ndarray | None, test_fold, y, seed):
    """(fit, validation) indices inside the training folds."""
    if folds is not None:
        train_folds = sorted(set(folds[train_idx].tolist()))
        val_fold = train_folds[(train_folds.index(min(f for f in train_folds if f > test_fold))
                                if any(f > test_fold for f in train_folds) else 0)]
        return train_idx[folds[train_idx] != val_fold], train_idx[folds[train_idx] == val_fold]
    rng = np.random.default_rng(seed)
    val = []
    for c in np.unique(y[train_idx]):
        idx = train_idx[y[train_idx] == c]
        val += list(rng.choice(idx, size=max(1, len(idx) // 5), replace=False))
    val = np.array(sorted(val))
    return np.setdiff1d(train_idx, val), val


def cross_validate(x: np.ndarray, y: np.ndarray, folds: np.ndarray | None, test_folds,
                   seed: int = 0, progress=None) -> dict:
    """Per-fold accuracy of the probe; C chosen inside the training folds each time."""
    per_fold = []
    for k in test_folds:
        t0 = time.time()
        test_idx = np.flatnonzero(folds == k)
        train_idx = np.flatnonzero(folds != k)
        fit_idx, val_idx = validation_split(train_idx, folds, k, y, seed)
        c, val_scores = choose_c(x, y, fit_idx, val_idx, seed)
        norm, clf = fit_probe(x[train_idx], y[train_idx], c, seed)
        acc = float((clf.predict(norm(x[test_idx])) == y[test_idx]).mean())
        per_fold.append({"fold": int(k), "accuracy": acc, "C": c,
                         "validation_accuracy_by_C": val_scores,
                         "seconds": round(time.time() - t0, 2)})
        if progress:
            progress(per_fold[-1])
    accs = [f["accuracy"] for f in per_fold]
    return {"per_fold": per_fold, "mean_accuracy": float(np.mean(accs)),
            "std_accuracy": float(np.std(accs))}


def events_in_probe_space(norm: ProbeNorm, event_vectors: np.ndarray) -> np.ndarray:
    """The teacher's output-layer rows as directions in the probe's z-normalized space."""
    return event_vectors * norm.std[None, :]


def centred_unit(v: np.ndarray) -> np.ndarray:
    v = v - v.mean(axis=0, keepdims=True)
    return v / (np.linalg.norm(v, axis=1, keepdims=True) + 1e-12)


def top_events(class_vectors, event_vectors, labels, event_names, k=5) -> dict:
    sim = centred_unit(class_vectors) @ centred_unit(event_vectors).T
    return {label: [(event_names[j], float(sim[i, j])) for j in np.argsort(-sim[i])[:k]]
            for i, label in enumerate(labels)}


def plot_dendrogram(class_vectors, labels, path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy.cluster.hierarchy import dendrogram, linkage

    z = linkage(centred_unit(class_vectors), method="average", metric="cosine")
    fig, ax = plt.subplots(figsize=(6, max(4, 0.22 * len(labels))))
    dendrogram(z, labels=list(labels), orientation="right", ax=ax, leaf_font_size=8)
    ax.set_title(title)
    ax.set_xlabel("cosine distance (average linkage)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_similarity(class_vectors, event_vectors, labels, event_names, path: Path, title: str,
                    n_events: int = 60) -> None:
    """Heat map over the events most similar to any class, both axes dendrogram-ordered."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy.cluster.hierarchy import leaves_list, linkage

    sim = centred_unit(class_vectors) @ centred_unit(event_vectors).T
    events = np.argsort(-sim.max(axis=0))[:n_events]
    sub = sim[:, events]
    rows = leaves_list(linkage(sub, method="average", metric="cosine"))
    cols = leaves_list(linkage(sub.T, method="average", metric="cosine"))
    sub = sub[rows][:, cols]
    fig, ax = plt.subplots(figsize=(max(8, 0.2 * n_events), max(6, 0.2 * len(labels))))
    im = ax.imshow(sub, cmap="RdBu_r", vmin=-np.abs(sub).max(), vmax=np.abs(sub).max(),
                   aspect="auto")
    ax.set_yticks(range(len(rows)), [labels[i] for i in rows], fontsize=7)
    ax.set_xticks(range(len(cols)), [event_names[events[j]] for j in cols], fontsize=6,
                  rotation=90)
    ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.02, label="cosine similarity")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def probe_folds(dataset, seed: int = 0) -> np.ndarray:
    """Each clip's fold: the data's own, else a seeded 5-way stratified split."""
    if dataset.has_folds:
        return np.array([it.fold for it in dataset.items])
    y = dataset.targets
    rng = np.random.default_rng(seed)
    folds = np.zeros(len(y), int)
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        folds[idx] = np.arange(len(idx)) % 5 + 1
    return folds


BASELINE_NAME = "log-mel baseline (no teacher)"


def probe_baseline(dataset, waves, test_folds, seed=0, echo=print) -> dict:
    """The same probe on plain log-mel statistics (``edgeaudio.train.baseline``): a teacher
    well below it does not know these sounds."""
    from .baseline import baseline_features

    x = baseline_features(waves, 16000)
    folds = probe_folds(dataset, seed)
    result = cross_validate(x, dataset.targets, folds, test_folds or sorted(set(folds.tolist())),
                            seed, progress=lambda f: echo(f"  baseline fold {f['fold']}: "
                                                          f"{100 * f['accuracy']:.1f} %"))
    result.update({"teacher": BASELINE_NAME, "dim": int(x.shape[1]), "n_clips": len(x)})
    return result


def probe_teacher(names, dataset, waves, clips, test_folds, out: Path | None, seed=0,
                  echo=print) -> dict:
    """Cross-validate one teacher (or a '+'-joined concatenation); write metrics and plots."""
    from .cache import EmbeddingCache, teacher_features
    from .teachers.registry import get_teacher, parse_teacher_names

    parts = parse_teacher_names(names)
    embeddings, info = teacher_features(parts, clips, waves, 16000, EmbeddingCache(),
                                        progress=True)
    x = pool(embeddings)
    y = dataset.targets
    folds = probe_folds(dataset, seed)
    test_folds = test_folds or sorted(set(folds.tolist()))
    name = "+".join(parts)
    result = cross_validate(x, y, folds, test_folds, seed,
                            progress=lambda f: echo(f"  {name} fold {f['fold']}: "
                                                    f"{100 * f['accuracy']:.1f} % (C={f['C']})"))
    result.update({"teacher": name, "dim": int(x.shape[1]), "n_clips": int(len(y)),
                   "weights_sha256": info["weights_sha256"], "protocol":
                   "mean-pooled, z-norm (train stats), L2; logistic regression; C from "
                   f"{list(C_GRID)} on a validation split of the training folds"})
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        c_final = float(np.median([f["C"] for f in result["per_fold"]]))
        norm, clf = fit_probe(x, y, c_final, seed)  # the analysis uses all clips
        class_vectors = clf.coef_
        plot_dendrogram(class_vectors, dataset.labels, out / "dendrogram.png",
                        f"{name} probe: class vectors")
        result["plots"] = ["dendrogram.png"]
        if len(parts) == 1:
            teacher = get_teacher(parts[0])
            try:
                events = events_in_probe_space(norm, teacher.event_vectors())
            except NotImplementedError as exc:
                result["event_analysis"] = f"skipped: {exc}"
            else:
                event_names = list(teacher.class_names)
                plot_similarity(class_vectors, events, dataset.labels, event_names,
                                out / "class_event_similarity.png",
                                f"{name}: target classes vs source events")
                tops = top_events(class_vectors, events, dataset.labels, event_names)
                atomic_write_text(out / "top_events.txt", "".join(
                    f"{label}: " + ", ".join(f"{e} ({s:.2f})" for e, s in evs) + "\n"
                    for label, evs in tops.items()))
                result["top_events"] = {k: [e for e, _ in v] for k, v in tops.items()}
                result["plots"].append("class_event_similarity.png")
        atomic_write_json(out / "metrics.json", result)
    return result


@click.command("probe")
@click.option("--teacher", "teachers", multiple=True, default=("all",), show_default=True,
              help="Teacher name, 'a+b' for a concatenation, or 'all' (repeatable).")
@click.option("--data", required=True, type=click.Path(exists=True),
              help="Folder (one sub-folder per class), CSV (path,label[,fold]) or ESC-50 folder.")
@click.option("--layout", "--recipe", "recipe", default=None,
              help="A known dataset layout (esc50); --recipe is its old name.")
@click.option("--folds", default=None, help="Test folds, e.g. 1-5 (default: every fold).")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Folder for metrics.json and plots (one sub-folder per teacher).")
@click.option("--seed", default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def probe_command(teachers, data, recipe, folds, out, seed, as_json):
    """Linear probes of pretrained teachers' embeddings on your data: how much each teacher
    already knows about your classes (and so which to distil from).

    \b
    Examples:
      edgeaudio probe --teacher all --data my_recordings/
      edgeaudio probe --teacher yamnet --data ../shared/data/esc50 --layout esc50 \\
          --out probes/yamnet-esc50
      edgeaudio probe --teacher yamnet+efficientat --data labels.csv --folds 1-5
    """
    from .baseline import MARGIN_POINTS
    from .data import load_dataset, load_waveforms, parse_folds
    from .teachers.registry import list_teachers

    names = []
    for t in teachers:  # all: every teacher, and all of them concatenated
        names += list_teachers() + ["+".join(list_teachers())] if t == "all" else [t]
    dataset = load_dataset(data, recipe)
    waves, _ = load_waveforms(dataset.items, 16000, progress=True)
    clips = [str(Path(it.path).resolve()) for it in dataset.items]
    echo = (lambda *_: None) if as_json else click.echo
    results = []
    for name in names:
        sub = Path(out) / name.replace("+", "_") if out else None
        results.append(probe_teacher([name], dataset, waves, clips, parse_folds(folds), sub,
                                     seed, echo=echo))
    results.append(probe_baseline(dataset, waves, parse_folds(folds), seed, echo=echo))
    if as_json:
        click.echo(json.dumps([{k: r[k] for k in ("teacher", "dim", "mean_accuracy",
                                                   "std_accuracy", "per_fold")}
                               for r in results], indent=2))
        return
    click.echo(f"\n{'teacher':<30} {'dim':>6} {'accuracy':>10}  folds")
    for r in sorted(results, key=lambda r: -r["mean_accuracy"]):
        click.echo(f"{r['teacher']:<30} {r['dim']:>6} {100 * r['mean_accuracy']:>8.1f} %  "
                   + " ".join(f"{100 * f['accuracy']:.1f}" for f in r["per_fold"]))
    baseline = results[-1]["mean_accuracy"]
    below = [r["teacher"] for r in results[:-1]
             if 100 * (baseline - r["mean_accuracy"]) > MARGIN_POINTS]
    click.echo(f"\nA teacher more than {MARGIN_POINTS:g} points below the {BASELINE_NAME} does "
               f"not know these sounds: distilling from it teaches the student less than the "
               f"labels do, and `edgeaudio train` leaves such a --kd-teacher out "
               f"(--keep-teachers keeps it)."
               + (f" Here: {', '.join(below)}." if below else " Here: none."))
