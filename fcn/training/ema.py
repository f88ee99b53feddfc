"""ModelEMA: the exponential moving average of a model's weights that training.ema_decay keeps
beside the model (saved in checkpoints as ``ema``; evaluation uses it where eval.use_ema says)."""

from __future__ import annotations

import copy

import torch
from torch import nn


class ModelEMA:
    """An exponential moving average of a model's parameters and buffers."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average towards the model's current state."""
        current = model.state_dict()
        for name, value in self.module.state_dict().items():
            if value.dtype.is_floating_point:
                value.mul_(self.decay).add_(current[name].detach(), alpha=1.0 - self.decay)
            else:
                value.copy_(current[name])
