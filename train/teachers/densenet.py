"""DenseNet-121 with torchvision's parameter names, loading a torchvision-format checkpoint.

``features.denseblock1.denselayer1.norm1.weight`` ...; the older ``norm.1``-style keys of
torchvision's own download are renamed as torchvision does (``torchvision_densenet_state``).
**The ImageNet DenseNet weights are not obtainable on the project's machines** (no network
beyond package registries, and no PyPI package ships them): the user gives the file
(``load_densenet121_checkpoint``); with none the network starts from random weights.
Same interface as ``EfficientNetLite0`` (``feature_map``, ``pool``, ``classifier``,
``reset_classifier``).
"""
from __future__ import annotations

import os
import re
from collections import OrderedDict
from pathlib import Path
from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F


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

