"""The batch step (samples.scatter_volumes via ClipDataset.to_device) against the one it
replaced, on real skeletons (KARD): a zero float32 volume per sample and a scatter with a
maximum of every person's drawn pixels, duplicates included. The new step writes each pixel
once (persons combined in the worker) in the step's compute dtype; it must give the very same
volumes, and in bfloat16 the old float32 volumes rounded to bfloat16."""

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from mgpipe.config import defaults
from mgpipe.formats import keypoints as keypoint_store
from mgpipe.learning.samples import ClipDataset, collate, mirror_keypoints, sample_indices, view_box
from mgpipe.pose.heatmap_render import render_joints, render_limbs

KARD = Path(__file__).resolve().parents[2] / "shared" / "data" / "kard2d.pkl"
_SCHEMA = defaults()
SETTINGS = dict(sigma=_SCHEMA["heatmaps"]["sigma"], padding=_SCHEMA["heatmaps"]["padding"],
                mean=_SCHEMA["rgb"]["mean"], std=_SCHEMA["rgb"]["std"], seed=_SCHEMA["seed"])
MODALITIES = {"joint": (32, 56), "limb": (32, 56)}


def scatter_reference(idx, val, counts, shape):
    """The batch step before issue 31, verbatim: zeros, then a scatter with a maximum."""
    n = math.prod(shape)
    counts = torch.as_tensor(counts)
    base = torch.arange(len(counts), dtype=torch.int64) * n
    offsets = torch.repeat_interleave(base, counts, output_size=int(idx.shape[0]))
    flat = torch.zeros(len(counts) * n, dtype=torch.float32)
    flat.scatter_reduce_(0, idx.long() + offsets, val.float(), "amax")
    return flat.view(len(counts), *shape)


def per_person_pixels(data, index, kind):
    """The drawn pixels of one sample as the worker shipped them before: every person's own,
    concatenated (a pixel two persons draw occurs twice)."""
    rng, crop, zoom, shift, mirror = data._draw_view(index, 0)
    kp, box = data._keypoints(data.clip_ids[index])
    region = view_box(box, crop, zoom, shift)
    for name, (length, _) in data.modalities.items():  # the frame draws, in the sample's order
        frames = sample_indices(kp.shape[1], length, rng)
        if name == kind:
            break
    sel = kp[:, frames]
    size = data.modalities[kind][1]
    if mirror:
        sel = mirror_keypoints(sel, region, size, data.layout.flip_index)
    pairs = [render_joints(sel[m:m + 1], region, size, data.sigma, channels_first=True, sparse=True)
             if kind == "joint" else
             render_limbs(sel[m:m + 1], region, size, data.sigma, data.layout.limbs, channels_first=True,
                          sparse=True)
             for m in range(sel.shape[0])]
    return np.concatenate([p[0] for p in pairs]), np.concatenate([p[1] for p in pairs]), mirror


@pytest.fixture(scope="module")
def kard_persons(tmp_path_factory):
    """A keypoint store of real KARD skeletons with one, two and three persons a clip: the
    second and third are other clips' performers, one of them shifted onto the first."""
    if not KARD.is_file():
        pytest.skip(f"real data absent: {KARD}")
    from mgpipe.sources.skeleton_io import import_pickle

    tmp = tmp_path_factory.mktemp("kard_persons")
    import_pickle(KARD, tmp / "kard.h5", layout="openni15")
    source = keypoint_store.Reader(tmp / "kard.h5")
    ids = source.clip_ids()[:12]
    clips = {}
    with keypoint_store.writer(tmp / "persons.h5", source.layout, source="test") as out:
        for i, cid in enumerate(ids):
            kp, width, height = source.clip(cid)
            persons = [kp]
            for k in range(i % 3):  # 1, 2 or 3 persons
                other = source.clip(ids[(i + 1 + k) % len(ids)])[0].copy()
                t = min(kp.shape[1], other.shape[1])
                if k == 1:  # onto the first performer, a few pixels off: shared pixels
                    other[:, :t, :, :2] = kp[:, :t, :, :2] + 3.0
                persons.append(other)
            t = min(p.shape[1] for p in persons)
            clips[cid] = np.concatenate([p[:, :t] for p in persons])
            out.add(cid, clips[cid], width, height)
    source.close()
    manifest = pd.DataFrame({"clip_id": list(clips), "label": 0, "split": "train"})
    data = ClipDataset(manifest, "train", MODALITIES, keypoints_h5=tmp / "persons.h5", train=True, flip=True,
                       crop_area=(0.56, 1.0), zoom=(0.8, 1.2), shift=0.1, **SETTINGS)
    return data, clips


def test_the_batch_step_gives_the_old_volumes(kard_persons):
    data, clips = kard_persons
    samples = [data[i] for i in range(len(data))]
    mirrored, shared = set(), 0
    expected = {}
    for kind in ("joint", "limb"):
        shape = data.volume_shape(kind)
        idx, val, counts = [], [], []
        for i, s in enumerate(samples):
            i_old, v_old, mirror = per_person_pixels(data, i, kind)
            mirrored.add(mirror)
            # every index once now, and only the shared pixels are gone
            assert len(np.unique(s[f"{kind}_idx"].numpy())) == len(s[f"{kind}_idx"])
            assert set(s[f"{kind}_idx"].tolist()) == set(i_old.tolist())
            shared += len(i_old) - len(s[f"{kind}_idx"])
            idx.append(torch.from_numpy(i_old))
            val.append(torch.from_numpy(v_old))
            counts.append(len(i_old))
        expected[kind] = scatter_reference(torch.cat(idx), torch.cat(val), counts, shape)
    assert mirrored == {True, False} and shared > 1000  # flips, and persons drawing the same pixels
    assert {kp.shape[0] for kp in clips.values()} == {1, 2, 3}
    for dtype in (torch.float32, torch.bfloat16):
        got = data.to_device(collate(samples), "cpu", dtype)
        for kind in ("joint", "limb"):
            assert got[kind].dtype == dtype and got[kind].shape == expected[kind].shape
            # the maximum of the same float32 values, rounded once to the compute dtype
            assert torch.equal(got[kind], expected[kind].to(dtype))
            assert expected[kind].amax() > 0.5


def test_the_batch_step_splits_a_batch_into_its_samples(kard_persons):
    """Each sample's volume in a batch of several is the one it makes alone."""
    data, _ = kard_persons
    samples = [data[i] for i in range(5)]
    batch = data.to_device(collate(samples), "cpu", torch.bfloat16)
    for i, s in enumerate(samples):
        alone = data.to_device(collate([s]), "cpu", torch.bfloat16)
        for kind in ("joint", "limb"):
            assert torch.equal(batch[kind][i], alone[kind][0])


def test_a_pose_network_under_bf16_autocast_sees_the_same_input(kard_persons):
    """Under bf16 autocast the network converts a float32 volume to bfloat16 itself; handed the
    bfloat16 volume the batch step now writes, it computes exactly the same logits."""
    from mgpipe.learning import specs

    data, _ = kard_persons
    config = {"pose_model": {"input": {"frames": 32, "size": 56, "test_size": 56}, "network": {
        "base_channels": 4, "stage_blocks": [1, 1, 1], "inflate": [0, 1, 1],
        "spatial_strides": [2, 2, 2], "temporal_strides": [1, 1, 1], "dropout": 0.0}}}
    torch.manual_seed(0)
    spec = specs.get("limb")
    model = specs.build(spec.network(config, (data.layout.num_joints, data.layout.num_limbs)), 3).eval()
    batch = collate([data[i] for i in range(2)])
    logits = {}
    for dtype in (torch.float32, torch.bfloat16):
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            logits[dtype] = spec.forward(model, data.to_device(batch, "cpu", dtype), "cpu")[0]["limb"]
    assert torch.equal(logits[torch.float32], logits[torch.bfloat16])
