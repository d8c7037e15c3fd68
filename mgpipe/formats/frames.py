"""frames.h5: the frames of every clip as JPEG, one frame per element.

Layout: root attrs kind "frames", format_version, max_side, jpeg_quality;
`clips/<clip_id>`: a vlen uint8 dataset, one JPEG per frame, with attrs width and height (the
stored frame size, longer side at most max_side) and scale (stored width / original width, so
boxes in original pixels map onto stored frames). JPEG keeps the store ~10x smaller than raw
pixels and a frame decodes in about a millisecond, so samples get any frame of any clip.
Written by the decode stage; read by RGB samples and the image pose backends (their worker,
which runs under another interpreter, reads this layout with h5py directly).
"""

from __future__ import annotations

import contextlib
import io

import h5py
import numpy as np
from PIL import Image

from ..io import InputError, atomic_h5
from . import LazyStore

KIND = "frames"
VERSION = 1


def encode_jpeg(img: Image.Image, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return np.frombuffer(buf.getvalue(), dtype=np.uint8)


def decode_jpeg(data, reduce: int = 1) -> Image.Image:
    """An RGB image of one stored JPEG frame; reduce 2, 4 or 8 decodes it at that fraction of
    its size through JPEG's DCT scaling (faster than full decoding, and an averaging filter:
    pixel j covers source pixels [j * reduce, (j + 1) * reduce))."""
    img = Image.open(io.BytesIO(data.tobytes() if hasattr(data, "tobytes") else data))
    img.draft("RGB", (max(1, img.width // reduce), max(1, img.height // reduce)))
    img.load()
    return img if img.mode == "RGB" else img.convert("RGB")   # convert() would copy an RGB image


class _Writer:
    def __init__(self, h5):
        self.h5, self.clips = h5, h5.create_group("clips")
        self.vlen = h5py.vlen_dtype(np.uint8)

    def add(self, clip_id: str, jpegs: list[np.ndarray], width: int, height: int, scale: float) -> None:
        ds = self.clips.create_dataset(clip_id, (len(jpegs),), dtype=self.vlen)
        for i, f in enumerate(jpegs):
            ds[i] = f
        ds.attrs.update(width=int(width), height=int(height), scale=float(scale))


@contextlib.contextmanager
def writer(path, *, max_side: int, jpeg_quality: int):
    """`with writer(out, ...) as w: w.add(clip_id, jpegs, width, height, scale)`; the store
    appears at `path` only when the block succeeds."""
    with atomic_h5(path) as h5:
        h5.attrs.update(kind=KIND, format_version=VERSION, max_side=max_side, jpeg_quality=jpeg_quality)
        yield _Writer(h5)


class Reader(LazyStore):
    """`clip(id)` -> (the clip's JPEG dataset, its attrs); `frames(id, indices)` -> images."""

    KIND, VERSION, NOUN = KIND, VERSION, "frame"

    def __init__(self, path):
        super().__init__(path)
        self._attrs = {}   # clip id -> its attrs: attribute reads cost more than a frame's bytes

    def __getstate__(self):
        return {**super().__getstate__(), "_attrs": {}}

    def clip(self, clip_id: str):
        try:
            ds = self.node(f"clips/{clip_id}")
            if clip_id not in self._attrs:
                self._attrs[clip_id] = {"width": int(ds.attrs["width"]), "height": int(ds.attrs["height"]),
                                        "scale": float(ds.attrs["scale"])}
            return ds, self._attrs[clip_id]
        except KeyError:
            raise InputError(f"{self.path}: no frames for clip {clip_id!r}") from None

    def jpegs(self, clip_id: str, indices) -> list[np.ndarray]:
        """The JPEG bytes of frames `indices` (increasing, distinct) of a clip, in one read
        (HDF5 selections cost more than the bytes of a few frames)."""
        ds, _ = self.clip(clip_id)
        return list(ds[np.asarray(indices, np.int64)])

    def frames(self, clip_id: str, indices) -> list[Image.Image]:
        """Decode only the requested frames of a clip."""
        ds, _ = self.clip(clip_id)
        return [decode_jpeg(ds[int(i)]) for i in indices]
