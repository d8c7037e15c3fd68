"""Heatmap stage: keypoints -> compact box per clip -> Gaussian joint and limb volumes.

Semantics (docs/method.md §7, PoseConv3D's GeneratePoseTarget), stated exactly:

* A keypoint is *valid* when its score is >= 1e-4 (compared in float64, so a float32 score of
  1e-4, which is 9.99999974e-05, is below), its x and y are finite and it is not the
  missing marker (x == 0 and y == 0). Invalid keypoints draw nothing and are ignored by the box.
* Coordinates are mapped into the box's output grid: x' = (x - x0) * (W / (x1 - x0)),
  y' = (y - y0) * (H / (y1 - y0)); pixel centres sit at the integers 0..W-1 / 0..H-1.
* Joint channel: value exp(-(dx^2 + dy^2) / (2 sigma^2)) * score at pixel (i, j) with
  dx = i - x', dy = j - y', drawn only where |dx| <= 3 sigma AND |dy| <= 3 sigma (a square
  window, as the reference; the reference's int() truncation can add one extra pixel column or
  row just beyond 3 sigma on the low side, which we do not reproduce).
* Limb channel (edge a-b): value exp(-d^2 / (2 sigma^2)) * min(score_a, score_b) where d is the
  distance from the pixel to the closed segment [a', b'], drawn only where d <= 3 sigma (a
  round cut, not the reference's bounding box). Either endpoint invalid -> nothing. A
  zero-length segment is the distance to that point (the reference instead draws a joint
  Gaussian at a with a's score whenever |ab| < 1 px).
* Several persons: elementwise max. sigma is in output (heatmap) pixels.

The vectorised renderers enumerate only the candidate pixels near each keypoint / segment
(flat index arrays, no Python loop over frames, joints or limbs; a loop over persons and over
memory-bounded frame blocks) and scatter them with a maximum into the output. The *_loop
versions are the plain per-person/per-frame/per-joint reference with the same arithmetic.
"""

from __future__ import annotations

import logging
import math
import multiprocessing as mp
import os
import time
from collections import deque
from functools import partial

import numpy as np

from mgpipe.formats import heatmaps as heatmap_store
from mgpipe.formats import keypoints as keypoint_store
from mgpipe.formats.keypoints import EPS, compact_box, valid
from mgpipe.runtime import progress as progress_bar

# Upper bound on candidate pixels handled at once by the vectorised renderers (each candidate
# costs a few dozen bytes of temporaries).
_CANDIDATES_PER_BLOCK = 1 << 21

__all__ = [
    "render_joints", "render_limbs", "render_joints_loop", "render_limbs_loop",
    "flip_volume", "quantise", "dequantise", "build_heatmap_store",
]


# ----------------------------------------------------------------------------- helpers
def _as_mtv3(keypoints) -> np.ndarray:
    kp = np.asarray(keypoints)
    if kp.ndim == 3:
        kp = kp[None]
    if kp.ndim != 4 or kp.shape[-1] < 3:
        raise ValueError(f"keypoints must be [M, T, V, 3] or [T, V, 3], got shape {kp.shape}")
    return kp


def _size_hw(size) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)):
        h = w = int(size)
    else:
        h, w = (int(s) for s in size)
    if h <= 0 or w <= 0:
        raise ValueError(f"heatmap size must be positive, got {size!r}")
    return h, w


def _box_scales(box, h: int, w: int) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = (float(v) for v in np.asarray(box, dtype=np.float64).reshape(4))
    if not (x1 > x0 and y1 > y0):
        raise ValueError(f"degenerate box {box!r}")
    return x0, y0, w / (x1 - x0), h / (y1 - y0)


def _mapped(kp: np.ndarray, box, h: int, w: int):
    """float64 mapped x', y', score [M, T, V] and the validity mask."""
    x0, y0, sx, sy = _box_scales(box, h, w)
    k = kp.astype(np.float64, copy=False)
    return (k[..., 0] - x0) * sx, (k[..., 1] - y0) * sy, k[..., 2], valid(kp)


def _gauss(d2, sigma: float):
    # Shared by the vectorised and the loop renderers so that both use the same arithmetic.
    return np.exp(-d2 / (2.0 * sigma * sigma))


def _frame_blocks(cost: np.ndarray, budget: int) -> list[tuple[int, int]]:
    """Split frames into consecutive [t0, t1) blocks whose summed cost stays under budget
    (a block always holds at least one frame)."""
    n = len(cost)
    if n == 0:
        return []
    cum = np.cumsum(cost, dtype=np.int64)
    out, t0, base = [], 0, 0
    while t0 < n:
        t1 = int(np.searchsorted(cum, base + budget, side="right"))
        t1 = min(max(t1, t0 + 1), n)
        out.append((t0, t1))
        base, t0 = int(cum[t1 - 1]), t1
    return out


# ----------------------------------------------------------------------------- box
# ----------------------------------------------------------------------------- vectorised
# Candidate pixels are computed densely per keypoint / per row of a segment; candidates that
# fail the cut are routed to one spare element after the output (so the scatter needs no
# compaction), and within one person every real index occurs once (one keypoint or segment per
# channel and frame), so `flat[idx] = max(flat[idx], val)` is exact.
_MARGIN = 1e-6  # widens candidate windows past float rounding; the exact cut is applied after


def _output(shape, quantised: bool = False) -> tuple[np.ndarray, np.ndarray, int]:
    n = int(np.prod(shape, dtype=np.int64))
    buf = np.zeros(n + 1, dtype=np.uint8 if quantised else np.float32)
    return buf[:n].reshape(shape), buf, n


def _values(v: np.ndarray, quantised: bool) -> np.ndarray:
    """Candidate values as stored: float32, or uint8 exactly as quantise() would make them (the
    maximum commutes with rounding, so quantising the candidates before the scatter equals
    quantising the finished volume, without a float volume ever existing)."""
    return quantise(v) if quantised else v.astype(np.float32)


def _dense(shape, blocks, quantised: bool) -> np.ndarray:
    """Scatter candidate blocks (person, flat index, value) into a zero volume with a maximum."""
    out, flat, _ = _output(shape, quantised)
    _draw(flat, blocks, quantised)
    return out


def _draw(flat, blocks, quantised: bool, drawn: list | None = None) -> None:
    """Candidate blocks into the zero buffer `flat` (the volume and the spare element) with a
    maximum; each block's indices appended to `drawn` before they are written. Within one
    person every real index occurs once, so the first person to draw assigns (the buffer is
    still zero) and later persons take the maximum."""
    first = None
    for m, idx, val in blocks:
        first = m if first is None else first
        val = _values(val, quantised)
        if drawn is not None:
            drawn.append(idx)
        flat[idx] = val if m == first else np.maximum(flat[idx], val)


def _sparse(shape, blocks) -> tuple[np.ndarray, np.ndarray]:
    """Candidate blocks as (int32 flat index, float32 value) arrays without the cut-off ones,
    every index once: where several persons draw the same pixel, their maximum (the batch step,
    samples.scatter_volumes, then writes each pixel with one plain copy, no reduction)."""
    n = int(np.prod(shape, dtype=np.int64))
    if n >= 2 ** 31:
        raise ValueError(f"a heatmap volume of shape {shape} is too large for int32 indices")
    idx, val, persons = [], [], set()
    for m, i, v in blocks:
        keep = i != n
        idx.append(i[keep].astype(np.int32))
        val.append(v[keep].astype(np.float32))
        persons.add(m)
    if not idx:
        return np.zeros(0, np.int32), np.zeros(0, np.float32)
    idx, val = np.concatenate(idx), np.concatenate(val)
    if len(persons) > 1:  # (within one person every index occurs once)
        order = np.argsort(idx, kind="stable")
        idx, val = idx[order], val[order]
        first = np.flatnonzero(np.concatenate(([True], idx[1:] != idx[:-1])))
        idx, val = idx[first], np.maximum.reduceat(val, first)
    return idx, val


def render_joints(keypoints, box, size, sigma: float, *, channels_first: bool = False,
                  quantised: bool = False, sparse: bool = False):
    """Joint heatmaps float32 [T, V, H, W], or [V, T, H, W] with channels_first (the network's
    order, written directly: no transposing copy); uint8 quantise()d values with quantised (the
    store's format, at a quarter of the memory traffic); with sparse, the (flat index, value)
    pairs of the drawn pixels instead (_sparse). See the module docstring for the rule."""
    kp = _as_mtv3(keypoints)
    m_, t_, v_, _ = kp.shape
    h, w = _size_hw(size)
    shape = (v_, t_, h, w) if channels_first else (t_, v_, h, w)
    blocks = _joint_candidates(kp, box, h, w, sigma, channels_first)
    return _sparse(shape, blocks) if sparse else _dense(shape, blocks, quantised)


def _joint_candidates(kp, box, h: int, w: int, sigma: float, channels_first: bool):
    """(person, flat index, float value) blocks of every joint's candidate pixels; cut-off
    candidates carry the index one past the volume."""
    m_, t_, v_, _ = kp.shape
    if m_ == 0 or t_ == 0 or v_ == 0:
        return
    dummy = v_ * t_ * h * w
    xs, ys, ss, valid = _mapped(kp, box, h, w)
    r = 3.0 * sigma
    k = int(math.ceil(2.0 * r + _MARGIN)) + 1  # candidates per axis: a superset of |i - x'| <= r
    offs = np.arange(k, dtype=np.float64)
    step = max(1, _CANDIDATES_PER_BLOCK // (v_ * k * k))
    for m in range(m_):
        for t0 in range(0, t_, step):
            t1 = min(t_, t0 + step)
            tt, vv = np.nonzero(valid[m, t0:t1])
            if tt.size == 0:
                continue
            cx = xs[m, t0:t1][tt, vv]
            cy = ys[m, t0:t1][tt, vv]
            px = np.floor(cx - r)[:, None] + offs  # [n, k]
            py = np.floor(cy - r)[:, None] + offs
            dx = px - cx[:, None]
            dy = py - cy[:, None]
            okx = (np.abs(dx) <= r) & (px >= 0) & (px <= w - 1)
            oky = (np.abs(dy) <= r) & (py >= 0) & (py <= h - 1)
            d2 = dx[:, None, :] ** 2 + dy[:, :, None] ** 2  # [n, k(y), k(x)]
            val = _gauss(d2, sigma)
            val *= ss[m, t0:t1][tt, vv][:, None, None]
            tt = (tt + t0).astype(np.int64)
            chan = vv * t_ + tt if channels_first else tt * v_ + vv
            idx = ((chan[:, None] * h + py.astype(np.int64)) * w)[:, :, None] + px.astype(np.int64)[:, None, :]
            idx[~(oky[:, :, None] & okx[:, None, :])] = dummy
            yield m, idx.ravel(), val.ravel()


def render_limbs(keypoints, box, size, sigma: float, limbs, *, channels_first: bool = False,
                 quantised: bool = False, sparse: bool = False):
    """Limb heatmaps float32 [T, L, H, W], or [L, T, H, W] with channels_first, or uint8 with
    quantised, or sparse pairs (as render_joints); see the module docstring for the exact rule."""
    kp = _as_mtv3(keypoints)
    t_ = kp.shape[1]
    lim = np.asarray(limbs, dtype=np.int64).reshape(-1, 2)
    h, w = _size_hw(size)
    shape = (len(lim), t_, h, w) if channels_first else (t_, len(lim), h, w)
    blocks = _limb_candidates(kp, lim, box, h, w, sigma, channels_first)
    return _sparse(shape, blocks) if sparse else _dense(shape, blocks, quantised)


def _limb_candidates(kp, lim, box, h: int, w: int, sigma: float, channels_first: bool):
    """(person, flat index, float value) blocks of every limb's candidate pixels, as
    _joint_candidates."""
    m_, t_, _, _ = kp.shape
    l_ = len(lim)
    if m_ == 0 or t_ == 0 or l_ == 0:
        return
    dummy = l_ * t_ * h * w
    xs, ys, ss, valid = _mapped(kp, box, h, w)
    la, lb = lim[:, 0], lim[:, 1]
    r = 3.0 * sigma
    rm = r + _MARGIN
    for m in range(m_):
        ax, ay, bx, by = xs[m][:, la], ys[m][:, la], xs[m][:, lb], ys[m][:, lb]  # [T, L]
        ok = valid[m][:, la] & valid[m][:, lb]
        if not ok.any():
            continue
        val = np.minimum(ss[m][:, la], ss[m][:, lb])
        with np.errstate(invalid="ignore"):
            xlo = np.maximum(np.floor(np.minimum(ax, bx) - r), 0.0)
            xhi = np.minimum(np.ceil(np.maximum(ax, bx) + r), w - 1.0)
            ylo = np.maximum(np.floor(np.minimum(ay, by) - r), 0.0)
            yhi = np.minimum(np.ceil(np.maximum(ay, by) + r), h - 1.0)
        bw = np.where(ok, np.maximum(xhi - xlo + 1.0, 0.0), 0.0).astype(np.int64)
        bh = np.where(ok, np.maximum(yhi - ylo + 1.0, 0.0), 0.0).astype(np.int64)
        # The segment's bounding box grown by 3 sigma (clipped to the grid) bounds the work.
        for t0, t1 in _frame_blocks((bw * bh).sum(axis=1), _CANDIDATES_PER_BLOCK):
            tt, ll = np.nonzero((bw * bh)[t0:t1])
            if tt.size == 0:
                continue
            tt = tt + t0
            sax, say = ax[tt, ll], ay[tt, ll]
            sabx, saby = bx[tt, ll] - sax, by[tt, ll] - say
            # Level 1: the rows of each segment's box.
            nrow = bh[tt, ll]
            rseg = np.repeat(np.arange(tt.size), nrow)
            ry = ylo[tt, ll][rseg] + (np.arange(rseg.size) - np.repeat(np.cumsum(nrow) - nrow, nrow))
            r_ax, r_abx, r_aby = sax[rseg], sabx[rseg], saby[rseg]
            r_apy = ry - say[rseg]
            # Segment points within rm of the row in y: parameter s in [s_lo, s_hi] (clipped to
            # [0, 1]); the row's candidates are their x range grown by rm, clipped to the box.
            with np.errstate(divide="ignore", invalid="ignore"):
                s1 = (r_apy - rm) / r_aby
                s2 = (r_apy + rm) / r_aby
            flat_seg = r_aby == 0
            near = np.abs(r_apy) <= rm
            s_lo = np.where(flat_seg, np.where(near, 0.0, 2.0), np.maximum(np.minimum(s1, s2), 0.0))
            s_hi = np.where(flat_seg, 1.0, np.minimum(np.maximum(s1, s2), 1.0))
            xa = r_ax + s_lo * r_abx
            xb = r_ax + s_hi * r_abx
            il = np.maximum(np.ceil(np.minimum(xa, xb) - rm), xlo[tt, ll][rseg])
            ir = np.minimum(np.floor(np.maximum(xa, xb) + rm), xhi[tt, ll][rseg])
            rw = np.where(s_lo <= s_hi, np.maximum(ir - il + 1.0, 0.0), 0.0).astype(np.int64)
            # Level 2: the candidate pixels of each row (row-level values are repeated).
            first = np.cumsum(rw) - rw
            px = np.repeat(il - first, rw)
            px += np.arange(px.size)
            r_d2ab = r_abx * r_abx + r_aby * r_aby
            r_d2ab[r_d2ab == 0] = np.inf  # zero-length segment: c = 0, the distance to a
            abx, aby = np.repeat(r_abx, rw), np.repeat(r_aby, rw)
            apx = px - np.repeat(r_ax, rw)
            apy = np.repeat(r_apy, rw)
            c = apx * abx
            c += apy * aby
            c /= np.repeat(r_d2ab, rw)
            np.clip(c, 0.0, 1.0, out=c)
            abx *= c
            dx = np.subtract(apx, abx, out=apx)
            aby *= c
            dy = np.subtract(apy, aby, out=apy)
            dx *= dx
            dy *= dy
            d2 = np.add(dx, dy, out=dx)
            v = _gauss(d2, sigma)
            v *= np.repeat(val[tt, ll][rseg], rw)
            chan = ll * t_ + tt if channels_first else tt.astype(np.int64) * l_ + ll
            r_base = (chan[rseg] * h + ry.astype(np.int64)) * w
            idx = np.repeat(r_base, rw)
            idx += px.astype(np.int64)
            idx[d2 > r * r] = dummy
            yield m, idx, v


# ----------------------------------------------------------------------------- reference loops
def render_joints_loop(keypoints, box, size, sigma: float) -> np.ndarray:
    """Per-person/per-frame/per-joint reference of render_joints (same semantics)."""
    kp = _as_mtv3(keypoints)
    m_, t_, v_, _ = kp.shape
    h, w = _size_hw(size)
    out = np.zeros((t_, v_, h, w), dtype=np.float32)
    x0, y0, sx, sy = _box_scales(box, h, w)
    r = 3.0 * sigma
    for m in range(m_):
        for t in range(t_):
            for v in range(v_):
                x, y, s = (float(q) for q in kp[m, t, v, :3])
                if not (s >= EPS) or not (math.isfinite(x) and math.isfinite(y)) or (x == 0 and y == 0):
                    continue
                cx = (x - x0) * sx
                cy = (y - y0) * sy
                xa, xb = max(math.floor(cx - r), 0), min(math.ceil(cx + r), w - 1)
                ya, yb = max(math.floor(cy - r), 0), min(math.ceil(cy + r), h - 1)
                if xa > xb or ya > yb:
                    continue
                dx = np.arange(xa, xb + 1, dtype=np.float64) - cx
                dy = np.arange(ya, yb + 1, dtype=np.float64) - cy
                patch = (_gauss(dx[None, :] ** 2 + dy[:, None] ** 2, sigma) * s).astype(np.float32)
                patch[~((np.abs(dy) <= r)[:, None] & (np.abs(dx) <= r)[None, :])] = 0.0
                region = out[t, v, ya:yb + 1, xa:xb + 1]
                np.maximum(region, patch, out=region)
    return out


def render_limbs_loop(keypoints, box, size, sigma: float, limbs) -> np.ndarray:
    """Per-person/per-frame/per-limb reference of render_limbs (same semantics)."""
    kp = _as_mtv3(keypoints)
    m_, t_, _, _ = kp.shape
    lim = [(int(a), int(b)) for a, b in np.asarray(limbs, dtype=np.int64).reshape(-1, 2)]
    h, w = _size_hw(size)
    out = np.zeros((t_, len(lim), h, w), dtype=np.float32)
    x0, y0, sx, sy = _box_scales(box, h, w)
    r = 3.0 * sigma
    for m in range(m_):
        for t in range(t_):
            for li, (a, b) in enumerate(lim):
                xa_, ya_, sa = (float(q) for q in kp[m, t, a, :3])
                xb_, yb_, sb = (float(q) for q in kp[m, t, b, :3])
                bad = False
                for x, y, s in ((xa_, ya_, sa), (xb_, yb_, sb)):
                    if not (s >= EPS) or not (math.isfinite(x) and math.isfinite(y)) or (x == 0 and y == 0):
                        bad = True
                if bad:
                    continue
                ax, ay = (xa_ - x0) * sx, (ya_ - y0) * sy
                bx, by = (xb_ - x0) * sx, (yb_ - y0) * sy
                x_lo, x_hi = max(math.floor(min(ax, bx) - r), 0), min(math.ceil(max(ax, bx) + r), w - 1)
                y_lo, y_hi = max(math.floor(min(ay, by) - r), 0), min(math.ceil(max(ay, by) + r), h - 1)
                if x_lo > x_hi or y_lo > y_hi:
                    continue
                apx = np.arange(x_lo, x_hi + 1, dtype=np.float64)[None, :] - ax
                apy = np.arange(y_lo, y_hi + 1, dtype=np.float64)[:, None] - ay
                abx, aby = bx - ax, by - ay
                d2ab = abx * abx + aby * aby
                apx, apy = np.broadcast_arrays(apx, apy)
                if d2ab > 0:
                    c = np.clip((apx * abx + apy * aby) / d2ab, 0.0, 1.0)
                else:
                    c = np.zeros(apx.shape)
                dx = apx - c * abx
                dy = apy - c * aby
                d2 = dx * dx + dy * dy
                patch = (_gauss(d2, sigma) * min(sa, sb)).astype(np.float32)
                patch[d2 > r * r] = 0.0
                region = out[t, li, y_lo:y_hi + 1, x_lo:x_hi + 1]
                np.maximum(region, patch, out=region)
    return out


# ----------------------------------------------------------------------------- volume utilities
def flip_volume(volume, flip_index, axis: int = 1) -> np.ndarray:
    """Horizontal flip augmentation: mirror x (the last axis; pixel i -> W-1-i) and permute the
    channel axis (`axis`: 1 for [T, C, H, W], 0 for [C, T, H, W]) so that output channel c holds
    input channel flip_index[c]. Returns a new array."""
    vol = np.asarray(volume)
    idx = np.asarray(flip_index, dtype=np.int64)
    if vol.ndim < 3 or idx.shape != (vol.shape[axis],):
        raise ValueError(f"flip_index of shape {idx.shape} does not fit axis {axis} of {vol.shape}")
    return np.ascontiguousarray(np.take(vol[..., ::-1], idx, axis=axis))


LEVELS = 255  # a stored or sampled heatmap value q stands for q / LEVELS


def quantise(volume) -> np.ndarray:
    """float volume in [0, 1] -> uint8, round(v * 255) (values outside [0, 1] are clipped)."""
    v = np.array(volume, dtype=np.float32)  # a copy, rounded in place (the store build's hot path)
    np.clip(v, 0.0, 1.0, out=v)
    v *= np.float32(LEVELS)
    return np.rint(v, out=v).astype(np.uint8)


def dequantise(volume) -> np.ndarray:
    """uint8 -> float32 in [0, 1]."""
    return np.asarray(volume, dtype=np.uint8).astype(np.float32) * np.float32(1.0 / LEVELS)


# ----------------------------------------------------------------------------- store
_scratch = np.zeros(0, np.uint8)  # the store build's volume buffer (one per process), zero between clips


def _store_volume(blocks, shape) -> heatmap_store.Compressed:
    """One clip's uint8 volume of `shape` from its candidate blocks, compressed as the store
    holds it. Drawn into a buffer kept across clips and zeroed again after compression only
    where drawn (about 1 % of a volume of megabytes): no fill of a fresh volume and no page
    faults per clip."""
    global _scratch
    n = math.prod(shape)
    if _scratch.size < n + 1:
        _scratch = np.zeros(n + 1, np.uint8)
    flat, drawn = _scratch[:n + 1], []
    try:
        _draw(flat, blocks, True, drawn)
        return heatmap_store.Compressed(flat[:n].reshape(shape))
    finally:
        for idx in drawn:
            flat[idx] = 0


def _render_clip(item, *, size, sigma, padding, num_joints, limbs):
    """One clip -> (clip_id, box, joint, limb or None, frames, empty frames), the volumes
    compressed as the store holds them (in a worker process: what crosses back to the writer)."""
    clip_id, kp, width, height = item
    box = compact_box(kp, width, height, padding)
    h, w = size
    t_ = kp.shape[1]
    joint = _store_volume(_joint_candidates(kp, box, h, w, sigma, False), (t_, num_joints, h, w))
    limb = None
    if limbs is not None:
        lim = np.asarray(limbs, dtype=np.int64).reshape(-1, 2)
        limb = _store_volume(_limb_candidates(kp, lim, box, h, w, sigma, False), (t_, len(lim), h, w))
    empty = int((~valid(kp).any(axis=(0, 2))).sum())
    return clip_id, box, joint, limb, kp.shape[1], empty


def _ordered_map(fn, items, processes: int):
    """fn over items, results in input order; at most 2 * processes clips in flight."""
    if processes <= 1:
        for item in items:
            yield fn(item)
        return
    with mp.get_context().Pool(processes) as pool:
        pending: deque = deque()
        for item in items:
            pending.append(pool.apply_async(fn, (item,)))
            if len(pending) >= 2 * processes:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


def build_heatmap_store(keypoints_h5, out_h5, *, size: int, sigma: float, padding: float, limbs=True,
                        threads=1, progress=True, log=None) -> dict:
    """Render every clip of a keypoint store into a uint8 heatmap store, written atomically.

    size, sigma, padding: the config's heatmaps settings, all required (the schema holds their
    defaults); limbs False skips the limb volumes.
    The store's layout is formats/heatmaps.py's.
    Returns stats: clips, frames, empty_frames, seconds, mb, path.
    """
    t_start = time.perf_counter()
    log = log or logging.getLogger(__name__).info
    h, w = _size_hw(size)
    if not sigma > 0:
        raise ValueError(f"sigma must be positive, got {sigma!r}")
    source = keypoint_store.Reader(keypoints_h5)
    layout = source.layout  # a built-in name or a defined layout
    clip_ids = source.clip_ids()
    edges = tuple(layout.limbs) if limbs and layout.num_limbs > 0 else None
    fn = partial(_render_clip, size=(h, w), sigma=float(sigma), padding=float(padding),
                 num_joints=layout.num_joints, limbs=edges)
    stats = {"clips": 0, "frames": 0, "empty_frames": 0}
    clips = ((cid, *source.clip(cid)) for cid in clip_ids)
    with heatmap_store.writer(out_h5, layout=layout, size=(h, w), sigma=sigma, padding=padding,
                              limbs=edges is not None) as out:
        results = _ordered_map(fn, clips, int(threads))
        bar = progress_bar(total=len(clip_ids), desc="heatmaps", unit="clip", enabled=progress)
        try:
            for cid, box, joint, limb, frames, empty in results:
                out.add(cid, box, joint, limb)
                stats["clips"] += 1
                stats["frames"] += frames
                stats["empty_frames"] += empty
                bar.update(1)
        finally:
            bar.close()
            results.close()
    source.close()
    stats["seconds"] = round(time.perf_counter() - t_start, 3)
    stats["mb"] = round(os.path.getsize(out_h5) / 1e6, 3)
    stats["path"] = str(out_h5)
    log(f"heatmaps: {stats['clips']} clips, {stats['frames']} frames ({stats['empty_frames']} "
        f"empty) in {stats['seconds']:.1f} s -> {out_h5} ({stats['mb']:.1f} MB)")
    return stats
