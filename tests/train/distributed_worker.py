"""What the distributed tests launch, alone (``python``) or under ``torchrun``: real runs.

    python distributed_worker.py train SETTINGS.json OUT [--resume] [--stream]
    python distributed_worker.py distill SETTINGS.json OUT
    python distributed_worker.py step SETTINGS.json OUT.pt (eval|ghost)

``train`` runs ``edgeaudio.train.loop.train`` (``distill``: ``train_distill``) with the fake
teachers of ``test_cache`` (so no
weights load); ``step`` makes one optimizer step of the student loop's own step function on
one global batch of toy clips (SGD) and writes rank 0's parameters. SETTINGS holds the
``TrainConfig`` fields and ``cache`` (the embedding cache folder).
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository (tests.*)

import numpy as np  # noqa: E402
import torch  # noqa: E402


def fake_teacher(name: str):
    from tests.train.test_cache import FakeTeacher
    dims = {"yamnet": (6, 0.25), "efficientat": (5, 0.125)}[name]
    return FakeTeacher(name, dim=dims[0], hop=dims[1])


def run_train(settings: dict, out: str, resume: bool, stream: bool) -> None:
    from edgeaudio.train.cache import EmbeddingCache
    from edgeaudio.train.config import TrainConfig
    from edgeaudio.train.loop import train

    cache = EmbeddingCache(settings.pop("cache"))
    train(TrainConfig(**settings), out, resume=resume, progress=False, cache=cache,
          get_teacher=fake_teacher, stream=stream, loader_workers=1)


def run_distill(settings: dict, out: str) -> None:
    from edgeaudio.train.cache import EmbeddingCache
    from edgeaudio.train.distill import DistillConfig, train_distill

    cache = EmbeddingCache(settings.pop("cache"))
    train_distill(DistillConfig(**settings), out, progress=False, cache=cache,
                  get_teacher=fake_teacher)


def one_step(settings: dict, out: str, mode: str) -> None:
    """One step on a global batch of 8 crops. ``eval``: the student in eval mode (BatchNorm
    on its running statistics, no dropout), where one DDP step must equal one single-process
    step. ``ghost``: BatchNorm in training mode, dropout off; on CPU each rank normalises its
    own rows, so the single-process reference (``World(rank, 2)`` on one process) steps on the
    mean of the two halves' losses, each half normalised alone."""
    from edgeaudio.train.config import TrainConfig
    from edgeaudio.train.data import decode_dataset, load_dataset, make_crops
    from edgeaudio.train.distributed import World, init_world
    from edgeaudio.train.loop import student_forward
    from edgeaudio.train.losses import mixup_cross_entropy
    from edgeaudio.train.modules import RunModules

    torch.set_num_threads(1)
    settings.pop("cache")
    cfg = TrainConfig(**settings)
    world = init_world()
    dataset, waves = decode_dataset(load_dataset(cfg.data), 16000)
    torch.manual_seed(0)
    modules = RunModules(cfg, len(dataset.labels), 0)
    modules.train(mode != "eval")
    for m in modules.student.modules():
        if isinstance(m, torch.nn.Dropout):
            m.eval()
    # plain SGD: the loop's AdamW makes its first step lr * sign(gradient), which turns the
    # float rounding of a near-zero gradient into a whole step of either sign
    optimizer = torch.optim.SGD(modules.parameters(), lr=cfg.lr)
    rng = np.random.default_rng([cfg.seed, 1])
    idx = np.arange(8) * 2 % len(waves)
    crops = make_crops(waves, idx, 12800, 16000, rng, gain_db=cfg.gain_db)
    lam = max((b := float(rng.beta(0.3, 0.3))), 1.0 - b)
    perm = rng.permutation(8)
    x = (lam * crops.waves + (1.0 - lam) * crops.waves[perm]).astype(np.float32)
    y_a = torch.from_numpy(dataset.targets[idx])
    y_b = y_a[torch.from_numpy(perm)]
    state = rng.bit_generator.state  # SpecAugment draws from here on, per step

    def loss_on(part: World, replica):
        step_rng = np.random.default_rng()
        step_rng.bit_generator.state = state
        rows = part.local_rows(8)
        _, logits, _ = replica(student_forward, modules, cfg, part,
                               torch.from_numpy(np.ascontiguousarray(x[rows])), 8, step_rng,
                               None, crops, lam, perm)
        return mixup_cross_entropy(logits, y_a[rows], y_b[rows], lam)

    before = {k: v.detach().clone() for k, v in modules.student.named_parameters()}
    optimizer.zero_grad()
    if world.size == 1 and mode == "ghost":  # the reference: each half normalised alone
        halves = [World(rank=r, size=2) for r in range(2)]
        loss = sum(loss_on(h, World().wrap({})) for h in halves) / 2
    else:
        replica = world.wrap({"student": modules.student})  # alive until backward: its hooks
        loss = loss_on(world, replica)
    loss.backward()
    optimizer.step()
    if world.is_main:
        torch.save({"before": before, "after": {k: v.detach().clone() for k, v in
                                                modules.student.named_parameters()}}, out)


if __name__ == "__main__":
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    command, settings_path, out = sys.argv[1:4]
    settings = json.loads(Path(settings_path).read_text())
    if command == "train":
        run_train(settings, out, "--resume" in sys.argv, "--stream" in sys.argv)
    elif command == "distill":
        run_distill(settings, out)
    elif command == "step":
        one_step(settings, out, sys.argv[4])
    else:
        raise SystemExit(f"unknown command {command}")
