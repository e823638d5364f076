"""Several processes, one run: the same training command under ``torchrun`` (PyTorch DDP).

``torchrun --nproc_per_node N $(which edgeaudio) train ...`` starts N copies of the command;
``init_world`` reads torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, the
rendezvous address) and joins them into one process group: gloo on CPU, NCCL with
``--device cuda`` (each rank then takes the GPU of its ``LOCAL_RANK``). With ``WORLD_SIZE``
unset (or 1) it joins nothing and returns ``SINGLE``, and every helper here is the identity:
the single-process path is the one it always was.

How a run divides its work (``World``):

- **The epoch order is the single process's.** Every rank draws the same epoch generator
  (``run.seed_epoch(seed, epoch)``), so every rank knows the same global batch of
  ``--batch-size`` clips, its crops, mixup partners and SpecAugment masks. Each rank trains on
  its own contiguous rows of it (``local_rows``); DDP averages the ranks' gradients, which is
  the gradient of the mean loss over the global batch: one step under torchrun is the single
  process's step on the same batch. The global batch must divide evenly among the ranks.
- **Torch's own seed (dropout) is derived per rank** (``seed_epoch(..., rank)``), so ranks do
  not drop the same units of different clips; rank 0's is the single process's.
- **BatchNorm.** With NCCL (GPUs) the student's BatchNorm layers become ``SyncBatchNorm``:
  batch statistics are those of the whole global batch, as in one process, and the running
  statistics are updated from them identically on every rank. On CPU (gloo) torch has no
  SyncBatchNorm, so each rank normalises with the statistics of its own rows (the "ghost
  batch" of ``batch_size / N`` clips); DDP broadcasts rank 0's running statistics to the other
  ranks before every forward, so the checkpoint holds rank 0's. In evaluation (``eval()``)
  BatchNorm uses the running statistics and no rank depends on another.
- **Only rank 0 writes**: ``train.log``, progress, checkpoints, ``metrics.json`` and plots
  (atomically, as alone). Every rank reads a checkpoint on ``--resume``.
- **Held-out scoring is shared**: ``gather_rows`` gives each rank every N-th clip and gathers
  the logits, so every rank holds the same figures (and picks the same best epoch).

``Replica`` / ``World.wrap``: DDP needs the whole differentiable step inside one module's
``forward``; a loop passes its step as a function to the wrapped modules, so the loop's code
stays the single-process code. Multi-node runs are torchrun's business (``--nnodes``,
``--rdzv-backend c10d --rdzv-endpoint HOST:PORT``); nothing here depends on the node count.
"""
from __future__ import annotations

import atexit
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from edgeaudio.errors import EdgeAudioError

# a collective waits this long for the slowest rank (teacher extraction before the first epoch
# can take hours); a rank that dies is torchrun's to notice, which stops the others at once
TIMEOUT_ENV_VAR = "EDGEAUDIO_DIST_TIMEOUT_MINUTES"
DEFAULT_TIMEOUT_MINUTES = 360


class DistributedError(EdgeAudioError):
    pass


@dataclass(frozen=True)
class World:
    """This process's place among the run's processes (``SINGLE``: alone)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    device: str = "cpu"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def backend(self) -> str:
        return "nccl" if self.device.startswith("cuda") else "gloo"

    def local_rows(self, n: int) -> slice:
        """This rank's contiguous share of a global batch of ``n`` rows."""
        if n % self.size:
            raise DistributedError(
                f"a global batch of {n} clips does not divide among {self.size} processes: "
                f"give a --batch-size that is a multiple of {self.size}")
        share = n // self.size
        return slice(self.rank * share, (self.rank + 1) * share)

    def whole_batch(self, local: torch.Tensor, n: int) -> torch.Tensor:
        """``local`` rows placed at this rank's rows of a zero batch of ``n`` rows: what a
        per-row augmentation drawn for the global batch (SpecAugment) is applied to, so that
        it consumes the epoch generator exactly as one process does."""
        if self.size == 1:
            return local
        rows = self.local_rows(n)
        shape = (n - local.shape[0],) + tuple(local.shape[1:])
        filler = torch.zeros(shape, dtype=local.dtype, device=local.device)
        return torch.cat([filler[:rows.start], local, filler[rows.start:]])

    def local(self, batch, n: int | None = None):
        """This rank's rows of a global batch (an array or a tensor)."""
        if self.size == 1:
            return batch
        return batch[self.local_rows(len(batch) if n is None else n)]

    def share(self, items: Sequence) -> list:
        """Every ``size``-th item from ``rank``: this rank's part of a job split by items."""
        return list(items)[self.rank::self.size]

    def gather_rows(self, compute: Callable[[np.ndarray], np.ndarray],
                    indices: np.ndarray) -> np.ndarray:
        """``compute(indices)`` with the rows shared among the ranks: each computes every
        ``size``-th index and all receive the whole result, in the order of ``indices``."""
        indices = np.asarray(indices)
        if self.size == 1:
            return compute(indices)
        mine = compute(indices[self.rank::self.size])
        parts: list = [None] * self.size
        torch.distributed.all_gather_object(parts, mine)
        out = np.empty((len(indices),) + parts[0].shape[1:], dtype=parts[0].dtype)
        for rank, part in enumerate(parts):
            out[rank::self.size] = part
        return out

    def sum(self, values: dict) -> dict:
        """``values`` (numbers) summed over the ranks."""
        if self.size == 1:
            return dict(values)
        keys = sorted(values)
        total = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64,
                             device=self.device)
        torch.distributed.all_reduce(total)
        return {k: float(v) for k, v in zip(keys, total.cpu().tolist())}

    def mean(self, values: dict) -> dict:
        """``values`` averaged over the ranks (each rank's are means over equal shares)."""
        if self.size == 1:
            return dict(values)
        return {k: v / self.size for k, v in self.sum(values).items()}

    def barrier(self) -> None:
        if self.size > 1:
            torch.distributed.barrier()

    def wrap(self, modules: dict[str, nn.Module], find_unused: bool = False) -> Callable:
        """The modules a step trains, callable as ``wrapped(step, *args)`` = ``step(*args)``:
        alone, that call and nothing else; under torchrun, through ``DistributedDataParallel``
        (BatchNorm -> SyncBatchNorm on GPUs), which averages the gradients of ``backward``."""
        if self.size == 1:
            return lambda step, *args, **kwargs: step(*args, **kwargs)
        replica = Replica(modules)
        if self.backend == "nccl":
            nn.SyncBatchNorm.convert_sync_batchnorm(replica)
        device_ids = [self.local_rank] if self.backend == "nccl" else None
        return nn.parallel.DistributedDataParallel(
            replica, device_ids=device_ids, forward_sync_buffers=True,
            find_unused_parameters=find_unused)


class Replica(nn.Module):
    """The modules of one training step as one module for DDP to wrap; ``forward`` runs the
    loop's step function (which uses these same modules)."""

    def __init__(self, modules: dict[str, nn.Module]):
        super().__init__()
        self.parts = nn.ModuleDict({k: m for k, m in modules.items() if m is not None})

    def forward(self, step: Callable, *args, **kwargs):
        return step(*args, **kwargs)


SINGLE = World()
_current = SINGLE


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1") or 1) > 1


def init_world(device: str = "cpu") -> World:
    """Join torchrun's process group (once per process) and return this rank's ``World``;
    ``SINGLE`` (on ``device``) when not launched by torchrun."""
    global _current
    if not launched_by_torchrun():
        return World(device=device)
    rank, size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if device.startswith("cuda"):
        if device not in ("cuda", f"cuda:{local_rank}"):
            raise DistributedError(f"--device {device} under torchrun: give --device cuda, and "
                                   f"each rank takes the GPU of its LOCAL_RANK")
        if not torch.cuda.is_available() or torch.cuda.device_count() <= local_rank:
            raise DistributedError(f"rank {rank} wants GPU {local_rank} but torch sees "
                                   f"{torch.cuda.device_count()} CUDA device(s)")
        torch.cuda.set_device(local_rank)
        device = f"cuda:{local_rank}"
    elif device != "cpu":
        raise DistributedError(f"--device {device}: under torchrun give cpu or cuda")
    world = World(rank=rank, size=size, local_rank=local_rank, device=device)
    if not torch.distributed.is_initialized():
        minutes = float(os.environ.get(TIMEOUT_ENV_VAR, DEFAULT_TIMEOUT_MINUTES))
        kwargs = {"device_id": torch.device(device)} if world.backend == "nccl" else {}
        torch.distributed.init_process_group(world.backend, timeout=timedelta(minutes=minutes),
                                             **kwargs)
        atexit.register(leave_world)
    _current = world
    return world


def leave_world() -> None:
    """Tear the process group down before the interpreter exits: left to the C++ destructors,
    a rank's gloo threads are destroyed while still joinable and the rank aborts ("terminate
    called without an active exception") after its work is done."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def current_world() -> World:
    """The world ``init_world`` joined in this process (``SINGLE`` before, or alone)."""
    return _current


def is_main_process() -> bool:
    """Rank 0, or alone: the process that logs and writes. Under torchrun before the group is
    joined, torchrun's ``RANK`` says."""
    if _current.size > 1:
        return _current.is_main
    return int(os.environ.get("RANK", "0") or 0) == 0
