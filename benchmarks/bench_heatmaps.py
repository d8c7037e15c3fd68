"""Benchmark: vectorised vs per-joint-loop heatmap rendering (mgpipe.pose.heatmap_render).

Synthetic but realistic clips: a COCO-17 skeleton template placed at a random position and
scale in a 640x480 frame, moving slowly with per-frame jitter, ~10% of joints missing
(0, 0, 0) and scores in 0.3..1; each clip is compacted with compact_box and rendered at
size x size. Prints one row per (kind, persons) with the loop time, the vectorised time, the
speed-up and the max abs difference between the two; then the cost of one training sample as
the data loader builds it (keypoint store read, compact box, frame draw, keypoint-space
augmentation, rendering at the training size; one thread), in ms per sample.

    python benchmarks/bench_heatmaps.py [--clips 200] [--frames 48] [--size 64] [--sigma 0.6]
        [--sample-frames 32] [--sample-size 56]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mgpipe.config import defaults  # noqa: E402
from mgpipe.formats import keypoints as keypoint_store  # noqa: E402
from mgpipe.formats.keypoints import compact_box  # noqa: E402
from mgpipe.layouts import COCO17  # noqa: E402
from mgpipe.learning.samples import ClipDataset  # noqa: E402
from mgpipe.pose.heatmap_render import render_joints, render_joints_loop, render_limbs, render_limbs_loop
from mgpipe.tools.bench import sample_ms  # noqa: E402

# The workflow's settings where the benchmark has no flag of its own: the schema's defaults.
DEFAULTS = defaults()

# Standing person, unit height, origin between the feet (x right, y down).
TEMPLATE = np.array([
    (0.00, -0.93), (-0.03, -0.95), (0.03, -0.95), (-0.07, -0.93), (0.07, -0.93),
    (-0.15, -0.80), (0.15, -0.80), (-0.20, -0.62), (0.20, -0.62), (-0.22, -0.45),
    (0.22, -0.45), (-0.10, -0.48), (0.10, -0.48), (-0.11, -0.25), (0.11, -0.25),
    (-0.11, 0.00), (0.11, 0.00)])


def make_clip(rng, persons: int, frames: int, width=640, height=480) -> np.ndarray:
    kp = np.zeros((persons, frames, 17, 3), np.float32)
    for m in range(persons):
        scale = rng.uniform(150, 400)
        base = np.array([rng.uniform(100, width - 100), rng.uniform(scale, height)])
        drift = rng.normal(0, 1.0, size=(frames, 1, 2)).cumsum(axis=0)
        xy = base + TEMPLATE[None] * scale + drift + rng.normal(0, 3.0, size=(frames, 17, 2))
        kp[m, ..., :2] = xy
        kp[m, ..., 2] = rng.uniform(0.3, 1.0, size=(frames, 17))
    kp[rng.random(kp.shape[:-1]) < 0.1] = 0.0
    return kp


def timed(fn, clips, boxes, *args, repeat=2) -> float:
    """Seconds for one pass of fn over all clips (outputs dropped as they come, as a store build
    does), best of `repeat` passes."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        for kp, box in zip(clips, boxes):
            fn(kp, box, *args)
        best = min(best, time.perf_counter() - t0)
    return best


def max_diff(vec, loop, clips, boxes, *args) -> float:
    diff = 0.0
    for kp, box in zip(clips, boxes):
        got, ref = vec(kp, box, *args), loop(kp, box, *args)
        np.subtract(got, ref, out=got)
        diff = max(diff, float(np.abs(got, out=got).max()))
    return diff


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clips", type=int, default=200)
    p.add_argument("--frames", type=int, default=48)
    p.add_argument("--size", type=int, default=DEFAULTS["heatmaps"]["size"])
    p.add_argument("--sigma", type=float, default=DEFAULTS["heatmaps"]["sigma"])
    p.add_argument("--persons", type=int, nargs="+", default=[1, 2])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeat", type=int, default=2, help="best of N passes")
    p.add_argument("--sample-frames", type=int, default=DEFAULTS["pose_model"]["input"]["frames"],
                   help="frames of one training sample")
    p.add_argument("--sample-size", type=int, default=DEFAULTS["pose_model"]["input"]["size"],
                   help="heatmap side of one training sample")
    a = p.parse_args(argv)

    print(f"{a.clips} clips x {a.frames} frames x 17 joints / {COCO17.num_limbs} limbs, "
          f"{a.size}x{a.size}, sigma {a.sigma}; time = best of {a.repeat} passes over all clips")
    head = f"{'kind':<7}{'persons':>8}{'loop s':>10}{'vectorised s':>14}{'speed-up':>10}{'max |diff|':>12}"
    print(head)
    print("-" * len(head))
    for persons in a.persons:
        rng = np.random.default_rng(a.seed)
        clips = [make_clip(rng, persons, a.frames) for _ in range(a.clips)]
        boxes = [compact_box(kp, 640, 480, DEFAULTS["heatmaps"]["padding"]) for kp in clips]
        for kind, vec, loop, extra in (
            ("joints", render_joints, render_joints_loop, ()),
            ("limbs", render_limbs, render_limbs_loop, (COCO17.limbs,)),
        ):
            args = (a.size, a.sigma, *extra)
            t_loop = timed(loop, clips, boxes, *args, repeat=a.repeat)
            t_vec = timed(vec, clips, boxes, *args, repeat=a.repeat)
            diff = max_diff(vec, loop, clips, boxes, *args)
            print(f"{kind:<7}{persons:>8}{t_loop:>10.3f}{t_vec:>14.3f}{t_loop / t_vec:>9.1f}x{diff:>12.2e}")

    rng = np.random.default_rng(a.seed)
    clips = [make_clip(rng, 1, a.frames) for _ in range(a.clips)]
    ms = per_sample(clips, a.sample_frames, a.sample_size, a.sigma, a.repeat)
    print(f"\ntraining sample ({a.sample_frames} frames x 17 channels, {a.sample_size} px, one "
          f"thread, flip/crop/zoom/shift): joint {ms['joint']:.2f} ms, limb {ms['limb']:.2f} ms")


def per_sample(clips, frames: int, size: int, sigma: float, repeat: int) -> dict:
    """ms per training sample of ClipDataset (augmented, one thread) for joint and limb."""
    torch.set_num_threads(1)
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "keypoints.h5"
        with keypoint_store.writer(store, COCO17, source="bench") as writer:
            for i, kp in enumerate(clips):
                writer.add(f"c{i}", kp, 640, 480)
        manifest = pd.DataFrame({"clip_id": [f"c{i}" for i in range(len(clips))],
                                 "label": 0, "split": "train"})
        for kind in ("joint", "limb"):
            data = ClipDataset(manifest, "train", {kind: (frames, size)}, keypoints_h5=store,
                               train=True, seed=DEFAULTS["seed"], sigma=sigma, padding=DEFAULTS["heatmaps"]["padding"],
                               mean=DEFAULTS["rgb"]["mean"], std=DEFAULTS["rgb"]["std"], flip=True,
                               crop_area=(0.8, 1.0), zoom=(0.9, 1.1), shift=0.05)
            out[kind] = sample_ms(data, repeat)
    return out


if __name__ == "__main__":
    main()
