"""Benchmark: mgpipe's data path against the peer's semantics, side by side in one run.

The peer is pyskl's GeneratePoseTarget as published: for every frame, joint (or limb) and
person a Python-level patch is drawn; a joint's Gaussian is cut at the square
[int(mu - 3 sigma), int(mu + 3 sigma)] and scaled by the keypoint score, a limb's at the
bounding box of the segment grown by 3 sigma and scaled by the smaller end score, a limb shorter
than one pixel is drawn as its first joint, and persons combine by maximum. It is re-expressed
here from that description (`peer_joints`, `peer_limbs`), not imported.

What is timed, on real skeletons (a pyskl pickle, KARD by default), one thread:
  * pose training samples: ClipDataset (store read, frame draw, keypoint-space crop, zoom,
    shift and flip, rendering at the training size: the drawn pixels a loader worker ships)
    against the same dataset whose rendering is the peer's (the dense volume its workers ship):
    same clips, frames, views and size, only the renderer differs; beside it, our batch step
    (writing a batch's pixels into volumes) timed on the CPU, where it runs without a GPU, in
    float32 and in bfloat16 (the dtype a step under bf16 autocast computes in, on CPUs with
    native bf16), each beside the memory floor: a plain torch.empty(...).fill_ of the same
    bytes in the same dtype (and, for reference, a fill_ of a buffer already in memory);
  * the heatmap store build: mgpipe's heatmaps stage (joints + limbs, compression and writing
    included) against the peer rendering the same clips at the same size (rendering only);
  * the values: largest |mgpipe - peer| over the pixels where both semantics draw (inside both
    cuts), which must stay within 1/255.

    python benchmarks/bench_data_path.py --pickle ../shared/data/kard2d.pkl [--layout openni15]
        [--frames 32] [--size 56] [--sigma 0.6] [--clips 200] [--repeat 2] [--store-clips N]

The CPU is named first (/proc/cpuinfo's model name and its avx2 / avx512f / avx512_bf16 /
amx_tile flags): the peer's numpy and the bf16 step both depend on them.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mgpipe.config import defaults  # noqa: E402
from mgpipe.formats import keypoints as keypoint_store  # noqa: E402
from mgpipe.formats.keypoints import EPS, compact_box  # noqa: E402
from mgpipe.learning.samples import ClipDataset, collate, mirror_keypoints, sample_indices, scatter_volumes, view_box
from mgpipe.pose.heatmap_render import build_heatmap_store  # noqa: E402
from mgpipe.runtime import cpu_has_bf16  # noqa: E402
from mgpipe.sources.skeleton_io import import_pickle  # noqa: E402
from mgpipe.tools.bench import sample_ms  # noqa: E402

# The workflow's settings where the benchmark has no flag of its own: the schema's defaults.
DEFAULTS = defaults()


# ----------------------------------------------------------------------------- the peer
def _peer_point(arr, x, y, score, sigma):
    """One joint of one person into arr [H, W] (in place, by maximum)."""
    h, w = arr.shape
    x0, x1 = max(int(x - 3 * sigma), 0), min(int(x + 3 * sigma) + 1, w)
    y0, y1 = max(int(y - 3 * sigma), 0), min(int(y + 3 * sigma) + 1, h)
    if x0 >= x1 or y0 >= y1:
        return
    xs = np.arange(x0, x1, dtype=np.float32)
    ys = np.arange(y0, y1, dtype=np.float32)[:, None]
    patch = np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / 2 / sigma ** 2) * score
    np.maximum(arr[y0:y1, x0:x1], patch, out=arr[y0:y1, x0:x1])


def _peer_segment(arr, a, b, score_a, score_b, sigma):
    """One limb of one person into arr [H, W] (in place, by maximum): scaled by the smaller end
    score, or, shorter than one pixel, the first joint's Gaussian at its own score."""
    h, w = arr.shape
    score = min(score_a, score_b)
    if (a[0] - b[0]) ** 2 + (a[1] - b[1]) ** 2 < 1:
        _peer_point(arr, a[0], a[1], score_a, sigma)
        return
    x0, x1 = max(int(min(a[0], b[0]) - 3 * sigma), 0), min(int(max(a[0], b[0]) + 3 * sigma) + 1, w)
    y0, y1 = max(int(min(a[1], b[1]) - 3 * sigma), 0), min(int(max(a[1], b[1]) + 3 * sigma) + 1, h)
    if x0 >= x1 or y0 >= y1:
        return
    xs = np.arange(x0, x1, dtype=np.float32)
    ys = np.arange(y0, y1, dtype=np.float32)[:, None]
    d2a = (xs - a[0]) ** 2 + (ys - a[1]) ** 2
    d2b = (xs - b[0]) ** 2 + (ys - b[1]) ** 2
    d2ab = (a[0] - b[0]) ** 2 + (a[1] - b[1]) ** 2
    c = (d2a - d2b + d2ab) / 2 / d2ab
    px, py = a[0] + c * (b[0] - a[0]), a[1] + c * (b[1] - a[1])
    d2line = (xs - px) ** 2 + (ys - py) ** 2
    d2 = np.where(c <= 0, d2a, np.where(c >= 1, d2b, d2line))
    patch = np.exp(-d2 / 2 / sigma ** 2) * score
    np.maximum(arr[y0:y1, x0:x1], patch, out=arr[y0:y1, x0:x1])


def peer_joints(kp, h, w, sigma):
    """kp [M, T, V, 3] in output pixels -> float32 [T, V, H, W]."""
    m_, t_, v_, _ = kp.shape
    out = np.zeros((t_, v_, h, w), np.float32)
    for t in range(t_):
        for v in range(v_):
            for m in range(m_):
                x, y, s = kp[m, t, v]
                if s >= EPS:
                    _peer_point(out[t, v], x, y, s, sigma)
    return out


def peer_limbs(kp, h, w, sigma, limbs):
    """kp [M, T, V, 3] in output pixels -> float32 [T, L, H, W]."""
    m_, t_, _, _ = kp.shape
    out = np.zeros((t_, len(limbs), h, w), np.float32)
    for t in range(t_):
        for i, (ja, jb) in enumerate(limbs):
            for m in range(m_):
                sa, sb = kp[m, t, ja, 2], kp[m, t, jb, 2]
                if min(sa, sb) >= EPS:
                    _peer_segment(out[t, i], kp[m, t, ja, :2], kp[m, t, jb, :2], sa, sb, sigma)
    return out


def to_grid(kp, region, size):
    """Frame-pixel keypoints [M, T, V, 3] -> output-grid pixels over region (x0, y0, x1, y1);
    missing keypoints (score 0 or the (0, 0) marker) get score 0."""
    x0, y0, x1, y1 = (float(v) for v in region)
    out = np.array(kp, np.float32)
    missing = (kp[..., 0] == 0) & (kp[..., 1] == 0) | ~np.isfinite(kp[..., :2]).all(-1)
    out[..., 0] = (kp[..., 0] - x0) * (size / (x1 - x0))
    out[..., 1] = (kp[..., 1] - y0) * (size / (y1 - y0))
    out[..., 2][missing] = 0.0
    return out


class PeerDataset(ClipDataset):
    """ClipDataset whose heatmaps are drawn by the peer, as the dense float32 volume its
    samples carry: everything else is shared."""

    def heatmaps(self, kind, keypoints, region, size, mirror):
        return {kind: torch.from_numpy(self.render(kind, keypoints, region, size, mirror))}

    def render(self, kind, keypoints, region, size, mirror):
        if mirror:
            keypoints = mirror_keypoints(keypoints, region, size, self.layout.flip_index)
        grid = to_grid(keypoints, region, size)
        if kind == "joint":
            vol = peer_joints(grid, size, size, self.sigma)
        else:
            vol = peer_limbs(grid, size, size, self.sigma, self.layout.limbs)
        return np.ascontiguousarray(vol.transpose(1, 0, 2, 3))  # the network's [C, T, H, W]


def collate_ms(data, batch: int) -> float:
    """ms per sample of collating batches of already drawn samples (a loader worker's last step)."""
    samples = [data[i] for i in range(len(data))]
    t0 = time.perf_counter()
    for k in range(0, len(samples), batch):
        collate(samples[k:k + batch])
    return (time.perf_counter() - t0) * 1e3 / max(len(samples), 1)


def cpu_name() -> str:
    """The CPU's model name and which of the vector flags that matter here it has."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown CPU (no /proc/cpuinfo)"
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")),
                 "unknown model")
    flags = set(next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), []))
    have = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_tile") if f in flags]
    return f"{model}, {os.cpu_count()} CPUs, flags: {' '.join(have) or 'none of avx2/avx512f/avx512_bf16/amx_tile'}"


def touch(volume: torch.Tensor) -> float:
    """Read one element of every 4 KiB page of a contiguous tensor."""
    return float(volume.view(-1)[::4096 // volume.element_size()].float().sum())


def step_and_floor_ms(data, kind, batch: int, dtype, repeat: int) -> tuple[float, float, float]:
    """ms per sample, best of `repeat`, of (the batch step writing `kind` volumes in dtype, the
    floor: torch.empty(...).fill_ of the same bytes per batch, the same fill_ of one buffer
    already in memory), timed alternately over the same batches. Every 4 KiB page of each
    volume is read once after it is made (`touch`), as the network's first layer will: a page
    the step leaves to the kernel's zeroing is paid for there, not left out of the timing."""
    batches = [collate([data[i] for i in range(k, min(k + batch, len(data)))])
               for k in range(0, len(data), batch)]
    numel = [math.prod(data.volume_shape(kind)) * len(b["label"]) for b in batches]
    warm = torch.empty(max(numel), dtype=dtype).fill_(1)
    step = floor = warm_floor = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        for b in batches:
            touch(data.to_device(b, "cpu", dtype)[kind])
        t1 = time.perf_counter()
        for n in numel:
            touch(torch.empty(n, dtype=dtype).fill_(0))
        t2 = time.perf_counter()
        for n in numel:
            touch(warm[:n].fill_(0))
        t3 = time.perf_counter()
        step, floor, warm_floor = min(step, t1 - t0), min(floor, t2 - t1), min(warm_floor, t3 - t2)
    return tuple(1e3 * t / len(data) for t in (step, floor, warm_floor))


def render_ours(data, kind, keypoints, region, size):
    """Our volume of a sample, as its batch step builds it from the sample's drawn pixels."""
    entries = data.heatmaps(kind, keypoints, region, size, False)
    counts = torch.tensor([len(entries[f"{kind}_idx"])])
    return scatter_volumes(entries[f"{kind}_idx"], entries[f"{kind}_val"], counts,
                           data.volume_shape(kind))[0].numpy()


# ----------------------------------------------------------------------------- timing
def agreement(ours, peer, kp_grid, sigma, kind, limbs) -> float:
    """max |ours - peer| where both draw: inside the disc / square of radius 3 sigma minus one
    pixel around every joint (the peer's int() truncation adds a column just past 3 sigma), and
    for limbs inside 3 sigma of the segment minus one pixel."""
    t_, c_, h, w = ours.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    r = 3 * sigma - 1
    worst = 0.0
    for t in range(t_):
        for c in range(c_):
            if kind == "joint":
                x, y, s = kp_grid[0, t, c]
                if s < EPS:
                    continue
                mask = (np.abs(xx - x) <= r) & (np.abs(yy - y) <= r)
            else:
                ja, jb = limbs[c]
                a, b = kp_grid[0, t, ja], kp_grid[0, t, jb]
                if min(a[2], b[2]) < EPS or (a[0] - b[0]) ** 2 + (a[1] - b[1]) ** 2 < 1:
                    continue
                ab = b[:2] - a[:2]
                cc = np.clip(((xx - a[0]) * ab[0] + (yy - a[1]) * ab[1]) / (ab @ ab), 0, 1)
                d = np.hypot(xx - a[0] - cc * ab[0], yy - a[1] - cc * ab[1])
                mask = d <= r
            if mask.any():
                worst = max(worst, float(np.abs(ours[t, c] - peer[t, c])[mask].max()))
    return worst


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pickle", required=True, help="a pyskl skeleton pickle (e.g. kard2d.pkl)")
    p.add_argument("--layout", default="openni15", help="its keypoint layout")
    p.add_argument("--frames", type=int, default=DEFAULTS["pose_model"]["input"]["frames"])
    p.add_argument("--size", type=int, default=DEFAULTS["pose_model"]["input"]["size"])
    p.add_argument("--sigma", type=float, default=DEFAULTS["heatmaps"]["sigma"])
    p.add_argument("--clips", type=int, default=200, help="clips timed per measurement")
    p.add_argument("--repeat", type=int, default=2, help="best of N passes")
    p.add_argument("--store-clips", type=int, default=0,
                   help="clips of the store build comparison (default: every clip of the pickle)")
    a = p.parse_args(argv)
    if not Path(a.pickle).is_file():
        sys.exit(f"{a.pickle}: skeleton pickle not found")
    torch.set_num_threads(1)
    print(f"CPU: {cpu_name()}; native bf16 for the training step: {'yes' if cpu_has_bf16() else 'no'}")
    compute = torch.bfloat16 if cpu_has_bf16() else torch.float32  # train.amp bf16 where it applies
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        kp_h5 = tmp / "keypoints.h5"
        manifest = import_pickle(a.pickle, kp_h5, layout=a.layout).head(a.clips).assign(split="train")
        print(f"{len(manifest)} real clips of {a.pickle}, {a.frames} frames at {a.size} px, sigma "
              f"{a.sigma}, one thread; best of {a.repeat} passes")
        aug = dict(train=True, seed=DEFAULTS["seed"], sigma=a.sigma, padding=DEFAULTS["heatmaps"]["padding"], mean=DEFAULTS["rgb"]["mean"],
                   std=DEFAULTS["rgb"]["std"], flip=True, crop_area=(0.56, 1.0), zoom=(1.0, 1.0), shift=0.0)
        print(f"\n{'training sample':<22}{'mgpipe ms':>10}{'peer ms':>10}{'ratio':>8}{'max |diff|':>12}"
              f"   worker side, collation of batches of 16 included; then with our batch step on the CPU"
              f"\n{'':<22}{'':>10}{'(floor ms)':>10}")
        for kind in ("joint", "limb"):
            mods = {kind: (a.frames, a.size)}
            ours = ClipDataset(manifest, "train", mods, keypoints_h5=kp_h5, **aug)
            peer = PeerDataset(manifest, "train", mods, keypoints_h5=kp_h5, **aug)
            s_ours, s_peer = sample_ms(ours, a.repeat), sample_ms(peer, a.repeat)
            # A worker also collates: our samples concatenate their drawn pixels, the peer's
            # stack dense volumes (as torch's default collation does).
            c_ours, c_peer = (min(collate_ms(d, 16) for _ in range(a.repeat)) for d in (ours, peer))
            t_ours, t_peer = s_ours + c_ours, s_peer + c_peer
            steps = {dtype: step_and_floor_ms(ours, kind, 16, dtype, a.repeat)
                     for dtype in (torch.float32, torch.bfloat16)}
            t_step = steps[compute][0]
            diff = 0.0
            for i in range(0, len(ours), max(1, len(ours) // 20)):  # 20 samples, both renderers
                rng, crop, zoom, shift, mirror = ours._draw_view(i, 0)
                kp, box = ours._keypoints(manifest.clip_id.iloc[i])
                region = view_box(box, crop, zoom, shift)
                sel = kp[:, sample_indices(kp.shape[1], a.frames, rng)]
                mine = render_ours(ours, kind, sel, region, a.size).transpose(1, 0, 2, 3)
                theirs = peer.render(kind, sel, region, a.size, False).transpose(1, 0, 2, 3)
                diff = max(diff, agreement(mine, theirs, to_grid(sel, region, a.size), a.sigma,
                                           kind, ours.layout.limbs))
            results[kind] = {"ours_ms": t_ours, "peer_ms": t_peer, "ratio": t_peer / t_ours, "diff": diff,
                             "sample_ms": s_ours, "peer_sample_ms": s_peer, "collate_ms": c_ours,
                             "peer_collate_ms": c_peer, "step_ms": t_step,
                             "ratio_with_step": t_peer / (t_ours + t_step),
                             **{f"{str(d).split('.')[1]}_{k}": v for d, ms in steps.items()
                                for k, v in zip(("step_ms", "floor_ms", "warm_floor_ms"), ms)}}
            print(f"{kind:<22}{t_ours:>10.2f}{t_peer:>10.2f}{t_peer / t_ours:>7.1f}x{diff:>12.1e}"
                  f"   (samples {s_ours:.2f} vs {s_peer:.2f} ms, collation {c_ours:.2f} vs {c_peer:.2f})")
            print(f"{'  + batch step':<22}{t_ours + t_step:>10.2f}{t_peer:>10.2f}{t_peer / (t_ours + t_step):>7.1f}x"
                  f"{'':>12}   end to end: the step in {str(compute).split('.')[1]}, this CPU's compute dtype")
            for dtype, (step, floor, warm) in steps.items():
                print(f"{'  batch step ' + str(dtype).split('.')[1]:<22}{step:>10.2f}{floor:>10.2f}"
                      f"{step / floor:>7.2f}x{'':>12}   vs the floor, torch.empty(...).fill_ of the same bytes "
                      f"({warm:.2f} ms a buffer already in memory)")

        padding = DEFAULTS["heatmaps"]["padding"]
        if a.store_clips:  # a store of the first clips only
            whole = keypoint_store.Reader(kp_h5)
            kp_h5 = tmp / "keypoints_part.h5"
            with keypoint_store.writer(kp_h5, whole.layout, source="bench") as part:
                for cid in whole.clip_ids()[:a.store_clips]:
                    part.add(cid, *whole.clip(cid))
        builds = {}
        for processes in sorted({1, os.cpu_count() or 1}):  # one core, then processes over clips
            t0 = time.perf_counter()
            stats = build_heatmap_store(kp_h5, tmp / f"heatmaps{processes}.h5", size=a.size, sigma=a.sigma,
                                        padding=padding, limbs=True, threads=processes, progress=False,
                                        log=lambda *args: None)
            builds[processes] = time.perf_counter() - t0
        source = keypoint_store.Reader(kp_h5)
        t0 = time.perf_counter()
        for cid in source.clip_ids():  # every clip of the store, as the build renders them
            kp, width, height = source.clip(cid)
            box = compact_box(kp, width, height, padding)
            grid = to_grid(kp, box, a.size)
            peer_joints(grid, a.size, a.size, a.sigma)
            peer_limbs(grid, a.size, a.size, a.sigma, source.layout.limbs)
        t_peer = time.perf_counter() - t0
        n = stats["clips"]
        print(f"\n{'heatmap store build':<22}{'mgpipe s':>10}{'peer s':>10}{'ratio':>8}   "
              f"({n} clips, joints + limbs; ours includes zstd and writing, the peer renders in one process)")
        for processes, t_build in builds.items():
            results[f"store_{processes}"] = {"ours_s": t_build, "peer_s": t_peer, "ratio": t_peer / t_build,
                                             "ours_clips_per_s": n / t_build, "peer_clips_per_s": n / t_peer}
            label = "one process" if processes == 1 else f"{processes} processes"
            print(f"{label:<22}{t_build:>10.2f}{t_peer:>10.2f}{t_peer / t_build:>7.1f}x"
                  f"   ({n / t_build:.0f} vs {n / t_peer:.0f} clips/s)")
    return results


if __name__ == "__main__":
    main()
