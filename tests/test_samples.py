"""Per-sample pose rendering and the training/test sampler (mgpipe.learning.samples).

The pose heatmaps of a sample are rendered from the keypoint store after augmenting the
keypoints; these tests check them against the per-joint loop renderer (the exact oracle), the
mirror against flip_volume's convention, the zoom/shift against the documented mapping, and
the sampler's determinism and input errors."""

from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import Finished

from mgpipe.config import defaults
from mgpipe.formats import keypoints as keypoint_store
from mgpipe.formats.keypoints import compact_box
from mgpipe.io import InputError
from mgpipe.layouts import COCO17, LAYOUTS, get_layout
from mgpipe.learning.samples import ClipDataset, keypoint_channels, mirror_keypoints, sample_indices, view_box
from mgpipe.pose.heatmap_render import flip_volume, render_joints_loop, render_limbs_loop

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
J = COCO17.joints.index
WIDTH, HEIGHT = 320, 240


def _person(t_len=6, seed=0):
    """[1, T, 17, 3] keypoints of a moving person, with one missing joint and a low score."""
    rng = np.random.default_rng(seed)
    kp = np.zeros((1, t_len, 17, 3), np.float32)
    kp[0, :, :, 0] = rng.uniform(110, 210, (t_len, 17))
    kp[0, :, :, 1] = rng.uniform(40, 200, (t_len, 17))
    kp[0, :, :, 2] = rng.uniform(0.3, 1.0, (t_len, 17))
    kp[0, 2, J("left_knee")] = 0.0          # missing (0, 0, 0)
    kp[0, 3, J("nose"), 2] = 5e-5           # below the score threshold
    return kp


def _store(path, clips: dict, layout="coco17", width=WIDTH, height=HEIGHT):
    if layout not in LAYOUTS:  # a store naming an unknown layout: written by hand
        with h5py.File(path, "w") as h5:
            h5.attrs.update(kind=keypoint_store.KIND, format_version=keypoint_store.VERSION, layout=layout)
        return path
    with keypoint_store.writer(path, get_layout(layout), source="test") as store:
        for cid, kp in clips.items():
            store.add(cid, kp, width, height)
    return path


def _manifest(ids, split="test"):
    return pd.DataFrame({"clip_id": list(ids), "label": range(len(ids)), "split": split})


def _fresh(tmp_path, stem="keypoints"):
    """A new file name (datasets keep their store open, so a store is never rewritten)."""
    return tmp_path / f"{stem}{len(list(tmp_path.iterdir()))}.h5"


# The schema's sample settings (Gaussian width, box padding, colour normalisation).
_SCHEMA = defaults()
SETTINGS = dict(sigma=_SCHEMA["heatmaps"]["sigma"], padding=_SCHEMA["heatmaps"]["padding"],
                mean=_SCHEMA["rgb"]["mean"], std=_SCHEMA["rgb"]["std"], seed=_SCHEMA["seed"])


def _dataset(tmp_path, clips, modalities, **kw):
    store = _store(_fresh(tmp_path), clips)
    kw = {"train": False, "flip": True, "crop_area": (0.56, 1.0), **SETTINGS, **kw}
    split = "train" if kw["train"] else "test"
    return Finished(ClipDataset(_manifest(clips, split), split, modalities, keypoints_h5=store, **kw))


def test_test_sample_equals_oracle(tmp_path):
    kp = _person()
    data = _dataset(tmp_path, {"c0": kp}, {"joint": (6, 24)}, sigma=0.8, flip=False)
    box = compact_box(kp, WIDTH, HEIGHT, 0.25)
    want = render_joints_loop(kp, box, 24, 0.8).transpose(1, 0, 2, 3)
    got = data[0]["joint"]
    assert got.dtype == torch.float32 and tuple(got.shape) == (17, 6, 24, 24)
    np.testing.assert_allclose(got.numpy(), want, atol=1e-6, rtol=0)
    assert want.max() > 0.9  # (the oracle drew something)
    limb = _dataset(tmp_path, {"c0": kp}, {"limb": (6, 24)}, sigma=0.8, flip=False)[0]["limb"]
    want = render_limbs_loop(kp, box, 24, 0.8, COCO17.limbs).transpose(1, 0, 2, 3)
    np.testing.assert_allclose(limb.numpy(), want, atol=1e-6, rtol=0)


def test_flip_swaps_channels_and_mirrors_x(tmp_path):
    kp = np.zeros((1, 1, 17, 3), np.float32)
    # (generic positions: none falls exactly on a window edge at 3 sigma, where rounding
    # in the mirrored coordinates could decide either way)
    kp[0, 0, J("left_wrist")] = (131.37, 101.91, 1.0)
    kp[0, 0, J("nose")] = (203.33, 61.72, 1.0)
    kp[0, 0, J("left_elbow")] = (151.13, 141.29, 0.8)
    data = _dataset(tmp_path, {"c0": kp}, {"joint": (1, 32), "limb": (1, 32)}, sigma=0.6,
                    flip=True, views=1)
    assert len(data) == 2  # the plain view and its mirrored copy
    plain, mirrored = data[0], data[1]
    for kind, index in (("joint", COCO17.flip_index), ("limb", COCO17.limb_flip_index)):
        want = flip_volume(plain[kind].numpy(), index, axis=0)
        np.testing.assert_allclose(mirrored[kind].numpy(), want, atol=1e-6, rtol=0)
    box = compact_box(kp, WIDTH, HEIGHT, 0.25)
    u = (131.37 - box[0]) * 32 / (box[2] - box[0])
    v = (101.91 - box[1]) * 32 / (box[3] - box[1])
    right = mirrored["joint"][J("right_wrist"), 0].numpy()
    y, x = np.unravel_index(right.argmax(), right.shape)
    assert (x, y) == (round(31 - u), round(v))
    assert mirrored["joint"][J("left_wrist")].max() == 0


def test_mirror_keypoints_keeps_missing_missing():
    kp = np.zeros((1, 1, 17, 3), np.float32)
    kp[0, 0, J("left_wrist")] = (10.0, 20.0, 1.0)
    out = mirror_keypoints(kp, (0.0, 0.0, 32.0, 32.0), 32, COCO17.flip_index)
    assert out[0, 0, J("right_wrist")].tolist() == [21.0, 20.0, 1.0]  # 31 - 10 on a 1 px grid
    assert (out[0, 0, J("left_wrist"), 2] == 0) and (out[0, 0, J("nose"), 2] == 0)


@pytest.mark.parametrize("zoom, shift", [(1.0, (0.125, 0.0)), (1.5, (0.0, 0.0)), (0.8, (-0.1, 0.2))])
def test_zoom_and_shift_move_the_peak(zoom, shift):
    size, box = 40, np.array([100.0, 50.0, 300.0, 250.0])
    kp = np.zeros((1, 1, 1, 3))
    kp[0, 0, 0] = (170.0, 130.0, 1.0)
    u, v = (170.0 - 100) * size / 200, (130.0 - 50) * size / 200  # 14, 16
    region = view_box(box, zoom=zoom, shift=shift)
    out = render_joints_loop(kp, region, size, 0.6)[0, 0]
    want_u = size / 2 + zoom * (u - size / 2) + shift[0] * size
    want_v = size / 2 + zoom * (v - size / 2) + shift[1] * size
    # The mapped keypoint sits exactly where the documented mapping puts it...
    x0, y0, x1, y1 = region
    assert (170.0 - x0) * size / (x1 - x0) == pytest.approx(want_u)
    assert (130.0 - y0) * size / (y1 - y0) == pytest.approx(want_v)
    # ...and so does the rendered peak.
    y, x = np.unravel_index(out.argmax(), out.shape)
    assert (x, y) == (round(want_u), round(want_v))


def test_crop_view_is_a_sub_box():
    box = np.array([0.0, 0.0, 100.0, 200.0])
    assert view_box(box, (0.25, 0.5, 0.5, 0.25)).tolist() == [25.0, 100.0, 75.0, 150.0]
    assert view_box(box).tolist() == box.tolist()


def test_training_samples_are_augmented_and_deterministic(tmp_path):
    clips = {f"c{i}": _person(20, seed=i) for i in range(3)}
    kw = dict(train=True, seed=3, flip=True, crop_area=(0.7, 1.0), zoom=(0.8, 1.2), shift=0.1)
    a = _dataset(tmp_path, clips, {"joint": (8, 24), "limb": (8, 24)}, **kw)
    b = Finished(ClipDataset(a.clips, "train", a.modalities, keypoints_h5=a.keypoints.path, **{**SETTINGS, **kw}))
    for epoch in (0, 1):
        a.set_epoch(epoch)
        b.set_epoch(epoch)
        for i in range(3):
            sa, sb = a[i], b[i]
            assert torch.equal(sa["joint"], sb["joint"]) and torch.equal(sa["limb"], sb["limb"])
    a.set_epoch(0)
    first = a[1]["joint"]
    a.set_epoch(1)
    assert not torch.equal(first, a[1]["joint"])
    # An augmented view is still exact Gaussians: the sample equals the oracle on its own view.
    rng, crop, zoom, shift, mirror = a._draw_view(1, 0)
    assert crop != (0.0, 0.0, 1.0, 1.0) and zoom != 1.0 and shift != (0.0, 0.0)
    idx = sample_indices(20, 8, rng)
    kp = clips["c1"][:, idx]
    region = view_box(compact_box(clips["c1"], WIDTH, HEIGHT, 0.25), crop, zoom, shift)
    if mirror:
        kp = mirror_keypoints(kp, region, 24, COCO17.flip_index)
    want = render_joints_loop(kp, region, 24, 0.6).transpose(1, 0, 2, 3)
    np.testing.assert_allclose(a[1]["joint"].numpy(), want, atol=1e-6, rtol=0)


def test_all_missing_clip_renders_zeros(tmp_path):
    kp = np.zeros((2, 5, 17, 3), np.float32)
    for train in (False, True):
        data = _dataset(tmp_path, {"empty": kp}, {"joint": (8, 16), "limb": (8, 16)}, train=train,
                        zoom=(0.9, 1.1), shift=0.05)
        s = data[0]
        assert tuple(s["joint"].shape) == (17, 8, 16, 16) and tuple(s["limb"].shape) == (18, 8, 16, 16)
        assert s["joint"].abs().sum() == 0 and s["limb"].abs().sum() == 0


def test_bad_keypoint_stores(tmp_path):
    good = {"c0": _person()}
    with pytest.raises(InputError, match="nonesuch"):
        ClipDataset(_manifest(good), "test", {"joint": (4, 16)}, train=False, **SETTINGS,
                    keypoints_h5=_store(tmp_path / "badlayout.h5", good, layout="nonesuch"))
    bad = tmp_path / "garbage.h5"
    bad.write_bytes(b"not an hdf5 file")
    with pytest.raises(InputError, match="garbage.h5"):
        ClipDataset(_manifest(good), "test", {"joint": (4, 16)}, train=False, **SETTINGS, keypoints_h5=bad)
    with pytest.raises(ValueError, match="keypoint store"):
        ClipDataset(_manifest(good), "test", {"joint": (4, 16)}, train=False, **SETTINGS)
    # a manifest clip missing from the store, or of the wrong shape: refused when the samples
    # are set up (the store's metadata is checked against the manifest), before any training
    with pytest.raises(InputError, match="'absent'"):
        ClipDataset(_manifest(["absent"]), "test", {"joint": (4, 16)}, train=False, **SETTINGS,
                    keypoints_h5=_store(_fresh(tmp_path), good))
    for kp in (np.zeros((1, 4, 5, 3), np.float32), np.zeros((1, 0, 17, 3), np.float32)):
        with pytest.raises(InputError, match="shape"):
            ClipDataset(_manifest(["c0"]), "test", {"joint": (4, 16)}, train=False, **SETTINGS,
                        keypoints_h5=_store(_fresh(tmp_path), {"c0": kp}))


def test_augmentation_settings_per_model():
    from mgpipe.config import validate

    config = validate({"pose_model": {"augment": {"scale": [0.8, 1.25], "shift": 0.1}},
                       "train": {"crop_area": [0.6, 1.0]}})
    from mgpipe.learning.specs import get

    def augmentation(config, name):
        return get(name).augment(config)

    joint = augmentation(config, "joint")
    assert joint["zoom"] == (0.8, 1.25) and joint["shift"] == 0.1
    assert joint["crop_area"] == (1.0, 1.0)  # the schema's default for pose models
    fused = augmentation(config, "fused_full")
    assert fused == {"flip": True, "crop_area": (0.6, 1.0), "zoom": (1.0, 1.0), "shift": 0.0}
    assert augmentation(config, "rgb") == fused


def test_real_kard_clip_matches_oracle(tmp_path):
    """A real Kinect sequence: the sampled test view equals the oracle render of its frames."""
    pkl = DATA / "kard2d.pkl"
    if not pkl.is_file():
        pytest.skip(f"real data absent: {pkl}")
    from mgpipe import layouts
    from mgpipe.sources.skeleton_io import import_pickle

    name = "openni15"
    if name not in layouts.LAYOUTS:
        pytest.skip("layout openni15 is not in mgpipe.layouts")
    frame = import_pickle(pkl, tmp_path / "kp.h5", layout=name, splits=["xsub_train", "xsub_val"])
    frame["split"] = "test"
    lay = layouts.get_layout(name)
    assert keypoint_channels(tmp_path / "kp.h5") == (lay.num_joints, lay.num_limbs)
    data = Finished(ClipDataset(frame.iloc[:3], "test", {"joint": (16, 32), "limb": (16, 32)}, train=False,
                                keypoints_h5=tmp_path / "kp.h5", flip=True, **SETTINGS))
    with h5py.File(tmp_path / "kp.h5") as h5:
        kp = h5["clips"][frame.clip_id[1]]["keypoints"][()]
        w, h = h5["clips"][frame.clip_id[1]].attrs["width"], h5["clips"][frame.clip_id[1]].attrs["height"]
    rng, *_ = data._draw_view(1, 0)
    idx = sample_indices(kp.shape[1], 16, rng)
    limb_idx = sample_indices(kp.shape[1], 16, rng)  # each modality draws its own frames
    box = compact_box(kp, w, h, 0.25)
    s = data[2]  # clip 1, plain view (views: plain, mirrored per clip)
    np.testing.assert_allclose(s["joint"].numpy(),
                               render_joints_loop(kp[:, idx], box, 32, 0.6).transpose(1, 0, 2, 3),
                               atol=1e-6, rtol=0)
    np.testing.assert_allclose(s["limb"].numpy(),
                               render_limbs_loop(kp[:, limb_idx], box, 32, 0.6, lay.limbs).transpose(1, 0, 2, 3),
                               atol=1e-6, rtol=0)
    assert s["joint"].amax(dim=(1, 2, 3)).min() > 0.5  # every Kinect joint is present and drawn
    np.testing.assert_allclose(data[3]["joint"].numpy(), flip_volume(s["joint"].numpy(), lay.flip_index, axis=0),
                               atol=1e-6, rtol=0)


def test_samples_carry_drawn_pixels_that_scatter_into_the_dense_volume(tmp_path):
    """A sample ships only its drawn pixels; the batch scatter (maximum over persons) rebuilds
    exactly the dense render, with several persons on the same pixels and samples of
    different pixel counts in one batch, in the main process or in loader workers."""
    from mgpipe.learning.samples import collate, make_loader
    from mgpipe.pose.heatmap_render import render_joints, render_limbs

    two = np.concatenate([_person(6, seed=1), _person(6, seed=1)])
    two[1, :, :, :2] += 1.0   # a second person overlapping the first, 1 px away
    two[1, :, :, 2] = 0.9
    clips = {"one": _person(6, seed=2), "two": two}
    data = ClipDataset(_manifest(clips), "test", {"joint": (6, 24), "limb": (6, 24)}, train=False,
                       keypoints_h5=_store(_fresh(tmp_path), clips), **SETTINGS)
    raw = [data[0], data[1]]
    for s in raw:
        assert s["joint_idx"].dtype == torch.int32 and len(s["joint_idx"]) < 0.05 * 17 * 6 * 24 * 24
    assert len(raw[0]["joint_idx"]) != len(raw[1]["joint_idx"])
    batch = data.to_device(collate(raw), "cpu")
    assert tuple(batch["joint"].shape) == (2, 17, 6, 24, 24) and "joint_idx" not in batch
    for b, cid in enumerate(clips):
        kp = clips[cid]
        region = compact_box(kp, WIDTH, HEIGHT, SETTINGS["padding"])
        rng = data._draw_view(b, 0)[0]
        sel = kp[:, sample_indices(6, 6, rng)]
        np.testing.assert_array_equal(batch["joint"][b].numpy(),
                                      render_joints(sel, region, 24, SETTINGS["sigma"], channels_first=True))
        sel = kp[:, sample_indices(6, 6, rng)]
        np.testing.assert_array_equal(batch["limb"][b].numpy(),
                                      render_limbs(sel, region, 24, SETTINGS["sigma"], COCO17.limbs, channels_first=True))
    for workers in (0, 2):
        (got,) = list(make_loader(data, 2, device="cpu", workers=workers))
        assert torch.equal(got["joint"], batch["joint"]) and torch.equal(got["limb"], batch["limb"])
