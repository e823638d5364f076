"""What a student run needs besides its modules, prepared once before the first epoch: the
labeled data and its waveforms, the train / held-out split, the teachers' frames (cached on
disk), the distillation target, planned teacher-labelled mixtures and the unlabeled pool.

The distillation target (``Prepared.kd_target``) is either a fitted teacher's own heads
(``edgeaudio teacher fit``, when its classes are the run's) or linear probes cross-fitted on the
KD teachers' pooled embeddings; both give ``soft_targets(pooled, items, T)``
(``edgeaudio.train.losses.DistillationTarget``).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np

from .cache import CacheStats, EmbeddingCache, default_cache_dir, fill_cache, teacher_features
from .config import TrainConfig
from .data import (UNLABELED_REST, Dataset, DatasetError, Item, decode_dataset, frames_covering,
                   load_dataset, load_waveforms, require_classes, select_classes,
                   split_indices, unlabeled_items, validation_split, wave_length,
                   with_background)
from .baseline import baseline_features, probe_accuracy, teacher_verdict
from .losses import DistillationTarget, fit_crossfit_probes
from .progress import progress_bar
from .run import log_line
from .students import student_frontend_settings
from .teachers.base import align_frames
from .teachers.registry import kd_head_for, parse_teacher_names


def load_run_dataset(cfg) -> tuple[Dataset, Dataset]:
    """(the labeled dataset of a run, either loop's settings: ``cfg.data`` restricted to
    ``cfg.classes``, plus its background class when ``cfg.background`` names one; the rest)."""
    labeled, rest = select_classes(load_dataset(cfg.data, cfg.layout), cfg.classes)
    if cfg.background:
        labeled = with_background(labeled, cfg.background, cfg.background_label,
                                  seed=cfg.seed, synth_root=default_cache_dir() / "background")
    return labeled, rest


def mixture_batch(prep: "Prepared", cfg: TrainConfig, idx: np.ndarray,
                  rng: np.random.Generator) -> dict:
    """Per clip of the batch: with ``mixture_prob`` one of its planned mixtures (waveform,
    the teachers' frames on it, mixing weight, partner), else the clean clip."""
    use = rng.random(len(idx)) < cfg.mixture_prob
    choice = rng.integers(0, cfg.kd_mixtures, size=len(idx))
    out = {"waves": [], "reg_frames": [] if prep.teacher_frames is not None else None,
           "kd_frames": [] if prep.kd_frames is not None else None,
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
                out["kd_frames"].append(prep.kd_frames[i])
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
    """Everything a run needs besides its modules: data, waveforms, teacher frames, KD target."""

    dataset: Dataset
    waves: list
    train_idx: np.ndarray
    test_idx: np.ndarray
    val_idx: np.ndarray                  # inside the training folds; every choice is made here
    crop_samples: int
    teacher_frames: list | None          # per item, the regulariser's teachers' frames
    teacher_info: dict | None
    kd_target: DistillationTarget | None
    kd_frames: list | None               # per item, the KD teachers' frames
    kd_info: dict | None                 # JSON-safe: what the KD target is, how good
    cache_stats: dict
    mix_plan: dict | None = None         # item -> [(partner, lam, offset), ...]
    mix_reg_frames: dict | None = None   # (item, m) -> teacher frames of that mixture
    mix_kd_frames: dict | None = None
    unlabeled_waves: list | None = None  # the contrastive pool, decoded like the labeled clips
    unlabeled_report: dict | None = None
    loader_workers: int | None = None    # streamed (``waves`` decode on access): loader workers

    def epoch_clips(self, order: np.ndarray, steps: int, batch_size: int,
                    rows: slice | None = None):
        """Streamed: an iterator of each step's ``{item: waveform}``
        (``edgeaudio.train.streaming.epoch_clips``); in memory: None (``waves`` serve)."""
        if self.loader_workers is None:
            return None
        from .streaming import epoch_clips
        return epoch_clips(self.waves, order, steps, batch_size, rows=rows,
                           loader_workers=self.loader_workers)


def extract_teachers(names, data, layout: str | None = None, *, classes: str | None = None,
                     student: str = TrainConfig.default("student"),
                     cache: EmbeddingCache | None = None, workers: int = 1, world=None,
                     stream: bool = False, skip_unreadable: bool = False,
                     first: int | None = None, progress: bool = True) -> dict:
    """The teachers' pass alone: every clip of ``data`` (``classes`` of it, its ``first``
    clips) embedded into the cache as a run with ``student`` looks it up (decoded at that
    student's rate), shared among ``workers`` processes and the torchrun ranks of ``world``;
    clips already there are hits, so a killed pass resumes. Returns what was done."""
    rate = int(student_frontend_settings(student)["sample_rate"])
    dataset = select_classes(load_dataset(data, layout), classes)[0]
    if first is not None:
        dataset = Dataset(dataset.items[:first], dataset.labels, dataset.kind, dataset.source,
                          dataset.skipped)
    t0 = time.time()
    if stream:
        from .streaming import index_dataset
        dataset, waves = index_dataset(dataset, rate, skip_unreadable=skip_unreadable,
                                       progress=progress)
    else:
        dataset, waves = decode_dataset(dataset, rate, skip_unreadable=skip_unreadable,
                                        progress=progress)
    decoded = time.time()
    cache = cache or EmbeddingCache()
    clips = [str(Path(item.path).resolve()) for item in dataset.items]
    stats = fill_cache(parse_teacher_names(names), clips, waves, rate, cache, workers=workers,
                       world=world, progress=progress)
    lookups = stats.as_dict() if world is None else \
        {k: int(v) for k, v in world.sum(stats.as_dict()).items()}  # every rank's share
    return {"teachers": parse_teacher_names(names), "clips": len(clips), "sample_rate": rate,
            "cache": str(cache.root), "lookups": lookups, "workers": workers,
            "processes": getattr(world, "size", 1),
            "decode_seconds": round(decoded - t0, 2),
            "extract_seconds": round(time.time() - decoded, 2)}


def check_streamable(cfg: TrainConfig) -> None:
    """Refuse, by name, the settings a streamed dataset cannot serve."""
    refused = [flag for flag, on in (("--kd-mixtures", cfg.kd_mixtures > 0),
                                     ("--contrastive", cfg.contrastive)) if on]
    if refused:
        raise DatasetError(f"--stream reads each clip when a step needs it; "
                           f"{' and '.join(refused)} need(s) clips at any time (a mixture's "
                           f"partner, the unlabeled pool): train in memory (without --stream) "
                           f"or without {' and '.join(refused)}")


def prepare(cfg: TrainConfig, *, progress: bool = True, cache: EmbeddingCache | None = None,
            get_teacher: Callable | None = None, out_dir: Path | None = None,
            dataset: Dataset | None = None, waves: list | None = None, workers: int = 1,
            world=None, stream: bool = False, loader_workers: int = 2) -> Prepared:
    """What a run needs before its first epoch. ``workers`` processes (and the torchrun ranks
    of ``world``) share the teachers' pass; ``stream`` keeps the clips on disk, decoded by
    ``loader_workers`` processes when a step needs them (``edgeaudio.train.streaming``)."""
    if stream:
        check_streamable(cfg)
        if loader_workers < 0:
            raise DatasetError(f"--loader-workers must be >= 0, got {loader_workers}")
    settings = student_frontend_settings(cfg.student)
    rate = int(settings["sample_rate"])
    if dataset is None:
        dataset = load_run_dataset(cfg)[0]
    require_classes(dataset)
    # listed before any decoding, so that a bad --unlabeled fails at once
    pool = unlabeled_pool(cfg, dataset) if cfg.contrastive else None
    if waves is None and stream:
        from .streaming import index_dataset
        dataset, waves = index_dataset(dataset, rate, skip_unreadable=cfg.skip_unreadable,
                                       progress=progress, loader_workers=loader_workers)
    elif waves is None:
        dataset, waves = decode_dataset(dataset, rate, skip_unreadable=cfg.skip_unreadable,
                                        progress=progress)
    train_idx, test_idx = split_indices(dataset, cfg.fold, seed=cfg.seed,
                                        test_fraction=cfg.test_fraction,
                                        train_fraction=cfg.train_fraction)
    train_idx, val_idx = validation_split(dataset, train_idx, fold=cfg.validation_fold,
                                          fraction=cfg.validation_fraction, seed=cfg.seed)
    longest = max(wave_length(waves, i) for i in range(len(waves))) / rate
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
            get_teacher=get_teacher, stats=stats, workers=workers, world=world)
    kd_target = kd_frames = kd_info = None
    if cfg.kd > 0:
        kd_names = cfg.kd_teachers or ["efficientat"]
        if parse_teacher_names(kd_names) == parse_teacher_names(cfg.teachers or []) \
                and teacher_frames is not None:
            kd_frames, kd_desc = teacher_frames, teacher_info
        else:
            kd_frames, kd_desc = teacher_features(kd_names, clips, waves, rate, cache,
                                                  progress=progress, get_teacher=get_teacher,
                                                  stats=stats, workers=workers, world=world)
        pooled = np.stack([f.mean(axis=0) for f in kd_frames])
        targets = dataset.targets
        t0 = time.time()
        # a fitted teacher (edgeaudio teacher fit) on the run's classes has its own heads
        head = kd_head_for(parse_teacher_names(kd_names), dataset.labels, get_teacher)
        if head is not None:
            kd_target = head
            test_acc = float((head.probabilities(pooled[test_idx]).argmax(1)
                              == targets[test_idx]).mean()) if len(test_idx) else float("nan")
            kd_info = {"teachers": kd_desc["teachers"], "dim": kd_desc["dim"],
                       "source": "the fitted teacher's own heads",
                       "teacher_test_accuracy": test_acc}
            log_line(out_dir, f"KD from the heads of {'+'.join(kd_desc['teachers'])}: "
                              f"held-out acc {test_acc:.3f}")
        else:
            probes = fit_crossfit_probes(pooled, targets, train_idx, len(dataset.labels),
                                         seed=cfg.seed)
            kd_target = probes
            test_acc = float((probes.full.logits(pooled[test_idx]).argmax(1)
                              == targets[test_idx]).mean()) if len(test_idx) else float("nan")
            kd_info = {"teachers": kd_desc["teachers"], "dim": kd_desc["dim"], "c": probes.c,
                       "oof_accuracy_train": probes.oof_accuracy,
                       "c_scores": {str(k): v for k, v in probes.c_scores.items()},
                       "probe_test_accuracy": test_acc, "fit_seconds": time.time() - t0}
            log_line(out_dir, f"probe on {'+'.join(kd_desc['teachers'])}: C={probes.c:g}, "
                              f"out-of-fold train acc {probes.oof_accuracy:.3f}, held-out acc "
                              f"{test_acc:.3f}")
    if len(val_idx) and (kd_target is not None or teacher_frames is not None):
        kd_target = check_teachers(cfg, dataset, waves, rate, train_idx, val_idx, teacher_frames,
                                   teacher_info, kd_target, kd_frames, kd_info, out_dir)
    prep = Prepared(dataset, waves, train_idx, test_idx, val_idx, crop_samples, teacher_frames,
                    teacher_info, kd_target, kd_frames, kd_info, stats.as_dict(),
                    loader_workers=loader_workers if stream else None)
    if cfg.kd_mixtures > 0:
        prepare_mixtures(prep, cfg, clips, rate, cache, stats, get_teacher, progress, world)
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


def check_teachers(cfg: TrainConfig, dataset: Dataset, waves: list, rate: int, train_idx,
                   val_idx, teacher_frames, teacher_info, kd_target, kd_frames, kd_info,
                   out_dir) -> DistillationTarget | None:
    """Before training spends its time: does each teacher know these sounds? Its linear
    probe's validation accuracy against a log-mel baseline with no teacher
    (``edgeaudio.train.baseline``). A distillation teacher well below it is left out (its
    soft targets would teach the student worse than the labels), unless ``keep_teachers``;
    the regulariser's teachers get the same verdict in the log. Returns the KD target kept."""
    targets, n = dataset.targets, len(dataset.labels)
    baseline = probe_accuracy(baseline_features(waves, rate), targets, train_idx, val_idx, n)
    if kd_target is not None:
        pooled = np.stack([f.mean(axis=0) for f in kd_frames])
        teacher = float((kd_target.soft_targets(pooled[val_idx], val_idx, 1.0).argmax(1)
                         == targets[val_idx]).mean())
        kd_info["teacher_validation_accuracy"] = teacher
        kd_info["baseline_validation_accuracy"] = baseline
        verdict = teacher_verdict(teacher, baseline)
        if verdict and not cfg.keep_teachers:
            kd_info["left_out"] = verdict
            log_line(out_dir, f"KD teacher {'+'.join(kd_info['teachers'])} left out: {verdict} "
                              f"(--keep-teachers keeps it)")
            kd_target = None
        else:
            log_line(out_dir, f"KD teacher {'+'.join(kd_info['teachers'])}: validation "
                              f"{100 * teacher:.1f} % against {100 * baseline:.1f} % for a "
                              f"log-mel baseline" + (f" (kept as asked: {verdict})"
                                                     if verdict else ""))
    if teacher_frames is not None and teacher_info is not None:
        pooled = np.stack([f.mean(axis=0) for f in teacher_frames])
        teacher = probe_accuracy(pooled, targets, train_idx, val_idx, n)
        teacher_info["probe_validation_accuracy"] = teacher
        teacher_info["baseline_validation_accuracy"] = baseline
        verdict = teacher_verdict(teacher, baseline)
        if verdict:
            log_line(out_dir, f"warning: regulariser teacher {'+'.join(teacher_info['teachers'])}"
                              f": {verdict}; consider training without it")
    return kd_target


def unlabeled_pool(cfg: TrainConfig, dataset: Dataset) -> tuple[list[Item], int]:
    """The items of the contrastive pool and how many held-out clips were left out of it (an
    unlabeled folder may hold the evaluation clips: they never train the student)."""
    train_idx, test_idx = split_indices(dataset, cfg.fold, seed=cfg.seed,
                                        test_fraction=cfg.test_fraction)
    _, val_idx = validation_split(dataset, train_idx, fold=cfg.validation_fold,
                                  fraction=cfg.validation_fraction, seed=cfg.seed)
    held_out = {os.path.realpath(dataset.items[i].path)
                for i in np.concatenate([test_idx, val_idx])}
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
                     world=None, chunk: int = 256) -> None:
    if get_teacher is None:
        from .teachers.registry import get_teacher
    getter = lru_cache(maxsize=None)(get_teacher)
    prep.mix_plan = plan_mixtures(cfg, prep.dataset, prep.waves, prep.train_idx)
    keys = [(i, m) for i, entries in prep.mix_plan.items() for m in range(len(entries))]
    wanted = []
    if prep.teacher_frames is not None:
        wanted.append(("reg", cfg.teachers))
    if prep.kd_target is not None:
        wanted.append(("kd", cfg.kd_teachers or ["efficientat"]))
    bar = progress_bar(len(keys) * len(wanted), "teachers on planned mixtures", "mix",
                       enabled=progress)
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
                                      get_teacher=getter, stats=stats, world=world)
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

