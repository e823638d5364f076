"""The student loop: a harmonic (or log-mel) CNN student, teachers at training time only.

``train(config, out_dir)`` runs one fold; ``train_cv`` runs several. A run folder holds
``checkpoint.pt`` (every epoch, atomic, see ``edgeaudio.train.checkpoint``), ``metrics.json``,
``curves.png``, ``confusion.png``, ``data_report.json`` and ``train.log``; the folder, resume
checks, seeding by (seed, epoch), the epoch bar and log are the run scaffold's
(``edgeaudio.train.run``), the data and teacher targets are prepared once before the first
epoch (``edgeaudio.train.preparation``), and a resumed run continues exactly as the
uninterrupted run would.

Per step: random crops (+gain) -> mixup (waveforms; labels, teacher frames and distillation
targets mixed with the same weight) -> student front end -> SpecAugment -> embedding ``l`` ->
classifier. Loss = (1 - kd) CE + kd KD + alpha Reg(l, v), with ``v`` the cached teacher frames
covering each crop, aligned to the student's embedding frames, and the KD targets those of the
distillation target on the same frames. With ``contrastive`` (after its warm-up epochs) the
step also takes an unlabeled batch and adds ``contrastive_weight * NT-Xent`` between the labeled
and unlabeled crops and their batch-split mixed views (``edgeaudio.train.contrastive``); its
draws come from a generator of its own, seeded by ``(seed, epoch)``, so resuming stays exact
and the default path is untouched.

Under torchrun (``edgeaudio.train.distributed``) every rank draws the same global batch of
``batch_size`` crops (mixup, SpecAugment and the teacher targets on the global batch, as one
process draws them) and trains the student, wrapped in DDP, on its own rows of it; held-out
logits are shared out among the ranks, and rank 0 writes the run. ``stream`` reads the clips
from disk each epoch instead of holding them (``edgeaudio.train.streaming``).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from edgeaudio.files import atomic_write_json

from .augment import spec_augment
from .cache import EmbeddingCache
from .checkpoint import save_checkpoint
from .config import TrainConfig, TrainError
from .contrastive import TAU, mixed_view_loss
from .data import decode_dataset, make_crops
from .evaluation import classification_report
from .losses import kd_loss, mixup_cross_entropy
from .modules import RunModules, predict, training_features
from .plots import plot_confusion, plot_curves, plot_fold_accuracies
from .preparation import (Prepared, load_run_dataset, mixture_batch, pooled_crops, prepare,
                          teacher_targets)
from .distributed import World, init_world, is_main_process
from .run import EpochLoop, RunFolder, open_training_run
from .schedule import epoch_order, schedule_step
from .students import count_macs_per_second, count_params, student_frontend_settings

CONTRASTIVE_STREAM = 5801  # names the contrastive term's own random stream (seed, epoch, this)
EPOCH_LINE = ("epoch {epoch:3d}  loss {loss:.4f}  ce {ce:.4f}  kd {kd:.4f}  reg {reg:.4f}"
              "{con}  train acc {train_acc:.3f}  val acc {val}{test_part}  ({seconds:.0f} s)")


def describe_splits(cfg: TrainConfig, prep: Prepared) -> dict:
    """Which clips are the test split (scored once, at the end) and which the validation
    clips (every choice): said plainly in the log and in data_report.json."""
    dataset = prep.dataset
    if dataset.has_folds:
        fold = cfg.fold if cfg.fold is not None else max(dataset.folds)
        test = (f"fold {fold}" + ("" if cfg.fold is not None else
                                  " (the last fold; --fold chooses another)"))
    else:
        test = f"{cfg.test_fraction:.0%} of every class, seeded (the data has no folds)"
    if cfg.validation_fold is not None:
        validation = f"fold {cfg.validation_fold}"
    elif len(prep.val_idx):
        validation = f"{cfg.validation_fraction:.0%} of the training clips of every class, seeded"
    else:
        validation = "none (--validation-fraction 0): the last epoch is kept"
    return {"test": test, "test_clips": int(len(prep.test_idx)), "validation": validation,
            "validation_clips": int(len(prep.val_idx)),
            "train_clips": int(len(prep.train_idx))}


def train(cfg: TrainConfig, out_dir, *, resume: bool = False, progress: bool = True,
          stop_after_epoch: int | None = None, cache: EmbeddingCache | None = None,
          get_teacher: Callable | None = None, prepared: Prepared | None = None,
          threads: int | None = 1, workers: int = 1, stream: bool = False,
          loader_workers: int = 2) -> dict:
    """Train one run into ``out_dir``; returns metrics (``metrics.json``).

    ``stop_after_epoch`` stops after that epoch as a kill would (checkpoint written, no final
    metrics), for resume tests. With ``resume``, continues from ``out_dir/checkpoint.pt``.
    ``workers`` processes share the teachers' pass over the clips (``edgeaudio.train.cache``);
    ``stream`` leaves the clips on disk, decoded by ``loader_workers`` processes as the steps
    need them (the same run as in memory: ``edgeaudio.train.streaming``).
    Launched by torchrun, the ranks train one run together (see the module's docstring).
    """
    run = open_training_run(cfg, out_dir, resume=resume, error=TrainError, threads=threads)
    state, world = run.state, run.world
    progress = progress and world.is_main
    if world.size > 1 and cfg.contrastive:
        raise TrainError("--contrastive runs in one process only (its second forward pass "
                         "per step is not one DDP step); train without torchrun")

    prep = prepared or prepare(cfg, progress=progress, cache=cache, get_teacher=get_teacher,
                               out_dir=run.out_dir, workers=workers, world=world,
                               stream=stream, loader_workers=loader_workers)
    dataset, waves = prep.dataset, prep.waves
    labels = dataset.labels
    splits = describe_splits(cfg, prep)
    run.write_json("data_report.json",
                   {**dataset.report(), "train_items": int(len(prep.train_idx)),
                    "validation_items": int(len(prep.val_idx)),
                    "test_items": int(len(prep.test_idx)),
                    "test_fold": cfg.fold, "splits": splits, "cache": prep.cache_stats,
                    **({"unlabeled": prep.unlabeled_report} if prep.unlabeled_report else {})})
    run.log(f"test: {splits['test']}, {splits['test_clips']} clips, scored once at the end; "
            f"validation: {splits['validation']}, {splits['validation_clips']} clips; "
            f"training: {splits['train_clips']} clips")
    if dataset.skipped:
        run.log(f"{len(dataset.skipped)} file(s) skipped, listed in "
                f"{run.out_dir / 'data_report.json'}")

    teacher_dim = prep.teacher_info["dim"] if prep.teacher_info else 0
    torch.manual_seed(cfg.seed)
    modules = RunModules(cfg, len(labels), teacher_dim)
    student, network = modules.student, modules.student.network
    optimizer = modules.optimizer(cfg)
    rate = student.frontend.spec.sample_rate
    train_idx, test_idx, val_idx = prep.train_idx, prep.test_idx, prep.val_idx
    # with a fixed number of steps, batches may cycle through a small training set
    batch_size = cfg.batch_size if cfg.steps_per_epoch else min(cfg.batch_size, len(train_idx))
    steps_per_epoch = cfg.steps_per_epoch or max(1, len(train_idx) // batch_size)
    rows = world.local_rows(batch_size)  # this rank's rows of every global batch (all, alone)
    replica = world.wrap({"student": student, **modules.aux_modules()})
    frontend_settings = student_frontend_settings(cfg.student)
    window_frames = student.frontend.spec.n_frames(prep.crop_samples)
    alpha = cfg.resolved_alpha()
    kd_weight = cfg.kd if prep.kd_target is not None else 0.0  # a teacher left out: labels alone
    contrastive_warmup = cfg.resolved_contrastive_warmup()

    def pooled_embedding(wave: torch.Tensor) -> torch.Tensor:
        return network.embed(training_features(student, wave)).mean(dim=1)

    history: list[dict] = []
    start_epoch, train_seconds = 0, 0.0
    best = None  # the best validation epoch so far: {"epoch", "val_acc", "model_state"}
    if state is not None:
        ts = state["train_state"]
        # a finished run's checkpoint holds the selected epoch; training goes on from the last
        student.load_state_dict(ts.get("last_model_state") or state["model_state"])
        best = ts.get("best")
        for name, module in modules.aux_modules().items():
            module.load_state_dict(ts["aux"][name])
        optimizer.load_state_dict(ts["optimizer"])
        history = list(ts["history"])
        start_epoch = int(state["epoch"])
        train_seconds = float(ts.get("train_seconds", 0.0))
        run.log(f"resuming after epoch {start_epoch}")

    def save(epoch: int, metrics: dict | None = None, last_model_state: dict | None = None):
        aux = {name: m.state_dict() for name, m in modules.aux_modules().items()}
        save_checkpoint(run.checkpoint_path, student_name=cfg.student,
                        frontend_settings=frontend_settings, labels=labels,
                        window_frames=window_frames, model_state=student.state_dict(),
                        epoch=epoch, config=cfg.to_dict(), metrics=metrics or {},
                        train_state={"optimizer": optimizer.state_dict(), "aux": aux,
                                     "history": history, "train_seconds": train_seconds,
                                     "teacher_info": prep.teacher_info, "kd": prep.kd_info,
                                     "best": best, "last_model_state": last_model_state})

    epochs = EpochLoop(run, seed=cfg.seed, epochs=cfg.epochs, steps=steps_per_epoch,
                       start_epoch=start_epoch, progress=progress, stop_after=stop_after_epoch)
    for ep in epochs:
        epoch, rng = ep.epoch, ep.rng
        modules.train(True)
        order = epoch_order(train_idx, steps_per_epoch * batch_size, rng)
        # streamed: the epoch's clips, decoded ahead by loader workers (None: in memory);
        # mixup partners may be any row, else this rank cuts its own rows only
        clips = prep.epoch_clips(order, steps_per_epoch, batch_size,
                                 rows if world.size > 1 and cfg.mixup == 0 else None)
        sums = {"loss": 0.0, "ce": 0.0, "kd": 0.0, "reg": 0.0}
        contrastive_on = prep.unlabeled_waves is not None and epoch > contrastive_warmup
        if cfg.contrastive:
            sums["contrastive"] = 0.0
        if contrastive_on:
            con_rng = np.random.default_rng([cfg.seed, epoch, CONTRASTIVE_STREAM])
            unlabeled_order = epoch_order(np.arange(len(prep.unlabeled_waves)),
                                          steps_per_epoch * batch_size, con_rng)
        correct = seen = 0
        for step in range(steps_per_epoch):
            schedule_step(optimizer, cfg, epoch, step, steps_per_epoch)
            idx = order[step * batch_size:(step + 1) * batch_size]
            lam, perm = 1.0, np.arange(len(idx))
            y_a = torch.from_numpy(dataset.targets[idx])
            if prep.mix_plan is not None:
                # each clip drawn as itself or one of its teacher-labelled mixtures
                batch = mixture_batch(prep, cfg, idx, rng)
                crops = make_crops(batch["waves"], np.arange(len(idx)), prep.crop_samples,
                                   rate, rng, gain_db=cfg.gain_db, speed=cfg.speed,
                                   shift_seconds=cfg.shift_seconds)
                reg_frames, kd_batch_frames = batch["reg_frames"], batch["kd_frames"]
                lam_vec = torch.from_numpy(batch["lam"])
                y_b = torch.from_numpy(dataset.targets[batch["partner"]])
            else:
                crops = make_crops(waves if clips is None else next(clips), idx,
                                   prep.crop_samples, rate, rng, gain_db=cfg.gain_db,
                                   speed=cfg.speed, shift_seconds=cfg.shift_seconds)
                reg_frames, kd_batch_frames, lam_vec = prep.teacher_frames, prep.kd_frames, None
            x = crops.waves
            if cfg.mixup > 0 and prep.mix_plan is None:
                lam = float(rng.beta(cfg.mixup, cfg.mixup))
                lam = max(lam, 1.0 - lam)  # the first clip dominates: its label "counts"
                perm = rng.permutation(len(idx))
                x = lam * x + (1.0 - lam) * x[perm]
            if lam_vec is None:
                y_b = y_a[torch.from_numpy(perm)]
            l, logits, loss_reg = replica(
                student_forward, modules, cfg, world,
                torch.from_numpy(np.ascontiguousarray(x[rows], np.float32)), len(idx), rng,
                reg_frames, crops, lam, perm)
            y_a, y_b = y_a[rows], y_b[rows]
            if lam_vec is not None:
                lam_vec = lam_vec[rows]
            if lam_vec is None:
                ce = mixup_cross_entropy(logits, y_a, y_b, lam)
            else:
                ce = (lam_vec * F.cross_entropy(logits, y_a, reduction="none")
                      + (1.0 - lam_vec) * F.cross_entropy(logits, y_b, reduction="none")).mean()
            loss_kd = logits.sum() * 0.0
            if prep.kd_target is not None:
                probs = prep.kd_target.soft_targets(pooled_crops(kd_batch_frames, crops), idx,
                                                    cfg.kd_temperature)
                probs = world.local(lam * probs + (1.0 - lam) * probs[perm])
                loss_kd = kd_loss(logits, torch.from_numpy(probs.astype(np.float32)),
                                  cfg.kd_temperature)
            loss = (1.0 - kd_weight) * ce + kd_weight * loss_kd + alpha * loss_reg
            if contrastive_on:
                u_idx = unlabeled_order[step * batch_size:(step + 1) * batch_size]
                u_crops = make_crops(prep.unlabeled_waves, u_idx, prep.crop_samples, rate,
                                     con_rng, gain_db=cfg.gain_db)
                loss_con = mixed_view_loss(pooled_embedding, modules.projection, crops.waves,
                                           u_crops.waves, rate, con_rng)
                loss = loss + cfg.contrastive_weight * loss_con
                sums["contrastive"] += loss_con.item()
            ep.check_finite(loss, step)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            sums["loss"] += loss.item()
            sums["ce"] += ce.item()
            sums["kd"] += loss_kd.item()
            sums["reg"] += loss_reg.item()
            correct += int((logits.argmax(1) == y_a).sum())  # lam >= 0.5: y_a dominates
            seen += len(y_a)
            ep.step_done(**{k: f"{v / (step + 1):.3f}" for k, v in sums.items()
                            if k == "loss" or v}, acc=f"{correct / seen:.3f}")
        times = ep.training_done()
        train_seconds += times["seconds"]
        sums = world.mean(sums)  # the ranks' means over equal shares: the global batch's
        counted = world.sum({"correct": correct, "seen": seen})
        record = {**{k: v / steps_per_epoch for k, v in sums.items()},
                  "train_acc": counted["correct"] / max(1, counted["seen"]),
                  "lr": optimizer.param_groups[0]["lr"], "seconds": times["seconds"]}
        if epoch % cfg.eval_every == 0 or epoch == cfg.epochs:
            if len(val_idx):
                record.update(split_figures(modules, prep, val_idx, "val", world))
                if best is None or record["val_acc"] > best["val_acc"]:
                    best = {"epoch": epoch, "val_acc": record["val_acc"],
                            "model_state": {k: v.clone() for k, v in
                                            student.state_dict().items()}}
            if cfg.test_curve and len(test_idx):  # for plots and papers' protocols only
                record.update(split_figures(modules, prep, test_idx, "test", world))
        con = f"  contrastive {record['contrastive']:.4f}" if "contrastive" in record else ""
        test_part = "  test acc {test}" if cfg.test_curve else ""
        ep.finish(record, history, lambda k, r: save(k, {"last_epoch": r}),
                  EPOCH_LINE.replace("{con}", con).replace("{test_part}", test_part))
        if ep.stop:
            return {"stopped_after_epoch": epoch}

    return finish(cfg, run, modules, prep, history, train_seconds, save, best)


def student_forward(modules: RunModules, cfg: TrainConfig, world: World, x_rows: torch.Tensor,
                    n_rows: int, rng: np.random.Generator, reg_frames, crops, lam: float,
                    perm: np.ndarray) -> tuple:
    """The differentiable part of a step, on this rank's rows ``x_rows`` of a global batch of
    ``n_rows`` crops (DDP's forward): features, SpecAugment (drawn for the global batch, as
    one process draws it), embedding, the teacher frames aligned to it (mixed as the batch),
    logits and the regulariser. Returns ``(l, logits, loss_reg)``."""
    student = modules.student
    feats = training_features(student, x_rows)
    if cfg.specaugment:
        feats = world.local(spec_augment(world.whole_batch(feats, n_rows), rng, cfg,
                                         student.network.n_harmonics))
    l = modules.embed(feats)
    v = None
    if reg_frames is not None:  # the teacher frames aligned to the embedding frames
        tv = teacher_targets(reg_frames, crops, l.shape[1])
        v = torch.from_numpy(world.local(lam * tv + (1.0 - lam) * tv[perm]))
    logits = modules.head(l, v)
    loss_reg = modules.reg(l, v) if modules.reg is not None else logits.sum() * 0.0
    return l, logits, loss_reg


def held_out_logits(modules: RunModules, prep: Prepared, indices: np.ndarray,
                    world: World) -> np.ndarray:
    """The student's logits on whole clips, the clips shared out among the ranks."""
    return world.gather_rows(lambda part: predict(modules, prep.waves, part,
                                                  prep.teacher_frames), indices)


def split_figures(modules: RunModules, prep: Prepared, indices: np.ndarray, name: str,
                  world: World) -> dict:
    """``{name}_acc`` and ``{name}_loss`` (cross-entropy) of the student on whole clips."""
    logits = held_out_logits(modules, prep, indices, world)
    t = prep.dataset.targets[indices]
    return {f"{name}_acc": float((logits.argmax(1) == t).mean()),
            f"{name}_loss": float(F.cross_entropy(torch.from_numpy(logits), torch.from_numpy(t)))}


def finish(cfg: TrainConfig, run: RunFolder, modules: RunModules, prep: Prepared,
           history: list, train_seconds: float, save, best: dict | None) -> dict:
    """The selected epoch's weights (best validation accuracy, or the last epoch), its test
    figures (the first and only time the test split decides nothing), costs, plots and
    ``metrics.json``."""
    dataset = prep.dataset
    labels = dataset.labels
    student = modules.student
    last_state = None
    selected = cfg.epochs
    if cfg.select == "best" and best is not None and best["epoch"] != cfg.epochs:
        last_state = {k: v.clone() for k, v in student.state_dict().items()}
        student.load_state_dict(best["model_state"])
        selected = best["epoch"]
    metrics: dict = {"labels": labels, "student": cfg.student, "epochs": cfg.epochs,
                     "test_fold": cfg.fold, "splits": describe_splits(cfg, prep),
                     "selected_epoch": selected,
                     "selection": ("the last epoch" if best is None or cfg.select == "last"
                                   else "the best validation accuracy"),
                     "validation_accuracy": best["val_acc"] if best else None,
                     "n_train": int(len(prep.train_idx)), "n_validation": int(len(prep.val_idx)),
                     "n_test": int(len(prep.test_idx))}
    if len(prep.test_idx):
        logits = held_out_logits(modules, prep, prep.test_idx, run.world)
        report = classification_report(dataset.targets[prep.test_idx], logits.argmax(1), labels)
        metrics.update(report)
        if run.is_main:
            plot_confusion(report["confusion"], labels, run.out_dir / "confusion.png",
                           f"{cfg.student} held-out accuracy {report['accuracy']:.3f}")
    macs = count_macs_per_second(student)
    metrics.update({
        "params": count_params(student.network),
        "params_frontend": count_params(student.frontend),
        "macs_per_second": {k: int(v) for k, v in macs.items()},
        "train_seconds": round(train_seconds, 3),
        "crop_seconds": prep.crop_samples / student.frontend.spec.sample_rate,
        "teachers": prep.teacher_info, "reg": cfg.reg, "alpha": cfg.resolved_alpha(),
        "method": cfg.method, "kd": prep.kd_info,
        **({"contrastive": {"weight": cfg.contrastive_weight, "tau": TAU,
                            "warmup_epochs": cfg.resolved_contrastive_warmup(),
                            "unlabeled": prep.unlabeled_report}} if cfg.contrastive else {}),
        "cache": prep.cache_stats, "history": history, "config": cfg.to_dict(),
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        **({"processes": run.world.size, "backend": run.world.backend}
           if run.world.size > 1 else {}),
    })
    if cfg.method != "student":
        metrics["note"] = (f"method {cfg.method!r} uses the teacher at inference: a baseline "
                           f"for comparison, not an exportable student")
    if run.is_main:
        plot_curves(history, run.out_dir / "curves.png",
                    f"{cfg.student} reg={cfg.reg} teachers={'+'.join(cfg.teachers) or '-'}"
                    f" kd={cfg.kd}")
        save(cfg.epochs, {k: metrics[k] for k in ("accuracy", "macro_f1") if k in metrics},
             last_state)
    run.write_json("metrics.json", metrics)
    run.world.barrier()  # the run is written when any rank returns
    acc = metrics.get("accuracy")
    run.log(f"done: epoch {selected} kept ({metrics['selection']}); test accuracy {acc:.4f} "
            f"({metrics['n_test']} clips), {train_seconds / 60:.1f} min"
            if acc is not None else f"done: epoch {selected} kept ({metrics['selection']})")
    return metrics


def train_cv(cfg: TrainConfig, folds: list[int], out_dir, *, resume: bool = False,
             progress: bool = True, **kwargs) -> dict:
    """One run per held-out fold into ``out_dir/fold<k>``; ``out_dir/cv_metrics.json`` and
    ``cv.png`` summarise them. Finished folds are reused when resuming. The clips are decoded
    (or, with ``stream``, indexed) once for all folds."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg.validate()
    world = init_world()
    progress = progress and world.is_main
    dataset = load_run_dataset(cfg)[0]
    rate = int(student_frontend_settings(cfg.student)["sample_rate"])
    stream, loader_workers = kwargs.get("stream", False), kwargs.get("loader_workers", 2)
    if stream:
        from .streaming import index_dataset
        dataset, waves = index_dataset(dataset, rate, skip_unreadable=cfg.skip_unreadable,
                                       progress=progress, loader_workers=loader_workers)
    else:
        dataset, waves = decode_dataset(dataset, rate, skip_unreadable=cfg.skip_unreadable,
                                        progress=progress)
    per_fold = {}
    for fold in folds:
        fold_cfg = TrainConfig.from_dict({**cfg.to_dict(), "fold": fold})
        run = out_dir / f"fold{fold}"
        if (run / "metrics.json").exists() and resume:
            per_fold[fold] = json.loads((run / "metrics.json").read_text())
            continue
        prep = prepare(fold_cfg, progress=progress, out_dir=None, dataset=dataset,
                       waves=waves, cache=kwargs.get("cache"),
                       get_teacher=kwargs.get("get_teacher"),
                       workers=kwargs.get("workers", 1), world=world, stream=stream,
                       loader_workers=loader_workers)
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
    if is_main_process():
        atomic_write_json(Path(out_dir) / "cv_metrics.json", summary)
        plot_fold_accuracies(accs, summary["accuracy_mean"], summary["accuracy_std"],
                             Path(out_dir) / "cv.png")
    return summary
