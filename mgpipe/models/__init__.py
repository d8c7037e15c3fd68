"""Neural networks of mgpipe: SlowOnly pathways, the fused RGB+pose network, losses."""

from .fusion import CrossModalFusion
from .heads import ClsHead
from .prototype import PrototypeLoss
from .resnet3d import Bottleneck3d, ResNet3dSlowOnly
from .rgbpose import RGBPoseConv3D, build_fused
from .single import SingleStream, build_single

__all__ = [
    "Bottleneck3d",
    "ClsHead",
    "CrossModalFusion",
    "PrototypeLoss",
    "RGBPoseConv3D",
    "ResNet3dSlowOnly",
    "SingleStream",
    "build_fused",
    "build_single",
]
