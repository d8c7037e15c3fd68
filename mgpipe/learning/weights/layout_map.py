"""The pose pathway's first convolution across keypoint layouts.

Its input channels are the heatmap channels: one per joint (joint model, fused network) or one
per limb (limb model). A checkpoint trained on one layout initialises a model on another by
name: the filters of a joint both layouts have (canonical names, `layouts.canonical_name`) are
copied, a limb follows its two joints (the same pair in either order), every other channel keeps
its fresh initialisation.
"""

from __future__ import annotations

import torch

from mgpipe.layouts import COCO17, Layout, canonical_name

# pyskl's and MMAction2's COCO-17 limb heatmaps (PoseConv3D's limb configs, `skeletons`): 17 limbs
# in this order, without mgpipe's shoulder-to-shoulder limb. A pyskl limb checkpoint's channels.
PYSKL_COCO17 = Layout(
    "pyskl_coco17", COCO17.joints,
    ((0, 5), (0, 6), (5, 7), (7, 9), (6, 8), (8, 10), (5, 11), (11, 13), (13, 15), (6, 12),
     (12, 14), (14, 16), (0, 1), (0, 2), (1, 3), (2, 4), (11, 12)),
)


def channel_names(layout: Layout, which: str) -> list[str]:
    """Heatmap channel names of a layout: joints, or limbs as 'a-b' (layout order of the ends)."""
    if which == "joint":
        return list(layout.joints)
    return [f"{layout.joints[a]}-{layout.joints[b]}" for a, b in layout.limbs]


def channel_pairs(src: Layout, dst: Layout, which: str) -> list[tuple[int, int]]:
    """(dst channel, src channel) pairs of the same joint, or of the limb between the same joints."""
    def keys(layout):
        if which == "joint":
            return [canonical_name(n) for n in layout.joints]
        return [frozenset((canonical_name(layout.joints[a]), canonical_name(layout.joints[b])))
                for a, b in layout.limbs]

    pos = {}
    for i, key in enumerate(keys(src)):
        pos.setdefault(key, i)
    return [(j, pos[key]) for j, key in enumerate(keys(dst)) if key in pos]


def map_channels(dst_weight: torch.Tensor, src_weight: torch.Tensor, src: Layout, dst: Layout,
                 which: str) -> tuple[torch.Tensor, dict]:
    """The first convolution's weight for layout `dst` from one trained on `src`: shared channels
    copied, the others as in `dst_weight` (fresh). Returns (weight, {"copied": [...], "fresh": [...]})
    with channel names."""
    names = channel_names(dst, which)
    out = dst_weight.detach().clone()
    pairs = channel_pairs(src, dst, which)
    for j, i in pairs:
        out[:, j] = src_weight[:, i]
    copied = {j for j, _ in pairs}
    return out, {"source_layout": src.name, "target_layout": dst.name, "channels": which,
                 "copied": [names[j] for j in sorted(copied)],
                 "fresh": [n for j, n in enumerate(names) if j not in copied]}
