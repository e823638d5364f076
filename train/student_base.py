"""What every student is, whatever its family: a front end and the network export deploys.

``Student(config, frontend, network)``: ``frontend`` a ``TorchFrontend`` (waveform -> log
features, the runtime's own features), ``network`` log features ``[B, T, bins]`` -> logits
with ``embed`` / ``classify`` and ``time_stride``; ``config.name`` names the student. The
families (``edgeaudio.train.students``: harmonic CNNs; ``edgeaudio.train.mn_student``:
EfficientAT-style MobileNetV3s) subclass it.
"""
from __future__ import annotations

import torch
from torch import nn


class Student(nn.Module):
    """Front end + network: waveform ``[B, samples]`` -> logits. Export takes ``network`` and
    ``frontend.frozen_spec()``."""

    def __init__(self, config, frontend: nn.Module, network: nn.Module):
        super().__init__()
        self.config = config
        self.frontend = frontend
        self.network = network

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def embedding_hop_seconds(self) -> float:
        spec = self.frontend.spec
        return self.network.time_stride * spec.hop_length / spec.sample_rate

    def features(self, wave: torch.Tensor) -> torch.Tensor:
        return self.frontend(wave)

    def embed(self, wave: torch.Tensor) -> torch.Tensor:
        return self.network.embed(self.frontend(wave))

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return self.network(self.frontend(wave))
