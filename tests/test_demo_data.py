"""Tests of the seeded demo-data generator (tiny configurations; about 15 s in all)."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pandas as pd
import pytest

from mgpipe.layouts import BODY25
from mgpipe.tools import demo_data as dd

SMALL = dict(num_subjects=3, segments_per_class=1, width=320, height=240, fps=25, progress=False)
TINY = dict(num_subjects=2, segments_per_class=1, width=160, height=120, fps=25, progress=False)
J = {n: i for i, n in enumerate(BODY25.joints)}


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    counts = dd.generate(out, seed=3, processes=2, **SMALL)
    return out, counts


def _decode(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def _keypoints(out: Path, vid: str, frame: int) -> np.ndarray | None:
    data = json.loads((out / "skeletons" / vid / f"{vid}_{frame:012d}_keypoints.json").read_text())
    assert data["version"] == 1.3
    if not data["people"]:
        return None
    person = data["people"][0]
    assert len(person["pose_keypoints_2d"]) == 75
    for key in ("face_keypoints_2d", "hand_left_keypoints_2d", "hand_right_keypoints_2d"):
        assert key in person
    return np.asarray(person["pose_keypoints_2d"], float).reshape(25, 3)


def test_files_columns_and_labels(small):
    out, counts = small
    for name in ("labels.csv", "split.csv", "classes.csv", "README.txt"):
        assert (out / name).is_file()
    labels = pd.read_csv(out / "labels.csv")
    assert list(labels.columns) == dd.LABEL_COLUMNS
    classes = pd.read_csv(out / "classes.csv")
    assert list(classes.columns) == ["label_id", "name"]
    assert dict(zip(classes.label_id, classes.name)) == dd.CLASSES
    # the real iMiGUE layout: class = class id, label_id = running segment number per video,
    # times in decimal seconds beside the frames
    assert set(labels["class"]) == set(dd.CLASSES)
    for _, rows in labels.groupby("video_id"):
        assert rows.label_id.tolist() == list(range(1, len(rows) + 1))
        assert rows.start_frame.is_monotonic_increasing
    assert len(labels) == counts["segments"] == 3 * sum(dd.class_counts(1).values())
    assert labels.start_time.map(lambda v: f"{v:.4f}").eq(
        labels.start_frame.map(lambda f: f"{f / 25:.4f}")).all()
    total = 0
    for vid, rows in labels.groupby("video_id"):
        video = out / "videos" / f"{vid}.mp4"
        assert video.is_file()
        n = len(_decode(video))
        total += n
        assert len(list((out / "skeletons" / vid).glob("*_keypoints.json"))) == n
        rows = rows.sort_values("start_frame")
        assert (rows.start_frame >= 0).all() and (rows.end_frame < n).all()
        assert (rows.end_frame - rows.start_frame + 1 >= 8).all()
        assert (rows.start_frame.iloc[1:].to_numpy() > rows.end_frame.iloc[:-1].to_numpy()).all()
        assert rows.subject_id.nunique() == 1
        # each subject makes every class, as unevenly as class_counts says
        assert rows["class"].value_counts().to_dict() == dd.class_counts(1)
        r = rows.iloc[0]
        assert f"{r.start_time:.4f}" == dd.frame_time(int(r.start_frame), 25)
    assert total == counts["frames"]
    assert counts["videos"] == 3


def test_split_is_cross_subject(small):
    out, _ = small
    labels = pd.read_csv(out / "labels.csv")
    split = pd.read_csv(out / "split.csv")
    assert list(split.columns) == ["subject_id", "split"]
    assert split.subject_id.is_unique
    assert set(split.subject_id) == set(labels.subject_id)
    assert set(split.split) <= {"train", "val", "test"}
    big = dd.cross_subject_split(list(range(1, 17)), seed=0)
    assert sorted(big.values()).count("train") == 10
    assert sorted(big.values()).count("val") == 2
    assert sorted(big.values()).count("test") == 4


def test_openpose_json_and_noise(small):
    out, counts = small
    empty = missing = low = 0
    for vid_dir in sorted((out / "skeletons").iterdir()):
        for f in sorted(vid_dir.glob("*_keypoints.json")):
            frame = int(f.name.split("_")[1])
            kp = _keypoints(out, vid_dir.name, frame)
            if kp is None:
                empty += 1
                continue
            upper = kp[list(dd.UPPER_JOINTS)]
            missing += int((upper == 0).all(axis=1).sum())
            c = upper[:, 2]
            low += int(((c > 0) & (c < 0.35)).sum())
            assert ((c == 0) | ((c >= 0.05) & (c <= 0.95))).all()
            legs = [J[n] for n in ("right_knee", "left_ankle", "left_big_toe", "right_heel")]
            assert (kp[legs] == 0).all()
    assert empty == counts["empty_pose_frames"] > 0
    assert missing == counts["missing_joints"] > 0
    assert low == counts["low_confidence_joints"] > 0
    n = counts["frames"]
    assert 0.005 < empty / n < 0.05
    assert 0.01 < missing / ((n - empty) * len(dd.UPPER_JOINTS)) < 0.06


def test_wrists_are_on_skin(small):
    """The keypoints are the rendered figure: the pixel under a confident wrist is skin."""
    out, _ = small
    labels = pd.read_csv(out / "labels.csv")
    rng = np.random.default_rng(0)
    for index, vid in enumerate(sorted(labels.video_id.unique())):
        appearance, _ = dd.make_subject(dd._video_rngs(3, index)[0], 320, 240)
        skin = np.asarray(appearance.skin, float)
        frames = _decode(out / "videos" / f"{vid}.mp4")
        hits = control = tried = 0
        for f in rng.choice(len(frames), size=min(80, len(frames)), replace=False):
            kp = _keypoints(out, vid, int(f))
            if kp is None:
                continue
            for j in (J["right_wrist"], J["left_wrist"]):
                x, y, c = kp[j]
                if c < 0.5:
                    continue
                xi, yi = int(round(x)), int(round(y))
                patch = frames[f][max(0, yi - 1): yi + 2, max(0, xi - 1): xi + 2].reshape(-1, 3)
                tried += 1
                hits += np.linalg.norm(np.median(patch, 0) - skin) < 45
                # control: the same test at a point 30 px left or right should usually fail
                xc = int(np.clip(xi + (30 if xi < 160 else -30), 0, 319))
                yc = int(np.clip(yi - 40, 0, 239))
                control += np.linalg.norm(frames[f][yc, xc].astype(float) - skin) < 45
        assert tried > 50
        assert hits / tried > 0.93, (vid, hits / tried)
        assert control / tried < 0.5, (vid, control / tried)


def test_deterministic_and_seed_dependent(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    ca = dd.generate(a, seed=11, processes=2, **TINY)
    cb = dd.generate(b, seed=11, processes=1, **TINY)
    assert ca == cb
    for name in ("labels.csv", "split.csv", "classes.csv", "README.txt"):
        assert (a / name).read_bytes() == (b / name).read_bytes()
    names = sorted(p.relative_to(a) for p in (a / "skeletons").rglob("*.json"))
    assert names == sorted(p.relative_to(b) for p in (b / "skeletons").rglob("*.json"))
    for rel in names[::7]:
        assert (a / rel).read_bytes() == (b / rel).read_bytes()
    # libx264 with one thread is deterministic: the videos are byte-identical too
    for v in ("v000", "v001"):
        assert (a / "videos" / f"{v}.mp4").read_bytes() == (b / "videos" / f"{v}.mp4").read_bytes()
    dd.generate(c, seed=12, processes=1, **TINY)
    assert (a / "labels.csv").read_bytes() != (c / "labels.csv").read_bytes()
    rel = Path("skeletons/v000/v000_000000000003_keypoints.json")
    assert (a / rel).read_bytes() != (c / rel).read_bytes()
    # rerunning into the same folder with fewer subjects leaves no stale outputs
    dd.generate(a, seed=11, processes=1, **{**TINY, "num_subjects": 1})
    assert sorted(p.name for p in (a / "videos").iterdir()) == ["v000.mp4"]
    assert sorted(p.name for p in (a / "skeletons").iterdir()) == ["v000"]
    assert (a / "videos" / "v000.mp4").read_bytes() == (b / "videos" / "v000.mp4").read_bytes()


def test_trajectories_and_classes_apart():
    assert dd.envelope(0.0, 0.2, 0.2) == 0.0 and dd.envelope(1.0, 0.2, 0.2) == 0.0
    assert dd.envelope(0.5, 0.2, 0.2) == 1.0
    assert 0 < dd.envelope(0.1, 0.2, 0.2) < 1
    _, body = dd.make_subject(np.random.default_rng(5), 320, 240)
    p = dd.segment_params(np.random.default_rng(1), 2)
    p["hand"] = "right"
    wrists = {}
    for label in dd.CLASSES:
        pose = dd.body_pose(body, dd.gesture_controls(label, 0.5, 0.4, p), 2.0)
        wrists[label] = pose.joints[[J["right_wrist"], J["left_wrist"]]]
        head_h = 2 * pose.head_radii[1]
    rest = dd.body_pose(body, dd.Controls(), 2.0)
    # touching nose vs chin: the wrist heights are clearly apart (> 20 % of the head height)
    assert wrists[3][0, 1] - wrists[2][0, 1] > 0.2 * head_h
    # the head gestures raise the active hand above the shoulders; non-gesture keeps it low
    shoulder_y = rest.joints[J["right_shoulder"], 1]
    for label in (1, 2, 3):
        assert wrists[label][0, 1] < shoulder_y
    assert wrists[99].min(axis=0)[1] > shoulder_y + 0.2 * body.unit
    # crossing arms puts each wrist on the other side of the body; shrugging opens them out
    mid = rest.joints[J["neck"], 0]
    assert wrists[4][0, 0] > mid and wrists[4][1, 0] < mid
    assert wrists[5][0, 0] < rest.joints[J["right_wrist"], 0] - 0.15 * body.unit
    # the near pairs: the mouth lies between nose and chin, the ear just below the scratching
    # hand, folded hands a little lower than rubbing ones
    assert wrists[2][0, 1] < wrists[7][0, 1] < wrists[3][0, 1]
    assert wrists[7][0, 1] - wrists[2][0, 1] < 0.2 * head_h
    assert 0 < wrists[8][0, 1] - wrists[1][0, 1] < 0.5 * head_h
    assert 0 < wrists[9][0, 1] - wrists[6][0, 1] < 0.05 * body.unit
    appearance, _ = dd.make_subject(np.random.default_rng(5), 320, 240)
    img = dd.render_frame(rest, appearance, 320, 240)
    assert img.size == (320, 240) and img.mode == "RGB"
    arr = np.asarray(img).astype(float)
    x, y = rest.joints[J["nose"]].round().astype(int)
    assert np.linalg.norm(arr[y + 3, x] - np.asarray(appearance.skin)) < 60


def test_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError):
        dd.generate(tmp_path, seed=0, **{**TINY, "width": 161})
    with pytest.raises(ValueError):
        dd.generate(tmp_path, seed=-1, **TINY)


def test_class_counts_are_uneven_like_imigue():
    counts = dd.class_counts(2)
    assert set(counts) == set(dd.CLASSES)
    assert max(counts, key=counts.get) == 99  # the non-gesture class is the largest
    assert min(counts.values()) == 1 and counts[99] >= 4 * min(counts.values())


def test_hand_shape_shows_in_pixels_not_in_keypoints():
    """Touching the nose and covering the mouth put the wrist a few pixels apart; what tells
    them apart in RGB is the hand: a fingertip or a flat palm over the mouth."""
    appearance, body = dd.make_subject(np.random.default_rng(5), 320, 240)
    p = dd.segment_params(np.random.default_rng(1), 2, right_handed=1.0)
    poses = {lab: dd.body_pose(body, dd.gesture_controls(lab, 0.5, 0.4, p), 2.0) for lab in (2, 7)}
    assert poses[2].extra["hands"] == {"right": "point"}
    assert poses[7].extra["hands"] == {"right": "palm"}
    same = dd.body_pose(body, dd.gesture_controls(2, 0.5, 0.4, p), 2.0)
    same.extra["hands"] = {"right": "palm"}  # nose pose, mouth hand: only the shape changes
    a = np.asarray(dd.render_frame(poses[2], appearance, 320, 240)).astype(int)
    b = np.asarray(dd.render_frame(same, appearance, 320, 240)).astype(int)
    assert (np.abs(a - b).sum(axis=2) > 30).sum() > 20
