"""Two-pathway RGB + pose network with bidirectional laterals (docs/method.md §3, 5, 6).

Forward order:
    rgb stem, layer1, layer2 | pose stem, layer1
    exchange 0  (fusion[0] if enabled, then both laterals from the (fused) tensors, then concat)
    rgb layer3 | pose layer2
    exchange 1
    rgb layer4 | pose layer3
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mgpipe.models.fusion import CrossModalFusion
from mgpipe.models.heads import ClsHead
from mgpipe.models.prototype import PrototypeLoss
from mgpipe.models.resnet3d import ResNet3dSlowOnly, check_pathway_cfg, stage_out_channels

STREAMS = ("rgb", "pose")


class InverseLateral(nn.Module):
    """RGB -> pose lateral: ConvTranspose3d (7,1,1) stride (s,1,1) pad (3,0,0), BN, ReLU.

    The output temporal length is forced to the pose length via ``output_size``.
    """

    def __init__(self, in_channels: int, out_channels: int, speed_ratio: int) -> None:
        super().__init__()
        self.conv = nn.ConvTranspose3d(in_channels, out_channels, (7, 1, 1),
                                       stride=(speed_ratio, 1, 1), padding=(3, 0, 0), bias=False)
        self.bn = nn.BatchNorm3d(out_channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor, t_out: int) -> torch.Tensor:
        size = (t_out, x.shape[3], x.shape[4])
        return self.relu(self.bn(self.conv(x, output_size=size)))


class RGBPoseConv3D(nn.Module):
    def __init__(
        self,
        num_classes: int,
        pose_in_channels: int,
        rgb_cfg: dict,
        pose_cfg: dict,
        fusion_cfg: dict | None = None,
        prototype_cfg: dict | None = None,
        speed_ratio: int = 4,
        channel_ratio: int = 4,
    ) -> None:
        super().__init__()
        check_pathway_cfg(rgb_cfg)
        check_pathway_cfg(pose_cfg)
        if len(rgb_cfg["stage_blocks"]) != 4 or len(pose_cfg["stage_blocks"]) != 3:
            raise ValueError(
                "RGBPoseConv3D needs a 4-stage rgb pathway and a 3-stage pose pathway, got "
                f"{len(rgb_cfg['stage_blocks'])} and {len(pose_cfg['stage_blocks'])}"
            )
        speed_ratio, channel_ratio = int(speed_ratio), int(channel_ratio)
        if speed_ratio < 1 or channel_ratio < 1:
            raise ValueError("speed_ratio and channel_ratio must be >= 1")
        self.num_classes = int(num_classes)
        self.speed_ratio = speed_ratio
        self.channel_ratio = channel_ratio

        rgb_w = stage_out_channels(rgb_cfg)    # e.g. 256, 512, 1024, 2048
        pose_w = stage_out_channels(pose_cfg)  # e.g. 128, 256, 512
        # exchange e (0, 1): rgb after layer e+2 (width rgb_w[e+1]) meets pose after layer e+1
        # (width pose_w[e]); the next rgb stage is e+2, the next pose stage e+1.
        pose_lat_w = [pose_w[0] // channel_ratio, pose_w[1] // channel_ratio]
        if min(pose_lat_w) < 1:
            raise ValueError("channel_ratio too large for the pose pathway width")
        self.rgb_path = ResNet3dSlowOnly("rgb", 3, rgb_cfg,
                                         lateral_in={2: pose_w[0], 3: pose_w[1]})
        self.pose_path = ResNet3dSlowOnly("pose", pose_in_channels, pose_cfg,
                                          lateral_in={1: pose_lat_w[0], 2: pose_lat_w[1]})
        self.pose_to_rgb = nn.ModuleList(
            nn.Conv3d(pose_w[e], pose_w[e], (7, 1, 1), stride=(speed_ratio, 1, 1),
                      padding=(3, 0, 0), bias=False)
            for e in range(2)
        )
        self.rgb_to_pose = nn.ModuleList(
            InverseLateral(rgb_w[e + 1], pose_lat_w[e], speed_ratio) for e in range(2)
        )
        _init_laterals([*self.pose_to_rgb.modules(), *self.rgb_to_pose.modules()])

        self.rgb_head = ClsHead(self.rgb_path.out_channels, num_classes, rgb_cfg["dropout"])
        self.pose_head = ClsHead(self.pose_path.out_channels, num_classes, pose_cfg["dropout"])

        # fusion_cfg / prototype_cfg: the config's fused.fusion / fused.prototype settings plus
        # `enabled` (the variant's switch); None leaves that part out.
        self.fusion: nn.ModuleList | None = _fusion_modules(fusion_cfg, rgb_w, pose_w, speed_ratio)
        self.proto, self.proto_weight = _prototype_modules(
            prototype_cfg, num_classes, {"rgb": self.rgb_path.out_channels, "pose": self.pose_path.out_channels})

    def _exchange(self, e: int, xr: torch.Tensor, xp: torch.Tensor):
        if self.fusion is not None:
            xr, xp = self.fusion[e](xr, xp)
        lat_r = self.pose_to_rgb[e](xp)
        lat_p = self.rgb_to_pose[e](xr, xp.shape[2])
        if lat_r.shape[2:] != xr.shape[2:]:
            raise ValueError(
                f"pose->rgb lateral gives {tuple(lat_r.shape[2:])}, rgb features are "
                f"{tuple(xr.shape[2:])}: pose frames must be speed_ratio x rgb frames and "
                "the spatial sizes must agree"
            )
        if lat_p.shape[2:] != xp.shape[2:]:
            raise ValueError(
                f"rgb->pose lateral gives {tuple(lat_p.shape[2:])}, pose features are "
                f"{tuple(xp.shape[2:])}"
            )
        return torch.cat([xr, lat_r], dim=1), torch.cat([xp, lat_p], dim=1)

    def forward_features(self, rgb: torch.Tensor, pose: torch.Tensor):
        """Final feature maps of both pathways."""
        rp, pp = self.rgb_path, self.pose_path
        xr = rp.layers[1](rp.layers[0](rp.stem(rgb)))
        xp = pp.layers[0](pp.stem(pose))
        xr, xp = self._exchange(0, xr, xp)
        xr, xp = rp.layers[2](xr), pp.layers[1](xp)
        xr, xp = self._exchange(1, xr, xp)
        xr, xp = rp.layers[3](xr), pp.layers[2](xp)
        return xr, xp

    def forward(self, rgb: torch.Tensor, pose: torch.Tensor) -> dict[str, torch.Tensor]:
        xr, xp = self.forward_features(rgb, pose)
        fr, fp = self.rgb_head.pool(xr), self.pose_head.pool(xp)
        return {
            "rgb": self.rgb_head.classify(fr),
            "pose": self.pose_head.classify(fp),
            "rgb_features": fr,
            "pose_features": fp,
        }

    def loss(self, out: dict[str, torch.Tensor], labels: torch.Tensor,
             class_weights: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """CE per stream (1:1) plus weight * prototype loss for the configured streams.
        class_weights [K] (the class-balanced loss) weight every cross-entropy term, the
        prototype loss's two included.

        Computed in float32 even inside a bf16 autocast region: the prototype bank is a float32
        buffer, and cosine similarities and the EMA lose too much in bf16.
        """
        device_type = labels.device.type
        with torch.autocast(device_type, enabled=False):
            return self._loss({k: v.float() for k, v in out.items()}, labels, class_weights)

    def _loss(self, out: dict[str, torch.Tensor], labels: torch.Tensor,
              class_weights: torch.Tensor | None) -> dict[str, torch.Tensor]:
        losses: dict[str, torch.Tensor] = {}
        total = None
        for s in STREAMS:
            if s not in out:
                continue
            ce = F.cross_entropy(out[s], labels, weight=class_weights)
            losses[f"ce_{s}"] = ce
            total = ce if total is None else total + ce
        for s, module in self.proto.items():
            if s not in out:
                continue
            pl = module(out[f"{s}_features"], out[s], labels, class_weights)
            losses[f"proto_{s}"] = pl
            total = total + self.proto_weight * pl
        if total is None:
            raise ValueError("output dict has neither 'rgb' nor 'pose' logits")
        losses["loss"] = total
        return losses


def build_fused(num_classes: int, pose_in_channels: int, cfg: dict) -> RGBPoseConv3D:
    return RGBPoseConv3D(
        num_classes,
        pose_in_channels,
        cfg["rgb"],
        cfg["pose"],
        cfg.get("fusion"),
        cfg.get("prototype"),
        speed_ratio=int(cfg.get("speed_ratio", 4)),
        channel_ratio=int(cfg.get("channel_ratio", 4)),
    )


def _init_laterals(modules) -> None:
    """The laterals' convolutions He-initialised, their batch norms the identity."""
    for m in modules:
        if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d)):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm3d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def _fusion_modules(fusion_cfg: dict | None, rgb_w, pose_w, speed_ratio: int) -> nn.ModuleList | None:
    """One cross-modal fusion per exchange, or None (the variant has none)."""
    if fusion_cfg is None or not fusion_cfg["enabled"]:
        return None
    hidden = int(fusion_cfg["hidden"])
    return nn.ModuleList(CrossModalFusion(rgb_w[e + 1], pose_w[e], hidden, speed_ratio=speed_ratio)
                         for e in range(2))


def _prototype_modules(prototype_cfg: dict | None, num_classes: int, widths: dict) -> tuple[nn.ModuleDict, float]:
    """({stream: its prototype loss}, the loss's weight): none and 0.0 for a variant without it."""
    proto = nn.ModuleDict()
    if prototype_cfg is None or not prototype_cfg["enabled"]:
        return proto, 0.0
    for s in prototype_cfg["streams"]:
        if s not in widths:
            raise ValueError(f"unknown prototype stream {s!r}; use 'rgb' or 'pose'")
        proto[s] = PrototypeLoss(
            num_classes,
            widths[s],
            dim=int(prototype_cfg["dim"]),
            momentum=float(prototype_cfg["momentum"]),
            alpha=float(prototype_cfg["alpha"]),
            tau=float(prototype_cfg["tau"]),
            tp_only=bool(prototype_cfg["tp_only"]),
        )
    return proto, float(prototype_cfg["weight"])
