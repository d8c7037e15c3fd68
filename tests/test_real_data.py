"""mgpipe on real public data: the iMiGUE label table, iMiGUE OpenPose frames and the KARD skeleton
pickle (../shared/data beside the checkout; skipped when absent)."""

import json
import logging
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import build_manifest, pose_settings

from mgpipe.io import InputError
from mgpipe.layouts import BODY25_HANDS_FACE, OPENNI15, convert, get_layout
from mgpipe.sources.label_tables import IMIGUE_CLASS_IDS, IMIGUE_CLASS_NAMES, read_labels, read_pyskl
from mgpipe.stages.pose import build_keypoint_store, read_openpose_frame

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
EXCERPT = DATA / "imigue_labels_excerpt.csv"
OPENPOSE = DATA / "imigue_openpose_excerpt"
KARD = DATA / "kard2d.pkl"


def need(path):
    if not path.exists():
        pytest.skip(f"real data {path} not found (../shared/data beside the checkout)")
    return path


# --- iMiGUE label table ---------------------------------------------------------------------------

def test_public_class_list_is_complete():
    assert len(IMIGUE_CLASS_NAMES) == len(IMIGUE_CLASS_IDS) == 32
    assert IMIGUE_CLASS_NAMES[0] == "turtle neck" and IMIGUE_CLASS_NAMES[31] == "illustrative"
    assert len(set(IMIGUE_CLASS_NAMES)) == 32


def test_real_imigue_table_reads_class_from_class_column():
    raw = pd.read_csv(need(EXCERPT))
    t = read_labels("imigue", EXCERPT).table
    assert len(t) == len(raw) == 40
    # class ids come from `class`, not from label_id (the segment's number in its video)
    assert t.label_id.tolist() == raw["class"].tolist()
    assert raw.label_id.tolist()[:3] == [1, 2, 3] and t.label_id.tolist()[:3] == [20, 18, 17]
    assert t["class"].tolist() == [IMIGUE_CLASS_NAMES[IMIGUE_CLASS_IDS.index(k)] for k in raw["class"]]
    assert t.start_frame.tolist() == raw.start_frame.tolist()
    assert t.end_frame.tolist() == raw.end_frame.tolist()
    np.testing.assert_allclose(t.start_time, raw.start_time)      # decimal seconds kept
    assert t.video_id.tolist() == raw.video_id.astype(str).tolist()
    assert set(t.subject_id) == {1, 42}


def _skeleton_folders(root, videos):
    for v in videos:
        (root / str(v)).mkdir(parents=True, exist_ok=True)
    return root


def test_real_imigue_table_gives_32_outputs_with_99_last(tmp_path):
    raw = pd.read_csv(need(EXCERPT))
    split = tmp_path / "split.csv"
    split.write_text("subject_id,split\n1,train\n42,test\n")
    skeletons = _skeleton_folders(tmp_path / "openpose", raw.video_id.unique())
    manifest, classes = build_manifest(EXCERPT, split, None, mode="pose", skeletons_dir=skeletons,
                                       val_fraction=0)
    assert classes.label_id.tolist() == list(range(1, 32)) + [99]
    assert classes.name.tolist() == list(IMIGUE_CLASS_NAMES)
    expected = np.where(raw["class"] == 99, 31, raw["class"] - 1)
    assert manifest.label.tolist() == expected.tolist()
    assert (manifest.label[raw["class"] == 99] == len(classes) - 1).all()
    assert set(manifest.split) == {"train", "test"}          # val_fraction 0: no val split
    assert manifest.num_frames.tolist() == (raw.end_frame - raw.start_frame + 1).tolist()


def test_seconds_are_used_when_the_frames_are_absent(tmp_path):
    raw = pd.read_csv(need(EXCERPT), dtype=str)
    raw.drop(columns=["start_frame", "end_frame"]).to_csv(tmp_path / "seconds.csv", index=False)
    split = tmp_path / "split.csv"
    split.write_text("subject_id,split\n1,train\n42,test\n")
    skeletons = _skeleton_folders(tmp_path / "openpose", raw.video_id.unique())
    manifest, _ = build_manifest(tmp_path / "seconds.csv", split, None, mode="pose", fps=25,
                                 skeletons_dir=skeletons, val_fraction=0)
    # seconds at 25 fps land on the table's own frame numbers
    assert (manifest.start_frame - raw.start_frame.astype(int)).abs().max() <= 1
    assert (manifest.end_frame - raw.end_frame.astype(int)).abs().max() <= 1
    raw.drop(columns=["end_frame"]).to_csv(tmp_path / "half.csv", index=False)
    with pytest.raises(InputError, match=r"half\.csv: row 1 \(header\) lacks column\(s\) end_frame"):
        read_labels("imigue", tmp_path / "half.csv")


@pytest.mark.parametrize("column, value, pattern", [
    ("class", "touch hat", r"row 4, column class: 'touch hat' is not an integer"),
    ("class", "nan", r"row 4, column class: 'nan' is not an integer"),
    ("class", "", r"row 4, column class: '' is not an integer"),
    ("start_frame", "-5", r"row 4, column start_frame: negative start frame"),
    ("end_frame", "400", r"row 4, column end_frame: end < start"),
    ("end_frame", "5e40", r"row 4, column end_frame: '5e40' is not an integer"),
    ("subject_id", "1.5", r"row 4, column subject_id: '1\.5' is not an integer"),
    ("video_id", "../371", r"row 4, column video_id: video '\.\./371' contains a path separator"),
    ("video_id", "..", r"row 4, column video_id: video '\.\.' cannot be used as an id"),
    ("video_id", "37\x071", r"row 4, column video_id: video '37\\x071' contains a control character"),
])
def test_hostile_imigue_rows_name_file_and_row(tmp_path, column, value, pattern):
    raw = pd.read_csv(need(EXCERPT), dtype=str)
    raw.loc[2, column] = value          # file row 4 (header is row 1)
    raw.to_csv(tmp_path / "hostile.csv", index=False)
    with pytest.raises(InputError, match=r"hostile\.csv: " + pattern) as e:
        read_labels("imigue", tmp_path / "hostile.csv")
    assert "\n" not in str(e.value)


def test_hostile_seconds_only_table(tmp_path):
    raw = pd.read_csv(need(EXCERPT), dtype=str).drop(columns=["start_frame", "end_frame"])
    for value, pattern in [("NaN", "'NaN' is not a time in seconds"),
                           ("inf", "'inf' is not a time in seconds"),
                           ("-1.5", "negative start time")]:
        bad = raw.copy()
        bad.loc[5, "start_time"] = value
        bad.to_csv(tmp_path / "s.csv", index=False)
        with pytest.raises(InputError, match=rf"s\.csv: row 7, column start_time: {pattern}"):
            read_labels("imigue", tmp_path / "s.csv")


def test_unknown_class_id_gets_its_own_output_and_name(tmp_path, caplog):
    raw = pd.read_csv(need(EXCERPT), dtype=str)
    raw.loc[0, "class"] = "40"                   # not an iMiGUE class
    raw.to_csv(tmp_path / "extra.csv", index=False)
    split = tmp_path / "split.csv"
    split.write_text("subject_id,split\n1,train\n42,test\n")
    skeletons = _skeleton_folders(tmp_path / "openpose", raw.video_id.unique())
    with caplog.at_level(logging.INFO):
        manifest, classes = build_manifest(tmp_path / "extra.csv", split, None, mode="pose",
                                           skeletons_dir=skeletons, val_fraction=0)
    # sorted ids: 1..31, 40, 99; 40 is named by its id and borrows no other class's name
    assert classes.label_id.tolist() == list(range(1, 32)) + [40, 99]
    assert classes.name.tolist() == list(IMIGUE_CLASS_NAMES[:31]) + ["40", "illustrative"]
    assert manifest.label.iloc[0] == 31 and manifest.class_name.iloc[0] == "40"
    assert "[40]" in caplog.text and "not imigue classes" in caplog.text
    # configured classes: a table id outside them is an error naming the file
    with pytest.raises(InputError, match=r"extra\.csv: row 2: label id 40 is not among the configured"):
        build_manifest(tmp_path / "extra.csv", split, None, mode="pose", skeletons_dir=skeletons,
                       classes=list(IMIGUE_CLASS_IDS))


# --- iMiGUE OpenPose frames ----------------------------------------------------------------------

def test_real_openpose_frames_have_every_part():
    files = sorted(need(OPENPOSE / "298").glob("298_*_keypoints.json"))
    assert len(files) == 3
    joints = BODY25_HANDS_FACE.joints
    parts = {"body": slice(0, 25), "left hand": slice(25, 46), "right hand": slice(46, 67),
             "face": slice(67, 137)}
    assert joints[25] == "left_hand_wrist" and joints[46] == "right_hand_wrist"
    for f in files:
        raw = json.loads(f.read_text())["people"][0]
        kp = read_openpose_frame(f)
        assert kp.shape == (1, 137, 3) and kp.dtype == np.float32
        for key, part in (("pose_keypoints_2d", "body"), ("hand_left_keypoints_2d", "left hand"),
                          ("hand_right_keypoints_2d", "right hand"), ("face_keypoints_2d", "face")):
            values = np.asarray(raw[key], np.float32).reshape(-1, 3)
            assert len(values) == {"body": 25, "left hand": 21, "right hand": 21, "face": 70}[part]
            np.testing.assert_array_equal(kp[0, parts[part]], values)
            assert (kp[0, parts[part], 2] > 0).sum() >= len(values) // 2, part   # really detected


def test_real_openpose_frames_into_the_whole_body_store(tmp_path):
    need(OPENPOSE / "298")
    manifest = pd.DataFrame({"clip_id": ["298_001000_001002"], "video_id": ["298"],
                             "start_frame": [1000], "end_frame": [1002], "num_frames": [3],
                             "width": [np.nan], "height": [np.nan]})
    stats = build_keypoint_store(manifest, OPENPOSE, tmp_path / "kp.h5",
                                 **pose_settings(layout="body25_hands_face"), progress=False)
    import h5py

    with h5py.File(tmp_path / "kp.h5", "r") as h5:
        assert h5.attrs["layout"] == "body25_hands_face"
        kp = h5["clips/298_001000_001002/keypoints"][()]
    assert kp.shape == (1, 3, 137, 3)
    present = kp[0, :, :, 2] > 0
    for part, sl in (("body", slice(0, 25)), ("hands", slice(25, 67)), ("face", slice(67, 137))):
        assert present[:, sl].any(1).all(), part
    assert stats["frames"] == 3 and stats["empty_frames"] == 0


# --- KARD skeleton pickle as a dataset ---------------------------------------------------------------

KARD_SPLITS = {"xsub_train": "train", "xsub_val": "test"}


def test_kard_pickle_is_a_whole_dataset():
    labels, annotations = read_pyskl(need(KARD), layout="openni15", split_map=KARD_SPLITS,
                                     subject_from=r"_s(\d+)_")
    t = labels.table
    assert len(t) == len(annotations) == 540
    assert t.label_id.nunique() == 18 and t.label_id.min() == 0
    assert t.split.value_counts().to_dict() == {"train": 270, "test": 270}
    assert sorted(t.subject_id.unique()) == list(range(1, 11))
    # pyskl's xsub: odd subjects train, even subjects test
    assert (t.subject_id[t.split == "train"] % 2 == 1).all()
    assert (t.start_frame == 0).all()
    lengths = np.array([annotations[c]["keypoint"].shape[1] for c in t.video_id])
    assert (t.end_frame.to_numpy() == lengths - 1).all() and lengths.min() == 42
    assert t.source_row.tolist() == list(range(540))


def test_kard_pickle_errors_are_one_line():
    need(KARD)
    with pytest.raises(InputError, match=r"kard2d\.pkl: none of the pickle's splits \['xsub_train', "
                                         r"'xsub_val'\] is named train, val or test"):
        read_pyskl(KARD, layout="openni15")
    with pytest.raises(InputError, match=r"kard2d\.pkl: annotation 0 \('a01_s01_e01'\): keypoints have "
                                         r"15 joints, layout 'coco17' has 17"):
        read_pyskl(KARD, layout="coco17", split_map=KARD_SPLITS)
    with pytest.raises(InputError, match=r"kard2d\.pkl: annotation 510: frame_dir 'a18_s01_e01': "
                                         r"label 17 is not among the configured classes"):
        read_pyskl(KARD, layout="openni15", split_map=KARD_SPLITS, classes=list(range(17)))
    with pytest.raises(InputError, match=r"split_map names split\(s\) \['xview_train'\]"):
        read_pyskl(KARD, layout="openni15", split_map={"xview_train": "train"})
    with pytest.raises(InputError, match=r"kard2d\.pkl: annotation \d+: subject 1 is in both train"):
        read_pyskl(KARD, layout="openni15", split_map={"xsub_train": "train", "xsub_val": "test"},
                   subject_from=r"_e(\d+)$")   # repetitions as "subjects": every one in both


def test_kard_manifest_and_keypoints_in_pose_only_mode(tmp_path):
    manifest, classes = build_manifest(None, None, None, kind="pyskl", mode="pose",
                                       pose_backend="pickle", skeletons_dir=need(KARD),
                                       pickle_layout="openni15", split_map=KARD_SPLITS,
                                       subject_from=r"_s(\d+)_", val_fraction=0.2,
                                       class_names=[f"action {k + 1}" for k in range(18)])
    assert len(manifest) == 540 and (manifest.video == "").all()
    assert manifest.groupby("split").subject_id.nunique().to_dict() == {"test": 5, "train": 4, "val": 1}
    assert classes.name.iloc[0] == "action 1" and manifest.class_name.iloc[0] == "action 1"
    assert (manifest.label == manifest.label_id).all()
    first = manifest.iloc[:20]
    build_keypoint_store(first, KARD, tmp_path / "kp.h5",
                         **pose_settings(backend="pickle", layout="openni15", pickle_layout="openni15"),
                         progress=False)
    with open(KARD, "rb") as f:
        ann = pickle.load(f)["annotations"][0]
    import h5py

    with h5py.File(tmp_path / "kp.h5", "r") as h5:
        kp = h5[f"clips/{first.clip_id.iloc[0]}/keypoints"][()]
        assert (h5[f"clips/{first.clip_id.iloc[0]}"].attrs["width"],
                h5[f"clips/{first.clip_id.iloc[0]}"].attrs["height"]) == (640, 480)
    np.testing.assert_array_equal(kp[..., :2], ann["keypoint"])
    # a pickle in full mode, or read by another backend, is refused in one line
    with pytest.raises(InputError, match="kind pyskl has keypoints and no videos"):
        build_manifest(None, None, None, kind="pyskl", mode="full", pose_backend="pickle",
                       skeletons_dir=KARD, pickle_layout="openni15", split_map=KARD_SPLITS)


def test_kard_in_other_layouts_by_joint_name():
    """OpenNI's joints land on the same-named joints of Kinect v1/v2 and COCO-WholeBody."""
    rng = np.random.default_rng(0)
    kp = rng.normal(size=(4, 15, 3)).astype(np.float32)
    for name in ("kinect_v1_20", "kinect_v2_25"):
        dst = get_layout(name)
        out = convert(kp, OPENNI15, dst)
        for i, joint in enumerate(OPENNI15.joints):
            assert joint in dst.joints, (name, joint)
            np.testing.assert_array_equal(out[:, dst.joints.index(joint)], kp[:, i])
    whole = convert(kp, OPENNI15, get_layout("coco_wholebody133"))
    shared = {"left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_hip",
              "right_hip", "left_knee", "right_knee"}
    got = {get_layout("coco_wholebody133").joints[j] for j in np.flatnonzero(np.abs(whole).sum((0, 2)))}
    assert got == shared


def _kard_variant(tmp_path, change):
    with open(need(KARD), "rb") as f:
        data = pickle.load(f)
    data["annotations"] = data["annotations"][:6]
    ids = [a["frame_dir"] for a in data["annotations"]]
    data["split"] = {"xsub_train": ids[:3], "xsub_val": ids[3:]}
    change(data)
    path = tmp_path / "hostile.pkl"
    with open(path, "wb") as f:
        pickle.dump(data, f)
    return path


@pytest.mark.parametrize("change, pattern", [
    (lambda d: d["annotations"][1].update(frame_dir="a01\x00s01"),
     r"annotation 1 \('a01\\x00s01'\): frame_dir cannot be used as a clip id \(.*control character\)"),
    (lambda d: d["annotations"][2].update(frame_dir="../a01"),
     r"annotation 2 \('\.\./a01'\): frame_dir cannot be used as a clip id \(.*path separator\)"),
    (lambda d: d["annotations"][0].update(label=-1),
     r"annotation 0: frame_dir 'a01_s01_e01': label -1 is negative"),
    (lambda d: d["annotations"][0].update(label="one"),
     r"annotation 0 \('a01_s01_e01'\): label 'one' is not an integer"),
    (lambda d: d["split"]["xsub_val"].append("ghost"),
     r"split lists 'ghost' \(1 id\(s\) in all\) that has no annotation"),
    (lambda d: d["split"]["xsub_val"].append(d["split"]["xsub_train"][0]),
     r"clip 'a01_s01_e01' is in test \(split xsub_val\) and in train"),
    (lambda d: d.update(split=["xsub_train"]), r"'split' must map split names to lists of frame_dir"),
    (lambda d: d["annotations"][3].update(total_frames=5), r"annotation 3 .*total_frames 5 does not match"),
])
def test_hostile_pickle_datasets_are_one_line_errors(tmp_path, change, pattern):
    path = _kard_variant(tmp_path, change)
    with pytest.raises(InputError, match=r"hostile\.pkl: " + pattern) as e:
        read_pyskl(path, layout="openni15", split_map=KARD_SPLITS)
    assert "\n" not in str(e.value)
