"""Keypoints that cannot be positions in the picture (a joint at 1e9 px, NaN, infinity) are read
as missing and counted, so that one of them cannot stretch a clip's box over the whole heatmap.

The clips are real KARD skeletons (640x480 Kinect screen coordinates) where ../shared/data is
present; the properties are checked on them with one joint replaced by garbage."""

import logging
import pickle
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from conftest import pose_settings

from mgpipe.formats.keypoints import compact_box
from mgpipe.pose.heatmap_render import render_joints
from mgpipe.stages.pose import build_keypoint_store, drop_outliers

KARD = Path(__file__).resolve().parents[2] / "shared" / "data" / "kard2d.pkl"


def real_clips(n=3):
    if not KARD.is_file():
        pytest.skip(f"real KARD skeletons not found at {KARD}")
    with open(KARD, "rb") as f:
        data = pickle.load(f)
    return [dict(a) for a in data["annotations"][:n]]


def write_pickle(path, annotations):
    with open(path, "wb") as f:
        pickle.dump({"split": {"train": [a["frame_dir"] for a in annotations]},
                     "annotations": annotations}, f, protocol=4)
    return path


def manifest_for(annotations, *, size=True):
    return pd.DataFrame({
        "clip_id": [a["frame_dir"] for a in annotations], "video_id": [a["frame_dir"] for a in annotations],
        "start_frame": 0, "end_frame": [a["keypoint"].shape[1] - 1 for a in annotations],
        "num_frames": [a["keypoint"].shape[1] for a in annotations], "label": 0, "split": "train",
        "width": 640 if size else np.nan, "height": 480 if size else np.nan})


def store(tmp_path, name, annotations, *, size=True):
    pkl = write_pickle(tmp_path / f"{name}.pkl", annotations)
    out = tmp_path / f"{name}.h5"
    stats = build_keypoint_store(manifest_for(annotations, size=size), pkl, out, **pose_settings(
        backend="pickle", layout="openni15", pickle_layout="openni15"), progress=False)
    with h5py.File(out) as h5:
        clips = {cid: (h5[f"clips/{cid}/keypoints"][()], h5[f"clips/{cid}"].attrs["width"],
                       h5[f"clips/{cid}"].attrs["height"]) for cid in h5["clips"]}
    return clips, stats


def spoiled(annotations, value, clip=1, frame=5, joint=4):
    """The same clips with one joint of one frame replaced (score kept at 1, as a tracker writes)."""
    out = [dict(a, keypoint=a["keypoint"].copy(), keypoint_score=a["keypoint_score"].copy())
           for a in annotations]
    out[clip]["keypoint"][0, frame, joint] = value
    return out


def missing(annotations, clip=1, frame=5, joint=4):
    out = spoiled(annotations, (0.0, 0.0), clip, frame, joint)
    out[clip]["keypoint_score"][0, frame, joint] = 0
    return out


@pytest.mark.parametrize("size", [True, False], ids=["frame size known", "size estimated from the clip"])
def test_one_joint_at_1e9_leaves_box_and_heatmaps_unchanged(tmp_path, caplog, size):
    caplog.set_level(logging.INFO)
    clips = real_clips()
    clean, _ = store(tmp_path, "clean", missing(clips), size=size)
    wild, stats = store(tmp_path, "wild", spoiled(clips, (1e9, 1e9)), size=size)
    assert stats["out_of_frame_joints"] == 1
    assert "1 clip(s) lost joints" in caplog.text and clips[1]["frame_dir"] in caplog.text
    for cid, (kp, w, h) in clean.items():
        kp_wild, w_wild, h_wild = wild[cid]
        assert (w, h) == (w_wild, h_wild)
        box = compact_box(kp, w, h, 0.25)
        np.testing.assert_array_equal(box, compact_box(kp_wild, w_wild, h_wild, 0.25))
        np.testing.assert_array_equal(render_joints(kp, box, 32, 0.6), render_joints(kp_wild, box, 32, 0.6))
    # without the cleaning, the joint would have grown the box by orders of magnitude
    kp = clips[1]["keypoint"].copy()
    kp[0, 5, 4] = 1e9
    raw = np.concatenate([kp, clips[1]["keypoint_score"][..., None]], -1)
    assert (compact_box(raw, 640, 480, 0.25)[2:] > 1e8).all()


def test_nan_and_infinite_joints_are_missing_and_counted(tmp_path, caplog):
    clips = real_clips()
    bad = spoiled(clips, (np.nan, 3.0), clip=0)
    bad = spoiled(bad, (np.inf, -np.inf), clip=2, frame=7, joint=0)
    bad[1]["keypoint_score"][0, 3, 2] = np.nan
    got, stats = store(tmp_path, "bad", bad)
    assert stats["non_finite_joints"] == 3
    assert "3 clip(s) lost joints" in caplog.text
    for cid, (kp, _, _) in got.items():
        assert np.isfinite(kp).all()
    assert (got[clips[0]["frame_dir"]][0][0, 5, 4] == 0).all()


def test_joints_inside_the_margin_are_kept():
    kp = np.zeros((1, 2, 3, 3), np.float32)
    kp[0, :, :, 2] = 1
    kp[0, 0] = [[-100, 10, 1], [700, 10, 1], [10, 600, 1]]      # within 25 % of 640x480 outside
    kp[0, 1] = [[-161, 10, 1], [801, 10, 1], [10, 601, 1]]      # beyond it
    out, counts = drop_outliers(kp, (640, 480), 0.25)
    assert counts["out_of_frame_joints"] == 3
    assert (out[0, 0] == kp[0, 0]).all() and (out[0, 1] == 0).all()


def test_a_clip_estimate_resists_a_few_wild_joints():
    rng = np.random.default_rng(0)
    kp = np.ones((1, 100, 15, 3), np.float32)
    kp[..., 0] = rng.uniform(200, 400, (1, 100, 15))
    kp[..., 1] = rng.uniform(100, 300, (1, 100, 15))
    kp[0, 3, 2, :2] = 5e4
    kp[0, 50, 7, :2] = -3e4
    out, counts = drop_outliers(kp, None, 0.25)
    assert counts["out_of_frame_joints"] == 2
    assert out[0, 3, 2].tolist() == [0, 0, 0] and out[0, 50, 7].tolist() == [0, 0, 0]
    assert (out[..., 2] > 0).sum() == 100 * 15 - 2
