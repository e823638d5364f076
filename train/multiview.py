"""Multi-view networks with adaptive gradient blending (Phan et al. 2021).

One small CRNN branch per view (``edgeaudio.train.views``: log-mel, gammatone, CQT, raw
waveform), each with its own classifier, and a joint classifier on the concatenated branch
embeddings. How the heads are trained and read out is the *fusion mode*:

``"blend"``   all heads trained, their losses weighted by a ``GradientBlender`` whose weights
              are recomputed every N steps from train/validation losses (w = G / O^2); the
              output is the self-ensemble: the heads' probabilities weighted by the final
              weights (``self_ensemble``).
``"uniform"`` all heads trained with equal fixed weights (multi-task, no adaptation); output
              the joint head.
``"concat"``  only the joint head is trained (plain concatenation fusion, ``--blend none``);
              with a single view this is the single-view baseline.
``"late"``    only the per-view heads are trained, each on its own; the output is the mean of
              their probabilities (late fusion).

Sizes are for a 2-core CPU: with the defaults a spectral branch is a 3-block CNN (16, 32, 64
channels, each pooling frequency and time by 2) over ``[T, F]`` features, max over what is left
of frequency, a bidirectional GRU (64 per direction) and mean + max pooling over time to a
256-d embedding (about 75 K parameters). The raw branch replaces the 2-D CNN by 1-D convs
(80-sample kernels at stride 4, then pools of 4, 4 and 5: one frame per 320 samples, like the
spectral views' 20 ms hop). ``describe_costs`` measures parameters and MACs per branch.

The pieces a training loop needs (the loop itself lives in ``edgeaudio.train.loop``):

    model = MultiViewNet(["mel", "gammatone", "cqt", "raw"], n_classes=50)
    objective = MultiViewObjective(model, mode="blend", window=3, every=100)
    for step, (wave, target) in enumerate(batches, 1):
        loss, parts = objective.loss(model(wave), target)
        loss.backward(); optimizer.step(); optimizer.zero_grad()
        objective.after_step(step, model, train_subset, val_batches)  # measures when due
    probs = objective.predict_proba(model(wave))      # self-ensemble for "blend"
    plot_weights(objective.blender, "weights.png")
"""
from __future__ import annotations

import math
from typing import Iterable, Mapping, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from .blending import GradientBlender
from .views import build_view, parse_views

FUSION_MODES = ("blend", "uniform", "concat", "late")
JOINT = "joint"


class _Conv2dBlock(nn.Sequential):
    def __init__(self, in_ch: int, out_ch: int, pool: tuple[int, int]):
        super().__init__(nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False),
                         nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True), nn.MaxPool2d(pool))


class _Conv1dBlock(nn.Sequential):
    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int, pool: int):
        super().__init__(nn.Conv1d(in_ch, out_ch, kernel, stride=stride, padding=kernel // 2,
                                   bias=False),
                         nn.BatchNorm1d(out_ch), nn.ReLU(inplace=True), nn.MaxPool1d(pool))


class _RecurrentPooling(nn.Module):
    """``[B, T, C]`` -> bidirectional GRU -> mean and max over time -> ``[B, 4 * hidden]``."""

    def __init__(self, in_ch: int, hidden: int):
        super().__init__()
        self.gru = nn.GRU(in_ch, hidden, batch_first=True, bidirectional=True)
        self.embedding_dim = 4 * hidden

    def sequence(self, x: torch.Tensor) -> torch.Tensor:
        return self.gru(x)[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seq = self.sequence(x)
        return torch.cat([seq.mean(dim=1), seq.amax(dim=1)], dim=1)


class CRNNBranch(nn.Module):
    """Spectral branch: log features ``[B, T, F]`` -> embedding ``[B, embedding_dim]``."""

    def __init__(self, n_bins: int, channels: Sequence[int] = (16, 32, 64),
                 pool: tuple[int, int] = (2, 2), rnn_hidden: int = 64):
        super().__init__()
        self.n_bins = int(n_bins)
        self.input_norm = nn.BatchNorm2d(1)
        blocks, in_ch, freq = [], 1, self.n_bins
        for out_ch in channels:
            pool_f = pool[0] if freq >= pool[0] else 1
            blocks.append(_Conv2dBlock(in_ch, out_ch, (pool_f, pool[1])))
            in_ch, freq = out_ch, freq // pool_f
        self.cnn = nn.Sequential(*blocks)
        self.time_stride = pool[1] ** len(channels)
        self.rnn = _RecurrentPooling(in_ch, rnn_hidden)
        self.embedding_dim = self.rnn.embedding_dim

    def sequence(self, features: torch.Tensor) -> torch.Tensor:
        """``[B, T, F]`` -> ``[B, T // time_stride, 2 * rnn_hidden]``."""
        x = self.input_norm(features.transpose(1, 2).unsqueeze(1))  # [B, 1, F, T]
        x = self.cnn(x).amax(dim=2)                                  # [B, C, T']
        return self.rnn.sequence(x.transpose(1, 2))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        seq = self.sequence(features)
        return torch.cat([seq.mean(dim=1), seq.amax(dim=1)], dim=1)


class RawBranch(nn.Module):
    """Waveform branch: ``[B, S]`` -> embedding ``[B, embedding_dim]`` (one GRU frame per
    ``time_stride`` samples, 320 with the defaults)."""

    def __init__(self, channels: Sequence[int] = (32, 32, 64), first_kernel: int = 80,
                 first_stride: int = 4, pools: Sequence[int] = (4, 4, 5), rnn_hidden: int = 64):
        super().__init__()
        if len(channels) != len(pools):
            raise ValueError("RawBranch needs one pool per conv layer")
        blocks, in_ch = [], 1
        for index, (out_ch, pool) in enumerate(zip(channels, pools)):
            kernel, stride = (first_kernel, first_stride) if index == 0 else (3, 1)
            blocks.append(_Conv1dBlock(in_ch, out_ch, kernel, stride, pool))
            in_ch = out_ch
        self.cnn = nn.Sequential(*blocks)
        self.time_stride = first_stride * math.prod(pools)
        self.rnn = _RecurrentPooling(in_ch, rnn_hidden)
        self.embedding_dim = self.rnn.embedding_dim

    def sequence(self, wave: torch.Tensor) -> torch.Tensor:
        return self.rnn.sequence(self.cnn(wave.unsqueeze(1)).transpose(1, 2))

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        seq = self.sequence(wave)
        return torch.cat([seq.mean(dim=1), seq.amax(dim=1)], dim=1)


class MultiViewNet(nn.Module):
    """Waveform ``[B, S]`` -> ``{view: logits, ..., "joint": logits}`` (each ``[B, n_classes]``).

    ``views``          names or a comma-separated string ("mel,gammatone,cqt,raw")
    ``view_settings``  per-view keyword arguments for ``build_view`` (e.g. {"mel": {"n_mels": 96}})
    ``branch``         keyword arguments for every ``CRNNBranch`` (channels, pool, rnn_hidden)
    ``raw_branch``     keyword arguments for the ``RawBranch``
    """

    def __init__(self, views: str | Sequence[str], n_classes: int,
                 view_settings: Mapping[str, dict] | None = None, branch: dict | None = None,
                 raw_branch: dict | None = None, dropout: float = 0.3):
        super().__init__()
        self.view_names = parse_views(views)
        if n_classes < 2:
            raise ValueError(f"n_classes must be >= 2, got {n_classes}")
        self.n_classes = int(n_classes)
        view_settings = dict(view_settings or {})
        self.settings = {"views": list(self.view_names), "n_classes": self.n_classes,
                         "view_settings": view_settings, "branch": dict(branch or {}),
                         "raw_branch": dict(raw_branch or {}), "dropout": dropout}
        self.views = nn.ModuleDict()
        self.branches = nn.ModuleDict()
        self.heads = nn.ModuleDict()
        for name in self.view_names:
            view = build_view(name, **view_settings.get(name, {}))
            self.views[name] = view
            if name == "raw":
                self.branches[name] = RawBranch(**(raw_branch or {}))
            else:
                self.branches[name] = CRNNBranch(view.n_bins, **(branch or {}))
            self.heads[name] = nn.Linear(self.branches[name].embedding_dim, n_classes)
        rates = {self.views[n].sample_rate for n in self.view_names}
        if len(rates) != 1:
            raise ValueError(f"views disagree on the sample rate: {sorted(rates)}")
        self.sample_rate = rates.pop()
        self.dropout = nn.Dropout(dropout)
        joint_dim = sum(b.embedding_dim for b in self.branches.values())
        self.joint = nn.Linear(joint_dim, n_classes)

    @property
    def head_names(self) -> list[str]:
        """Every classifier: one per view, then "joint"."""
        return [*self.view_names, JOINT]

    def view_inputs(self, wave: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{view: features}``: the fixed, parameter-free transforms of ``wave``. A training
        loop may compute them once per clip, cache them, and call ``forward_views``."""
        if wave.dim() != 2:
            raise ValueError(f"expected a waveform batch [B, samples], got {tuple(wave.shape)}")
        return {name: self.views[name](wave) for name in self.view_names}

    def embeddings(self, wave: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{view: [B, embedding_dim]}``."""
        inputs = self.view_inputs(wave)
        return {name: self.branches[name](inputs[name]) for name in self.view_names}

    def forward_views(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Logits per head from precomputed ``view_inputs``."""
        embeddings = {name: self.branches[name](inputs[name]) for name in self.view_names}
        logits = {name: self.heads[name](self.dropout(embeddings[name]))
                  for name in self.view_names}
        joint = torch.cat([embeddings[name] for name in self.view_names], dim=1)
        logits[JOINT] = self.joint(self.dropout(joint))
        return logits

    def forward(self, wave: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.forward_views(self.view_inputs(wave))


def head_losses(outputs: Mapping[str, torch.Tensor], targets: torch.Tensor,
                names: Iterable[str] | None = None) -> dict[str, torch.Tensor]:
    """Cross-entropy per head (targets: class indices ``[B]`` or probabilities ``[B, C]``)."""
    names = list(outputs) if names is None else list(names)
    return {name: F.cross_entropy(outputs[name], targets) for name in names}


@torch.no_grad()
def evaluate_head_losses(model: MultiViewNet, batches: Iterable) -> dict[str, float]:
    """Mean cross-entropy of every head over ``batches`` of ``(wave, target)`` or
    ``(view_inputs, target)`` (precomputed ``view_inputs``), in eval mode (the measurement
    ``GradientBlender.update`` takes)."""
    was_training = model.training
    model.eval()
    totals = {name: 0.0 for name in model.head_names}
    count = 0
    try:
        for inputs, target in batches:
            outputs = (model.forward_views(inputs) if isinstance(inputs, Mapping)
                       else model(inputs))
            for name in model.head_names:
                totals[name] += float(F.cross_entropy(outputs[name], target,
                                                      reduction="sum"))
            count += int(target.shape[0])
    finally:
        model.train(was_training)
    if count == 0:
        raise ValueError("evaluate_head_losses got no batches")
    return {name: total / count for name, total in totals.items()}


def self_ensemble(outputs: Mapping[str, torch.Tensor], weights: Mapping[str, float]
                  ) -> torch.Tensor:
    """``sum_k w_k softmax(logits_k) / sum_k w_k`` over the heads in ``weights``."""
    total = sum(float(w) for w in weights.values())
    if total <= 0:
        raise ValueError(f"self-ensemble weights must not all be zero: {dict(weights)}")
    return sum(float(w) * outputs[name].softmax(dim=-1) for name, w in weights.items()) / total


class MultiViewObjective:
    """The loss and the read-out of a ``MultiViewNet`` for one fusion mode (see module doc).

    For ``"blend"`` it owns a ``GradientBlender`` over every head; ``after_step`` measures the
    heads' losses on the fixed training subset and the validation batches every ``every``
    steps and updates the weights. ``floor`` and ``window`` pass through to the blender.
    """

    def __init__(self, model: MultiViewNet, mode: str = "blend", window: int = 3,
                 every: int = 100, floor: float = 0.0):
        if mode not in FUSION_MODES:
            raise ValueError(f"unknown fusion mode {mode!r}; known: {', '.join(FUSION_MODES)}")
        self.mode = mode
        self.head_names = model.head_names
        self.view_names = list(model.view_names)
        if mode == "blend":
            self.trained = list(self.head_names)
            self.blender: GradientBlender | None = GradientBlender(
                self.head_names, window=window, every=every, floor=floor)
        else:
            self.blender = None
            self.trained = {"uniform": list(self.head_names), "concat": [JOINT],
                            "late": list(self.view_names)}[mode]

    @property
    def weights(self) -> dict[str, float]:
        """The current loss weights of the trained heads."""
        if self.blender is not None:
            return dict(self.blender.weights)
        if self.mode == "late":  # each branch learns on its own: an unweighted sum
            return {name: 1.0 for name in self.trained}
        return {name: 1.0 / len(self.trained) for name in self.trained}

    def loss(self, outputs: Mapping[str, torch.Tensor], targets: torch.Tensor
             ) -> tuple[torch.Tensor, dict[str, float]]:
        """The training loss and each trained head's loss value (for logging)."""
        losses = head_losses(outputs, targets, self.trained)
        weights = self.weights
        total = sum(weights[name] * losses[name] for name in self.trained)
        return total, {name: float(value.detach()) for name, value in losses.items()}

    def after_step(self, step: int, model: MultiViewNet, train_subset: Iterable,
                   val_batches: Iterable) -> bool:
        """Measure and re-weight when due (blend mode only); True when it measured."""
        if self.blender is None or not self.blender.due(step):
            return False
        self.blender.update(step, evaluate_head_losses(model, train_subset),
                            evaluate_head_losses(model, val_batches))
        return True

    def predict_proba(self, outputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Class probabilities ``[B, n_classes]`` for this mode's read-out."""
        if self.mode == "blend":
            return self_ensemble(outputs, self.blender.weights)
        if self.mode == "late":
            return self_ensemble(outputs, {name: 1.0 for name in self.view_names})
        return outputs[JOINT].softmax(dim=-1)

    def state_dict(self) -> dict:
        return {"mode": self.mode,
                "blender": None if self.blender is None else self.blender.state_dict()}

    def load_state_dict(self, state: Mapping) -> None:
        if state["mode"] != self.mode:
            raise ValueError(f"objective state is for mode {state['mode']!r}, not {self.mode!r}")
        if self.blender is not None:
            self.blender.load_state_dict(state["blender"])


def describe_costs(model: MultiViewNet, seconds: float = 5.0) -> dict[str, dict]:
    """Parameters and multiply-accumulates per clip of ``seconds`` for each branch (view
    transform excluded except the CQT's kernel products, which are counted) and the heads."""
    n_samples = int(round(seconds * model.sample_rate))
    wave = torch.zeros(1, n_samples)
    report = {}
    was_training = model.training
    model.eval()
    try:
        for name in model.view_names:
            branch = model.branches[name]
            macs = 0

            def hook(module, inputs, output):
                nonlocal macs
                if isinstance(module, (nn.Conv1d, nn.Conv2d)):
                    macs += output.numel() * (module.in_channels // module.groups) * \
                        math.prod(module.kernel_size)
                elif isinstance(module, nn.GRU):
                    steps = inputs[0].shape[1]
                    per_direction = 3 * module.hidden_size * (module.input_size +
                                                              module.hidden_size)
                    macs += steps * per_direction * (2 if module.bidirectional else 1)

            handles = [m.register_forward_hook(hook) for m in branch.modules()
                       if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.GRU))]
            try:
                with torch.no_grad():
                    features = model.views[name](wave)
                    branch(features)
            finally:
                for handle in handles:
                    handle.remove()
            view = model.views[name]
            if hasattr(view, "macs_per_frame"):
                macs += view.macs_per_frame() * view.n_frames(n_samples)
            report[name] = {"params": sum(p.numel() for p in branch.parameters()) +
                            sum(p.numel() for p in model.heads[name].parameters()),
                            "macs": int(macs), "input_shape": list(features.shape[1:])}
        report[JOINT] = {"params": sum(p.numel() for p in model.joint.parameters()),
                         "macs": model.joint.in_features * model.joint.out_features}
    finally:
        model.train(was_training)
    return report
