import json

import h5py
import numpy as np
import pandas as pd
import pytest
from conftest import pose_settings

from mgpipe.io import InputError
from mgpipe.layouts import COCO17
from mgpipe.stages.pose import build_keypoint_store, pick_main_person, read_openpose_frame


def person(x, y, score=0.9):
    kp = np.zeros((25, 3), np.float32)
    kp[:9] = [x, y, score]
    kp[2, 0] = x - 10  # right shoulder
    kp[5, 0] = x + 10  # left shoulder
    return kp


def write_frame(folder, video, frame, people):
    folder.mkdir(parents=True, exist_ok=True)
    doc = {"version": 1.3, "people": [
        {"person_id": [-1], "pose_keypoints_2d": p.reshape(-1).tolist(), "face_keypoints_2d": [],
         "hand_left_keypoints_2d": [], "hand_right_keypoints_2d": []} for p in people]}
    (folder / f"{video}_{frame:012d}_keypoints.json").write_text(json.dumps(doc))


def test_read_frame_and_bad_files(tmp_path):
    write_frame(tmp_path / "v", "v", 0, [person(50, 60), person(10, 10)])
    people = read_openpose_frame(tmp_path / "v" / "v_000000000000_keypoints.json")
    assert people.shape == (2, 137, 3) and people[0, 0, 0] == 50
    assert (people[:, 25:] == 0).all()  # no hands or face in this file: missing, not invented
    bad = tmp_path / "bad.json"
    bad.write_text('{"people": [{"pose_keypoints_2d": [1, 2]}]}')
    with pytest.raises(InputError, match=r"bad\.json: pose_keypoints_2d has 2 values"):
        read_openpose_frame(bad)
    bad.write_text("{nope")
    with pytest.raises(InputError, match=r"bad\.json: not an OpenPose keypoint file"):
        read_openpose_frame(bad)


def test_main_person_is_followed_not_swapped():
    a, b = person(100, 100, 0.6), person(300, 100, 0.9)
    # frame 0: only a; afterwards b is more confident, but a stays the subject
    frames = [a[None], np.stack([b, a + 2]), np.stack([a + 4, b]), np.zeros((0, 25, 3), np.float32)]
    track, crowded = pick_main_person(frames)
    assert crowded == 2
    assert np.allclose(track[:3, 0, 0], [100, 102, 104])
    assert (track[3] == 0).all()


def test_keypoint_store_maps_body25_to_coco_and_counts(tmp_path, caplog):
    skel = tmp_path / "skeletons"
    for f in range(5):
        people = [] if f == 2 else [person(40 + f, 50)]
        if f != 4:  # frame 4 missing on disk
            write_frame(skel / "v", "v", f, people)
    manifest = pd.DataFrame([{"clip_id": "v_0", "video_id": "v", "start_frame": 0, "end_frame": 4,
                              "width": 320, "height": 240}])
    out = tmp_path / "kp.h5"
    stats = build_keypoint_store(manifest, skel, out, **pose_settings(), progress=False)
    assert stats["empty_frames"] == 2 and stats["missing_files"] == 1
    with h5py.File(out) as h5:
        kp = h5["clips/v_0/keypoints"][()]
        assert h5.attrs["layout"] == "coco17"
        assert h5["clips/v_0"].attrs["width"] == 320
    assert kp.shape == (1, 5, 17, 3)
    # COCO left_shoulder (5) is BODY_25 LShoulder (5): x + 10; right_shoulder (6) is RShoulder (2)
    assert kp[0, 0, COCO17.joints.index("left_shoulder"), 0] == 50
    assert kp[0, 0, COCO17.joints.index("right_shoulder"), 0] == 30
    assert (kp[0, 2] == 0).all() and (kp[0, 4] == 0).all()


def test_missing_skeleton_folder_names_it(tmp_path):
    manifest = pd.DataFrame([{"clip_id": "w_0", "video_id": "w", "start_frame": 0, "end_frame": 1,
                              "width": 320, "height": 240}])
    with pytest.raises(InputError, match="OpenPose folder of video w not found"):
        build_keypoint_store(manifest, tmp_path, tmp_path / "kp.h5", **pose_settings(), progress=False)
    assert not (tmp_path / "kp.h5").exists()
