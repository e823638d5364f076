"""Fine-tuning with the early layers of a pretrained network frozen (a cheaper CPU variant)."""
from __future__ import annotations

from torch import nn


class PartlyFrozen(nn.Module):
    """A module whose ``parameter_groups`` may freeze some early sub-modules: their weights stop
    training and ``train()`` keeps them in eval mode, so their BatchNorm statistics stay too."""

    def freeze(self, modules: list[nn.Module]) -> list[nn.Parameter]:
        """Freeze ``modules``; returns the parameters left to train."""
        frozen = set()
        for module in modules:
            for parameter in module.parameters():
                parameter.requires_grad_(False)
                frozen.add(id(parameter))
        self._frozen_modules = modules
        self.train(self.training)
        return [p for p in self.parameters() if id(p) not in frozen]

    def train(self, mode: bool = True):
        super().train(mode)
        for module in getattr(self, "_frozen_modules", []):
            module.eval()
        return self
