"""Training and evaluation of a harmonic-CNN student, with teachers at training time only.

``train(config, out_dir)`` runs one fold; ``train_cv`` runs several; ``evaluate_run`` scores a
finished run. A run folder holds ``checkpoint.pt`` (every epoch, atomic, see
``edgeaudio.train.checkpoint``), ``metrics.json``, ``curves.png``, ``confusion.png``,
``data_report.json`` and ``train.log``.

Determinism: every epoch draws its shuffling, crops, gains, mixup and SpecAugment from
generators seeded by ``(seed, epoch)`` and reseeds torch (dropout) the same way, so a run
resumed from the checkpoint of epoch k continues exactly as the uninterrupted run would.

Per step: random crops (+gain) -> mixup (waveforms; labels, teacher frames and probe targets
mixed with the same weight) -> student front end -> SpecAugment -> embedding ``l`` ->
classifier. Loss = (1 - kd) CE + kd KD(probe) + alpha Reg(l, v) with ``v`` the cached teacher
frames covering each crop, aligned to the student's embedding frames. With ``contrastive``
(after its warm-up epochs) the step also takes an unlabeled batch and adds
``contrastive_weight * NT-Xent`` between the labeled and unlabeled crops and their batch-split
mixed views (``edgeaudio.train.contrastive``); its draws come from a generator of its own,
seeded by ``(seed, epoch)``, so resuming stays exact and the default path is untouched.
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from edgeaudio.errors import EdgeAudioError

from .cache import CacheStats, EmbeddingCache, split_teacher_names, teacher_features
from .checkpoint import load_checkpoint, load_student, save_checkpoint
from .contrastive import LAMBDA, TAU, ProjectionHead, mixed_view_loss
from .data import (UNLABELED_REST, Dataset, DatasetError, Item, drop_items, frames_covering,
                   load_dataset, load_waveforms, make_crops, select_classes, split_indices,
                   unlabeled_items)
from .losses import (DEFAULT_ALPHA, METHODS, REGULARIZERS, FusionHead, Regularizer,
                     fit_crossfit_probes, kd_loss, mixup_cross_entropy)
from .students import (build_student, count_macs_per_second, count_params,
                       student_frontend_settings)
from .teachers.base import align_frames
from .teachers.fitted import kd_head_for


class TrainError(EdgeAudioError):
    pass


CONTRASTIVE_STREAM = 5801  # names the contrastive term's own random stream (seed, epoch, this)


@dataclass
class TrainConfig:
    data: str
    recipe: str | None = None
    fold: int | None = None
    student: str = "small"
    teachers: list = field(default_factory=list)     # for the regulariser / fusion
    reg: str = "none"
    alpha: float | None = None                         # None: 5 for con, 1 for dis
    method: str = "student"                            # or a fusion baseline
    kd: float = 0.0                                    # weight of probe distillation
    kd_teachers: list = field(default_factory=list)   # default: efficientat
    kd_temperature: float = 2.0
    # teacher-labelled mixtures: per training clip, this many mixtures with other clips are
    # planned (seeded) before training and run through the teachers once (cached); a batch
    # then draws each clip's mixture with ``mixture_prob`` and the KD / Con-Reg targets are
    # the teachers' own outputs on that mixture (not a blend of the clean targets).
    # 0 = off: mixup blends clean clips and their targets.
    kd_mixtures: int = 0
    mixture_prob: float = 0.8
    classes: str | None = None                         # labeled subset: "esc10" or "dog,rain"
    # cross-domain contrastive regularization (Lee & Lee) on an unlabeled pool: folders of
    # audio, CSVs (labels ignored) or "rest" (the clips outside ``classes``, held-out fold
    # excluded)
    contrastive: bool = False
    unlabeled: list = field(default_factory=list)
    contrastive_weight: float = LAMBDA
    contrastive_warmup: int | None = None              # None: the first 10 % of the epochs
    epochs: int = 60
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-2
    warmup_epochs: int = 3
    seed: int = 0
    crop_seconds: float | None = None                  # None: min(4 s, longest clip)
    gain_db: float = 6.0
    mixup: float = 0.3                                 # Beta(a, a); 0 = off
    specaugment: bool = True
    time_masks: int = 2
    time_mask_frames: int = 20
    freq_masks: int = 2
    freq_mask_bins: int = 8                            # semitones, across all harmonics
    train_fraction: float = 1.0
    val_fraction: float = 0.2                          # held out when the data has no folds
    skip_unreadable: bool = False
    eval_every: int = 1
    steps_per_epoch: int | None = None                 # None: one pass over the training clips
    channels_last: bool = True

    def resolved_alpha(self) -> float:
        return DEFAULT_ALPHA[self.reg] if self.alpha is None else float(self.alpha)

    def resolved_contrastive_warmup(self) -> int:
        """Epochs on labels alone before the contrastive term joins."""
        if self.contrastive_warmup is not None:
            return int(self.contrastive_warmup)
        return int(round(0.1 * self.epochs))

    def validate(self) -> None:
        if self.reg not in REGULARIZERS:
            raise TrainError(f"unknown --reg {self.reg!r} (known: {', '.join(REGULARIZERS)})")
        if self.method not in METHODS:
            raise TrainError(f"unknown method {self.method!r} (known: {', '.join(METHODS)})")
        if (self.reg != "none" or self.method != "student") and not self.teachers:
            raise TrainError(f"--reg {self.reg} / method {self.method} needs at least one "
                             f"--teacher")
        if self.epochs < 1 or self.batch_size < 2:
            raise TrainError("--epochs must be >= 1 and the batch size >= 2")
        if not 0.0 <= self.kd <= 1.0:
            raise TrainError(f"--kd is a weight in [0, 1], got {self.kd}")
        if self.kd_mixtures < 0 or not 0.0 <= self.mixture_prob <= 1.0:
            raise TrainError("--kd-mixtures must be >= 0 and --mixture-prob in [0, 1]")
        if self.contrastive and not self.unlabeled:
            raise TrainError("--contrastive needs unlabeled audio: --unlabeled FOLDER "
                             "(repeatable; or a CSV, or 'rest' with --classes)")
        if self.unlabeled and not self.contrastive:
            raise TrainError("--unlabeled is used by --contrastive only: add --contrastive")
        if UNLABELED_REST in self.unlabeled and not self.classes:
            raise TrainError("--unlabeled rest means the clips of the classes outside "
                             "--classes: give --classes (e.g. esc10)")
        if self.contrastive and self.resolved_contrastive_warmup() >= self.epochs:
            raise TrainError(f"--contrastive-warmup {self.resolved_contrastive_warmup()} leaves "
                             f"no epoch of --epochs {self.epochs} for the contrastive term")
        if self.contrastive_weight < 0:
            raise TrainError(f"--contrastive-weight must be >= 0, got {self.contrastive_weight}")
        if self.steps_per_epoch is not None and self.steps_per_epoch < 1:
            raise TrainError(f"--steps-per-epoch must be >= 1, got {self.steps_per_epoch}")

    def to_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


# ---------------------------------------------------------------------------- helpers


def log_line(out_dir: Path | None, text: str, echo: bool = True) -> None:
    if echo:
        print(text, file=sys.stderr, flush=True)
    if out_dir is not None:
        with open(Path(out_dir) / "train.log", "a", encoding="utf-8") as handle:
            handle.write(text + "\n")


def write_json(path: Path, payload) -> None:
    tmp = Path(path).with_name(Path(path).name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


def epoch_order(indices: np.ndarray, n_needed: int, rng: np.random.Generator) -> np.ndarray:
    """``indices`` shuffled, in as many passes (each reshuffled) as ``n_needed`` draws take."""
    passes = max(1, -(-n_needed // len(indices)))
    return np.concatenate([indices[rng.permutation(len(indices))] for _ in range(passes)])


def load_run_dataset(cfg: TrainConfig) -> tuple[Dataset, Dataset]:
    """(the labeled dataset of a run: ``cfg.data`` restricted to ``cfg.classes``, the rest)."""
    return select_classes(load_dataset(cfg.data, cfg.recipe), cfg.classes)


def lr_factor(step: int, steps_per_epoch: int, epochs: int, warmup_epochs: int) -> float:
    """Linear warm-up then cosine decay to 0, as a function of the global step."""
    total = max(1, steps_per_epoch * epochs)
    warm = min(total - 1, steps_per_epoch * warmup_epochs)
    if step < warm:
        return (step + 1) / (warm + 1)
    progress = (step - warm) / max(1, total - warm)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def training_features(student, wave: torch.Tensor) -> torch.Tensor:
    """The student's features for training: the power spectrum in float64 (as the runtime
    computes it, no gradient needed), then the learnable filterbank product in float32.
    Equal to ``student.features`` within ~1e-6 and about twice as fast with its backward."""
    frontend = student.frontend
    with torch.no_grad():
        power = frontend.power_spectrum(wave).float()
    return torch.log(power @ frontend.filterbank_matrix().float().T + frontend.spec.log_offset)


def spec_augment(feats: torch.Tensor, rng: np.random.Generator, cfg: TrainConfig,
                 n_harmonics: int) -> torch.Tensor:
    """Time masks and frequency masks (the same semitones in every harmonic) set to each
    clip's mean feature value."""
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


def mixture_batch(prep, cfg: TrainConfig, idx: np.ndarray, rng: np.random.Generator,
                  kd_frames) -> dict:
    """Per clip of the batch: with ``mixture_prob`` one of its planned mixtures (waveform,
    the teachers' frames on it, mixing weight, partner), else the clean clip."""
    use = rng.random(len(idx)) < cfg.mixture_prob
    choice = rng.integers(0, cfg.kd_mixtures, size=len(idx))
    out = {"waves": [], "reg_frames": [] if prep.teacher_frames is not None else None,
           "kd_frames": [] if kd_frames is not None else None,
           "lam": np.ones(len(idx), np.float32), "partner": np.array(idx)}
    for r, i in enumerate(idx):
        i = int(i)
        if use[r]:
            m = int(choice[r])
            j, lam, offset = prep.mix_plan[i][m]
            out["waves"].append(mixture_wave(prep.waves, i, j, lam, offset))
            out["lam"][r], out["partner"][r] = lam, j
            if out["reg_frames"] is not None:
                out["reg_frames"].append(prep.mix_reg_frames[(i, m)])
            if out["kd_frames"] is not None:
                out["kd_frames"].append(prep.mix_kd_frames[(i, m)])
        else:
            out["waves"].append(prep.waves[i])
            if out["reg_frames"] is not None:
                out["reg_frames"].append(prep.teacher_frames[i])
            if out["kd_frames"] is not None:
                out["kd_frames"].append(kd_frames[i])
    return out


def teacher_targets(frames: list[np.ndarray], crops, n_out: int) -> np.ndarray:
    """Teacher frames covering each crop, aligned to ``n_out`` student embedding frames."""
    out = np.empty((len(crops.clip_index), n_out, frames[0].shape[1]), dtype=np.float32)
    for row, idx in enumerate(crops.clip_index):
        emb = frames[idx]
        a, b = frames_covering(emb.shape[0], crops.clip_s[row], crops.start_s[row],
                               crops.end_s[row])
        out[row] = align_frames(emb[a:b], n_out)
    return out


def pooled_crops(frames: list[np.ndarray], crops) -> np.ndarray:
    """Mean of the teacher frames covering each crop, ``[B, B_F]``."""
    rows = []
    for row, idx in enumerate(crops.clip_index):
        emb = frames[idx]
        a, b = frames_covering(emb.shape[0], crops.clip_s[row], crops.start_s[row],
                               crops.end_s[row])
        rows.append(emb[a:b].mean(axis=0))
    return np.stack(rows)


@dataclass
class Prepared:
    """Everything a run needs besides the model: data, waveforms, teacher frames, probes."""

    dataset: Dataset
    waves: list
    train_idx: np.ndarray
    test_idx: np.ndarray
    crop_samples: int
    teacher_frames: list | None
    teacher_info: dict | None
    probes: object | None
    kd_info: dict | None
    cache_stats: dict
    mix_plan: dict | None = None         # item -> [(partner, lam, offset), ...]
    mix_reg_frames: dict | None = None   # (item, m) -> teacher frames of that mixture
    mix_kd_frames: dict | None = None
    unlabeled_waves: list | None = None  # the contrastive pool, decoded like the labeled clips
    unlabeled_report: dict | None = None


def prepare(cfg: TrainConfig, *, progress: bool = True, cache: EmbeddingCache | None = None,
            get_teacher: Callable | None = None, out_dir: Path | None = None,
            dataset: Dataset | None = None, waves: list | None = None) -> Prepared:
    settings = student_frontend_settings(cfg.student)
    rate = int(settings["sample_rate"])
    if dataset is None:
        dataset = load_run_dataset(cfg)[0]
    # listed before any decoding, so that a bad --unlabeled fails at once
    pool = unlabeled_pool(cfg, dataset) if cfg.contrastive else None
    if waves is None:
        waves, bad = load_waveforms(dataset.items, rate, skip_unreadable=cfg.skip_unreadable,
                                    progress=progress)
        dataset, waves = drop_items(dataset, waves, bad)
    train_idx, test_idx = split_indices(dataset, cfg.fold, seed=cfg.seed,
                                        val_fraction=cfg.val_fraction,
                                        train_fraction=cfg.train_fraction)
    longest = max(len(w) for w in waves) / rate
    crop_s = cfg.crop_seconds if cfg.crop_seconds else min(4.0, longest)
    crop_samples = int(round(crop_s * rate))
    min_samples = settings["win_length"] + 31 * settings["hop_length"]
    crop_samples = max(crop_samples, min_samples)  # 32 frames: 4 embedding frames at least
    cache = cache or EmbeddingCache()
    stats = CacheStats()
    clips = [str(Path(item.path).resolve()) for item in dataset.items]
    teacher_frames = teacher_info = None
    if cfg.teachers and (cfg.reg != "none" or cfg.method != "student"):
        teacher_frames, teacher_info = teacher_features(
            cfg.teachers, clips, waves, rate, cache, progress=progress,
            get_teacher=get_teacher, stats=stats)
    probes = kd_info = None
    if cfg.kd > 0:
        kd_names = cfg.kd_teachers or ["efficientat"]
        if split_teacher_names(kd_names) == split_teacher_names(cfg.teachers or []) \
                and teacher_frames is not None:
            kd_frames, kd_desc = teacher_frames, teacher_info
        else:
            kd_frames, kd_desc = teacher_features(kd_names, clips, waves, rate, cache,
                                                  progress=progress, get_teacher=get_teacher,
                                                  stats=stats)
        pooled = np.stack([f.mean(axis=0) for f in kd_frames])
        targets = dataset.targets
        t0 = time.time()
        # a fitted teacher (edgeaudio teacher fit) on the run's classes has its own heads
        head = kd_head_for(split_teacher_names(kd_names), dataset.labels, get_teacher)
        if head is not None:
            probes = head
            test_acc = float((head.probabilities(pooled[test_idx]).argmax(1)
                              == targets[test_idx]).mean()) if len(test_idx) else float("nan")
            kd_info = {"teachers": kd_desc["teachers"], "dim": kd_desc["dim"],
                       "source": "the fitted teacher's own heads",
                       "teacher_test_accuracy": test_acc, "_frames": kd_frames}
            log_line(out_dir, f"KD from the heads of {'+'.join(kd_desc['teachers'])}: "
                              f"held-out acc {test_acc:.3f}")
        else:
            probes = fit_crossfit_probes(pooled, targets, train_idx, len(dataset.labels),
                                         seed=cfg.seed)
            test_acc = float((probes.full.logits(pooled[test_idx]).argmax(1)
                              == targets[test_idx]).mean()) if len(test_idx) else float("nan")
            kd_info = {"teachers": kd_desc["teachers"], "dim": kd_desc["dim"], "c": probes.c,
                       "oof_accuracy_train": probes.oof_accuracy,
                       "c_scores": {str(k): v for k, v in probes.c_scores.items()},
                       "probe_test_accuracy": test_acc, "fit_seconds": time.time() - t0,
                       "_frames": kd_frames}
            log_line(out_dir, f"probe on {'+'.join(kd_desc['teachers'])}: C={probes.c:g}, "
                              f"out-of-fold train acc {probes.oof_accuracy:.3f}, held-out acc "
                              f"{test_acc:.3f}")
    prep = Prepared(dataset, waves, train_idx, test_idx, crop_samples, teacher_frames,
                    teacher_info, probes, kd_info, stats.as_dict())
    if cfg.kd_mixtures > 0:
        prepare_mixtures(prep, cfg, clips, rate, cache, stats, get_teacher, progress)
        prep.cache_stats = stats.as_dict()
    if pool is not None:
        items, held_out_dropped = pool
        unlabeled, bad = load_waveforms(items, rate, skip_unreadable=cfg.skip_unreadable,
                                        progress=progress)
        prep.unlabeled_waves = [w for w in unlabeled if w is not None]
        prep.unlabeled_report = {
            "sources": list(cfg.unlabeled), "items": len(prep.unlabeled_waves),
            "hours": round(sum(len(w) for w in prep.unlabeled_waves) / rate / 3600, 3),
            "held_out_clips_left_out": held_out_dropped, "unreadable_skipped": bad}
        log_line(out_dir, f"unlabeled pool: {len(prep.unlabeled_waves)} clips "
                          f"({prep.unlabeled_report['hours']:.2f} h) from "
                          f"{', '.join(cfg.unlabeled)}")
    return prep


def unlabeled_pool(cfg: TrainConfig, dataset: Dataset) -> tuple[list[Item], int]:
    """The items of the contrastive pool and how many held-out clips were left out of it (an
    unlabeled folder may hold the evaluation clips: they never train the student)."""
    _, test_idx = split_indices(dataset, cfg.fold, seed=cfg.seed, val_fraction=cfg.val_fraction)
    held_out = {os.path.realpath(dataset.items[i].path) for i in test_idx}
    held_out_fold = (dataset.items[test_idx[0]].fold
                     if dataset.has_folds and len(test_idx) else None)
    rest = load_run_dataset(cfg)[1] if UNLABELED_REST in cfg.unlabeled else None
    items = unlabeled_items(cfg.unlabeled, rest, held_out_fold)
    kept = [item for item in items if os.path.realpath(item.path) not in held_out]
    if not kept:
        raise DatasetError(f"--unlabeled {' '.join(cfg.unlabeled)}: every clip is a held-out "
                           f"clip; nothing is left to learn from")
    return kept, len(items) - len(kept)


def mixture_wave(waves: list, i: int, j: int, lam: float, offset: int) -> np.ndarray:
    """``lam * clip_i + (1 - lam) * clip_j`` at clip i's length; a longer partner is cut at
    ``offset``, a shorter one starts at ``offset`` (zero-padded)."""
    base, partner = waves[i], waves[j]
    other = np.zeros_like(base)
    if len(partner) >= len(base):
        other[:] = partner[offset:offset + len(base)]
    else:
        other[offset:offset + len(partner)] = partner
    return (lam * base + (1.0 - lam) * other).astype(np.float32)


def plan_mixtures(cfg: TrainConfig, dataset: Dataset, waves: list, train_idx: np.ndarray
                  ) -> dict:
    """Seeded plan: for every training item, ``kd_mixtures`` (partner, lam, offset) with
    partners of another class where there is one, ``lam = max(b, 1 - b)``, b ~ Beta(a, a)."""
    rng = np.random.default_rng([cfg.seed, 2718])
    targets = dataset.targets
    a = cfg.mixup if cfg.mixup > 0 else 0.3
    plan = {}
    for i in train_idx:
        entries = []
        others = train_idx[targets[train_idx] != targets[i]]
        pool = others if len(others) else train_idx
        for _ in range(cfg.kd_mixtures):
            j = int(pool[rng.integers(len(pool))])
            b = float(rng.beta(a, a))
            lam = max(b, 1.0 - b)
            spare = abs(len(waves[j]) - len(waves[i]))
            offset = int(rng.integers(0, spare + 1)) if spare else 0
            entries.append((j, round(lam, 6), offset))
        plan[int(i)] = entries
    return plan


def prepare_mixtures(prep: Prepared, cfg: TrainConfig, clips: list, rate: int,
                     cache: EmbeddingCache, stats: CacheStats, get_teacher, progress: bool,
                     chunk: int = 256) -> None:
    from functools import lru_cache
    if get_teacher is None:
        from .teachers.base import get_teacher
    getter = lru_cache(maxsize=None)(get_teacher)
    prep.mix_plan = plan_mixtures(cfg, prep.dataset, prep.waves, prep.train_idx)
    keys = [(i, m) for i, entries in prep.mix_plan.items() for m in range(len(entries))]
    wanted = []
    if prep.teacher_frames is not None:
        wanted.append(("reg", cfg.teachers))
    if prep.probes is not None:
        wanted.append(("kd", cfg.kd_teachers or ["efficientat"]))
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(keys) * len(wanted), desc="teachers on planned mixtures",
                   unit="mix", file=sys.stderr)
    for role, names in wanted:
        frames = {}
        for s in range(0, len(keys), chunk):
            part = keys[s:s + chunk]
            mix_waves, mix_clips = [], []
            for i, m in part:
                j, lam, offset = prep.mix_plan[i][m]
                mix_waves.append(mixture_wave(prep.waves, i, j, lam, offset))
                mix_clips.append(f"mix:{clips[i]}|{clips[j]}|{lam:.6f}|{offset}")
            out, _ = teacher_features(names, mix_clips, mix_waves, rate, cache,
                                      get_teacher=getter, stats=stats)
            frames.update(zip(part, out))
            if bar is not None:
                bar.update(len(part))
        if role == "reg":
            prep.mix_reg_frames = frames
        else:
            prep.mix_kd_frames = frames
    if bar is not None:
        bar.close()


# ---------------------------------------------------------------------------- model


class RunModules:
    def __init__(self, cfg: TrainConfig, n_classes: int, teacher_dim: int):
        self.student = build_student(cfg.student, n_classes)
        if cfg.channels_last:
            self.student.network.to(memory_format=torch.channels_last)
        emb_dim = self.student.network.embedding_dim
        self.reg = Regularizer(cfg.reg, teacher_dim, emb_dim) if cfg.reg != "none" else None
        self.fusion = FusionHead(cfg.method, teacher_dim, emb_dim, n_classes,
                                 self.student.config.dropout) if cfg.method != "student" else None
        # training only: not part of the student, so never exported
        self.projection = ProjectionHead(emb_dim) if cfg.contrastive else None

    def aux_modules(self) -> dict:
        return {k: m for k, m in (("reg", self.reg), ("fusion", self.fusion),
                                  ("projection", self.projection)) if m is not None}

    def parameters(self):
        params = list(self.student.parameters())
        for m in self.aux_modules().values():
            params += list(m.parameters())
        return params

    def train(self, mode: bool = True):
        self.student.train(mode)
        for m in self.aux_modules().values():
            m.train(mode)

    def logits(self, feats: torch.Tensor, v: torch.Tensor | None):
        network = self.student.network
        l = network.embed(feats)
        if self.fusion is not None:
            return self.fusion(network, l, v), l
        return network.classify(l), l


def make_optimizer(modules: RunModules, cfg: TrainConfig) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for p in modules.parameters():
        (decay if p.ndim > 1 else no_decay).append(p)
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)


# ---------------------------------------------------------------------------- evaluation


@torch.no_grad()
def predict(modules: RunModules, waves: list, indices: np.ndarray, teacher_frames=None,
            batch_size: int = 32) -> np.ndarray:
    """Logits ``[len(indices), n_classes]`` on whole clips (clips of equal length batched)."""
    modules.train(False)
    network = modules.student.network
    min_samples = modules.student.frontend.spec.samples_for_frames(network.min_frames)
    out = np.zeros((len(indices), network.n_classes), dtype=np.float32)
    by_length: dict[int, list[int]] = {}
    for pos, idx in enumerate(indices):
        by_length.setdefault(max(len(waves[idx]), min_samples), []).append(pos)
    for length, positions in sorted(by_length.items()):
        for s in range(0, len(positions), batch_size):
            chunk = positions[s:s + batch_size]
            batch = np.zeros((len(chunk), length), dtype=np.float32)
            for row, pos in enumerate(chunk):
                w = waves[indices[pos]]
                batch[row, :len(w)] = w
            feats = modules.student.features(torch.from_numpy(batch))
            v = None
            if modules.fusion is not None:
                n_out = feats.shape[1] // network.time_stride
                v = torch.from_numpy(np.stack([align_frames(teacher_frames[indices[p]], n_out)
                                               for p in chunk]))
            logits, _ = modules.logits(feats, v)
            out[chunk] = logits.numpy()
    return out


def classification_report(targets: np.ndarray, predictions: np.ndarray, labels: list) -> dict:
    n = len(labels)
    confusion = np.zeros((n, n), dtype=np.int64)
    np.add.at(confusion, (targets, predictions), 1)
    per_class = {}
    f1s = []
    for c, label in enumerate(labels):
        tp = confusion[c, c]
        support = confusion[c].sum()
        predicted = confusion[:, c].sum()
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[label] = {"precision": round(float(precision), 4),
                            "recall": round(float(recall), 4), "f1": round(float(f1), 4),
                            "support": int(support)}
        if support:
            f1s.append(f1)
    accuracy = float((targets == predictions).mean()) if len(targets) else float("nan")
    return {"accuracy": accuracy, "macro_f1": float(np.mean(f1s)) if f1s else float("nan"),
            "n_clips": int(len(targets)), "per_class": per_class,
            "confusion": confusion.tolist()}


# ---------------------------------------------------------------------------- plots


def plot_curves(history: list[dict], path: Path, title: str = "") -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for key in ("loss", "ce", "kd", "reg", "contrastive"):
        values = [h.get(key) for h in history]
        if any(v for v in values):
            ax1.plot(epochs, values, label=key)
    test_loss = [h.get("test_loss") for h in history]
    if any(v is not None for v in test_loss):
        ax1.plot([e for e, v in zip(epochs, test_loss) if v is not None],
                 [v for v in test_loss if v is not None], "--", label="held-out CE")
    ax1.set_xlabel("epoch"), ax1.set_ylabel("loss"), ax1.legend(), ax1.grid(alpha=0.3)
    ax2.plot(epochs, [h.get("train_acc") for h in history], label="train (mixed batches)")
    test = [(h["epoch"], h["test_acc"]) for h in history if h.get("test_acc") is not None]
    if test:
        ax2.plot(*zip(*test), label="held out")
    ax2.set_xlabel("epoch"), ax2.set_ylabel("accuracy"), ax2.set_ylim(0, 1)
    ax2.legend(), ax2.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_confusion(confusion, labels: list, path: Path, title: str = "") -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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


def open_run(out_dir: Path, cfg, resume: bool, error: type[Exception]) -> dict | None:
    """Open a run folder for training ``cfg`` (a config with ``to_dict`` / ``from_dict``).

    With ``resume``: the checkpoint's state, whose settings must be ``cfg``'s (but for epochs
    and eval_every; settings added since it was written take their defaults). Without: the
    folder must not hold a run. Either way the run's settings go to its log."""
    ckpt_path = out_dir / "checkpoint.pt"
    state = None
    if resume:
        if not ckpt_path.exists():
            raise error(f"--resume: no checkpoint in {out_dir}; start without --resume")
        state = load_checkpoint(ckpt_path)
        new = cfg.to_dict()
        stored = type(cfg).from_dict(state["config"]).to_dict()
        differ = [k for k in new if k not in ("epochs", "eval_every") and stored.get(k) != new[k]]
        if differ:
            raise error("--resume with settings that differ from the run's: "
                        + ", ".join(f"{k} ({stored.get(k)!r} -> {new[k]!r})" for k in differ)
                        + "; resume with the same flags or start a new --out")
    elif ckpt_path.exists():
        raise error(f"{out_dir} already holds a run (checkpoint.pt); pass --resume to "
                    f"continue it or choose another --out")
    out_dir.mkdir(parents=True, exist_ok=True)
    log_line(out_dir, f"run {out_dir}: {json.dumps(cfg.to_dict())}", echo=False)
    return state


def train(cfg: TrainConfig, out_dir, *, resume: bool = False, progress: bool = True,
          stop_after_epoch: int | None = None, cache: EmbeddingCache | None = None,
          get_teacher: Callable | None = None, prepared: Prepared | None = None,
          threads: int | None = 1) -> dict:
    """Train one run into ``out_dir``; returns metrics (``metrics.json``).

    ``stop_after_epoch`` stops after that epoch as a kill would (checkpoint written, no final
    metrics), for resume tests. With ``resume``, continues from ``out_dir/checkpoint.pt``.
    """
    cfg.validate()
    if threads:
        torch.set_num_threads(threads)
    out_dir = Path(out_dir)
    ckpt_path = out_dir / "checkpoint.pt"
    state = open_run(out_dir, cfg, resume, TrainError)
    if state is not None and state.get("train_state") is None:
        raise TrainError(f"{ckpt_path}: holds no training state to resume from")

    prep = prepared or prepare(cfg, progress=progress, cache=cache, get_teacher=get_teacher,
                               out_dir=out_dir)
    dataset, waves = prep.dataset, prep.waves
    labels = dataset.labels
    write_json(out_dir / "data_report.json",
               {**dataset.report(), "train_items": int(len(prep.train_idx)),
                "test_items": int(len(prep.test_idx)),
                "test_fold": cfg.fold, "cache": prep.cache_stats,
                **({"unlabeled": prep.unlabeled_report} if prep.unlabeled_report else {})})
    if dataset.skipped:
        log_line(out_dir, f"{len(dataset.skipped)} file(s) skipped, listed in "
                          f"{out_dir / 'data_report.json'}")

    teacher_dim = prep.teacher_info["dim"] if prep.teacher_info else 0
    torch.manual_seed(cfg.seed)
    modules = RunModules(cfg, len(labels), teacher_dim)
    student, network = modules.student, modules.student.network
    optimizer = make_optimizer(modules, cfg)
    rate = student.frontend.spec.sample_rate
    train_idx, test_idx = prep.train_idx, prep.test_idx
    # with a fixed number of steps, batches may cycle through a small training set
    batch_size = cfg.batch_size if cfg.steps_per_epoch else min(cfg.batch_size, len(train_idx))
    steps_per_epoch = cfg.steps_per_epoch or max(1, len(train_idx) // batch_size)
    frontend_settings = student_frontend_settings(cfg.student)
    window_frames = student.frontend.spec.n_frames(prep.crop_samples)
    alpha = cfg.resolved_alpha()
    kd_frames = prep.kd_info["_frames"] if prep.kd_info else None
    contrastive_warmup = cfg.resolved_contrastive_warmup()

    def pooled_embedding(wave: torch.Tensor) -> torch.Tensor:
        return network.embed(training_features(student, wave)).mean(dim=1)

    history: list[dict] = []
    start_epoch, train_seconds = 0, 0.0
    if state is not None:
        student.load_state_dict(state["model_state"])
        ts = state["train_state"]
        for name, module in modules.aux_modules().items():
            module.load_state_dict(ts["aux"][name])
        optimizer.load_state_dict(ts["optimizer"])
        history = list(ts["history"])
        start_epoch = int(state["epoch"])
        train_seconds = float(ts.get("train_seconds", 0.0))
        log_line(out_dir, f"resuming after epoch {start_epoch}")

    def save(epoch: int, metrics: dict | None = None):
        aux = {name: m.state_dict() for name, m in modules.aux_modules().items()}
        save_checkpoint(ckpt_path, student_name=cfg.student,
                        frontend_settings=frontend_settings, labels=labels,
                        window_frames=window_frames, model_state=student.state_dict(),
                        epoch=epoch, config=cfg.to_dict(), metrics=metrics or {},
                        train_state={"optimizer": optimizer.state_dict(), "aux": aux,
                                     "history": history, "train_seconds": train_seconds,
                                     "teacher_info": prep.teacher_info,
                                     "kd": {k: v for k, v in (prep.kd_info or {}).items()
                                            if not k.startswith("_")}})

    n_harm = network.n_harmonics
    for epoch in range(start_epoch + 1, cfg.epochs + 1):
        t_epoch = time.time()
        rng = np.random.default_rng([cfg.seed, epoch])
        torch.manual_seed(cfg.seed * 100_003 + epoch)
        modules.train(True)
        order = epoch_order(train_idx, steps_per_epoch * batch_size, rng)
        sums = {"loss": 0.0, "ce": 0.0, "kd": 0.0, "reg": 0.0}
        contrastive_on = prep.unlabeled_waves is not None and epoch > contrastive_warmup
        if cfg.contrastive:
            sums["contrastive"] = 0.0
        if contrastive_on:
            con_rng = np.random.default_rng([cfg.seed, epoch, CONTRASTIVE_STREAM])
            unlabeled_order = epoch_order(np.arange(len(prep.unlabeled_waves)),
                                          steps_per_epoch * batch_size, con_rng)
        correct = seen = 0
        bar = None
        if progress:
            from tqdm import tqdm
            bar = tqdm(total=steps_per_epoch, desc=f"epoch {epoch}/{cfg.epochs}",
                       unit="step", leave=False, file=sys.stderr,
                       mininterval=0.5 if sys.stderr.isatty() else 30)
        for step in range(steps_per_epoch):
            global_step = (epoch - 1) * steps_per_epoch + step
            for group in optimizer.param_groups:
                group["lr"] = cfg.lr * lr_factor(global_step, steps_per_epoch, cfg.epochs,
                                                 cfg.warmup_epochs)
            idx = order[step * batch_size:(step + 1) * batch_size]
            if prep.mix_plan is not None:
                batch = mixture_batch(prep, cfg, idx, rng, kd_frames)
                crops = make_crops(batch["waves"], np.arange(len(idx)), prep.crop_samples,
                                   rate, rng, gain_db=cfg.gain_db)
                reg_frames, kd_batch_frames = batch["reg_frames"], batch["kd_frames"]
                lam_vec = torch.from_numpy(batch["lam"])
                y_a = torch.from_numpy(dataset.targets[idx])
                y_b = torch.from_numpy(dataset.targets[batch["partner"]])
                lam, perm = 1.0, np.arange(len(idx))
            else:
                crops = make_crops(waves, idx, prep.crop_samples, rate, rng,
                                   gain_db=cfg.gain_db)
                reg_frames, kd_batch_frames, lam_vec = prep.teacher_frames, kd_frames, None
                y_a = torch.from_numpy(dataset.targets[idx])
                lam, perm = 1.0, np.arange(len(idx))
            x = crops.waves
            if cfg.mixup > 0 and prep.mix_plan is None:
                lam = float(rng.beta(cfg.mixup, cfg.mixup))
                lam = max(lam, 1.0 - lam)  # the first clip dominates: its label "counts"
                perm = rng.permutation(len(idx))
                x = lam * x + (1.0 - lam) * x[perm]
            if lam_vec is None:
                y_b = y_a[torch.from_numpy(perm)]
            feats = training_features(student,
                                      torch.from_numpy(np.ascontiguousarray(x, np.float32)))
            if cfg.specaugment:
                feats = spec_augment(feats, rng, cfg, n_harm)
            n_out = feats.shape[1] // network.time_stride
            v = None
            if reg_frames is not None:
                tv = teacher_targets(reg_frames, crops, n_out)
                v = torch.from_numpy(lam * tv + (1.0 - lam) * tv[perm])
            logits, l = modules.logits(feats, v)
            if lam_vec is None:
                ce = mixup_cross_entropy(logits, y_a, y_b, lam)
            else:
                ce = (lam_vec * F.cross_entropy(logits, y_a, reduction="none")
                      + (1.0 - lam_vec) * F.cross_entropy(logits, y_b, reduction="none")).mean()
            loss_kd = logits.sum() * 0.0
            if prep.probes is not None:
                pooled = pooled_crops(kd_batch_frames, crops)
                probs = np.stack([prep.probes.probe_for(i).probabilities(
                    pooled[r:r + 1], cfg.kd_temperature)[0] for r, i in enumerate(idx)])
                probs = lam * probs + (1.0 - lam) * probs[perm]
                loss_kd = kd_loss(logits, torch.from_numpy(probs.astype(np.float32)),
                                  cfg.kd_temperature)
            loss_reg = modules.reg(l, v) if modules.reg is not None else logits.sum() * 0.0
            loss = (1.0 - cfg.kd) * ce + cfg.kd * loss_kd + alpha * loss_reg
            if contrastive_on:
                u_idx = unlabeled_order[step * batch_size:(step + 1) * batch_size]
                u_crops = make_crops(prep.unlabeled_waves, u_idx, prep.crop_samples, rate,
                                     con_rng, gain_db=cfg.gain_db)
                loss_con = mixed_view_loss(pooled_embedding, modules.projection, crops.waves,
                                           u_crops.waves, rate, con_rng)
                loss = loss + cfg.contrastive_weight * loss_con
                sums["contrastive"] += loss_con.item()
            if not torch.isfinite(loss):
                raise TrainError(f"loss became {loss.item()} at epoch {epoch}, step {step} "
                                 f"(try a lower --lr)")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            sums["loss"] += loss.item()
            sums["ce"] += ce.item()
            sums["kd"] += loss_kd.item()
            sums["reg"] += loss_reg.item()
            dominant = y_a  # lam >= 0.5 always: the first clip's label dominates
            correct += int((logits.argmax(1) == dominant).sum())
            seen += len(idx)
            if bar is not None:
                bar.update(1)
                bar.set_postfix({k: f"{v / (step + 1):.3f}" for k, v in sums.items()
                                 if k == "loss" or v} | {"acc": f"{correct / seen:.3f}"})
        if bar is not None:
            bar.close()
        train_seconds += time.time() - t_epoch
        record = {"epoch": epoch, **{k: v / steps_per_epoch for k, v in sums.items()},
                  "train_acc": correct / max(1, seen), "lr": optimizer.param_groups[0]["lr"],
                  "seconds": round(time.time() - t_epoch, 2)}
        if len(test_idx) and (epoch % cfg.eval_every == 0 or epoch == cfg.epochs):
            logits_test = predict(modules, waves, test_idx, prep.teacher_frames)
            t = dataset.targets[test_idx]
            record["test_acc"] = float((logits_test.argmax(1) == t).mean())
            record["test_loss"] = float(F.cross_entropy(torch.from_numpy(logits_test),
                                                        torch.from_numpy(t)))
        history.append(record)
        save(epoch, {"last_epoch": record})
        con = f"  contrastive {record['contrastive']:.4f}" if "contrastive" in record else ""
        log_line(out_dir, "epoch {epoch:3d}  loss {loss:.4f}  ce {ce:.4f}  kd {kd:.4f}  "
                          "reg {reg:.4f}{con}  train acc {train_acc:.3f}  held-out acc {ta}  "
                          "({seconds:.0f} s)".format(**record, con=con,
                                                     ta=f"{record['test_acc']:.3f}"
                                                     if "test_acc" in record else "-"))
        if stop_after_epoch is not None and epoch >= stop_after_epoch and epoch < cfg.epochs:
            return {"stopped_after_epoch": epoch}

    return finish(cfg, out_dir, modules, prep, history, train_seconds, save)


def finish(cfg, out_dir: Path, modules: RunModules, prep: Prepared, history: list,
           train_seconds: float, save) -> dict:
    dataset = prep.dataset
    labels = dataset.labels
    student = modules.student
    metrics: dict = {"labels": labels, "student": cfg.student, "epochs": cfg.epochs,
                     "test_fold": cfg.fold, "n_train": int(len(prep.train_idx)),
                     "n_test": int(len(prep.test_idx))}
    if len(prep.test_idx):
        logits = predict(modules, prep.waves, prep.test_idx, prep.teacher_frames)
        report = classification_report(dataset.targets[prep.test_idx], logits.argmax(1), labels)
        metrics.update(report)
        plot_confusion(report["confusion"], labels, out_dir / "confusion.png",
                       f"{cfg.student} held-out accuracy {report['accuracy']:.3f}")
    macs = count_macs_per_second(student)
    metrics.update({
        "params": count_params(student.network),
        "params_frontend": count_params(student.frontend),
        "macs_per_second": {k: int(v) for k, v in macs.items()},
        "train_seconds": round(train_seconds, 1),
        "crop_seconds": prep.crop_samples / student.frontend.spec.sample_rate,
        "teachers": prep.teacher_info, "reg": cfg.reg, "alpha": cfg.resolved_alpha(),
        "method": cfg.method,
        "kd": {k: v for k, v in (prep.kd_info or {}).items() if not k.startswith("_")} or None,
        **({"contrastive": {"weight": cfg.contrastive_weight, "tau": TAU,
                            "warmup_epochs": cfg.resolved_contrastive_warmup(),
                            "unlabeled": prep.unlabeled_report}} if cfg.contrastive else {}),
        "cache": prep.cache_stats, "history": history, "config": cfg.to_dict(),
        "torch": torch.__version__, "threads": torch.get_num_threads(),
    })
    if cfg.method != "student":
        metrics["note"] = (f"method {cfg.method!r} uses the teacher at inference: a baseline "
                           f"for comparison, not an exportable student")
    plot_curves(history, out_dir / "curves.png",
                f"{cfg.student} reg={cfg.reg} teachers={'+'.join(cfg.teachers) or '-'}"
                f" kd={cfg.kd}")
    save(cfg.epochs, {k: metrics[k] for k in ("accuracy", "macro_f1") if k in metrics})
    write_json(out_dir / "metrics.json", metrics)
    acc = metrics.get("accuracy")
    log_line(out_dir, f"done: held-out accuracy {acc:.4f} ({metrics['n_test']} clips), "
                      f"{train_seconds / 60:.1f} min" if acc is not None else "done")
    return metrics


# ---------------------------------------------------------------------------- CV


def train_cv(cfg: TrainConfig, folds: list[int], out_dir, *, resume: bool = False,
             progress: bool = True, **kwargs) -> dict:
    """One run per held-out fold into ``out_dir/fold<k>``; ``out_dir/cv_metrics.json`` and
    ``cv.png`` summarise them. Finished folds are reused when resuming."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg.validate()
    dataset = load_run_dataset(cfg)[0]
    rate = int(student_frontend_settings(cfg.student)["sample_rate"])
    waves, bad = load_waveforms(dataset.items, rate, skip_unreadable=cfg.skip_unreadable,
                                progress=progress)
    dataset, waves = drop_items(dataset, waves, bad)
    per_fold = {}
    for fold in folds:
        fold_cfg = TrainConfig.from_dict({**cfg.to_dict(), "fold": fold})
        run = out_dir / f"fold{fold}"
        if (run / "metrics.json").exists() and resume:
            per_fold[fold] = json.loads((run / "metrics.json").read_text())
            continue
        prep = prepare(fold_cfg, progress=progress, out_dir=None, dataset=dataset,
                       waves=waves, cache=kwargs.get("cache"),
                       get_teacher=kwargs.get("get_teacher"))
        per_fold[fold] = train(fold_cfg, run, resume=resume and (run / "checkpoint.pt").exists(),
                               progress=progress, prepared=prep, **kwargs)
    return summarize_cv(out_dir, per_fold)


def summarize_cv(out_dir: Path, per_fold: dict) -> dict:
    accs = {int(k): float(m["accuracy"]) for k, m in per_fold.items() if "accuracy" in m}
    values = np.array(list(accs.values()))
    summary = {"folds": sorted(accs), "accuracy_mean": float(values.mean()),
               "accuracy_std": float(values.std()), "per_fold_accuracy": accs,
               "macro_f1_mean": float(np.mean([m["macro_f1"] for m in per_fold.values()])),
               "train_seconds": float(sum(m.get("train_seconds", 0) for m in per_fold.values()))}
    write_json(Path(out_dir) / "cv_metrics.json", summary)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.bar([str(f) for f in accs], list(accs.values()), color="tab:blue")
    ax.axhline(summary["accuracy_mean"], color="tab:red",
               label=f"mean {summary['accuracy_mean']:.3f} ± {summary['accuracy_std']:.3f}")
    ax.set_xlabel("held-out fold"), ax.set_ylabel("accuracy"), ax.set_ylim(0, 1)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(Path(out_dir) / "cv.png", dpi=90)
    plt.close(fig)
    return summary


# ---------------------------------------------------------------------------- evaluate


def evaluate_run(run_dir, data: str | None = None, recipe: str | None = None,
                 fold: int | None = None, *, progress: bool = True,
                 out: Path | None = None) -> dict:
    """Score a run's checkpoint on its held-out split (or on ``data``, all of it when it has
    no folds and ``fold`` is not given): accuracy, per-class report, confusion matrix PNG."""
    run_dir = Path(run_dir)
    student, ckpt = load_student(run_dir)
    cfg = TrainConfig.from_dict(ckpt.get("config") or {"data": data or ""})
    if cfg.method != "student":
        raise TrainError(f"{run_dir}: method {cfg.method!r} needs the teacher at inference; "
                         f"its metrics.json holds its held-out figures")
    labels = list(ckpt["labels"])
    rate = student.frontend.spec.sample_rate
    if data is None:
        if not cfg.data:
            raise TrainError(f"{run_dir}: the checkpoint does not record its data; pass --data")
        dataset = load_run_dataset(cfg)[0]
        dataset, waves = drop_items(dataset, *load_waveforms(
            dataset.items, rate, skip_unreadable=cfg.skip_unreadable, progress=progress))
        _, indices = split_indices(dataset, cfg.fold, seed=cfg.seed,
                                   val_fraction=cfg.val_fraction)
    else:
        dataset = load_dataset(data, recipe)
        unknown = [item for item in dataset.items if item.label not in labels]
        if unknown:
            raise DatasetError(f"{unknown[0].where or unknown[0].path}: label "
                               f"{unknown[0].label!r} is unknown to the model "
                               f"({len(unknown)} file(s) in all; the model knows: "
                               f"{', '.join(labels[:10])}{' ...' if len(labels) > 10 else ''})")
        dataset = Dataset(dataset.items, labels, dataset.kind, dataset.source, dataset.skipped)
        dataset, waves = drop_items(dataset, *load_waveforms(dataset.items, rate,
                                                             progress=progress))
        if fold is not None:
            folds = np.array([item.fold for item in dataset.items])
            indices = np.flatnonzero(folds == fold)
            if not len(indices):
                raise DatasetError(f"fold {fold} not in {data}")
        else:
            indices = np.arange(len(dataset.items))
    modules = RunModules.__new__(RunModules)
    modules.student, modules.reg, modules.fusion, modules.projection = student, None, None, None
    logits = predict(modules, waves, indices)
    report = classification_report(dataset.targets[indices], logits.argmax(1), labels)
    out = Path(out) if out else run_dir
    out.mkdir(parents=True, exist_ok=True)
    report.update({"checkpoint_epoch": int(ckpt.get("epoch", 0)), "data": dataset.source,
                   "labels": labels})
    write_json(out / "evaluation.json", report)
    plot_confusion(report["confusion"], labels, out / "evaluation_confusion.png",
                   f"accuracy {report['accuracy']:.3f} on {len(indices)} clips")
    return report
