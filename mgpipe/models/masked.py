"""Masked heatmap modelling: the pose pathway pretrained without labels (docs/method.md §11).

Blocks of the heatmap volume are hidden (set to zero) and the network fills them in from what
is left: the other joints (limbs) of the same frames and the same joints in other frames. The
encoder is exactly the pose model's pathway (`backbone`, a ResNet3dSlowOnly with the model's
own settings), so its weights go to the classifier unchanged; the decoder is two 1x1x1
convolutions and a depth-to-space rearrangement, thrown away after pretraining (as in MAE, a
light decoder keeps the work of understanding the pose in the encoder).

A hidden block is one cell of the encoder's output grid in space (the pathway's total spatial
stride, e.g. 8 x 8 heatmap pixels) by `mask_frames` frames in time, over every channel: in the
block the network sees no joint at all, so it cannot copy a neighbouring channel or frame of the
same place. Why masked reconstruction and not a contrastive objective: it needs no negatives,
so it learns at the small batches a CPU or one GPU trains with, and its target is the very input
the classifier will see; its one choice, the share hidden, is a setting (pretrain.mask).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from mgpipe.models.resnet3d import ResNet3dSlowOnly


class MaskedHeatmapModel(nn.Module):
    """forward(x [N, C, T, H, W], hidden [N, 1, T, H, W] bool) -> reconstruction [N, C, T, H, W]."""

    def __init__(self, in_channels: int, cfg: dict) -> None:
        super().__init__()
        self.backbone = ResNet3dSlowOnly("pose", in_channels, cfg)
        self.in_channels = int(in_channels)
        # (the pose pathway's stem does not stride: the stages' strides are the whole grid's)
        self.cell = (math.prod(int(s) for s in cfg["temporal_strides"]),
                     math.prod(int(s) for s in cfg["spatial_strides"]))
        t, s = self.cell
        hidden = self.backbone.out_channels // 2
        self.decoder = nn.Sequential(
            nn.Conv3d(self.backbone.out_channels, hidden, 1, bias=False), nn.BatchNorm3d(hidden),
            nn.ReLU(inplace=True), nn.Conv3d(hidden, self.in_channels * t * s * s, 1))
        # the output starts at zero: the first loss is that of empty heatmaps (explained 0)
        nn.init.zeros_(self.decoder[-1].weight)
        nn.init.zeros_(self.decoder[-1].bias)

    def forward(self, x: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        n, c, frames, height, width = x.shape
        features = self.backbone(x.masked_fill(hidden, 0))
        out = self.decoder(features)                         # [N, C*t*s*s, T', H', W']
        t, s = self.cell
        _, _, tg, hg, wg = out.shape
        out = out.view(n, c, t, s, s, tg, hg, wg).permute(0, 1, 5, 2, 6, 3, 7, 4)
        out = out.reshape(n, c, tg * t, hg * s, wg * s)       # depth to space
        return out[:, :, :frames, :height, :width]           # (a grid padded at the edges)

    @staticmethod
    def loss(reconstruction: torch.Tensor, x: torch.Tensor, hidden: torch.Tensor) -> dict[str, torch.Tensor]:
        """The squared error over the hidden elements relative to that of empty heatmaps there
        (float32, also under bf16 autocast): 1 for zeros, 0 for a perfect fill. Heatmaps are
        mostly empty, so the plain mean squared error is tiny and its gradient scales with the
        Gaussians' size; the relative error reads and trains the same whatever sigma and size.
        `explained` = 1 - loss, the share of the hidden heatmap energy recovered."""
        weight = hidden.expand_as(x).float()
        squared = ((reconstruction.float() - x.float()) ** 2 * weight).sum()
        energy = (x.float() ** 2 * weight).sum().clamp(min=1e-6)
        loss = squared / energy
        return {"loss": loss, "explained": 1.0 - loss.detach()}


def hidden_blocks(shape: tuple[int, ...], cell: tuple[int, int], mask_frames: int, ratio: float,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """A bool mask [N, 1, T, H, W] for volumes of `shape` [N, C, T, H, W]: for each sample,
    round(ratio x blocks) blocks of mask_frames x s x s (s: the encoder's cell, `cell[1]`; in
    time also a multiple of the cell's `cell[0]` frames) drawn without replacement. Every sample
    has at least one block hidden and one shown."""
    n, _, frames, height, width = shape
    block_t = max(mask_frames, cell[0])
    block_t -= block_t % cell[0]
    s = cell[1]
    grid = (math.ceil(frames / block_t), math.ceil(height / s), math.ceil(width / s))
    blocks = math.prod(grid)
    k = min(max(round(ratio * blocks), 1), blocks - 1) if blocks > 1 else 1
    order = torch.rand(n, blocks, generator=generator).argsort(dim=1)
    coarse = torch.zeros(n, blocks, dtype=torch.bool)
    coarse.scatter_(1, order[:, :k], True)
    coarse = coarse.view(n, 1, *grid)
    fine = coarse.repeat_interleave(block_t, 2).repeat_interleave(s, 3).repeat_interleave(s, 4)
    return fine[:, :, :frames, :height, :width].contiguous()


def encoder_state(model: MaskedHeatmapModel) -> dict[str, torch.Tensor]:
    """The encoder's tensors under the names a pose classifier (models/single.py) gives them
    (backbone.*): what pretraining hands on."""
    return {k: v.detach().clone() for k, v in model.state_dict().items() if k.startswith("backbone.")}
