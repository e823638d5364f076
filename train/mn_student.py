"""EfficientAT-style MobileNetV3 students (``mn02``, ``mn01``) that can inherit mn04's weights.

The family is EfficientAT's MN (Schmid et al. 2023, fschmid56/EfficientAT models/mn) at a
smaller width: the MobileNetV3-Large block table of ``teachers.efficientat`` with every width
rounded by ``make_divisible`` (``mn02``: width 0.2, 139,848 backbone parameters, as
EfficientAT's mn02 built at that width; ``mn01``: width 0.1, 43,624 against its 43,384, see
below; EfficientAT quotes ~140 K and ~43 K), channel squeeze-excitation where the table has
it, and EfficientAT's MLP head (pooled -> hidden -> hardswish -> dropout -> classes). One
deliberate difference: a block keeps its 1x1 expand conv whenever mn04's block has one (at
width 0.1 the rounding makes blocks 2, 3 and 4 "expand" 8 -> 8, which EfficientAT builds
without that conv), so that every layer of the student has a layer of mn04 to inherit from.

Variants (``MN_STUDENTS``): ``drop_blocks`` leaves out residual blocks (their stream keeps its
channels, so nothing else changes); ``late_width`` builds the blocks from ``late_from`` on
(default 13, the last stride-2 stage, where most parameters are) at a smaller width;
``expand_width`` narrows only the expanded channels inside the blocks from ``expand_from`` on,
leaving the residual streams at ``width``; ``se_ratio`` sizes the SE squeezes (mn04: 1/4),
``embedding_dim`` the last 1x1 conv and ``head_hidden`` the head. ``mn04-short`` is mn04
itself without blocks 14 and 15, with 1/16 squeezes and a 128-unit head: every stream and
expanded channel kept, so all its convolutions and BatchNorms are mn04's own
(``bench/mn_screen_esc50.py`` compares the ways to cut).

Inheritance (``inherit_from_mn04``): every layer of the student takes the weights of mn04's
layer at the same place, restricted to the channels it keeps, chosen by importance:

- ``"bn"``: |gamma| of the BatchNorm after the conv that produces the channel;
- ``"l1"``: the L1 norm of that conv's filter.

A residual stream (the channels a run of residual blocks adds into) is chosen once for all the
convs that write into it (the first conv of its stage and each residual block's projection:
their importances summed) and used as the input channels of every conv that reads it, so the
additions stay aligned. A block's expanded channels are chosen from its depthwise conv's BN (or
expand filter), and the same indices select the expand conv's outputs, the depthwise filters,
the SE layer's inputs and outputs and the projection's inputs. SE squeeze units, the last 1x1
conv and the head's hidden units are chosen the same way (L1 of the weights that read and
write them for the layers without a BatchNorm). Kept channels stay in mn04's order. The head's
last layer is inherited only for AudioSet's 527 classes (the zero-shot check); a task head
starts from random weights. ``random`` initialisation (no call) is the ablation arm.

Front end (``mn_frontend_spec``): what the runtime's numpy front end computes at 16 kHz, made
equal to EfficientAT's 32 kHz mel on 16 kHz material: n_fft 512, a 400-sample window and a
160-sample hop (the same 25 ms / 10 ms / 31.25 Hz bins as 800 / 320 / 1024 at 32 kHz), and a
stored matrix: EfficientAT's 128 Kaldi mel bands (0-15 kHz) over the bins below 8 kHz, times
4 (a 32 kHz window holds twice the samples, so four times the power) and times the pre-emphasis
filter's power response |1 - 0.97 exp(-2 pi i f / 32000)|^2 (a linear filter is a per-bin gain
on the spectrum, up to window leakage). log offset 1e-5 as EfficientAT; its ``(x + 4.5) / 5``
scaling is the network's first op. Not matched: the window shape (periodic, not symmetric Hann)
and centre padding (the runtime frames without it, so frames sit half a window later). The
bands above 8 kHz stay at log(1e-5), as mn04 sees 16 kHz audio resampled to 32 kHz.
``frontend_agreement`` measures the difference on real clips.

Causal students (``causal=True``, ``mn02-stream``): every conv with a time kernel sees only
the (k - 1) frames before each output (``CausalConv2d``: zeros before the start, 'same' padding
over frequency as before), the SE layers squeeze over frequency per frame instead of over the
whole map (``FrameSE``), and the head runs on every embedding frame, the logits averaged over
time. Nothing then looks ahead, so a recording can be run in chunks of 32 frames (0.32 s, the
network's time stride) with each conv's last (k - 1) input frames carried from chunk to chunk
(``MNStreamStep``): one network pass per chunk, and the chunks' logits are exactly the frames
of one causal pass over the whole recording. The inherited weights are mn04's, applied causally
(each layer's view shifted by half its kernel into the past).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgeaudio import files
from edgeaudio.frontend import FrontendSpec, encode_matrix

from .frontend import TorchFrontend
from .student_base import Student
from .teachers.efficientat import (FMAX, FMIN, MODEL_SAMPLE_RATE, MOBILENET_V3_LARGE, N_CLASSES,
                                   N_FFT, N_MELS, ConcurrentSEBlock, ConvNormActivation,
                                   InvertedResidual, MobileNetV3Audio, kaldi_mel_banks,
                                   make_divisible)

SAMPLE_RATE = 16000
FRONTEND_SETTINGS = {"sample_rate": SAMPLE_RATE, "n_fft": 512, "win_length": 400,
                     "hop_length": 160, "log_offset": 1e-5, "n_mels": N_MELS}
PREEMPHASIS = 0.97
TEACHER_WIDTH = 0.4
TIME_STRIDE = 32          # stride 2 in the first conv and in four blocks
N_BLOCKS = len(MOBILENET_V3_LARGE)
IMPORTANCE = ("bn", "l1")


@dataclass(frozen=True)
class MNConfig:
    name: str
    description: str
    width: float
    drop_blocks: tuple[int, ...] = ()     # residual blocks (1..15) left out
    late_width: float | None = None       # width of blocks >= late_from (None: ``width``)
    late_from: int = 13
    expand_width: float | None = None     # width of expanded channels from expand_from on
    expand_from: int = 2                  # (None: the block's width; block 1 has no expand conv)
    se_ratio: int = 4                     # SE squeeze units = expanded / se_ratio (mn04: 4)
    head_hidden: int | None = None        # the MLP head's hidden units (None: 1280 x last width)
    embedding_dim: int | None = None      # the last 1x1 conv's channels (None: 6 x last stream)
    dropout: float = 0.2
    causal: bool = False                  # causal in time: streams chunk by chunk (see below)

    def block_width(self, block: int) -> float:
        return self.late_width if self.late_width is not None and block >= self.late_from \
            else self.width


MN_STUDENTS: dict[str, MNConfig] = {
    "mn02": MNConfig("mn02", "EfficientAT MobileNetV3 at width 0.2 (inherits from mn04)", 0.2),
    "mn01": MNConfig("mn01", "EfficientAT MobileNetV3 at width 0.1 (inherits from mn04)", 0.1,
                     dropout=0.1),
    "mn02-short": MNConfig("mn02-short", "mn02 without its last two residual blocks", 0.2,
                           drop_blocks=(14, 15)),
    "mn02-slim": MNConfig("mn02-slim", "mn02 with the last stage at width 0.1", 0.2,
                          late_width=0.1),
    # mn04's residual streams and blocks 1-13 as they are (the fewest cuts for the most kept:
    # bench/mn_screen_esc50.py), without blocks 14 and 15, SE squeezes 1/16, a 128-unit head
    "mn04-short": MNConfig("mn04-short", "mn04 without its last two blocks, SE squeezed to "
                           "1/16, a 128-unit head (inherits from mn04)", 0.4,
                           drop_blocks=(14, 15), se_ratio=16, head_hidden=128),
    # mn04-short with 320 of the 384 embedding channels (by |gamma|) and a 96-unit head: the
    # last 1x1 conv and the head's first layer are a third of mn04-short, whose int8 file is
    # over 300 KB; the screen's probe keeps 88.5 % (mn04-short 87.8)
    "mn04-short320": MNConfig("mn04-short320", "mn04-short with a 320-channel embedding and a "
                              "96-unit head: an int8 file under 300 KB (inherits from mn04)",
                              0.4, drop_blocks=(14, 15), se_ratio=16, head_hidden=96,
                              embedding_dim=320),
    "mn04-short-stream": MNConfig("mn04-short-stream", "mn04-short, causal in time: one "
                                  "network pass per 0.32-s chunk while listening", 0.4,
                                  drop_blocks=(14, 15), se_ratio=16, head_hidden=128,
                                  causal=True),
    # the tiny row (<= 70 K): mn04's streams up to block 13, block 12 dropped, blocks 11 and
    # 13 narrowed inside, a 128-channel embedding and a 48-unit head
    "mn04-tiny": MNConfig("mn04-tiny", "mn04's streams without blocks 12, 14, 15, blocks "
                          "11 and 13 at expansion width 0.1, 128-d embedding (inherits from mn04)",
                          0.4, drop_blocks=(12, 14, 15), expand_width=0.1, expand_from=11,
                          se_ratio=16, head_hidden=48, embedding_dim=128, dropout=0.1),
    "mn02-stream": MNConfig("mn02-stream", "mn02, causal in time: one network pass per "
                            "0.32-s chunk while listening (inherits from mn04)", 0.2,
                            causal=True),
}


def is_mn_student(name: str) -> bool:
    return name in MN_STUDENTS


def _is_residual_in_table(block: int) -> bool:
    in_ch, _k, _e, out_ch, _se, _hs, stride = MOBILENET_V3_LARGE[block - 1]
    return stride == 1 and in_ch == out_ch


@dataclass(frozen=True)
class BlockPlan:
    block: int               # 1..15: the block of mn04 at this place
    in_ch: int
    kernel: int
    expanded: int
    out_ch: int
    use_se: bool
    use_hardswish: bool
    stride: int
    se_ratio: int = 4

    @property
    def residual(self) -> bool:
        return self.stride == 1 and self.in_ch == self.out_ch


def block_plans(width: float, drop_blocks=(), late_width: float | None = None,
                late_from: int = 13, expand_width: float | None = None, expand_from: int = 2,
                se_ratio: int = 4) -> tuple[int, list[BlockPlan], int]:
    """(first conv channels, the kept blocks, last stream channels) at these widths."""
    config = MNConfig("plan", "", width, tuple(drop_blocks), late_width, late_from)
    if expand_from < 2:
        raise ValueError(f"expand_from must be >= 2 (block 1 has no expand conv), got "
                         f"{expand_from}")
    bad = [b for b in config.drop_blocks if not 1 <= b <= N_BLOCKS or not _is_residual_in_table(b)]
    if bad:
        raise ValueError(f"only residual blocks can be dropped; {bad} are not (residual: "
                         f"{[b for b in range(1, N_BLOCKS + 1) if _is_residual_in_table(b)]})")
    if late_width is not None and _is_residual_in_table(late_from):
        raise ValueError(f"late_from {late_from} is a residual block; start a late width at a "
                         f"block that changes the width or the stride")
    first = make_divisible(MOBILENET_V3_LARGE[0][0] * width, 8)
    plans, stream = [], first
    for block, (_in, kernel, expanded, out_ch, use_se, use_hs, stride) in enumerate(
            MOBILENET_V3_LARGE, start=1):
        if block in config.drop_blocks:
            continue
        w = config.block_width(block)
        inner = expand_width if expand_width is not None and block >= expand_from else w
        plan = BlockPlan(block, stream, kernel, make_divisible(expanded * inner, 8),
                         make_divisible(out_ch * w, 8), use_se, use_hs, stride, se_ratio)
        if plan.residual != _is_residual_in_table(block):
            raise ValueError(f"width {w}: block {block}'s residual connection would differ "
                             f"from mn04's")
        plans.append(plan)
        stream = plan.out_ch
    return first, plans, stream


class ChannelSE(ConcurrentSEBlock):
    """mn04's SE container with its one channel SE layer called directly: the same function
    and parameter names, without a stack and a max over one element in the exported graph."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conc_se_layers[0](x)


class FrameSE(ChannelSE):
    """Channel SE squeezed over frequency only, one excitation per time frame (causal). Its
    two linear layers run as 1x1 convs on the squeezed map: the same weights, and no
    transposes in the exported graph."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        se = self.conc_se_layers[0]
        scale = x.mean(dim=2, keepdim=True)                         # [B, C, 1, T]
        scale = torch.relu(F.conv2d(scale, se.fc1.weight[:, :, None, None], se.fc1.bias))
        return x * torch.sigmoid(F.conv2d(scale, se.fc2.weight[:, :, None, None], se.fc2.bias))


class CausalConv2d(nn.Conv2d):
    """A conv over (frequency, time) whose output frame t sees input frames up to t only:
    the (k - 1) frames before it as time context (zeros before the start of a recording, the
    previous chunk's frames while streaming); frequency keeps its 'same' padding, as an
    explicit pad (a conv padded over one axis only becomes a pad op in TFLite, and an int8 pad
    the converter inserts itself gets a scale of its own, which it then refuses)."""

    def __init__(self, *args, freq_padding: int = 0, **kwargs):
        super().__init__(*args, padding=0, **kwargs)
        self.freq_padding = int(freq_padding)

    @property
    def context(self) -> int:
        return self.kernel_size[1] - 1

    def on_padded(self, x: torch.Tensor) -> torch.Tensor:
        """The conv of an input that already holds its ``context`` frames in front."""
        return super().forward(F.pad(x, (0, 0, self.freq_padding, self.freq_padding)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.on_padded(F.pad(x, (self.context, 0)))


def make_causal(network: nn.Module) -> None:
    """Replace (in place, before any weights are loaded) every conv with a time kernel by a
    ``CausalConv2d`` of the same shape, so parameter names and inheritance stay as they are."""
    for layer in network.modules():
        if isinstance(layer, ConvNormActivation) and layer[0].kernel_size[1] > 1:
            conv = layer[0]
            layer[0] = CausalConv2d(conv.in_channels, conv.out_channels, conv.kernel_size,
                                    conv.stride, freq_padding=conv.padding[0],
                                    groups=conv.groups, bias=False)


def inverted_residual(plan: BlockPlan, causal: bool = False) -> InvertedResidual:
    """EfficientAT's block; with an expand conv wherever the MobileNetV3 table has one."""
    module = InvertedResidual(plan.in_ch, plan.kernel, plan.expanded, plan.out_ch, plan.use_se,
                              plan.use_hardswish, plan.stride)
    for i, layer in enumerate(module.block):
        if isinstance(layer, ConcurrentSEBlock):
            module.block[i] = (FrameSE if causal else ChannelSE)(plan.expanded, plan.se_ratio)
    if plan.expanded == plan.in_ch and plan.block > 1:
        activation = nn.Hardswish if plan.use_hardswish else nn.ReLU
        module.block = nn.Sequential(
            ConvNormActivation(plan.in_ch, plan.expanded, 1, activation=activation),
            *module.block)
    return module


class MNNetwork(nn.Module):
    """The deployed network: log-mel ``[B, T, 128]`` (the runtime's layout) -> logits.

    ``embed`` gives ``[B, ceil(T / 32), C]`` (the last feature map averaged over frequency,
    one frame per 0.32 s); ``classify`` pools it over time and runs the MLP head. The names
    ``n_harmonics`` (1), ``n_freq``, ``time_stride``, ``embedding_dim`` and ``min_frames``
    are the harmonic network's, so the student loop and export treat both alike.
    """

    def __init__(self, config: MNConfig, n_classes: int, n_mels: int = N_MELS):
        super().__init__()
        if n_classes < 1:
            raise ValueError(f"n_classes must be >= 1, got {n_classes}")
        self.config = config
        self.n_classes, self.n_harmonics, self.n_freq = int(n_classes), 1, int(n_mels)
        first, self.plans, last_in = block_plans(config.width, config.drop_blocks,
                                                 config.late_width, config.late_from,
                                                 config.expand_width, config.expand_from,
                                                 config.se_ratio)
        # EfficientAT's (x + 4.5) / 5 as a fixed 1x1 conv: exact, and int8 from the input on
        # (a scalar add and multiply would stay float at the head of an int8 graph)
        self.input_scale = nn.Conv2d(1, 1, 1)
        with torch.no_grad():
            self.input_scale.weight.fill_(0.2)
            self.input_scale.bias.fill_(0.9)
        self.input_scale.requires_grad_(False)
        layers = [ConvNormActivation(1, first, 3, stride=2, activation=nn.Hardswish)]
        layers += [inverted_residual(plan, config.causal) for plan in self.plans]
        self.embedding_dim = config.embedding_dim or 6 * last_in
        layers.append(ConvNormActivation(last_in, self.embedding_dim, 1,
                                         activation=nn.Hardswish))
        self.features = nn.Sequential(*layers)
        self.causal = config.causal
        if self.causal:
            make_causal(self.features)
        hidden = config.head_hidden or make_divisible(1280 * config.block_width(N_BLOCKS), 8)
        self.head = nn.Sequential(nn.Linear(self.embedding_dim, hidden), nn.Hardswish(),
                                  nn.Dropout(config.dropout), nn.Linear(hidden, n_classes))
        self.time_stride = TIME_STRIDE
        self.min_frames = TIME_STRIDE

    @property
    def n_bins(self) -> int:
        return self.n_freq

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, T, F]`` log-mel -> ``[B, C, F / 32, T / 32]``."""
        return self.features(self.input_scale(x.transpose(1, 2).unsqueeze(1)))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.feature_map(x).mean(dim=2).transpose(1, 2)

    def classify(self, emb: torch.Tensor) -> torch.Tensor:
        if self.causal:  # a logit row per frame, so every chunk of a stream has its own
            return self.head(emb).mean(dim=1)
        return self.head(emb.mean(dim=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.embed(x))


class MNStudent(Student):
    """The fixed EfficientAT-mel front end + ``MNNetwork``: 16 kHz waveform -> logits."""


# ----------------------------------------------------------------------------- streaming

STREAM_CHUNK_FRAMES = TIME_STRIDE   # one embedding frame per call


def _stream(module: nn.Module, x: torch.Tensor, states, next_states: list) -> torch.Tensor:
    """``module``'s forward with each causal conv's time context taken from ``states`` (in
    module order) instead of zeros; the frames each conv leaves for the next chunk are
    appended to ``next_states``."""
    if isinstance(module, CausalConv2d):
        padded = torch.cat([states[len(next_states)], x], dim=3)
        next_states.append(padded[:, :, :, padded.shape[3] - module.context:])
        return module.on_padded(padded)
    if isinstance(module, InvertedResidual):
        out = _stream(module.block, x, states, next_states)
        return out + x if module.use_residual else out
    if isinstance(module, nn.Sequential):
        for layer in module:
            x = _stream(layer, x, states, next_states)
        return x
    return module(x)


class MNStreamStep(nn.Module):
    """One streaming call of a causal ``MNNetwork``: ``(features [1, chunk_frames, bins],
    *states) -> (logits [1, classes], *next_states)``; states start as zeros."""

    def __init__(self, network: MNNetwork, chunk_frames: int = STREAM_CHUNK_FRAMES):
        super().__init__()
        if not network.causal:
            raise ValueError(f"{network.config.name} is not causal: only causal students "
                             f"stream (e.g. mn02-stream)")
        if chunk_frames % network.time_stride:
            raise ValueError(f"chunk_frames must be a multiple of {network.time_stride}")
        self.network, self.chunk_frames = network, int(chunk_frames)

    def forward(self, features: torch.Tensor, *states: torch.Tensor):
        net = self.network
        x = net.input_scale(features.transpose(1, 2).unsqueeze(1))
        next_states: list = []
        fmap = _stream(net.features, x, states, next_states)
        return (net.classify(fmap.mean(dim=2).transpose(1, 2)), *next_states)

    def state_shapes(self) -> list[tuple[int, ...]]:
        """The states' shapes (batch 1), in call order."""
        shapes = []
        hooks = [m.register_forward_pre_hook(
            lambda m, args: shapes.append((1, *args[0].shape[1:3], m.context)))
            for m in self.network.features.modules() if isinstance(m, CausalConv2d)]
        try:
            with torch.no_grad():
                self.network.feature_map(torch.zeros(1, self.chunk_frames, self.network.n_freq))
        finally:
            for h in hooks:
                h.remove()
        return shapes

    def zero_states(self) -> list[torch.Tensor]:
        return [torch.zeros(shape) for shape in self.state_shapes()]


# ----------------------------------------------------------------------------- front end

def efficientat_matrix_16k() -> np.ndarray:
    """EfficientAT's mel bands over the 16 kHz STFT's bins, power and pre-emphasis folded in."""
    n_bins = FRONTEND_SETTINGS["n_fft"] // 2 + 1
    banks = kaldi_mel_banks(N_MELS, N_FFT, MODEL_SAMPLE_RATE, FMIN, FMAX)[:, :n_bins]
    freqs = np.arange(n_bins) * SAMPLE_RATE / FRONTEND_SETTINGS["n_fft"]
    omega = 2.0 * np.pi * freqs / MODEL_SAMPLE_RATE
    preemphasis = 1.0 - 2.0 * PREEMPHASIS * np.cos(omega) + PREEMPHASIS ** 2
    return (4.0 * banks * preemphasis[None, :]).astype(np.float32)


def mn_frontend_spec() -> FrontendSpec:
    s = FRONTEND_SETTINGS
    return FrontendSpec(sample_rate=s["sample_rate"], n_fft=s["n_fft"],
                        win_length=s["win_length"], hop_length=s["hop_length"],
                        filterbank={"kind": "matrix", **encode_matrix(efficientat_matrix_16k()),
                                    "source": {"kind": "efficientat-mel-16k", "n_mels": N_MELS,
                                               "fmin": FMIN, "fmax": FMAX,
                                               "preemphasis": PREEMPHASIS, "power_scale": 4}},
                        log_offset=s["log_offset"])


def mn_frontend_settings(name: str, **overrides) -> dict:
    """The (fixed) front-end settings of an mn student; overrides must equal them."""
    _config(name)
    unknown = set(overrides) - set(FRONTEND_SETTINGS)
    if unknown:
        raise TypeError(f"unknown front-end setting(s) {sorted(unknown)}; "
                        f"known: {sorted(FRONTEND_SETTINGS)}")
    changed = {k: v for k, v in overrides.items() if v != FRONTEND_SETTINGS[k]}
    if changed:
        raise TypeError(f"the mn students' front end is EfficientAT's mel at 16 kHz and fixed; "
                        f"cannot change {sorted(changed)}")
    return dict(FRONTEND_SETTINGS)


def build_mn_student(name: str, n_classes: int, **frontend_settings) -> MNStudent:
    """A fresh (random) mn student; ``inherit_from_mn04`` gives it mn04's weights."""
    config = _config(name)
    mn_frontend_settings(name, **frontend_settings)
    return MNStudent(config, TorchFrontend(mn_frontend_spec()), MNNetwork(config, n_classes))


def _config(name: str) -> MNConfig:
    try:
        return MN_STUDENTS[name]
    except KeyError:
        raise ValueError(f"unknown student {name!r}; known mn students: "
                         f"{', '.join(MN_STUDENTS)}") from None


# ----------------------------------------------------------------------------- inheritance

def load_mn04(path=None) -> MobileNetV3Audio:
    """mn04 (AudioSet) from ``path`` or the shared weights, eval mode."""
    from .teachers.base import require_file

    path = Path(path) if path else require_file(
        files.shared_dir() / "weights" / "efficientat" / "mn04_as_mAP_432.pt",
        "EfficientAT mn04_as weights")
    teacher = MobileNetV3Audio(width_mult=TEACHER_WIDTH)
    teacher.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
    return teacher.eval()


def top_indices(importance: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k`` most important positions, in their original order (ties: the lower index)."""
    if k > importance.numel():
        raise ValueError(f"cannot keep {k} of {importance.numel()} channels")
    order = sorted(range(importance.numel()), key=lambda i: (-float(importance[i]), i))
    return torch.tensor(sorted(order[:k]), dtype=torch.long)


def _producer_importance(layer: ConvNormActivation, how: str) -> torch.Tensor:
    """Per output channel of a conv-BN layer: |gamma| or the L1 norm of its filter."""
    if how == "bn":
        return layer[1].weight.detach().abs()
    return layer[0].weight.detach().abs().flatten(1).sum(dim=1)


def _copy_conv_bn(dst: ConvNormActivation, src: ConvNormActivation, out_idx: torch.Tensor,
                  in_idx: torch.Tensor | None) -> None:
    """``dst`` := ``src`` restricted to output channels ``out_idx`` and (unless depthwise or
    ``in_idx`` None) input channels ``in_idx``."""
    weight = src[0].weight.detach()[out_idx]
    if in_idx is not None and src[0].groups == 1:
        weight = weight[:, in_idx]
    dst[0].weight.copy_(weight)
    for name in ("weight", "bias", "running_mean", "running_var"):
        getattr(dst[1], name).copy_(getattr(src[1], name).detach()[out_idx])
    dst[1].num_batches_tracked.copy_(src[1].num_batches_tracked)


def _copy_linear(dst: nn.Linear, src: nn.Linear, out_idx, in_idx) -> None:
    weight = src.weight.detach()
    weight = weight if out_idx is None else weight[out_idx]
    dst.weight.copy_(weight[:, in_idx])
    dst.bias.copy_(src.bias.detach() if out_idx is None else src.bias.detach()[out_idx])


def _block_layers(block: InvertedResidual) -> dict:
    layers = list(block.block)
    names = {"project": layers[-1], "depthwise": layers[-2] if not isinstance(
        layers[-2], ConcurrentSEBlock) else layers[-3]}
    se = [m for m in layers if isinstance(m, ConcurrentSEBlock)]
    names["se"] = se[0].conc_se_layers[0] if se else None
    names["expand"] = layers[0] if layers[0] is not names["depthwise"] else None
    return names


@torch.no_grad()
def inherit_from_mn04(student: MNStudent, teacher: MobileNetV3Audio | None = None,
                      importance: str = "bn") -> dict:
    """Copy mn04's weights into ``student`` (in place), each layer restricted to the channels
    chosen by ``importance`` (see the module doc). Returns the kept teacher indices:
    ``{"stream": [per residual stream], "blocks": {block: {"expanded", "squeeze"}},
    "last": ..., "hidden": ...}`` (lists of ints)."""
    if importance not in IMPORTANCE:
        raise ValueError(f"importance must be one of {IMPORTANCE}, got {importance!r}")
    teacher = teacher if teacher is not None else load_mn04()
    net = student.network
    t_features = list(teacher.features)
    s_blocks = {plan.block: net.features[i + 1] for i, plan in enumerate(net.plans)}

    # residual streams: the first conv, or a non-residual block, opens one; residual blocks
    # write into it; its channel count is the writers' (equal within a stream)
    streams: list[dict] = [{"writers": [("first", t_features[0])],
                            "size": net.features[0][0].out_channels}]
    stream_of_input, stream_of_output = {}, {}
    for plan in net.plans:
        stream_of_input[plan.block] = len(streams) - 1
        project = _block_layers(t_features[plan.block])["project"]
        if not plan.residual:
            streams.append({"writers": [], "size": plan.out_ch})
        streams[-1]["writers"].append((plan.block, project))
        stream_of_output[plan.block] = len(streams) - 1
    kept_streams = []
    for stream in streams:
        score = sum(_producer_importance(layer, importance) for _, layer in stream["writers"])
        kept_streams.append(top_indices(score, stream["size"]))

    _copy_conv_bn(net.features[0], t_features[0], kept_streams[0], None)
    report = {"importance": importance, "stream": [k.tolist() for k in kept_streams],
              "blocks": {}}
    for plan in net.plans:
        t = _block_layers(t_features[plan.block])
        s = _block_layers(s_blocks[plan.block])
        in_idx = kept_streams[stream_of_input[plan.block]]
        out_idx = kept_streams[stream_of_output[plan.block]]
        if t["expand"] is not None:
            producer = t["depthwise"] if importance == "bn" else t["expand"]
            expanded = top_indices(_producer_importance(producer, importance), plan.expanded)
            _copy_conv_bn(s["expand"], t["expand"], expanded, in_idx)
        else:  # block 1: the depthwise conv works on the stream itself
            expanded = in_idx
        _copy_conv_bn(s["depthwise"], t["depthwise"], expanded, None)
        entry = {"expanded": expanded.tolist()}
        if t["se"] is not None:
            fc1, fc2 = t["se"].fc1.weight.detach(), t["se"].fc2.weight.detach()
            score = fc1[:, expanded].abs().sum(dim=1) * fc2[expanded].abs().sum(dim=0)
            squeeze = top_indices(score, s["se"].fc1.out_features)
            _copy_linear(s["se"].fc1, t["se"].fc1, squeeze, expanded)
            _copy_linear(s["se"].fc2, t["se"].fc2, expanded, squeeze)
            entry["squeeze"] = squeeze.tolist()
        _copy_conv_bn(s["project"], t["project"], out_idx, expanded)
        report["blocks"][plan.block] = entry

    last_t, last_s = t_features[-1], net.features[-1]
    last = top_indices(_producer_importance(last_t, importance), last_s[0].out_channels)
    _copy_conv_bn(last_s, last_t, last, kept_streams[-1])
    hidden_t, out_t = teacher.classifier[2], teacher.classifier[5]
    hidden_s, out_s = net.head[0], net.head[3]
    score = hidden_t.weight.detach()[:, last].abs().sum(dim=1) * \
        out_t.weight.detach().abs().sum(dim=0)
    hidden = top_indices(score, hidden_s.out_features)
    _copy_linear(hidden_s, hidden_t, hidden, last)
    if out_s.out_features == out_t.out_features:  # AudioSet's classes: the zero-shot student
        _copy_linear(out_s, out_t, None, hidden)
    report.update(last=last.tolist(), hidden=hidden.tolist(),
                  head_inherited=out_s.out_features == out_t.out_features)
    return report


def initialize(student: MNStudent, init: str, importance: str = "bn",
               teacher_weights=None) -> dict | None:
    """``init`` "random" (as built) or "mn04" (``inherit_from_mn04``)."""
    if init == "random":
        return None
    if init != "mn04":
        raise ValueError(f"unknown init {init!r} (known: random, mn04)")
    return inherit_from_mn04(student, load_mn04(teacher_weights), importance)


@torch.no_grad()
def recalibrate_batchnorm(student: MNStudent, waves: list[np.ndarray],
                          batch_size: int = 16) -> MNStudent:
    """Re-estimate every BatchNorm's running statistics on ``waves`` (16 kHz clips of equal
    length, e.g. training crops; labels not needed), weights untouched. A pruned layer sees
    fewer input channels than mn04's did, so the inherited statistics no longer describe
    its inputs."""
    norms = [m for m in student.network.modules() if isinstance(m, nn.BatchNorm2d)]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over all batches
    was_training = student.training
    student.train()
    try:
        for start in range(0, len(waves), batch_size):
            batch = np.stack(waves[start:start + batch_size]).astype(np.float32)
            student.network.feature_map(student.features(torch.from_numpy(batch)))
    finally:
        for m, momentum in zip(norms, saved):
            m.momentum = momentum
        student.train(was_training)
    return student


# ----------------------------------------------------------------------------- checks

def audioset_student(name: str, importance: str = "bn", teacher=None) -> MNStudent:
    """An mn student with mn04's AudioSet head kept (527 outputs), for zero-shot checks."""
    student = build_mn_student(name, N_CLASSES)
    inherit_from_mn04(student, teacher, importance)
    return student.eval()


@torch.no_grad()
def frontend_agreement(waves: list[np.ndarray]) -> dict:
    """How close this front end is to EfficientAT's on 16 kHz clips (resampled to 32 kHz
    for EfficientAT's): mean and 99th-percentile |difference| of the scaled log-mel
    ``(x + 4.5) / 5`` over the bands below 8 kHz, and its standard deviation for scale."""
    import soxr

    from .teachers.efficientat import EfficientATMel

    theirs_fe, ours_fe = EfficientATMel().eval(), TorchFrontend(mn_frontend_spec())
    cutoff = int(np.sum(kaldi_mel_banks(N_MELS, N_FFT, MODEL_SAMPLE_RATE, FMIN, FMAX)
                        [:, :FRONTEND_SETTINGS["n_fft"] // 2].sum(axis=1) > 0))
    diffs, values = [], []
    for wave in waves:
        up = soxr.resample(np.asarray(wave, np.float32), SAMPLE_RATE, MODEL_SAMPLE_RATE)
        theirs = theirs_fe(torch.from_numpy(np.ascontiguousarray(up, np.float32))[None])[0].T
        ours = (ours_fe(torch.from_numpy(np.asarray(wave, np.float32))[None])[0] + 4.5) / 5.0
        shift = round(FRONTEND_SETTINGS["win_length"] / 2 / FRONTEND_SETTINGS["hop_length"])
        n = min(len(ours), len(theirs) - shift)
        # theirs is centred: its frame k + shift covers about what our frame k covers
        a, b = ours[:n, :cutoff], theirs[shift:n + shift, :cutoff]
        diffs.append((a - b).abs().flatten())
        values.append(b.flatten())
    d, v = torch.cat(diffs), torch.cat(values)
    return {"bands_compared": cutoff, "mean_abs_diff": float(d.mean()),
            "p99_abs_diff": float(torch.quantile(d[:1_000_000], 0.99)),
            "value_std": float(v.std())}


__all__ = ["MN_STUDENTS", "MNConfig", "MNNetwork", "MNStudent", "build_mn_student",
           "inherit_from_mn04", "initialize", "mn_frontend_spec", "mn_frontend_settings",
           "is_mn_student", "load_mn04", "audioset_student", "frontend_agreement",
           "top_indices", "block_plans", "recalibrate_batchnorm", "MNStreamStep",
           "STREAM_CHUNK_FRAMES", "CausalConv2d", "FrameSE"]
