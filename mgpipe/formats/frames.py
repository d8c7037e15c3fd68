"""frames.h5: the frames of every clip as JPEG, one frame per element.

Layout: root attrs kind "frames", format_version, max_side, jpeg_quality;
`clips/<clip_id>`: a vlen uint8 dataset, one JPEG per frame, with attrs width and height (the
stored frame size, longer side at most max_side) and scale (stored width / original width, so
boxes in original pixels map onto stored frames). JPEG keeps the store ~10x smaller than raw
pixels and a frame decodes in about a millisecond, so samples get any frame of any clip.
Written by the decode stage; read by RGB samples and the image pose backends (their worker,
which runs under another interpreter, uses this module too: it imports only h5py, numpy and
Pillow).

A frame is decoded as JPEG and nothing else (PIL's format detection would hand EPS bytes to
Ghostscript), and only after its header's size (the JPEG frame header, SOF) is checked against
MAX_PIXELS and the clip's declared width and height: a bomb is refused before any decoding.
"""

from __future__ import annotations

import contextlib
import io

import h5py
import numpy as np
from PIL import Image

from mgpipe.formats.hdf5 import LazyStore, attr_number, check_dataset
from mgpipe.io import InputError, atomic_h5

KIND = "frames"
VERSION = 1
MAX_SIDE = 16384            # a stored frame's longer side
MAX_PIXELS = 40_000_000     # a stored frame's pixels: 8K UHD (33 Mpx) fits; 120 MB decoded
# JPEG start-of-frame markers (baseline, progressive, lossless, arithmetic: SOF0-15 but DHT,
# JPG and DAC), which carry the image size
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


class FrameError(ValueError):
    """A stored frame that is not a JPEG of the declared size (callers name store, clip, frame)."""


def encode_jpeg(img: Image.Image, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return np.frombuffer(buf.getvalue(), dtype=np.uint8)


def jpeg_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a JPEG's first frame header, without decoding anything."""
    if data[:3] != b"\xff\xd8\xff":
        raise FrameError("is not a JPEG (no JPEG start marker)")
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            raise FrameError(f"is not a JPEG (bad marker at byte {i})")
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            i += 2
            continue
        if marker in (0xD9, 0xDA):  # image end or scan data before any frame header
            break
        length = int.from_bytes(data[i + 2:i + 4], "big")
        if marker in _SOF and length >= 7 and i + 9 <= len(data):
            return int.from_bytes(data[i + 7:i + 9], "big"), int.from_bytes(data[i + 5:i + 7], "big")
        if length < 2:
            raise FrameError(f"is not a JPEG (segment length {length} at byte {i})")
        i += 2 + length
    raise FrameError("is not a JPEG (no frame header)")


def decode_jpeg(data, reduce: int = 1, size: tuple[int, int] | None = None) -> Image.Image:
    """An RGB image of one stored JPEG frame; reduce 2, 4 or 8 decodes it at that fraction of
    its size through JPEG's DCT scaling (faster than full decoding, and an averaging filter:
    pixel j covers source pixels [j * reduce, (j + 1) * reduce)). size: the (width, height)
    the store declares for it. Bytes that are not a JPEG, a header size over MAX_PIXELS or
    other than `size`: FrameError, before anything is decoded."""
    data = data.tobytes() if hasattr(data, "tobytes") else bytes(data)
    width, height = jpeg_size(data)
    if width * height > MAX_PIXELS or width <= 0 or height <= 0:
        raise FrameError(f"declares {width}x{height} pixels in its JPEG header (at most {MAX_PIXELS} "
                         "are decoded); refused before decoding")
    if size is not None and (width, height) != tuple(size):
        raise FrameError(f"is not the {size[0]}x{size[1]} its attributes say (its JPEG header "
                         f"declares {width}x{height}; refused before decoding)")
    try:
        img = Image.open(io.BytesIO(data), formats=["JPEG"])
        if img.size != (width, height):  # PIL reads the last frame header: another size
            raise FrameError(f"is a JPEG with two frame sizes ({width}x{height}, {img.width}x{img.height})")
        img.draft("RGB", (max(1, img.width // reduce), max(1, img.height // reduce)))
        img.load()
    except FrameError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise FrameError(f"is not a readable JPEG ({type(e).__name__}: {str(e)[:100]})") from None
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

    def check_node(self, key: str, node):
        """clips/<id>: a rank-1 variable-length uint8 dataset with a sane frame size."""
        where = f"clip {key[len('clips/'):]!r}" if key.startswith("clips/") else key
        if key.startswith("clips/") and key.count("/") == 1:
            check_dataset(node, self.path, where, kinds="", ranks=(1,), vlen_of=np.uint8)
            attrs = {name: attr_number(node.attrs, name, self.path, f"{where}: ", integer=True, high=MAX_SIDE)
                     for name in ("width", "height")}
            attrs["scale"] = attr_number(node.attrs, "scale", self.path, f"{where}: ", high=1e6)
            if attrs["width"] * attrs["height"] > MAX_PIXELS:
                raise InputError(f"{self.path}: {where}: frame size {attrs['width']}x{attrs['height']} "
                                 f"is over {MAX_PIXELS} pixels")
            self._attrs[key[len("clips/"):]] = attrs
        return node

    def clip(self, clip_id: str):
        try:
            ds = self.node(f"clips/{clip_id}")
        except KeyError:
            raise InputError(f"{self.path}: no frames for clip {clip_id!r}") from None
        return ds, self._attrs[clip_id]

    def clip_length(self, clip_id: str) -> int:
        return len(self.node(f"clips/{clip_id}"))

    def jpegs(self, clip_id: str, indices) -> list[np.ndarray]:
        """The JPEG bytes of frames `indices` (increasing, distinct) of a clip, in one read
        (HDF5 selections cost more than the bytes of a few frames)."""
        self.clip(clip_id)
        return list(self.read(f"clips/{clip_id}", np.asarray(indices, np.int64)))

    def decode(self, clip_id: str, index: int, data, reduce: int = 1) -> Image.Image:
        """One frame's JPEG bytes decoded; a frame that is not a JPEG of the clip's size is one
        line naming the store, clip and frame."""
        attrs = self._attrs[clip_id] if clip_id in self._attrs else self.clip(clip_id)[1]
        try:
            return decode_jpeg(data, reduce, (attrs["width"], attrs["height"]))
        except FrameError as e:
            raise InputError(f"{self.path}: clip {clip_id!r} frame {index} {e}") from None

    def frames(self, clip_id: str, indices) -> list[Image.Image]:
        """Decode only the requested frames of a clip."""
        self.clip(clip_id)
        return [self.decode(clip_id, int(i), self.read(f"clips/{clip_id}", int(i))) for i in indices]
