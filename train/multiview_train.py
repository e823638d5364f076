"""Training a multi-view network: ``edgeaudio train --student multiview --views ... --blend ...``.

The pieces (views, branches, heads, fusion modes, gradient blending, self-ensemble) live in
``edgeaudio.train.multiview`` and ``edgeaudio.train.blending``; this module is the loop around
them, on the run scaffold every loop shares (``edgeaudio.train.run``: run folder, resume
checks, seeding by (seed, epoch), epoch bar and log), with the shared schedule, crops,
SpecAugment, classification report and plots:

- waveform crops with random gain (``make_crops``), mixup of waveforms with soft targets,
  the views computed per batch (they are cheap next to the branches: ~15 % of a step for all
  four), SpecAugment on each spectral view, then every head's cross-entropy;
- ``--blend`` picks the fusion mode: ``adaptive`` (all heads, weights from gradient blending,
  read out as the self-ensemble), ``none`` (concatenation fusion: the joint head alone; with
  one view, the single-view baseline), ``late`` (per-view heads, mean of their probabilities),
  ``uniform`` (all heads, equal fixed weights, joint read-out);
- blending measures every head's loss every ``blend_every`` steps (default: once per epoch)
  on a fixed subset of training clips and on a validation split carved from the training
  clips (``val_fraction``, stratified). That split is held out in *every* fusion mode, so
  the modes train on the same clips and compare fairly; it never touches the test fold.

A run folder holds ``checkpoint.pt`` (every epoch, atomic; ``--resume`` continues to the same
result: each epoch's randomness is seeded by (seed, epoch)), ``metrics.json`` (held-out
accuracy of the read-out and of every trained head, the self-ensemble, late-fusion mean,
blending weights per recomputation, per-branch parameters and MACs, training time),
``weights.png`` (adaptive: the weight trajectories), ``curves.png``, ``confusion.png`` and
``train.log``.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from edgeaudio.errors import EdgeAudioError

from .augment import spec_augment
from .blending import plot_weights
from .checkpoint import save_checkpoint
from .config import Settings
from .data import (clip_batches, decode_dataset, load_dataset, make_crops, require_classes,
                   split_indices, validation_split)
from .evaluation import classification_report
from .multiview import MultiViewNet, MultiViewObjective, describe_costs, self_ensemble
from .plots import plot_confusion, plot_curves
from .run import EpochLoop, RunFolder
from .schedule import adamw, schedule_step
from .views import parse_views

# --blend value -> MultiViewObjective mode
BLEND_MODES = {"adaptive": "blend", "none": "concat", "late": "late", "uniform": "uniform"}
STUDENT_NAME = "multiview"


class MultiViewTrainError(EdgeAudioError):
    pass


@dataclass
class MultiViewConfig(Settings):
    """The settings of a multi-view run (``edgeaudio train --student multiview``)."""

    RENAMED = {"recipe": "layout"}

    data: str
    layout: str | None = None
    fold: int | None = None
    views: str = "mel,gammatone,cqt,raw"
    blend: str = "adaptive"                 # a key of BLEND_MODES
    epochs: int = 60
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-2
    warmup_epochs: int = 2
    seed: int = 0
    crop_seconds: float | None = None       # None: min(4 s, longest clip)
    gain_db: float = 6.0
    mixup: float = 0.3                      # Beta(a, a); 0 = off
    specaugment: bool = True
    time_masks: int = 2                     # names as in TrainConfig: spec_augment reads them
    time_mask_frames: int = 10              # 20 ms frames: up to 0.2 s
    freq_masks: int = 2
    freq_mask_bins: int = 8
    blend_every: int | None = None          # steps between weight updates; None: one epoch
    blend_window: int = 3                   # W: measurements averaged
    blend_floor: float = 0.0
    val_fraction: float = 0.1               # of the training clips, held out for blending
    test_fraction: float = 0.2              # held out as the test split when data has no folds
    train_fraction: float = 1.0
    skip_unreadable: bool = False
    eval_every: int = 1
    branch: dict = field(default_factory=dict)      # CRNNBranch sizes (channels, rnn_hidden)
    raw_branch: dict = field(default_factory=dict)  # RawBranch sizes

    @property
    def mode(self) -> str:
        return BLEND_MODES[self.blend]

    def validate(self) -> None:
        if self.blend not in BLEND_MODES:
            raise MultiViewTrainError(f"unknown --blend {self.blend!r} (known: "
                                      f"{', '.join(BLEND_MODES)})")
        try:
            views = parse_views(self.views)
        except ValueError as exc:
            raise MultiViewTrainError(f"--views: {exc}") from None
        if self.mode in ("blend", "late", "uniform") and len(views) < 2:
            raise MultiViewTrainError(f"--blend {self.blend} fuses several views; with one "
                                      f"view use --blend none (the single-view baseline)")
        if self.epochs < 1 or self.batch_size < 2:
            raise MultiViewTrainError("--epochs must be >= 1 and the batch size >= 2")
        if not 0.0 < self.val_fraction < 1.0:
            raise MultiViewTrainError("val_fraction must be in (0, 1)")



@torch.no_grad()
def fixed_view_batches(model: MultiViewNet, waves: list, targets: np.ndarray,
                       indices: np.ndarray, min_samples: int) -> list:
    """``[(view inputs, targets)]`` of whole clips, computed once: the blending measurements
    run on the same clips every time, so their views are kept."""
    batches = []
    for chunk, wave in clip_batches(waves, indices, min_samples):
        batches.append((model.view_inputs(wave),
                        torch.from_numpy(targets[indices[np.asarray(chunk)]])))
    return batches


@torch.no_grad()
def predict_heads(model: MultiViewNet, waves: list, indices: np.ndarray,
                  min_samples: int) -> dict[str, np.ndarray]:
    """Logits of every head on whole clips: ``{head: [len(indices), n_classes]}``."""
    was_training = model.training
    model.eval()
    out = {name: np.zeros((len(indices), model.n_classes), np.float32)
           for name in model.head_names}
    try:
        for chunk, wave in clip_batches(waves, indices, min_samples):
            logits = model(wave)
            for name in model.head_names:
                out[name][chunk] = logits[name].numpy()
    finally:
        model.train(was_training)
    return out


def readout_accuracies(objective: MultiViewObjective, logits: dict, targets: np.ndarray
                       ) -> dict:
    """Held-out accuracy of the mode's read-out, of every trained head, and of the fusions
    that can be read from the same heads (self-ensemble, late-fusion mean)."""
    tensors = {name: torch.from_numpy(value) for name, value in logits.items()}
    acc = {}

    def accuracy(probs: torch.Tensor) -> float:
        return float((probs.argmax(1).numpy() == targets).mean())

    acc["readout"] = accuracy(objective.predict_proba(tensors))
    acc["heads"] = {name: accuracy(tensors[name]) for name in objective.trained}
    if objective.mode == "blend":
        acc["self_ensemble"] = acc["readout"]
        acc["self_ensemble_uniform"] = accuracy(self_ensemble(
            tensors, {name: 1.0 for name in objective.trained}))
    if len(objective.view_names) > 1 and objective.mode != "concat":
        acc["late_mean"] = accuracy(self_ensemble(
            tensors, {name: 1.0 for name in objective.view_names}))
    return acc


def train_multiview(cfg: MultiViewConfig, out_dir, *, resume: bool = False,
                    progress: bool = True, stop_after_epoch: int | None = None,
                    threads: int | None = 1) -> dict:
    """Train one multi-view run into ``out_dir``; returns ``metrics.json``'s content (or
    ``{"stopped_after_epoch": k}`` when ``stop_after_epoch`` stops it early, as a kill
    would: the checkpoint is written, nothing else)."""
    cfg.validate()
    if threads:
        torch.set_num_threads(threads)
    run = RunFolder(out_dir, cfg, resume=resume, error=MultiViewTrainError, echo=progress)
    state = run.state

    dataset = require_classes(load_dataset(cfg.data, cfg.layout))
    labels = dataset.labels
    torch.manual_seed(cfg.seed)
    model = MultiViewNet(cfg.views, len(labels), branch=cfg.branch, raw_branch=cfg.raw_branch)
    rate = model.sample_rate
    # labels stay: an emptied class raises
    dataset, waves = decode_dataset(dataset, rate, skip_unreadable=cfg.skip_unreadable,
                                    progress=progress)
    targets = dataset.targets
    all_train, test_idx = split_indices(dataset, cfg.fold, seed=cfg.seed,
                                        test_fraction=cfg.test_fraction,
                                        train_fraction=cfg.train_fraction)
    train_idx, val_idx = validation_split(dataset, all_train, fraction=cfg.val_fraction,
                                          seed=cfg.seed)
    run.write_json("data_report.json",
                   {**dataset.report(), "train_items": int(len(train_idx)),
                    "blend_validation_items": int(len(val_idx)),
                    "test_items": int(len(test_idx)), "test_fold": cfg.fold})

    view = model.views[model.view_names[0]]
    hop, win = view.hop_length, view.win_length
    longest = max(len(w) for w in waves) / rate
    crop_s = cfg.crop_seconds if cfg.crop_seconds else min(4.0, longest)
    min_samples = win + 15 * hop  # 16 frames: two branch steps at least
    crop_samples = max(int(round(crop_s * rate)), min_samples)
    window_frames = 1 + (crop_samples - win) // hop
    batch_size = min(cfg.batch_size, len(train_idx))
    steps_per_epoch = max(1, len(train_idx) // batch_size)
    objective = MultiViewObjective(model, mode=cfg.mode, window=cfg.blend_window,
                                   every=cfg.blend_every or steps_per_epoch,
                                   floor=cfg.blend_floor)
    optimizer = adamw(model.parameters(), cfg.lr, cfg.weight_decay)
    val_batches = fixed_view_batches(model, waves, targets, val_idx, min_samples)
    subset = np.sort(np.random.default_rng([cfg.seed, 4243]).choice(
        train_idx, size=min(len(train_idx), len(val_idx)), replace=False))
    train_subset = fixed_view_batches(model, waves, targets, subset, min_samples)
    spectral = [name for name in model.view_names if name != "raw"]

    history: list[dict] = []
    start_epoch, train_seconds = 0, 0.0
    if state is not None:
        model.load_state_dict(state["model_state"])
        ts = state["train_state"]
        optimizer.load_state_dict(ts["optimizer"])
        objective.load_state_dict(ts["objective"])
        history = list(ts["history"])
        start_epoch, train_seconds = int(state["epoch"]), float(ts["train_seconds"])
        run.log(f"resuming after epoch {start_epoch}")

    def save(epoch: int, metrics: dict | None = None) -> None:
        save_checkpoint(run.checkpoint_path, student_name=STUDENT_NAME, frontend_settings=model.settings,
                        labels=labels, window_frames=window_frames,
                        model_state=model.state_dict(), epoch=epoch, config=cfg.to_dict(),
                        metrics=metrics or {},
                        train_state={"optimizer": optimizer.state_dict(),
                                     "objective": objective.state_dict(), "history": history,
                                     "train_seconds": train_seconds})

    epochs = EpochLoop(run, seed=cfg.seed, epochs=cfg.epochs, steps=steps_per_epoch,
                       start_epoch=start_epoch, progress=progress, stop_after=stop_after_epoch)
    for ep in epochs:
        epoch, rng = ep.epoch, ep.rng
        model.train()
        order = train_idx[rng.permutation(len(train_idx))]
        sums: dict[str, float] = {"loss": 0.0}
        correct = seen = 0
        for step in range(steps_per_epoch):
            global_step = schedule_step(optimizer, cfg, epoch, step, steps_per_epoch) + 1
            idx = order[step * batch_size:(step + 1) * batch_size]
            crops = make_crops(waves, idx, crop_samples, rate, rng, gain_db=cfg.gain_db)
            x = torch.from_numpy(crops.waves)
            soft = F.one_hot(torch.from_numpy(targets[idx]), len(labels)).float()
            if cfg.mixup > 0:
                lam = float(rng.beta(cfg.mixup, cfg.mixup))
                lam = max(lam, 1.0 - lam)  # the first clip dominates
                perm = torch.from_numpy(rng.permutation(len(idx)))
                x = lam * x + (1.0 - lam) * x[perm]
                soft = lam * soft + (1.0 - lam) * soft[perm]
            with torch.no_grad():
                inputs = model.view_inputs(x)
            if cfg.specaugment:
                for name in spectral:
                    inputs[name] = spec_augment(inputs[name], rng, cfg, 1)
            outputs = model.forward_views(inputs)
            loss, parts = objective.loss(outputs, soft)
            ep.check_finite(loss, step)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            sums["loss"] += loss.item()
            for name, value in parts.items():
                sums[f"ce_{name}"] = sums.get(f"ce_{name}", 0.0) + value
            with torch.no_grad():
                probs = objective.predict_proba({k: v.detach() for k, v in outputs.items()})
            correct += int((probs.argmax(1) == torch.from_numpy(targets[idx])).sum())
            seen += len(idx)
            if objective.blender is not None and objective.blender.due(global_step):
                objective.after_step(global_step, model, train_subset, val_batches)
                weights = objective.weights
                run.log(f"step {global_step}: blending weights " + ", ".join(
                    f"{k} {v:.3f}" for k, v in weights.items()), echo=False)
            ep.step_done(loss=f"{sums['loss'] / (step + 1):.3f}", acc=f"{correct / seen:.3f}")
        times = ep.training_done()
        train_seconds += times["seconds"]
        record = {**{k: v / steps_per_epoch for k, v in sums.items()},
                  "train_acc": correct / max(1, seen), "lr": optimizer.param_groups[0]["lr"],
                  "weights": objective.weights, **times}
        if len(test_idx) and (epoch % cfg.eval_every == 0 or epoch == cfg.epochs):
            t_eval, cpu_eval = time.time(), time.process_time()
            logits = predict_heads(model, waves, test_idx, min_samples)
            t = targets[test_idx]
            record["test_acc"] = readout_accuracies(objective, logits, t)["readout"]
            record["test_loss"] = float(F.nll_loss(torch.log(objective.predict_proba(
                {k: torch.from_numpy(v) for k, v in logits.items()}) + 1e-12),
                torch.from_numpy(t)))
            record["eval_seconds"] = round(time.time() - t_eval, 2)
            record["eval_cpu_seconds"] = round(time.process_time() - cpu_eval, 2)
        ep.finish(record, history,
                  lambda k, r: save(k, {"last_epoch": {n: v for n, v in r.items()
                                                       if n != "weights"}}),
                  "epoch {epoch:3d}  loss {loss:.4f}  train acc {train_acc:.3f}  "
                  "held-out acc {test}  ({seconds:.0f} s)")
        if ep.stop:
            return {"stopped_after_epoch": epoch}

    metrics: dict = {"labels": labels, "student": STUDENT_NAME, "views": model.view_names,
                     "blend": cfg.blend, "mode": cfg.mode, "epochs": cfg.epochs,
                     "test_fold": cfg.fold, "n_train": int(len(train_idx)),
                     "n_blend_validation": int(len(val_idx)), "n_test": int(len(test_idx))}
    readout_name = {"blend": "self-ensemble (final blending weights)", "concat": "joint head",
                    "late": "mean of the view heads' probabilities",
                    "uniform": "joint head"}[cfg.mode]
    if len(test_idx):
        logits = predict_heads(model, waves, test_idx, min_samples)
        t = targets[test_idx]
        accs = readout_accuracies(objective, logits, t)
        probs = objective.predict_proba({k: torch.from_numpy(v) for k, v in logits.items()})
        report = classification_report(t, probs.argmax(1).numpy(), labels)
        metrics.update(report)
        metrics["accuracy_by_readout"] = accs
        plot_confusion(report["confusion"], labels, run.out_dir / "confusion.png",
                       f"multiview {'+'.join(model.view_names)} --blend {cfg.blend}: "
                       f"{report['accuracy']:.3f}")
    costs = describe_costs(model, crop_samples / rate)
    metrics.update({
        "readout": readout_name,
        "params": sum(p.numel() for p in model.parameters()),
        "costs_per_crop": {"seconds": crop_samples / rate, **costs},
        "macs_per_second": int(sum(c["macs"] for c in costs.values()) * rate / crop_samples),
        "train_seconds": round(train_seconds, 1),
        "seconds_per_epoch": round(float(np.mean([h["seconds"] for h in history])), 1),
        "crop_seconds": crop_samples / rate,
        "history": history, "config": cfg.to_dict(), "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    })
    if objective.blender is not None:
        blender = objective.blender
        metrics["blending"] = {"window": blender.window, "every": blender.every,
                               "floor": blender.floor, "final_weights": objective.weights,
                               "history": blender.history}
        plot_weights(blender, run.out_dir / "weights.png",
                     f"blending weights, {'+'.join(model.view_names)} "
                     f"(W={blender.window}, every {blender.every} steps)")
    plot_curves(history, run.out_dir / "curves.png",
                f"multiview {'+'.join(model.view_names)} --blend {cfg.blend}")
    save(cfg.epochs, {k: metrics[k] for k in ("accuracy", "macro_f1") if k in metrics})
    run.write_json("metrics.json", metrics)
    acc = metrics.get("accuracy")
    run.log(f"done: held-out accuracy {acc:.4f} ({readout_name}), "
            f"{train_seconds / 60:.1f} min" if acc is not None else "done")
    return metrics
