"""Keypoint layouts: joint names, limbs (skeleton edges) and left/right flip maps.

Flip maps are derived from the names (left_* <-> right_*), so a new layout only lists
names and limbs and cannot get its flip pairs wrong.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np


@dataclass(frozen=True)
class Layout:
    name: str
    joints: tuple[str, ...]
    limbs: tuple[tuple[int, int], ...]

    @property
    def num_joints(self) -> int:
        return len(self.joints)

    @property
    def num_limbs(self) -> int:
        return len(self.limbs)

    @cached_property
    def flip_index(self) -> np.ndarray:
        """flip_index[j] = the joint that j becomes under a horizontal mirror."""
        pos = {n: i for i, n in enumerate(self.joints)}
        out = np.arange(self.num_joints)
        for i, n in enumerate(self.joints):
            for a, b in (("left_", "right_"), ("right_", "left_")):
                if n.startswith(a):
                    out[i] = pos[b + n[len(a):]]
        return out

    @cached_property
    def limb_flip_index(self) -> np.ndarray:
        """limb_flip_index[l] = the limb that l becomes under a horizontal mirror."""
        pos = {frozenset(e): i for i, e in enumerate(self.limbs)}
        f = self.flip_index
        return np.array([pos[frozenset((int(f[a]), int(f[b])))] for a, b in self.limbs])


COCO17 = Layout(
    "coco17",
    (
        "nose", "left_eye", "right_eye", "left_ear", "right_ear",
        "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
        "left_wrist", "right_wrist", "left_hip", "right_hip",
        "left_knee", "right_knee", "left_ankle", "right_ankle",
    ),
    (
        (0, 1), (0, 2), (1, 3), (2, 4), (0, 5), (0, 6), (5, 6),
        (5, 7), (7, 9), (6, 8), (8, 10), (5, 11), (6, 12), (11, 12),
        (11, 13), (13, 15), (12, 14), (14, 16),
    ),
)

BODY25 = Layout(
    "body25",
    (
        "nose", "neck", "right_shoulder", "right_elbow", "right_wrist",
        "left_shoulder", "left_elbow", "left_wrist", "mid_hip", "right_hip",
        "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle",
        "right_eye", "left_eye", "right_ear", "left_ear", "left_big_toe",
        "left_small_toe", "left_heel", "right_big_toe", "right_small_toe", "right_heel",
    ),
    (
        (0, 1), (1, 2), (2, 3), (3, 4), (1, 5), (5, 6), (6, 7), (1, 8),
        (8, 9), (9, 10), (10, 11), (8, 12), (12, 13), (13, 14), (0, 15),
        (15, 17), (0, 16), (16, 18), (14, 19), (19, 20), (14, 21),
        (11, 22), (22, 23), (11, 24),
    ),
)

LAYOUTS = {layout.name: layout for layout in (COCO17, BODY25)}


def get_layout(name: str) -> Layout:
    try:
        return LAYOUTS[name]
    except KeyError:
        raise ValueError(f"unknown keypoint layout {name!r}; known: {sorted(LAYOUTS)}") from None


def convert(keypoints: np.ndarray, src: Layout, dst: Layout) -> np.ndarray:
    """Map [..., src.num_joints, C] keypoints to dst by joint name; joints dst has and src lacks
    come out as zeros (missing: zero coordinates and zero score)."""
    pos = {n: i for i, n in enumerate(src.joints)}
    out = np.zeros(keypoints.shape[:-2] + (dst.num_joints, keypoints.shape[-1]), keypoints.dtype)
    for j, n in enumerate(dst.joints):
        if n in pos:
            out[..., j, :] = keypoints[..., pos[n], :]
    return out
