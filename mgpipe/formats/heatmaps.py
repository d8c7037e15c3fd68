"""heatmaps.h5: rendered joint and limb volumes of every clip (an export: training renders
each sample from the keypoint store).

Layout: root attrs kind "heatmaps", format_version, the keypoint layout (`layouts.layout_attrs`),
size (one int, or [H, W]), sigma, padding, num_joints, num_limbs (0 when no limbs were
rendered); `joint/<clip_id>` uint8 [T, V, H, W] and `limb/<clip_id>` uint8 [T, L, H, W] (value
round(255 * v), v in [0, 1]), each one zstd-compressed chunk; `box/<clip_id>` float32 [4], the
compact box the volumes were drawn over (original frame pixels).
Written by the heatmap stage (`heatmaps.build_heatmap_store`); read with `Reader`.
"""

from __future__ import annotations

import contextlib

import hdf5plugin
import numpy as np

from ..io import InputError, atomic_h5
from ..layouts import layout_attrs, layout_from_attrs
from . import LazyStore

KIND = "heatmaps"
VERSION = 1
ZSTD_LEVEL = 1  # level 3 is 2 % smaller and a third slower to build


def _write_volume(group, name, data) -> None:
    """A volume as one zstd chunk, written as bytes (HDF5's filter pipeline would copy the
    dense volume twice on the way and cost as much again as the compression)."""
    data = data if isinstance(data, Compressed) else Compressed(data)
    ds = group.create_dataset(name, shape=data.shape, dtype=np.uint8, chunks=data.shape,
                              track_times=False, **hdf5plugin.Zstd(clevel=ZSTD_LEVEL))
    ds.id.write_direct_chunk((0,) * len(data.shape), data.chunk)


_compressor = None   # one per process (a ZstdCompressor must not be shared between threads)


class Compressed:
    """A uint8 volume compressed exactly as the store holds it: one zstd frame with its content
    size, the bytes HDF5's zstd filter writes and reads (any HDF5 reader with hdf5plugin reads
    the store). Worker processes send these back instead of the dense volumes, so the parallel
    build moves megabytes, not gigabytes, between processes."""

    def __init__(self, volume: np.ndarray):
        import zstandard

        global _compressor
        if _compressor is None:
            _compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
        volume = np.ascontiguousarray(volume, dtype=np.uint8)
        self.shape = tuple(volume.shape)
        self.chunk = _compressor.compress(volume)


class _Writer:
    def __init__(self, h5, limbs: bool):
        self.joint = h5.create_group("joint")
        self.limb = h5.create_group("limb") if limbs else None
        self.boxes = h5.create_group("box")

    def add(self, clip_id: str, box, joint, limb) -> None:
        """joint, limb: uint8 volumes, or Compressed ones; limb None without limbs."""
        _write_volume(self.joint, clip_id, joint)
        if self.limb is not None:
            _write_volume(self.limb, clip_id, limb)
        self.boxes.create_dataset(clip_id, data=np.asarray(box, np.float32), track_times=False)


@contextlib.contextmanager
def writer(path, *, layout, size, sigma: float, padding: float, limbs: bool):
    """`with writer(out, ...) as w: w.add(clip_id, box, joint, limb)`; size is (H, W). The
    store appears at `path` only when the block succeeds."""
    h, w = size
    with atomic_h5(path) as h5:
        h5.attrs.update(kind=KIND, format_version=VERSION, **layout_attrs(layout))
        h5.attrs["size"] = h if h == w else np.array([h, w], dtype=np.int64)
        h5.attrs.update(sigma=float(sigma), padding=float(padding), num_joints=layout.num_joints,
                        num_limbs=layout.num_limbs if limbs else 0)
        yield _Writer(h5, limbs)


class Reader(LazyStore):
    """`volume(id, "joint" | "limb")` -> uint8 [T, C, H, W]; `box(id)`; `layout`; `settings`."""

    KIND, VERSION, NOUN = KIND, VERSION, "heatmap"

    @property
    def layout(self):
        return layout_from_attrs(self.h5.attrs, str(self.path))

    @property
    def settings(self) -> dict:
        a = self.h5.attrs
        return {"size": a["size"], "sigma": float(a["sigma"]), "padding": float(a["padding"]),
                "num_joints": int(a["num_joints"]), "num_limbs": int(a["num_limbs"])}

    def volume(self, clip_id: str, kind: str = "joint") -> np.ndarray:
        """Reads the whole dataset (one chunk), so callers index frames in numpy."""
        if kind not in ("joint", "limb"):
            raise ValueError(f"kind must be 'joint' or 'limb', got {kind!r}")
        try:
            return self.node(f"{kind}/{clip_id}")[()]
        except KeyError:
            raise InputError(f"{self.path}: no {kind} volume for clip {clip_id!r}") from None

    def box(self, clip_id: str) -> np.ndarray:
        try:
            return np.asarray(self.node(f"box/{clip_id}")[()], dtype=np.float32)
        except KeyError:
            raise InputError(f"{self.path}: no box for clip {clip_id!r}") from None
