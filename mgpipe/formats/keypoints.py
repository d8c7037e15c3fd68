"""keypoints.h5: the keypoints of every clip, their layout, and each clip's compact box.

Layout: root attrs kind "keypoints", format_version, source (the pose backend or pickle), and
the keypoint layout (`layouts.layout_attrs`: a built-in name, or the joints and limbs of a
config-defined one); `clips/<clip_id>/keypoints` float32 [M, T, V, 3] (x, y in original frame
pixels, score 0..1; a missing joint has score 0) with attrs width and height (the frame size).

The compact box (the region every sample of a clip looks at) is derived from the keypoints, so
it belongs to this store: RGB and pose samples, and the heatmap export, read it here.
Written by the pose stage and by the pickle import; read by samples, the heatmap export and the
pickle export.
"""

from __future__ import annotations

import contextlib

import numpy as np

from mgpipe.formats.hdf5 import LazyStore, attr_number, check_dataset
from mgpipe.io import InputError, atomic_h5
from mgpipe.layouts import layout_attrs, layout_from_attrs

KIND = "keypoints"
VERSION = 1
EPS = 1e-4   # a keypoint with a lower score is missing
MAX_PERSONS = 64      # persons of a clip (the pose stage stores 1; pyskl pickles a few)
MAX_FRAME_SIDE = 1 << 16  # a clip's frame width or height in pixels


def valid(kp: np.ndarray) -> np.ndarray:
    """[..., 3] keypoints -> bool [...]: score >= EPS, finite, and not the (0, 0) missing marker."""
    x, y, s = kp[..., 0], kp[..., 1], kp[..., 2].astype(np.float64)  # compare in float64
    return (s >= EPS) & np.isfinite(x) & np.isfinite(y) & ~((x == 0) & (y == 0))


def compact_box(keypoints, width, height, padding: float, min_size: float = 10.0) -> np.ndarray:
    """Union box of the clip's valid keypoints, grown around its centre by
    (1 + padding) in half-size (PoseCompact), then made square (longer side wins). The box may
    leave the frame. No valid keypoint, or a union box narrower or shorter than min_size px ->
    (0, 0, W, H)."""
    kp = np.asarray(keypoints)
    if kp.ndim == 3:
        kp = kp[None]
    full = np.array([0.0, 0.0, float(width), float(height)], dtype=np.float32)
    ok = valid(kp)
    if not ok.any():
        return full
    xs = kp[..., 0][ok].astype(np.float64)
    ys = kp[..., 1][ok].astype(np.float64)
    x0, x1, y0, y1 = xs.min(), xs.max(), ys.min(), ys.max()
    if x1 - x0 < min_size or y1 - y0 < min_size:
        return full
    cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0
    half = max(x1 - x0, y1 - y0) / 2.0 * (1.0 + padding)
    return np.array([cx - half, cy - half, cx + half, cy + half], dtype=np.float32)


class _Writer:
    def __init__(self, h5):
        self.h5 = h5

    def add(self, clip_id: str, keypoints: np.ndarray, width: int, height: int) -> None:
        g = self.h5.create_group(f"clips/{clip_id}")
        g.create_dataset("keypoints", data=np.asarray(keypoints, dtype=np.float32))
        g.attrs.update(width=int(width), height=int(height))


@contextlib.contextmanager
def writer(path, layout, source: str):
    """`with writer(out, layout, source) as w: w.add(clip_id, kp, width, height)`; the store
    appears at `path` only when the block succeeds."""
    with atomic_h5(path) as h5:
        h5.attrs.update(kind=KIND, format_version=VERSION, source=source, **layout_attrs(layout))
        yield _Writer(h5)


class Reader(LazyStore):
    """Validated read access: `layout`, `clip_ids()`, `clip(id)` -> (keypoints, width, height),
    `box(id, padding)`."""

    KIND, VERSION, NOUN = KIND, VERSION, "keypoint"

    def __init__(self, path):
        super().__init__(path)
        self._layout = None
        self._boxes = {}   # (clip id, padding) -> box: a clip's keypoints never change
        self._sizes = {}   # clip id -> (width, height): attribute reads cost more than the keypoints

    def __getstate__(self):
        return {**super().__getstate__(), "_layout": self._layout, "_boxes": {}, "_sizes": {}}

    @property
    def layout(self):
        if self._layout is None:
            try:
                self._layout = layout_from_attrs(self.h5.attrs, str(self.path))
            except InputError as e:
                if str(self.path) in str(e):
                    raise
                raise InputError(f"{self.path}: {e}") from None  # an unknown layout name
            except Exception as e:  # attribute values of types or shapes a layout never has
                raise InputError(f"{self.path}: layout attributes cannot be read "
                                 f"({type(e).__name__}: {str(e)[:100]})") from None
        return self._layout

    @property
    def source(self) -> str:
        return str(self.h5.attrs.get("source", ""))

    def check_node(self, key: str, node):
        """clips/<id>/keypoints: float [M <= MAX_PERSONS, T, V of the layout, 3]; clips/<id>: a
        group with a positive integer width and height."""
        parts = key.split("/")
        if parts[0] != "clips" or len(parts) not in (2, 3):
            return node
        where = f"clip {parts[1]!r}"
        if len(parts) == 2:
            import h5py

            if not isinstance(node, h5py.Group):
                raise InputError(f"{self.path}: {where} is not a group")
            self._sizes[parts[1]] = tuple(
                attr_number(node.attrs, name, self.path, f"{where}: ", integer=True, high=MAX_FRAME_SIDE)
                for name in ("width", "height"))
        elif parts[2] == "keypoints":
            shape = check_dataset(node, self.path, f"{where} keypoints", kinds="f", ranks=(4,),
                                  itemsizes=(2, 4, 8))
            V = self.layout.num_joints
            if shape[1] == 0 or shape[2:] != (V, 3) or shape[0] > MAX_PERSONS:
                raise InputError(f"{self.path}: {where} keypoints have shape {shape}, expected "
                                 f"[M <= {MAX_PERSONS}, T > 0, {V}, 3] for layout {self.layout.name!r}")
        return node

    def clip_length(self, clip_id: str) -> int:
        self.node(f"clips/{clip_id}")  # checks the frame size
        return self.node(f"clips/{clip_id}/keypoints").shape[1]

    def clip(self, clip_id: str) -> tuple[np.ndarray, int, int]:
        """(float32 [M, T>0, V, 3], width, height) of one clip; a malformed clip is one line."""
        try:
            self.node(f"clips/{clip_id}")
            kp = self.read(f"clips/{clip_id}/keypoints")
        except KeyError:
            raise InputError(f"{self.path}: clip {clip_id!r} has no keypoints with width/height") from None
        width, height = self._sizes[clip_id]
        return kp.astype(np.float32, copy=False), width, height

    def box(self, clip_id: str, padding: float, clip=None) -> np.ndarray:
        """The clip's compact box in original frame pixels (computed once per process)."""
        key = (clip_id, float(padding))
        if key not in self._boxes:
            kp, width, height = clip if clip is not None else self.clip(clip_id)
            self._boxes[key] = compact_box(kp, width, height, padding)
        return self._boxes[key]


def channels(path) -> tuple[int, int]:
    """(joint channels, limb channels) of the heatmaps rendered from a keypoint store."""
    layout = Reader(path).layout
    return layout.num_joints, layout.num_limbs
