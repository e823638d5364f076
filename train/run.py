"""The run scaffold every training loop stands on: the run folder and the epoch loop.

``RunFolder`` is one run's folder: it refuses to overwrite a run, checks on ``--resume`` that
the stored settings are the ones given (naming each that differs), keeps ``train.log``, writes
JSON reports atomically. Under torchrun (``edgeaudio.train.distributed``) every rank opens
the folder and reads a resumed run's state, and only rank 0 writes to it.

``EpochLoop`` yields one ``Epoch`` per epoch still to run. An epoch seeds its own randomness
from ``(seed, epoch)``: a numpy generator for shuffling, crops and augmentation, and torch's
global seed for dropout. So a run resumed after epoch k continues exactly as the uninterrupted
run would, whatever happened before. The epoch shows a bar on a terminal (nothing elsewhere:
the epoch's log line is the progress), refuses a non-finite loss, times its training
(``training_done``, before evaluation), and on ``finish`` appends its record to the history,
saves the checkpoint (the loop's own ``save``: what a checkpoint holds is the loop's business)
and logs one line. ``Epoch.stop`` is the
stop-after hook: True when the loop should end after this epoch as a kill would (checkpoint
written, no final reports), which is how tests interrupt a run. Under torchrun the numpy
generator is the same on every rank (one global epoch order) and torch's seed is derived
per rank.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from edgeaudio.files import atomic_write_json

from .distributed import SINGLE, World, init_world, is_main_process
from .progress import stderr_is_terminal

LOG_NAME = "train.log"


def log_line(out_dir: Path | None, text: str, echo: bool = True) -> None:
    """``text`` to stderr (with ``echo``) and appended to ``out_dir/train.log``; under
    torchrun by rank 0 only."""
    if not is_main_process():
        return
    if echo:
        print(text, file=sys.stderr, flush=True)
    if out_dir is not None:
        with open(Path(out_dir) / LOG_NAME, "a", encoding="utf-8") as handle:
            handle.write(text + "\n")


def settings_that_differ(stored: dict, given: dict, ignore: Sequence[str] = ()) -> list[str]:
    """``"name (old -> new)"`` for every setting of ``given`` whose stored value differs."""
    return [f"{k} ({stored.get(k)!r} -> {v!r})" for k, v in given.items()
            if k not in ignore and stored.get(k) != v]


class RunFolder:
    """One run's folder. ``marker`` is the file whose presence means a run is there;
    ``read_state`` loads it (for a resume) and ``stored_config`` picks the settings from it."""

    def __init__(self, out_dir, cfg, *, resume: bool, error: type[Exception],
                 marker: str = "checkpoint.pt", read_state: Callable | None = None,
                 stored_config: Callable[[dict], dict] = lambda state: state["config"],
                 ignore: Sequence[str] = ("epochs", "eval_every"), echo: bool = True,
                 world: World = SINGLE):
        self.out_dir, self.error, self.echo = Path(out_dir), error, echo
        self.world = world
        marker_path = self.out_dir / marker
        self.state = None
        if resume:
            if not marker_path.exists():
                raise error(f"--resume: no {marker} in {self.out_dir}; start without --resume")
            if read_state is None:
                from .checkpoint import load_checkpoint
                read_state = load_checkpoint
            self.state = read_state(marker_path)
            # settings added since the run was written take their defaults
            stored = type(cfg).from_dict(stored_config(self.state)).to_dict()
            differ = settings_that_differ(stored, cfg.to_dict(), ignore)
            if differ:
                raise error("--resume with settings that differ from the run's: "
                            + ", ".join(differ)
                            + "; resume with the same flags or start a new --out")
        elif marker_path.exists():
            raise error(f"{self.out_dir} already holds a run ({marker}); pass --resume to "
                        f"continue it or choose another --out")
        if world.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        self.log(f"run {self.out_dir}: {json.dumps(cfg.to_dict())}", echo=False)

    @property
    def checkpoint_path(self) -> Path:
        return self.out_dir / "checkpoint.pt"

    def log(self, text: str, echo: bool | None = None) -> None:
        log_line(self.out_dir, text, self.echo if echo is None else echo)

    @property
    def is_main(self) -> bool:
        return self.world.is_main

    def write_json(self, name: str, payload) -> Path:
        """``payload`` as ``name`` in the folder, atomically (rank 0 only)."""
        if not self.world.is_main:
            return self.out_dir / name
        return atomic_write_json(self.out_dir / name, payload)


def open_training_run(cfg, out_dir, *, resume: bool, error: type[Exception],
                      threads: int | None = 1, device: str = "cpu") -> RunFolder:
    """What a checkpointed student loop does first: validate ``cfg``, set torch's threads,
    join torchrun's processes if it launched this one (``run.world``), open the run folder; a
    resumed checkpoint must hold training state."""
    cfg.validate()
    if threads:
        torch.set_num_threads(threads)
    run = RunFolder(out_dir, cfg, resume=resume, error=error, world=init_world(device))
    if run.state is not None and run.state.get("train_state") is None:
        raise error(f"{run.checkpoint_path}: holds no training state to resume from")
    return run


def seed_epoch(seed: int, epoch: int, rank: int = 0) -> np.random.Generator:
    """The epoch's numpy generator; torch's global seed (dropout) set from the same pair, and
    the rank under torchrun (rank 0's is the single process's)."""
    torch.manual_seed(seed * 100_003 + epoch + rank * 1_000_003)
    return np.random.default_rng([seed, epoch])


class Epoch:
    def __init__(self, loop: "EpochLoop", epoch: int):
        self.loop, self.epoch = loop, epoch
        self.t0, self.cpu0 = time.time(), time.process_time()
        self.rng = seed_epoch(loop.seed, epoch, loop.run.world.rank)
        self.bar = None
        if loop.progress and loop.run.is_main and stderr_is_terminal():
            from tqdm import tqdm
            self.bar = tqdm(total=loop.steps, desc=f"{loop.label}epoch {epoch}/{loop.epochs}",
                            unit="step", leave=False, file=sys.stderr, mininterval=0.5)

    def check_finite(self, loss: torch.Tensor, step: int) -> None:
        if not torch.isfinite(loss):
            raise self.loop.run.error(f"{self.loop.label}loss became {loss.item()} at epoch "
                                      f"{self.epoch}, step {step} (try a lower --lr)")

    def step_done(self, **postfix) -> None:
        if self.bar is not None:
            self.bar.update(1)
            if postfix:
                self.bar.set_postfix(postfix)

    def training_done(self) -> dict:
        """Close the bar; the epoch's training time so far (before any evaluation)."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        return {"seconds": round(time.time() - self.t0, 2),
                "cpu_seconds": round(time.process_time() - self.cpu0, 2)}

    def finish(self, record: dict, history: list, save: Callable[[int, dict], None],
               line: str) -> dict:
        """Append ``{"epoch": k, **record}`` to ``history``, ``save(epoch, record)`` (the
        checkpoint; rank 0 only), log ``line`` (a format string over the record's keys, plus
        ``label`` and ``val`` / ``test``: the validation and test accuracy, "-" in epochs
        without them)."""
        if self.bar is not None:
            self.training_done()
        record = {"epoch": self.epoch, **record}
        history.append(record)
        if self.loop.run.is_main:
            save(self.epoch, record)
        shown = {name: f"{record[key]:.3f}" if key in record else "-"
                 for name, key in (("val", "val_acc"), ("test", "test_acc"))}
        self.loop.run.log(line.format(**record, **shown, label=self.loop.label))
        return record

    @property
    def stop(self) -> bool:
        """The stop-after hook: end after this epoch as a kill would."""
        after = self.loop.stop_after
        return after is not None and self.epoch >= after and self.epoch < self.loop.epochs


class EpochLoop:
    """Epochs ``start_epoch + 1 .. epochs`` of a run, each an ``Epoch``."""

    def __init__(self, run: RunFolder, *, seed: int, epochs: int, steps: int,
                 start_epoch: int = 0, progress: bool = True, stop_after: int | None = None,
                 label: str = ""):
        self.run, self.seed, self.epochs, self.steps = run, seed, epochs, steps
        self.start_epoch, self.progress, self.stop_after = start_epoch, progress, stop_after
        self.label = label

    def __iter__(self) -> Iterator[Epoch]:
        for epoch in range(self.start_epoch + 1, self.epochs + 1):
            yield Epoch(self, epoch)
