"""Online, patient distillation: the teacher sees exactly the student's augmented input.

``train_distill(cfg, out_dir)`` trains one run on the run scaffold (``edgeaudio.train.run``:
run folder, resume check, seeding by (seed, epoch), epoch log, checkpoint every epoch), so a
run resumed after epoch k continues bit-exactly as the uninterrupted run would. Its
``checkpoint.pt`` is the student checkpoint every other command reads
(``edgeaudio.train.checkpoint.load_student``, ``edgeaudio export``).

Per step: random crops (+gain, optionally shifted past the clip's ends) -> mixup of the
waveforms -> the *same* mixed crops go to the teacher (online, never cached: every epoch's
crops and mixtures are new views, as in Beyer et al. 2022, "Knowledge distillation: a good
teacher is patient and consistent") and to the student (front end, optional SpecAugment,
network). The teacher is

- ``efficientat`` (mn04, AudioSet) or any registry teacher: its pooled embedding of the
  mixed crop, through linear probes cross-fitted once on the clean training clips' pooled
  embeddings (each training clip's targets from a probe that never saw it);
- a fitted teacher folder (``edgeaudio teacher fit``) whose classes are the run's: its own
  heads on the pooled embedding, i.e. the fine-tuned ensemble's prediction on the mixed crop.

Loss (``distillation_loss``)::

    kd_weight * T^2 * KL(teacher_T || student_T) + (1 - kd_weight) * CE(mixup labels)
      + con_reg * (1 - cos(pooled student embedding, P(pooled teacher embedding)))

defaults kd_weight 0.98 and T = 2 (the weighting the issue cites from CP-JKU's DCASE Task 1
students and Beyer et al. 2022; the T^2 factor keeps the soft targets' gradients on the
scale of the hard ones, Hinton et al. 2015). ``P`` (Con-Reg's projection, a 1x1 conv from the
teacher's to the student's embedding size) is trained with the student and never exported.

The student is any registered student; an mn student (``edgeaudio.train.mn_student``) starts
from mn04's weights (``init = "mn04"``, channels kept by ``importance``, BatchNorm statistics
optionally re-estimated on training crops) or from random weights (``init = "random"``, the
ablation arm). With ``teacher = ""`` the loss is the cross-entropy alone.

The data are the student loop's (``edgeaudio.train.preparation.load_run_dataset``): a
``background`` class of audio that is none of the classes, and validation clips (a
``validation_fold`` or a ``validation_fraction`` of every class) left out of training and
scored at each evaluation; the loop keeps the last epoch, and ``edgeaudio export`` chooses
the stream threshold on the same clips.

Under torchrun (``edgeaudio.train.distributed``) every rank draws the single process's global
batch and mixup, runs the teacher and the DDP-wrapped student on its own rows of it, and rank
0 writes the run.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .augment import spec_augment
from .cache import EmbeddingCache, teacher_features
from .checkpoint import save_checkpoint
from .config import Settings, TrainError
from .data import decode_dataset, make_crops, require_classes, split_indices, validation_split
from .evaluation import classification_report
from .losses import Regularizer, fit_crossfit_probes, kd_loss, mixup_cross_entropy
from .mn_student import IMPORTANCE, initialize, is_mn_student, recalibrate_batchnorm
from .modules import RunModules, predict, training_features
from .preparation import load_run_dataset
from .run import EpochLoop, open_training_run
from .schedule import adamw, epoch_order, schedule_step
from .students import build_student, count_macs_per_second, count_params, \
    student_frontend_settings
from .teachers.registry import kd_head_for, parse_teacher_names

EPOCH_LINE = ("epoch {epoch:3d}  loss {loss:.4f}  ce {ce:.4f}  kd {kd:.4f}  con {con:.4f}  "
              "train acc {train_acc:.3f}  val acc {val}  test acc {test}  ({seconds:.0f} s)")
RECALIBRATION_STREAM = 7207  # names the BN re-estimation's own random stream (seed, this)


@dataclass
class DistillConfig(Settings):
    """The settings of an online-distillation run (``train_distill``)."""

    data: str
    layout: str | None = None
    fold: int | None = None
    classes: str | None = None
    # a class of audio that is none of the classes (edgeaudio.train.data.with_background)
    background: list = field(default_factory=list)
    background_label: str = "background"
    # validation clips, left out of training and scored at each evaluation: a fold of the
    # data, else this fraction of every class. The last epoch is kept either way; export
    # chooses the stream threshold on them. 0 (the default) trains on every training clip,
    # as every ESC-50 row did.
    validation_fold: int | None = None
    validation_fraction: float = 0.0
    student: str = "mn04-short320"     # the default recipe's student (README: the ablation)
    init: str = "mn04"                 # mn students: "mn04" (inherit) or "random"
    importance: str = "bn"             # how inherited channels are chosen: "bn" or "l1"
    # re-estimate BN statistics after inheriting: off, as on an ESC-10 probe it helped one
    # of four inherited students (see the mn_student bench's zero-shot figures)
    recalibrate_bn: bool = False
    teacher: str = "efficientat"       # a registry name or a fitted teacher folder; "" = none
    kd_weight: float = 0.98
    kd_temperature: float = 2.0
    con_reg: float = 0.0               # weight of the cosine embedding term (Con-Reg)
    epochs: int = 40                   # the budget every measured row trained on
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-2
    warmup_epochs: int = 3
    seed: int = 0
    crop_seconds: float | None = None  # None: min(4 s, longest clip)
    gain_db: float = 6.0
    # crops moved up to this far past a clip's ends (teacher and student see the same shifted
    # crop), so a sound is also learnt where a streaming window first meets it; 0 = off
    shift_seconds: float = 0.0
    mixup: float = 0.3                 # Beta(a, a); 0 = off
    specaugment: bool = False          # masks the student's features only (the teacher's
    time_masks: int = 2                # input is the waveform): off keeps them consistent
    time_mask_frames: int = 20
    freq_masks: int = 2
    freq_mask_bins: int = 8
    train_fraction: float = 1.0
    test_fraction: float = 0.2         # the test split when the data has no folds
    skip_unreadable: bool = False
    eval_every: int = 5
    steps_per_epoch: int | None = None

    def validate(self) -> None:
        if self.epochs < 1 or self.batch_size < 2:
            raise TrainError("epochs must be >= 1 and the batch size >= 2")
        if not 0.0 <= self.kd_weight <= 1.0:
            raise TrainError(f"kd_weight is a weight in [0, 1], got {self.kd_weight}")
        if self.kd_temperature <= 0:
            raise TrainError(f"kd_temperature must be > 0, got {self.kd_temperature}")
        if self.con_reg < 0:
            raise TrainError(f"con_reg must be >= 0, got {self.con_reg}")
        if self.shift_seconds < 0:
            raise TrainError(f"--shift must be >= 0 seconds, got {self.shift_seconds}")
        if not self.teacher and self.con_reg > 0:
            raise TrainError("con_reg needs a teacher")
        if self.init not in ("random", "mn04"):
            raise TrainError(f"unknown init {self.init!r} (known: random, mn04)")
        if self.init == "mn04" and not is_mn_student(self.student):
            raise TrainError(f"init mn04 needs an mn student, not {self.student!r}; "
                             f"use init random")
        if self.importance not in IMPORTANCE:
            raise TrainError(f"importance must be one of {', '.join(IMPORTANCE)}")
        if self.steps_per_epoch is not None and self.steps_per_epoch < 1:
            raise TrainError(f"steps_per_epoch must be >= 1, got {self.steps_per_epoch}")
        if self.background and not self.background_label.strip():
            raise TrainError("--background-label must name the class")
        if self.validation_fold is not None and self.validation_fold == self.fold:
            raise TrainError(f"--validation-fold {self.validation_fold} is the test --fold")


def distillation_loss(student_logits: torch.Tensor, teacher_probs: torch.Tensor | None,
                      y_a: torch.Tensor, y_b: torch.Tensor, lam: float, kd_weight: float,
                      temperature: float) -> dict:
    """``{"loss", "ce", "kd"}``: ``kd_weight * T^2 KL(teacher_probs || softmax(z / T))
    + (1 - kd_weight) * CE`` (mixup: ``lam`` CE(y_a) + (1 - lam) CE(y_b)); ``teacher_probs``
    are the teacher's probabilities at T. Without a teacher the loss is the CE alone."""
    ce = mixup_cross_entropy(student_logits, y_a, y_b, lam)
    if teacher_probs is None:
        return {"loss": ce, "ce": ce, "kd": ce * 0.0}
    kd = kd_loss(student_logits, teacher_probs, temperature)
    return {"loss": kd_weight * kd + (1.0 - kd_weight) * ce, "ce": ce, "kd": kd}


class OnlineTeacher:
    """A teacher run on each batch's augmented crops, and its head for the run's classes.

    ``pooled(crops [B, S] at the run's rate)`` is the teacher's embedding averaged over time;
    ``soft_targets(pooled, items, T)`` its class probabilities at T: a fitted teacher's own
    heads when its classes are the run's, else linear probes cross-fitted on the clean
    training clips (``fit`` computes their embeddings once, through the embedding cache)."""

    def __init__(self, name: str, labels: list, rate: int,
                 get_teacher: Callable | None = None):
        if get_teacher is None:
            from .teachers.registry import get_teacher
        self.names = parse_teacher_names([name])
        self.teacher = get_teacher(name)
        self.get_teacher, self.rate = get_teacher, int(rate)
        self.dim = int(self.teacher.dim)
        self.head = kd_head_for(self.names, labels, get_teacher)
        self.info: dict = {"teacher": self.teacher.name, "dim": self.dim}

    def fit(self, dataset, waves: list, train_idx: np.ndarray, test_idx: np.ndarray,
            seed: int, cache: EmbeddingCache | None, progress: bool) -> dict:
        clips = [str(Path(item.path).resolve()) for item in dataset.items]
        frames, _ = teacher_features(self.names, clips, waves, self.rate, cache,
                                     progress=progress, get_teacher=self.get_teacher)
        pooled = np.stack([f.mean(axis=0) for f in frames])
        targets = dataset.targets
        if self.head is not None:
            held = self.head.probabilities(pooled[test_idx]) if len(test_idx) else None
            self.info["source"] = "the fitted teacher's own heads"
        else:
            self.head = fit_crossfit_probes(pooled, targets, train_idx, len(dataset.labels),
                                            seed=seed)
            held = self.head.full.logits(pooled[test_idx]) if len(test_idx) else None
            self.info.update(source="linear probes cross-fitted on the clean training clips",
                             c=self.head.c, oof_accuracy_train=self.head.oof_accuracy)
        self.info["teacher_test_accuracy"] = (float((held.argmax(1) == targets[test_idx])
                                                    .mean()) if held is not None else None)
        return self.info

    def pooled(self, crops: np.ndarray) -> np.ndarray:
        waves = [np.ascontiguousarray(c, np.float32) for c in crops]
        if self.teacher.sample_rate != self.rate:
            import soxr
            waves = [soxr.resample(w, self.rate, self.teacher.sample_rate).astype(np.float32)
                     for w in waves]
        return np.stack([f.mean(axis=0) for f in self.teacher.embed(waves)])

    def soft_targets(self, pooled: np.ndarray, items: np.ndarray,
                     temperature: float) -> np.ndarray:
        return self.head.soft_targets(pooled, items, temperature)


def train_distill(cfg: DistillConfig, out_dir, *, resume: bool = False, progress: bool = True,
                  stop_after_epoch: int | None = None, cache: EmbeddingCache | None = None,
                  get_teacher: Callable | None = None, threads: int | None = 1) -> dict:
    """Train one run into ``out_dir``; returns its metrics (``metrics.json``), or
    ``{"stopped_after_epoch": k}`` when ``stop_after_epoch`` stopped it as a kill would."""
    run = open_training_run(cfg, out_dir, resume=resume, error=TrainError, threads=threads)
    state, world = run.state, run.world
    progress = progress and world.is_main

    settings = student_frontend_settings(cfg.student)
    rate = int(settings["sample_rate"])
    dataset = load_run_dataset(cfg)[0]
    require_classes(dataset)
    dataset, waves = decode_dataset(dataset, rate, skip_unreadable=cfg.skip_unreadable,
                                    progress=progress)
    labels = dataset.labels
    train_idx, test_idx = split_indices(dataset, cfg.fold, seed=cfg.seed,
                                        test_fraction=cfg.test_fraction,
                                        train_fraction=cfg.train_fraction)
    val_idx = np.array([], dtype=np.int64)
    if cfg.validation_fold is not None or cfg.validation_fraction > 0:
        train_idx, val_idx = validation_split(dataset, train_idx, fold=cfg.validation_fold,
                                              fraction=cfg.validation_fraction, seed=cfg.seed)
    crop_s = cfg.crop_seconds or min(4.0, max(len(w) for w in waves) / rate)
    crop_samples = max(int(round(crop_s * rate)),
                       settings["win_length"] + 31 * settings["hop_length"])

    torch.manual_seed(cfg.seed)
    student = build_student(cfg.student, len(labels))
    network = student.network
    teacher = kd_info = None
    if cfg.teacher:
        teacher = OnlineTeacher(cfg.teacher, labels, rate, get_teacher)
        kd_info = teacher.fit(dataset, waves, train_idx, test_idx, cfg.seed, cache, progress)
        run.log(f"teacher {kd_info['teacher']}: {kd_info['source']}, held-out acc "
                f"{kd_info['teacher_test_accuracy']}")
    reg = Regularizer("con", teacher.dim, network.embedding_dim) \
        if teacher is not None and cfg.con_reg > 0 else None
    init_report = None
    if state is None and is_mn_student(cfg.student):
        init_report = initialize(student, cfg.init, cfg.importance)
        if init_report is not None and cfg.recalibrate_bn:
            rng = np.random.default_rng([cfg.seed, RECALIBRATION_STREAM])
            crops = make_crops(waves, train_idx, crop_samples, rate, rng)
            recalibrate_batchnorm(student, list(crops.waves))
        if init_report is not None:
            run.write_json("inherited_channels.json", init_report)
    params = list(student.parameters()) + (list(reg.parameters()) if reg is not None else [])
    optimizer = adamw(params, cfg.lr, cfg.weight_decay)
    batch_size = cfg.batch_size if cfg.steps_per_epoch else min(cfg.batch_size, len(train_idx))
    steps_per_epoch = cfg.steps_per_epoch or max(1, len(train_idx) // batch_size)
    window_frames = student.frontend.spec.n_frames(crop_samples)
    rows = world.local_rows(batch_size)  # this rank's rows of every global batch (all, alone)

    history: list[dict] = []
    start_epoch, train_seconds = 0, 0.0
    if state is not None:
        student.load_state_dict(state["model_state"])
        ts = state["train_state"]
        if reg is not None:
            reg.load_state_dict(ts["aux"]["reg"])
        optimizer.load_state_dict(ts["optimizer"])
        history, start_epoch = list(ts["history"]), int(state["epoch"])
        train_seconds = float(ts.get("train_seconds", 0.0))
        run.log(f"resuming after epoch {start_epoch}")

    def save(epoch: int, metrics: dict) -> None:
        save_checkpoint(run.checkpoint_path, student_name=cfg.student, frontend_settings=settings,
                        labels=labels, window_frames=window_frames,
                        model_state=student.state_dict(), epoch=epoch, config=cfg.to_dict(),
                        metrics=metrics, train_state={
                            "optimizer": optimizer.state_dict(),
                            "aux": {"reg": reg.state_dict()} if reg is not None else {},
                            "history": history, "train_seconds": train_seconds,
                            "kd": kd_info})

    evaluator = RunModules.student_only(student)
    replica = world.wrap({"student": student, "reg": reg})

    def forward(x_rows: torch.Tensor, n_rows: int, rng, t_pooled):
        """The differentiable step on this rank's rows (DDP's forward)."""
        feats = training_features(student, x_rows)
        if cfg.specaugment:  # masks drawn for the global batch, as one process does
            feats = world.local(spec_augment(world.whole_batch(feats, n_rows), rng, cfg,
                                             network.n_harmonics))
        emb = network.embed(feats)
        logits = network.classify(emb)
        con = None
        if reg is not None:
            con = reg(emb.mean(dim=1, keepdim=True),
                      torch.from_numpy(t_pooled.astype(np.float32))[:, None])
        return emb, logits, con

    def held_out(indices: np.ndarray) -> np.ndarray:
        return world.gather_rows(lambda part: predict(evaluator, waves, part), indices)
    for ep in EpochLoop(run, seed=cfg.seed, epochs=cfg.epochs, steps=steps_per_epoch,
                        start_epoch=start_epoch, progress=progress, stop_after=stop_after_epoch):
        epoch, rng = ep.epoch, ep.rng
        student.train()
        if reg is not None:
            reg.train()
        order = epoch_order(train_idx, steps_per_epoch * batch_size, rng)
        sums = {"loss": 0.0, "ce": 0.0, "kd": 0.0, "con": 0.0}
        correct = seen = 0
        for step in range(steps_per_epoch):
            schedule_step(optimizer, cfg, epoch, step, steps_per_epoch)
            idx = order[step * batch_size:(step + 1) * batch_size]
            x = make_crops(waves, idx, crop_samples, rate, rng, gain_db=cfg.gain_db,
                           shift_seconds=cfg.shift_seconds).waves
            lam, perm = 1.0, np.arange(len(idx))
            if cfg.mixup > 0:
                lam = float(rng.beta(cfg.mixup, cfg.mixup))
                lam = max(lam, 1.0 - lam)  # the first clip dominates: its label "counts"
                perm = rng.permutation(len(idx))
                x = lam * x + (1.0 - lam) * x[perm]
            x = np.ascontiguousarray(x[rows], np.float32)
            y_a = torch.from_numpy(dataset.targets[idx])
            y_b = y_a[torch.from_numpy(perm)][rows]
            y_a = y_a[rows]
            probs = t_pooled = None
            if teacher is not None:  # the teacher sees this very batch, mixed as the student
                t_pooled = teacher.pooled(x)
                probs = torch.from_numpy(teacher.soft_targets(t_pooled, idx[rows],
                                                              cfg.kd_temperature)
                                         .astype(np.float32))
            emb, logits, con_term = replica(forward, torch.from_numpy(x), len(idx), rng,
                                            t_pooled)
            parts = distillation_loss(logits, probs, y_a, y_b, lam, cfg.kd_weight,
                                      cfg.kd_temperature)
            loss = parts["loss"]
            con = loss * 0.0
            if con_term is not None:
                con = con_term
                loss = loss + cfg.con_reg * con
            ep.check_finite(loss, step)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            for key, value in (("loss", loss), ("ce", parts["ce"]), ("kd", parts["kd"]),
                               ("con", con)):
                sums[key] += float(value.item())
            correct += int((logits.argmax(1) == y_a).sum())
            seen += len(y_a)
            ep.step_done(loss=f"{sums['loss'] / (step + 1):.3f}", acc=f"{correct / seen:.3f}")
        times = ep.training_done()
        train_seconds += times["seconds"]
        sums = world.mean(sums)  # the ranks' means over equal shares: the global batch's
        counted = world.sum({"correct": correct, "seen": seen})
        record = {**{k: v / steps_per_epoch for k, v in sums.items()},
                  "train_acc": counted["correct"] / max(1, counted["seen"]),
                  "lr": optimizer.param_groups[0]["lr"],
                  "seconds": times["seconds"], "cpu_seconds": times["cpu_seconds"]}
        if epoch % cfg.eval_every == 0 or epoch == cfg.epochs:
            for key, indices in (("val_acc", val_idx), ("test_acc", test_idx)):
                if len(indices):
                    held = held_out(indices)
                    record[key] = float((held.argmax(1) == dataset.targets[indices]).mean())
        ep.finish(record, history, lambda k, r: save(k, {"last_epoch": r}), EPOCH_LINE)
        if ep.stop:
            return {"stopped_after_epoch": epoch}

    metrics: dict = {"labels": labels, "student": cfg.student, "epochs": cfg.epochs,
                     "test_fold": cfg.fold, "n_train": int(len(train_idx)),
                     "n_validation": int(len(val_idx)), "n_test": int(len(test_idx))}
    if len(test_idx):
        held = held_out(test_idx)
        metrics.update(classification_report(dataset.targets[test_idx], held.argmax(1), labels))
    # the student loop's keys: this loop keeps the last epoch
    metrics["selected_epoch"] = cfg.epochs
    metrics["validation_accuracy"] = (float((held_out(val_idx).argmax(1) ==
                                             dataset.targets[val_idx]).mean())
                                      if len(val_idx) else None)
    metrics.update({
        "params": count_params(network),
        "macs_per_second": {k: int(v) for k, v in count_macs_per_second(student).items()},
        "train_seconds": round(train_seconds, 1), "crop_seconds": crop_samples / rate,
        "kd": kd_info, "init": cfg.init if is_mn_student(cfg.student) else "random",
        "history": history, "config": cfg.to_dict(), "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        **({"processes": world.size, "backend": world.backend} if world.size > 1 else {})})
    if run.is_main:
        save(cfg.epochs, {k: metrics[k] for k in ("accuracy", "macro_f1") if k in metrics})
    run.write_json("metrics.json", metrics)
    world.barrier()  # the run is written when any rank returns
    acc = metrics.get("accuracy")
    run.log(f"done: held-out accuracy {acc:.4f} ({metrics['n_test']} clips), "
            f"{train_seconds / 60:.1f} min" if acc is not None else "done")
    return metrics


LOOP_KEY = "loop"  # a configuration file's ``loop = "distill"`` names this loop


def is_distill_config(path) -> bool:
    from .config import read_config_file
    return read_config_file(path).get(LOOP_KEY) == "distill"


def read_distill_config(path, **given) -> DistillConfig:
    """A ``DistillConfig`` from a TOML / YAML file (``description`` ignored; ``loop``, if
    there, must be "distill") and ``given`` settings (None = not given), the given ones
    winning."""
    from .config import ConfigError, read_config_file

    from_file = read_config_file(path)
    from_file.pop("description", None)
    loop = from_file.pop(LOOP_KEY, "distill")
    if loop != "distill":
        raise ConfigError(f"{path}: loop = {loop!r} is not the distillation loop")
    return DistillConfig.build(from_file, given)


__all__ = ["DistillConfig", "OnlineTeacher", "distillation_loss", "train_distill",
           "read_distill_config", "is_distill_config"]
