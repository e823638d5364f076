"""Compact harmonic CNN students (the family of Won et al. 2020, scaled down for small devices).

A student is ``HarmonicStudent``: a differentiable front end (``TorchFrontend`` with a learnable
``HarmonicFilterbank``) followed by ``HarmonicCNN``, the network that export deploys
(log features ``[B, T, H*F]`` -> logits ``[B, n_classes]``).

The network reshapes the harmonic-major features to ``[B, H, F, T]`` (harmonics as channels),
normalises them with a BatchNorm over the harmonic channels (the paper's ``hstft_bn``), runs 2-D
conv blocks that pool frequency down to one row and time by ``time_stride`` (8), and yields an
embedding sequence ``[B, T_E, B_E]`` (the ``l`` of the feature-informed regularisers). The head
pools that sequence over time with mean and max and maps it to logits.

Sizes (``list_students()`` has the figures; limits hold for up to 50 classes):

- ``tiny``    <= 70 K params, depthwise-separable residual blocks (microcontroller class);
- ``small``   <= 250 K params, wider depthwise-separable residual blocks;
- ``base``    <= 1 M params, Won-style residual blocks with full 3x3 convolutions;
- ``won2020`` the published configuration (128/256 channels, 7 layers, dense 256 head, 2 bins
  per semitone, ~3.6 M params), for reference. Unlike the paper, which pools time 288x to one
  vector per chunk, it pools time 8x like the others so it also yields an embedding sequence.

Front end (shared by all sizes unless a size overrides it): 16 kHz, 512-sample (32 ms) Hann
window zero-padded to n_fft 1024 (15.6 Hz bins, so every harmonic filter down to C1 catches a
bin), hop 320 samples (20 ms, 50 frames/s: cheap to train on a CPU, 6.25 embeddings/s), 6
harmonics x 64 semitones from C1 (384 features per frame).

Export-friendly by construction: fixed reshapes, Conv-BN-ReLU order (foldable BN, convs without
bias), MaxPool2d with static kernels, reductions over fixed axes (no adaptive pooling).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from edgeaudio.frontend import FrontendSpec, encode_matrix

from .frontend import TorchFrontend
from .harmonic import C1_HZ, HarmonicFilterbank
from .mn_student import MN_STUDENTS, build_mn_student, is_mn_student, mn_frontend_settings
from .student_base import Student

DEFAULT_FRONTEND = {
    "sample_rate": 16000, "n_fft": 1024, "win_length": 512, "hop_length": 320,
    "log_offset": 1e-6, "n_harmonics": 6, "n_semitones": 64, "bins_per_semitone": 1,
    "f0_min": C1_HZ, "learn_q": True, "q_init": 1.0,
}
_SPEC_KEYS = ("sample_rate", "n_fft", "win_length", "hop_length", "log_offset")
_FILTERBANK_KEYS = ("n_harmonics", "n_semitones", "bins_per_semitone", "f0_min", "learn_q",
                    "q_init")


@dataclass(frozen=True)
class Stage:
    """One conv block: ``block`` in {"conv", "res", "sep"}, output channels, then max pooling
    by ``pool = (freq, time)`` (freq pooling is skipped once a single row is left)."""

    block: str
    channels: int
    pool: tuple[int, int] = (2, 2)


@dataclass(frozen=True)
class StudentConfig:
    name: str
    description: str
    stages: tuple[Stage, ...]
    head_hidden: int = 0      # 0: the pooled embedding goes straight to the classifier
    dropout: float = 0.2
    frontend: dict = field(default_factory=dict)  # overrides of DEFAULT_FRONTEND


STUDENTS: dict[str, StudentConfig] = {
    "tiny": StudentConfig(
        "tiny", "depthwise-separable residual CNN, microcontroller class (<= 70 K params)",
        (Stage("conv", 16, (2, 2)), Stage("sep", 24, (2, 2)), Stage("sep", 32, (2, 2)),
         Stage("sep", 48, (2, 1)), Stage("sep", 64, (2, 1)), Stage("sep", 96, (2, 1))),
        dropout=0.1),
    "small": StudentConfig(
        "small", "wider depthwise-separable residual CNN (<= 250 K params)",
        (Stage("conv", 32, (2, 2)), Stage("sep", 48, (2, 2)), Stage("sep", 64, (2, 2)),
         Stage("sep", 96, (2, 1)), Stage("sep", 128, (2, 1)), Stage("sep", 192, (2, 1))),
        dropout=0.2),
    "base": StudentConfig(
        "base", "Won-style residual CNN with full 3x3 convolutions (<= 1 M params)",
        (Stage("conv", 48, (2, 2)), Stage("res", 48, (2, 2)), Stage("conv", 96, (2, 2)),
         Stage("res", 96, (2, 1)), Stage("conv", 160, (2, 1)), Stage("res", 160, (2, 1))),
        dropout=0.3),
    "won2020": StudentConfig(
        "won2020", "published Harmonic CNN configuration (Won et al. 2020, ~3.6 M params)",
        (Stage("conv", 128, (2, 2)), Stage("res", 128, (2, 2)), Stage("res", 128, (2, 2)),
         Stage("res", 128, (2, 1)), Stage("conv", 256, (2, 1)), Stage("res", 256, (2, 1)),
         Stage("res", 256, (2, 1))),
        head_hidden=256, dropout=0.5, frontend={"bins_per_semitone": 2}),
}


def conv_bn(in_ch: int, out_ch: int, kernel: int = 3, groups: int = 1, relu: bool = True):
    layers = [nn.Conv2d(in_ch, out_ch, kernel, padding=kernel // 2, groups=groups, bias=False),
              nn.BatchNorm2d(out_ch)]
    if relu:
        layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def separable(in_ch: int, out_ch: int, relu: bool = True):
    """Depthwise 3x3 then pointwise 1x1, each with its own BN."""
    return nn.Sequential(conv_bn(in_ch, in_ch, 3, groups=in_ch),
                         conv_bn(in_ch, out_ch, 1, relu=relu))


class ConvBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, pool: tuple[int, int]):
        super().__init__()
        self.conv = conv_bn(in_ch, out_ch)
        self.pool = make_pool(pool)

    def forward(self, x):
        return self.pool(self.conv(x))


class ResidualBlock(nn.Module):
    """Won's ``Res_2d_mp`` (two 3x3 convs, identity skip, max pool); ``separable`` swaps each
    3x3 for depthwise + pointwise. A 1x1 conv projects the skip when the width changes."""

    def __init__(self, in_ch: int, out_ch: int, pool: tuple[int, int], separable_convs: bool):
        super().__init__()
        if separable_convs:
            self.body = nn.Sequential(separable(in_ch, out_ch), separable(out_ch, out_ch, False))
        else:
            self.body = nn.Sequential(conv_bn(in_ch, out_ch), conv_bn(out_ch, out_ch, relu=False))
        self.skip = nn.Identity() if in_ch == out_ch else conv_bn(in_ch, out_ch, 1, relu=False)
        self.relu = nn.ReLU()
        self.pool = make_pool(pool)

    def forward(self, x):
        return self.pool(self.relu(self.body(x) + self.skip(x)))


def make_pool(pool: tuple[int, int]) -> nn.Module:
    return nn.Identity() if tuple(pool) == (1, 1) else nn.MaxPool2d(tuple(pool))


class HarmonicCNN(nn.Module):
    """The deployed network: log harmonic features ``[B, T, H*F]`` -> logits ``[B, n_classes]``."""

    def __init__(self, config: StudentConfig, n_classes: int, n_harmonics: int, n_freq: int):
        super().__init__()
        if n_classes < 1:
            raise ValueError(f"n_classes must be >= 1, got {n_classes}")
        self.config = config
        self.n_classes = int(n_classes)
        self.n_harmonics = int(n_harmonics)
        self.n_freq = int(n_freq)
        self.input_bn = nn.BatchNorm2d(n_harmonics)

        blocks, in_ch, freq, stride = [], n_harmonics, n_freq, 1
        for stage in config.stages:
            pool_f, pool_t = stage.pool
            pool_f = pool_f if freq >= pool_f else 1  # never pool a single row away
            pool = (pool_f, pool_t)
            if stage.block == "conv":
                blocks.append(ConvBlock(in_ch, stage.channels, pool))
            elif stage.block in ("res", "sep"):
                blocks.append(ResidualBlock(in_ch, stage.channels, pool, stage.block == "sep"))
            else:
                raise ValueError(f"unknown block kind {stage.block!r} (known: conv, res, sep)")
            in_ch, freq, stride = stage.channels, freq // pool_f, stride * pool_t
        self.blocks = nn.Sequential(*blocks)
        self.embedding_dim = in_ch
        self.time_stride = stride  # input frames per embedding frame

        pooled = 2 * in_ch  # mean and max over time
        head: list[nn.Module] = []
        if config.head_hidden:
            head += [nn.Linear(pooled, config.head_hidden, bias=False),
                     nn.BatchNorm1d(config.head_hidden), nn.ReLU()]
            pooled = config.head_hidden
        head += [nn.Dropout(config.dropout), nn.Linear(pooled, n_classes)]
        self.head = nn.Sequential(*head)

    @property
    def n_bins(self) -> int:
        return self.n_harmonics * self.n_freq

    @property
    def min_frames(self) -> int:
        """Shortest input (frames) that still gives one embedding frame."""
        return self.time_stride

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, T, H*F]`` -> ``[B, T // time_stride, embedding_dim]``."""
        batch, frames, _ = x.shape
        x = x.reshape(batch, frames, self.n_harmonics, self.n_freq).permute(0, 2, 3, 1)
        x = self.blocks(self.input_bn(x))       # [B, C, F', T_E]
        return x.amax(dim=2).transpose(1, 2)   # max over what is left of frequency

    def classify(self, emb: torch.Tensor) -> torch.Tensor:
        """``[B, T_E, B_E]`` -> logits ``[B, n_classes]``."""
        pooled = torch.cat([emb.mean(dim=1), emb.amax(dim=1)], dim=1)
        return self.head(pooled)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.embed(x))


class HarmonicStudent(Student):
    """A ``TorchFrontend`` with a learnable ``HarmonicFilterbank`` + ``HarmonicCNN``."""


def student_frontend_settings(name: str, **overrides) -> dict:
    """The front-end settings a student of size ``name`` uses, with ``overrides`` applied."""
    if is_mn_student(name):  # the EfficientAT-style family (edgeaudio.train.mn_student)
        return mn_frontend_settings(name, **overrides)
    config = _config(name)
    unknown = set(overrides) - set(DEFAULT_FRONTEND)
    if unknown:
        raise TypeError(f"unknown front-end setting(s) {sorted(unknown)}; "
                        f"known: {sorted(DEFAULT_FRONTEND)}")
    return {**DEFAULT_FRONTEND, **config.frontend, **overrides}


def build_student(name: str, n_classes: int, **frontend_settings) -> HarmonicStudent:
    """A fresh student of size ``name`` (see ``list_students()``); keyword arguments override
    ``DEFAULT_FRONTEND`` (sample_rate, n_fft, win_length, hop_length, n_semitones, ...).
    An mn student (``MN_STUDENTS``) is built by ``edgeaudio.train.mn_student``."""
    if is_mn_student(name):
        return build_mn_student(name, n_classes, **frontend_settings)
    config = _config(name)
    settings = student_frontend_settings(name, **frontend_settings)
    filterbank = HarmonicFilterbank(settings["sample_rate"], settings["n_fft"],
                                    **{k: settings[k] for k in _FILTERBANK_KEYS})
    with torch.no_grad():
        initial = filterbank().cpu().numpy()
    # the spec carries the initial matrix so it is complete on its own; frozen_spec() refreshes it
    spec = FrontendSpec(**{k: settings[k] for k in _SPEC_KEYS},
                        filterbank={"kind": "matrix", **encode_matrix(initial),
                                    "source": filterbank.describe()})
    network = HarmonicCNN(config, n_classes, filterbank.n_harmonics, filterbank.n_freq)
    return HarmonicStudent(config, TorchFrontend(spec, filterbank), network)


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def list_students(n_classes: int = 50) -> list[dict]:
    """Name, family, deployed parameter count (network only, for ``n_classes``) and
    description: the harmonic students, then the mn students."""
    rows = []
    for name, config in [*STUDENTS.items(), *MN_STUDENTS.items()]:
        student = build_student(name, n_classes)
        rows.append({"name": name, "family": "mn" if is_mn_student(name) else "harmonic",
                     "params": count_params(student.network),
                     "embedding_dim": student.network.embedding_dim,
                     "n_bins": student.network.n_bins, "description": config.description})
    return rows


def count_macs_per_second(student: HarmonicStudent, seconds: float = 10.0) -> dict:
    """Multiply-accumulates per second of audio, from forward hooks on Conv/Linear layers.

    ``network`` counts the deployed CNN; ``filterbank`` the dense ``power @ M.T`` of the front
    end (the FFT is not counted). Measured on ``seconds`` of audio to average out edge frames.
    """
    spec = student.frontend.spec
    frames = spec.n_frames(int(round(seconds * spec.sample_rate)))
    network = student.network
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        if isinstance(module, (nn.Conv1d, nn.Conv2d)):
            per_output = (module.in_channels // module.groups) * math.prod(module.kernel_size)
            total += output.numel() * per_output
        elif isinstance(module, nn.Linear):
            total += output.numel() * module.in_features

    handles = [m.register_forward_hook(hook) for m in network.modules()
               if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear))]
    was_training = network.training
    try:
        network.eval()
        with torch.no_grad():
            network(torch.zeros(1, frames, network.n_bins))
    finally:
        network.train(was_training)
        for h in handles:
            h.remove()
    frames_per_second = spec.sample_rate / spec.hop_length
    return {"network": total / seconds,
            "filterbank": network.n_bins * (spec.n_fft // 2 + 1) * frames_per_second}


def _config(name: str) -> StudentConfig:
    try:
        return STUDENTS[name]
    except KeyError:
        raise ValueError(f"unknown student {name!r}; known: {', '.join(STUDENTS)}") from None
