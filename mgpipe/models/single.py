"""Single-modality recognizer: one SlowOnly pathway plus a classification head."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mgpipe.models.heads import ClsHead
from mgpipe.models.resnet3d import ResNet3dSlowOnly


class SingleStream(nn.Module):
    """``backbone`` (ResNet3dSlowOnly) + ``head`` (ClsHead).

    forward(x) -> {'logits': [N, K], 'features': [N, C]} where features is the global
    average pool of the backbone output (before dropout).
    """

    def __init__(self, kind: str, in_channels: int, num_classes: int, cfg: dict) -> None:
        super().__init__()
        self.kind = kind
        self.num_classes = int(num_classes)
        self.backbone = ResNet3dSlowOnly(kind, in_channels, cfg)
        self.head = ClsHead(self.backbone.out_channels, num_classes, cfg["dropout"])

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        feats = self.head.pool(self.backbone(x))
        return {"logits": self.head.classify(feats), "features": feats}

    def loss(self, out: dict[str, torch.Tensor], labels: torch.Tensor,
             class_weights: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Cross-entropy of the stream, in float32 even inside a bf16 autocast region: {'loss': ce}.
        class_weights [K] (the class-balanced loss): the batch's weighted mean, as torch's
        cross_entropy(weight=) computes it."""
        return {"loss": F.cross_entropy(out["logits"].float(), labels, weight=class_weights)}


def build_single(kind: str, in_channels: int, num_classes: int, cfg: dict) -> SingleStream:
    return SingleStream(kind, in_channels, num_classes, cfg)
