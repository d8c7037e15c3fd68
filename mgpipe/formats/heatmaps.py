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

from mgpipe.formats.hdf5 import LazyStore, attr_number, check_dataset
from mgpipe.io import InputError, atomic_h5
from mgpipe.layouts import layout_attrs, layout_from_attrs

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
    CLIPS = "joint"

    @property
    def layout(self):
        try:
            return layout_from_attrs(self.h5.attrs, str(self.path))
        except InputError as e:
            if str(self.path) in str(e):
                raise
            raise InputError(f"{self.path}: {e}") from None  # an unknown layout name

    @property
    def settings(self) -> dict:
        a, path = self.h5.attrs, self.path
        size = a.get("size")
        size = [attr_number({"size": v}, "size", path, integer=True, high=1 << 16)
                for v in np.atleast_1d(np.asarray(size if size is not None else [None]))[:3]]
        if len(size) not in (1, 2):
            raise InputError(f"{path}: attribute size has {len(size)} values, expected 1 or 2")
        return {"size": size[0] if len(size) == 1 else np.array(size, dtype=np.int64),
                "sigma": attr_number(a, "sigma", path), "padding": attr_number(a, "padding", path, low=-1),
                "num_joints": attr_number(a, "num_joints", path, integer=True, high=1 << 12),
                "num_limbs": attr_number(a, "num_limbs", path, integer=True, open_low=False, high=1 << 12)}

    def check_node(self, key: str, node):
        """joint|limb/<id>: uint8 [T, joints|limbs, H, W] of the store's size; box/<id>: float [4]."""
        group, _, clip_id = key.partition("/")
        where = f"{group} volume of clip {clip_id!r}"
        if group in ("joint", "limb") and clip_id:
            shape = check_dataset(node, self.path, where, kinds="u", ranks=(4,), itemsizes=(1,))
            settings = self.settings
            h, w = np.broadcast_to(settings["size"], 2)
            channels = settings["num_joints" if group == "joint" else "num_limbs"]
            if shape[0] == 0 or shape[1:] != (channels, h, w):
                raise InputError(f"{self.path}: {where} has shape {shape}, expected [T > 0, {channels}, {h}, {w}]")
        elif group == "box" and clip_id:
            shape = check_dataset(node, self.path, f"box of clip {clip_id!r}", kinds="f", ranks=(1,))
            if shape != (4,):
                raise InputError(f"{self.path}: box of clip {clip_id!r} has shape {shape}, expected (4,)")
        return node

    def clip_length(self, clip_id: str) -> int:
        return self.node(f"joint/{clip_id}").shape[0]

    def volume(self, clip_id: str, kind: str = "joint") -> np.ndarray:
        """Reads the whole dataset (one chunk), so callers index frames in numpy."""
        if kind not in ("joint", "limb"):
            raise ValueError(f"kind must be 'joint' or 'limb', got {kind!r}")
        try:
            return self.read(f"{kind}/{clip_id}")
        except KeyError:
            raise InputError(f"{self.path}: no {kind} volume for clip {clip_id!r}") from None

    def box(self, clip_id: str) -> np.ndarray:
        try:
            return np.asarray(self.read(f"box/{clip_id}"), dtype=np.float32)
        except KeyError:
            raise InputError(f"{self.path}: no box for clip {clip_id!r}") from None
