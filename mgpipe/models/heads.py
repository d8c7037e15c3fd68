"""Classification head: global average pool -> dropout -> Linear."""

from __future__ import annotations

import torch
from torch import nn


class ClsHead(nn.Module):
    """Global average pool over (T, H, W), dropout, Linear(in_channels -> num_classes).

    The Linear layer is initialised normal(std=0.01) with zero bias.
    """

    def __init__(self, in_channels: int, num_classes: int, dropout: float) -> None:
        super().__init__()
        if num_classes <= 0:
            raise ValueError("num_classes must be positive")
        self.in_channels = int(in_channels)
        self.num_classes = int(num_classes)
        self.dropout = nn.Dropout(p=float(dropout)) if dropout and dropout > 0 else nn.Identity()
        self.fc = nn.Linear(self.in_channels, self.num_classes)
        nn.init.normal_(self.fc.weight, mean=0.0, std=0.01)
        nn.init.zeros_(self.fc.bias)

    @staticmethod
    def pool(x: torch.Tensor) -> torch.Tensor:
        """[N, C, T, H, W] (or any [N, C, ...]) -> [N, C] by averaging; [N, C] passes through."""
        if x.dim() == 2:
            return x
        return x.flatten(2).mean(dim=2)

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        """Pooled features [N, C] -> logits [N, K] (dropout applies in training mode)."""
        return self.fc(self.dropout(features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.pool(x))
