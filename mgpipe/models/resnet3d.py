"""SlowOnly ResNet3d pathway (one modality) built from Bottleneck3d blocks.

See docs/method.md §1-3. One class serves both the pose pathway (heatmap volumes,
stride-1 stem) and the RGB pathway (frames, stride-2 stem). ``lateral_in`` widens the first
block of selected stages so that the two-pathway network can concatenate lateral features
(own features first, lateral features second) before that block.
"""

from __future__ import annotations

import torch
from torch import nn

EXPANSION = 4

# Keys of a pathway config that define the architecture (dropout only concerns the head).
ARCH_KEYS = ("base_channels", "stage_blocks", "inflate", "spatial_strides", "temporal_strides")
REQUIRED_KEYS = ARCH_KEYS + ("dropout",)


def check_pathway_cfg(cfg: dict) -> None:
    """Raise ValueError for a pathway config that is incomplete or inconsistent."""
    if not isinstance(cfg, dict):
        raise ValueError(f"pathway config must be a dict, got {type(cfg).__name__}")
    missing = [k for k in REQUIRED_KEYS if k not in cfg]
    if missing:
        raise ValueError(f"pathway config is missing keys: {missing}")
    n = len(cfg["stage_blocks"])
    if n == 0:
        raise ValueError("pathway config: stage_blocks must not be empty")
    for key in ("inflate", "spatial_strides", "temporal_strides"):
        if len(cfg[key]) != n:
            raise ValueError(
                f"pathway config: '{key}' has {len(cfg[key])} entries but stage_blocks has {n}"
            )
    if int(cfg["base_channels"]) <= 0:
        raise ValueError("pathway config: base_channels must be positive")


def stage_out_channels(cfg: dict) -> list[int]:
    """Output width of each stage of a pathway described by ``cfg`` (base * 2**i * 4)."""
    base = int(cfg["base_channels"])
    return [base * 2 ** i * EXPANSION for i in range(len(cfg["stage_blocks"]))]


class Bottleneck3d(nn.Module):
    """1x1x1 (or 3x1x1 when inflated) -> 1x3x3 (carries the stride) -> 1x1x1, expansion 4."""

    expansion = EXPANSION

    def __init__(
        self,
        inplanes: int,
        planes: int,
        spatial_stride: int = 1,
        temporal_stride: int = 1,
        inflate: bool = False,
        downsample: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.inplanes = inplanes
        self.planes = planes
        self.inflate = bool(inflate)
        if self.inflate:
            k1, p1 = (3, 1, 1), (1, 0, 0)
        else:
            k1, p1 = (1, 1, 1), (0, 0, 0)
        self.conv1 = nn.Conv3d(inplanes, planes, k1, stride=1, padding=p1, bias=False)
        self.bn1 = nn.BatchNorm3d(planes)
        self.conv2 = nn.Conv3d(
            planes,
            planes,
            (1, 3, 3),
            stride=(temporal_stride, spatial_stride, spatial_stride),
            padding=(0, 1, 1),
            bias=False,
        )
        self.bn2 = nn.BatchNorm3d(planes)
        self.conv3 = nn.Conv3d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm3d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet3dSlowOnly(nn.Module):
    """One SlowOnly ResNet3d pathway.

    Args:
        kind: 'rgb' (stem conv and max pool with spatial stride 2) or 'pose' (stride 1).
        in_channels: input channels (3 for RGB, number of heatmap channels for pose).
        cfg: pathway config with keys base_channels, stage_blocks, inflate, spatial_strides,
            temporal_strides, dropout (dropout is used by the head, not here).
        lateral_in: {stage index: extra input channels} for stages whose FIRST block (conv1 and
            downsample conv) receives [own features, lateral features] concatenated on channels.
    """

    def __init__(
        self,
        kind: str,
        in_channels: int,
        cfg: dict,
        lateral_in: dict[int, int] | None = None,
    ) -> None:
        super().__init__()
        if kind not in ("rgb", "pose"):
            raise ValueError(f"kind must be 'rgb' or 'pose', got {kind!r}")
        check_pathway_cfg(cfg)
        in_channels = int(in_channels)
        if in_channels <= 0:
            raise ValueError("in_channels must be positive")
        lateral_in = {int(k): int(v) for k, v in (lateral_in or {}).items()}
        n_stages = len(cfg["stage_blocks"])
        for idx, extra in lateral_in.items():
            if not 0 <= idx < n_stages:
                raise ValueError(f"lateral_in stage index {idx} out of range 0..{n_stages - 1}")
            if extra < 0:
                raise ValueError(f"lateral_in[{idx}] must be >= 0")

        self.kind = kind
        self.in_channels = in_channels
        # architecture as plain ints (used by merge to check compatibility)
        self.arch = {"base_channels": int(cfg["base_channels"])}
        for k in ARCH_KEYS[1:]:
            self.arch[k] = [int(v) for v in cfg[k]]
        self.lateral_in = dict(lateral_in)

        base = int(cfg["base_channels"])
        if kind == "rgb":
            stem_stride, pool_stride = (1, 2, 2), (1, 2, 2)
        else:
            stem_stride, pool_stride = (1, 1, 1), (1, 1, 1)
        self.stem = nn.Sequential(
            nn.Conv3d(in_channels, base, (1, 7, 7), stride=stem_stride, padding=(0, 3, 3),
                      bias=False),
            nn.BatchNorm3d(base),
            nn.ReLU(inplace=True),
            nn.MaxPool3d((1, 3, 3), stride=pool_stride, padding=(0, 1, 1)),
        )

        self.layers = nn.ModuleList()
        self.stage_out_channels: list[int] = []
        self.stage_in_channels: list[int] = []  # input width of each stage's first block
        inplanes = base
        for i, n_blocks in enumerate(cfg["stage_blocks"]):
            planes = base * 2 ** i
            first_in = inplanes + lateral_in.get(i, 0)
            self.stage_in_channels.append(first_in)
            self.layers.append(
                self._make_stage(
                    first_in,
                    planes,
                    int(n_blocks),
                    int(cfg["spatial_strides"][i]),
                    int(cfg["temporal_strides"][i]),
                    bool(cfg["inflate"][i]),
                )
            )
            inplanes = planes * EXPANSION
            self.stage_out_channels.append(inplanes)
        self.out_channels = inplanes
        self.init_weights()

    @staticmethod
    def _make_stage(inplanes, planes, n_blocks, s_stride, t_stride, inflate) -> nn.Sequential:
        if n_blocks <= 0:
            raise ValueError("every stage needs at least one block")
        outplanes = planes * EXPANSION
        downsample = None
        if s_stride != 1 or t_stride != 1 or inplanes != outplanes:
            downsample = nn.Sequential(
                nn.Conv3d(inplanes, outplanes, 1, stride=(t_stride, s_stride, s_stride),
                          bias=False),
                nn.BatchNorm3d(outplanes),
            )
        blocks = [Bottleneck3d(inplanes, planes, s_stride, t_stride, inflate, downsample)]
        for _ in range(1, n_blocks):
            blocks.append(Bottleneck3d(outplanes, planes, 1, 1, inflate, None))
        return nn.Sequential(*blocks)

    def init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm3d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        # residual BN of every block starts at zero: each block starts as its shortcut
        for m in self.modules():
            if isinstance(m, Bottleneck3d):
                nn.init.zeros_(m.bn3.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 5:
            raise ValueError(f"expected input [N, C, T, H, W], got shape {tuple(x.shape)}")
        x = self.stem(x)
        for layer in self.layers:
            x = layer(x)
        return x
