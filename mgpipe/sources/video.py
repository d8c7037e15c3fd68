"""Videos read as players show them: orientation from the display matrix, frame times from the
presentation timestamps, frame counts where the container lists none.

Orientation: phones film in the sensor's landscape and store a display matrix (rotation -90 in
ffprobe's words) that every player applies. `orientation` reads it from a decoded frame's side
data and returns the PIL transposes FFmpeg's own autorotation (fftools, `-autorotate`) inserts:
quarter turns and mirrors. Other angles are refused (no player agrees on them).

Timestamps: a frame's index is its rank in presentation order (what decoding yields), its time
(pts - first pts) x time_base. `frame_times` reads them from the packets (demuxing, no decoding).
"""

from __future__ import annotations

import math
import struct

import numpy as np
from PIL import Image

from mgpipe.io import InputError

T = Image.Transpose  # short: the orientation table below reads as FFmpeg's
_ROTATE_CW, _ROTATE_CCW = (T.ROTATE_270,), (T.ROTATE_90,)
# frames within this fraction of a frame period of the nominal grid count as constant-rate:
# their seconds map to frames by the rate, exactly as before timestamps were read
GRID_TOLERANCE = 0.1


def display_matrix(frame) -> tuple[int, ...] | None:
    """FFmpeg's 3x3 display matrix (16.16 fixed point, row-major) of a decoded frame, or None."""
    for data in frame.side_data:
        if str(data.type).rsplit(".", 1)[-1] == "DISPLAYMATRIX":
            raw = bytes(data)
            return struct.unpack("<9i", raw[:36]) if len(raw) >= 36 else None
    return None


def orientation(frame, path) -> tuple[tuple, str]:
    """(the PIL transpose that turns `frame` as players show it, or (); a description or "").

    Follows fftools' autorotation: theta = -rotation (clockwise degrees); quarter turns are
    transposes, whose mirrored variants are told apart by the matrix's signs."""
    matrix = display_matrix(frame)
    if matrix is None:
        return (), ""
    scale_x, scale_y = math.hypot(matrix[0], matrix[3]), math.hypot(matrix[1], matrix[4])
    if not scale_x or not scale_y:
        raise InputError(f"{path}: its rotation metadata (display matrix {list(matrix)}) is singular")
    # av_display_rotation_get (frame.rotation rounds it to an int): counterclockwise degrees
    rotation = -math.degrees(math.atan2(matrix[1] / scale_y, matrix[0] / scale_x))
    theta = -round(rotation)
    rotation = round(rotation, 1) + 0.0   # for messages: -90.0, never -0.0
    theta -= 360 * math.floor(theta / 360 + 0.9 / 360)
    if abs(theta - 90) < 1:
        ops = (T.TRANSPOSE,) if matrix[3] > 0 else _ROTATE_CW
    elif abs(theta - 180) < 1:
        ops = {(True, True): (T.ROTATE_180,), (True, False): (T.FLIP_LEFT_RIGHT,),
               (False, True): (T.FLIP_TOP_BOTTOM,), (False, False): ()}[matrix[0] < 0, matrix[4] < 0]
    elif abs(theta - 270) < 1:
        ops = (T.TRANSVERSE,) if matrix[3] < 0 else _ROTATE_CCW
    elif abs(theta) < 1:
        ops = (T.FLIP_TOP_BOTTOM,) if matrix[4] < 0 else ()
    else:
        raise InputError(f"{path}: rotation metadata of {rotation:g} degrees: only quarter turns "
                         "and mirrors are supported (re-encode the video upright)")
    if not ops:
        return (), ""
    names = {T.ROTATE_270: "turned 90 degrees clockwise", T.ROTATE_90: "turned 90 degrees "
             "counterclockwise", T.ROTATE_180: "turned 180 degrees", T.TRANSPOSE: "transposed "
             "(mirrored and turned)", T.TRANSVERSE: "transversed (mirrored and turned)",
             T.FLIP_LEFT_RIGHT: "mirrored left-right", T.FLIP_TOP_BOTTOM: "mirrored top-bottom"}
    return ops, f"display matrix (rotation {rotation:g} degrees): frames {names[ops[0]]}"


def upright(img: Image.Image, ops) -> Image.Image:
    for op in ops:
        img = img.transpose(op)
    return img


def display_size(width: int, height: int, ops) -> tuple[int, int]:
    """(width, height) after the transposes: a quarter turn swaps them."""
    quarter = any(op in (T.ROTATE_90, T.ROTATE_270, T.TRANSPOSE, T.TRANSVERSE) for op in ops)
    return (height, width) if quarter else (width, height)


def frame_times(container, stream) -> np.ndarray:
    """Seconds from the first frame to each frame, in presentation (= decoding output) order,
    from the packets' timestamps. Packets the decoder drops (an edit list's pre-roll, flagged
    discard) are not frames. A packet without pts (some AVI) uses its dts; a stream with
    neither gives NaN times (counted, not timed)."""
    stamps = [packet.pts if packet.pts is not None else packet.dts
              for packet in container.demux(stream) if packet.size and not packet.is_discard]
    if not stamps:
        return np.zeros(0)
    if any(s is None for s in stamps):
        return np.full(len(stamps), np.nan)
    pts = np.sort(np.asarray(stamps, dtype=np.int64))
    return (pts - pts[0]) * float(stream.time_base)


def off_grid(times: np.ndarray, rate: float) -> float:
    """Largest distance, in frame periods, of a frame's time from the nominal grid i / rate."""
    if not len(times) or not np.isfinite(times).all() or not rate > 0:
        return 0.0
    return float(np.max(np.abs(times * rate - np.arange(len(times)))))


def frames_within(times: np.ndarray, start_s: float, end_s: float) -> tuple[int, int] | None:
    """First and last index of the frames whose time lies in [start_s, end_s] (a microsecond
    of slack for decimal seconds), or None when no frame does."""
    slack = 1e-6
    first = int(np.searchsorted(times, start_s - slack, side="left"))
    last = int(np.searchsorted(times, end_s + slack, side="right")) - 1
    return (first, last) if first <= last else None
