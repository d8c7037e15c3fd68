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
    if isinstance(data, Compressed):  # compressed elsewhere: the chunk's bytes go in as they are
        ds = group.create_dataset(name, shape=data.shape, dtype=np.uint8, chunks=data.shape,
                                  track_times=False, **hdf5plugin.Zstd(clevel=ZSTD_LEVEL))
        ds.id.write_direct_chunk((0,) * len(data.shape), data.chunk)
        return
    group.create_dataset(name, data=data, chunks=data.shape, track_times=False,
                         **hdf5plugin.Zstd(clevel=ZSTD_LEVEL))


class Compressed:
    """A volume compressed exactly as the store holds it (one zstd chunk): what a worker process
    sends back instead of the dense volume, so that the parallel build moves megabytes, not
    gigabytes, between processes."""

    def __init__(self, volume: np.ndarray):
        import h5py

        self.shape = tuple(volume.shape)
        # The store's own filter, in an in-memory HDF5 file: the same bytes the writer would make.
        with h5py.File(f"mem-{id(self)}", "w", driver="core", backing_store=False) as h5:
            ds = h5.create_dataset("v", data=volume, chunks=volume.shape, track_times=False,
                                   **hdf5plugin.Zstd(clevel=ZSTD_LEVEL))
            self.chunk = ds.id.read_direct_chunk((0,) * volume.ndim)[1]


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
