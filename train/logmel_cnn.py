"""A plain log-mel CNN: the smallest useful network, for test models and the placeholder default.

Input ``[B, frames, bins]`` log features (the runtime's front end output), output logits.
Built only from ops both converters take (Conv2d, BatchNorm, ReLU, MaxPool, mean, Linear).
"""
from __future__ import annotations

import torch
from torch import nn


def conv_block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
                         nn.ReLU(), nn.MaxPool2d(2))


class LogMelCNN(nn.Module):
    def __init__(self, n_bins: int, n_classes: int, widths=(16, 32, 48, 64)):
        super().__init__()
        self.input_norm = nn.BatchNorm2d(1)
        layers, c = [], 1
        for w in widths:
            layers.append(conv_block(c, w))
            c = w
        self.encoder = nn.Sequential(*layers)
        self.dropout = nn.Dropout(0.3)
        self.head = nn.Linear(c, n_classes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = self.input_norm(features.unsqueeze(1).transpose(2, 3))  # [B, 1, bins, frames]
        x = self.encoder(x)
        x = x.mean(dim=2).amax(dim=2)  # average over frequency, strongest moment in time
        return self.head(self.dropout(x))
