"""Cross-modal fusion module placed at the exchange points (docs/method.md §5).

Our reading of the seed's module:

1. 1x1x1 Conv3d projects each modality to a common hidden width C', then the spatial
   dimensions are max-pooled to 1x1: r [N, C', Tr], p [N, C', Tp]. The pose sequence is
   brought to the RGB length with an adaptive average pool over time.
2. Channel-wise cross-attention, one per side, each with its own linear maps (over channels,
   shared over time): the RGB side takes queries from r and keys/values from p, the pose side
   the mirror. A = softmax(Q K^T / sqrt(T)) is C' x C' (channels attend to channels).
3. The attended result A V [N, C', Tr] is mapped back to the pathway width and length: a
   1x1x1 Conv3d for RGB (length Tr), a ConvTranspose3d with temporal kernel = stride = Tp/Tr
   for pose (length Tp). This gate g is broadcast over H and W: X'' = g * X + X.
4. The last projection of each side (the map back) has weight and bias zero at init, so g = 0
   and the module is exactly the identity; the gradient into those projections is
   d(loss)/dg * (attended result), which is non-zero, so the gate learns from step one.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class _ChannelCrossAttention(nn.Module):
    """Queries from one modality, keys/values from the other; attention over channels."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.q = nn.Linear(hidden, hidden)
        self.k = nn.Linear(hidden, hidden)
        self.v = nn.Linear(hidden, hidden)

    def forward(self, own: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        # own, other: [N, C', T]; linear maps act on the channel axis.
        t = own.shape[-1]
        q = self.q(own.transpose(1, 2)).transpose(1, 2)  # [N, C', T]
        k = self.k(other.transpose(1, 2)).transpose(1, 2)
        v = self.v(other.transpose(1, 2)).transpose(1, 2)
        attn = torch.softmax(torch.bmm(q, k.transpose(1, 2)) / math.sqrt(t), dim=-1)  # [N,C',C']
        return torch.bmm(attn, v)  # [N, C', T]


class CrossModalFusion(nn.Module):
    """Fuse RGB [N, Cr, Tr, H, W] and pose [N, Cp, Tp, H', W'] features; identity at init.

    Args:
        rgb_channels, pose_channels: pathway widths at the exchange point.
        hidden: common hidden width C'.
        speed_ratio: expected Tp / Tr (kernel and stride of the pose ConvTranspose3d). If the
            actual lengths differ, the pose gate is resampled (linear) to Tp.
    """

    def __init__(self, rgb_channels: int, pose_channels: int, hidden: int,
                 speed_ratio: int = 4) -> None:
        super().__init__()
        if hidden <= 0:
            raise ValueError("hidden must be positive")
        self.rgb_channels = int(rgb_channels)
        self.pose_channels = int(pose_channels)
        self.hidden = int(hidden)
        self.speed_ratio = int(speed_ratio)
        self.rgb_in = nn.Conv3d(self.rgb_channels, self.hidden, 1)
        self.pose_in = nn.Conv3d(self.pose_channels, self.hidden, 1)
        self.rgb_attn = _ChannelCrossAttention(self.hidden)
        self.pose_attn = _ChannelCrossAttention(self.hidden)
        self.rgb_out = nn.Conv3d(self.hidden, self.rgb_channels, 1)
        s = self.speed_ratio
        self.pose_out = nn.ConvTranspose3d(self.hidden, self.pose_channels, (s, 1, 1),
                                           stride=(s, 1, 1))
        self.reset_gates()

    def reset_gates(self) -> None:
        """Zero the last projection of each side: the module becomes the identity."""
        for m in (self.rgb_out, self.pose_out):
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)

    def forward(self, x_rgb: torch.Tensor, x_pose: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        if x_rgb.dim() != 5 or x_pose.dim() != 5:
            raise ValueError("CrossModalFusion expects 5-D inputs [N, C, T, H, W]")
        t_rgb, t_pose = x_rgb.shape[2], x_pose.shape[2]
        # projection + spatial max pool -> [N, C', T]
        r = self.rgb_in(x_rgb).amax(dim=(3, 4))
        p = self.pose_in(x_pose).amax(dim=(3, 4))
        if p.shape[-1] != t_rgb:
            p = F.adaptive_avg_pool1d(p, t_rgb)
        r_att = self.rgb_attn(r, p)   # RGB queries, pose keys/values
        p_att = self.pose_attn(p, r)  # pose queries, RGB keys/values
        g_rgb = self.rgb_out(r_att[..., None, None])    # [N, Cr, Tr, 1, 1]
        g_pose = self.pose_out(p_att[..., None, None])  # [N, Cp, Tr * s, 1, 1]
        if g_pose.shape[2] != t_pose:
            g_pose = F.interpolate(g_pose, size=(t_pose, 1, 1), mode="trilinear",
                                   align_corners=False)
        return g_rgb * x_rgb + x_rgb, g_pose * x_pose + x_pose
