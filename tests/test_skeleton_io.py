import pickle

import h5py
import numpy as np
import pandas as pd
import pytest

from mgpipe.formats import keypoints as keypoint_store
from mgpipe.io import InputError
from mgpipe.layouts import get_layout
from mgpipe.sources.skeleton_io import export_pickle, import_pickle, openpose_person


def _store(path, clips, layout="coco17", V=17):
    rng = np.random.default_rng(0)
    arrays = {}
    with keypoint_store.writer(path, get_layout(layout), source="test") as store:
        for cid, (M, T, w, h) in clips.items():
            kp = (rng.random((M, T, V, 3)) * [w, h, 1]).astype(np.float32)
            kp[0, 0, 0] = [np.float32(1 / 3), np.float32(np.pi), np.float32(1e-7)]  # not round numbers
            store.add(cid, kp, w, h)
            arrays[cid] = kp
    return arrays


@pytest.fixture
def exported(tmp_path):
    clips = {"v1_0001": (1, 8, 640, 480), "v1_0002": (2, 5, 640, 480), "v2_0001": (1, 12, 320, 240),
             "v3_0001": (1, 3, 100, 50)}
    arrays = _store(tmp_path / "kp.h5", clips)
    manifest = pd.DataFrame({
        "clip_id": list(clips), "label": [3, 0, 31, 7], "split": ["train", "train", "test", np.nan],
        "width": [c[2] for c in clips.values()], "height": [c[3] for c in clips.values()],
        "video_id": ["v1", "v1", "v2", "v3"]})
    data = export_pickle(tmp_path / "kp.h5", manifest, tmp_path / "out" / "skel.pkl")
    return tmp_path, clips, arrays, manifest, data


def test_export_matches_the_pyskl_format(exported):
    tmp_path, clips, arrays, manifest, data = exported
    with open(tmp_path / "out" / "skel.pkl", "rb") as f:
        loaded = pickle.load(f)
    assert set(loaded) == {"split", "annotations"}
    assert loaded["split"] == {"train": ["v1_0001", "v1_0002"], "test": ["v2_0001"]}
    assert [a["frame_dir"] for a in loaded["annotations"]] == list(clips)
    a = loaded["annotations"][1]
    assert a["label"] == 0 and a["img_shape"] == (480, 640) and a["original_shape"] == (480, 640)
    assert a["total_frames"] == 5
    assert a["keypoint"].dtype == np.float32 and a["keypoint"].shape == (2, 5, 17, 2)
    assert a["keypoint_score"].dtype == np.float32 and a["keypoint_score"].shape == (2, 5, 17)
    np.testing.assert_array_equal(a["keypoint"], arrays["v1_0002"][..., :2])
    assert not list((tmp_path / "out").glob(".*"))  # no temporary file left


def test_round_trip_is_exact(exported):
    tmp_path, clips, arrays, manifest, _ = exported
    got = import_pickle(tmp_path / "out" / "skel.pkl", tmp_path / "back.h5", layout="coco17")
    assert list(got.columns) == ["clip_id", "label", "split", "num_frames", "width", "height"]
    assert got.clip_id.tolist() == list(clips)
    assert got.label.tolist() == [3, 0, 31, 7]
    assert got.split.tolist() == ["train", "train", "test", "unassigned"]
    assert got.num_frames.tolist() == [c[1] for c in clips.values()]
    assert got.width.tolist() == manifest.width.tolist() and got.height.tolist() == manifest.height.tolist()
    with h5py.File(tmp_path / "back.h5") as h5:
        assert h5.attrs["layout"] == "coco17"
        for cid, kp in arrays.items():
            back = h5[f"clips/{cid}/keypoints"][()]
            assert back.dtype == np.float32 and back.tobytes() == kp.tobytes()
            assert (h5[f"clips/{cid}"].attrs["width"], h5[f"clips/{cid}"].attrs["height"]) == clips[cid][2:]
    # and export of the imported store gives the same pickle content
    again = export_pickle(tmp_path / "back.h5", got, tmp_path / "again.pkl")
    first = pickle.loads((tmp_path / "out" / "skel.pkl").read_bytes())
    assert again["split"] == first["split"]
    for a, b in zip(again["annotations"], first["annotations"]):
        assert a.keys() == b.keys()
        for k in a:
            if isinstance(a[k], np.ndarray):
                assert a[k].tobytes() == b[k].tobytes()
            else:
                assert a[k] == b[k]


def test_export_missing_clip_names_store(tmp_path):
    _store(tmp_path / "kp.h5", {"a": (1, 2, 10, 10)})
    manifest = pd.DataFrame({"clip_id": ["a", "zz"], "label": [0, 1], "split": ["train", "test"]})
    with pytest.raises(InputError, match=r"kp\.h5.*'zz'"):
        export_pickle(tmp_path / "kp.h5", manifest, tmp_path / "x.pkl")
    assert not (tmp_path / "x.pkl").exists()


def _ann(cid="c1", V=17, T=4, M=1, **kw):
    a = {"frame_dir": cid, "label": 2, "img_shape": (48, 64), "original_shape": (48, 64), "total_frames": T,
         "keypoint": np.ones((M, T, V, 2), np.float32), "keypoint_score": np.ones((M, T, V), np.float32)}
    a.update(kw)
    return a


def _write(path, obj):
    with open(path, "wb") as f:
        pickle.dump(obj, f)
    return path


@pytest.mark.parametrize("obj, problem", [
    ([_ann()], "expected a dict"),
    ({"annotations": [_ann()]}, "lacks key 'split'"),
    ({"split": {}}, "lacks key 'annotations'"),
    ({"split": {}, "annotations": [_ann(keypoint_score=np.ones((1, 4, 16), np.float32))]},
     r"keypoint_score has shape \(1, 4, 16\)"),
    ({"split": {}, "annotations": [_ann(keypoint=np.ones((4, 17, 2), np.float32))]}, "keypoint has shape"),
    ({"split": {}, "annotations": [{k: v for k, v in _ann().items() if k != "keypoint"}]}, "missing key 'keypoint'"),
    ({"split": {}, "annotations": [{k: v for k, v in _ann().items() if k != "frame_dir"}]}, "missing key 'frame_dir'"),
    ({"split": {}, "annotations": [_ann(), _ann()]}, "appears twice"),
    ({"split": {}, "annotations": [_ann(total_frames=9)]}, "total_frames 9"),
    ({"split": {}, "annotations": [_ann(label="x")]}, "not an integer"),
    ({"split": {"a": ["c1"], "b": ["c1"]}, "annotations": [_ann()]}, "splits 'a' and 'b'"),
])
def test_bad_pickles(tmp_path, obj, problem):
    path = _write(tmp_path / "bad.pkl", obj)
    with pytest.raises(InputError, match=problem) as e:
        import_pickle(path, tmp_path / "out.h5")
    assert str(path) in str(e.value)
    assert not (tmp_path / "out.h5").exists()


def test_joint_count_must_match_layout(tmp_path):
    path = _write(tmp_path / "ntu.pkl", {"split": {}, "annotations": [_ann(V=25)]})
    with pytest.raises(InputError, match=r"ntu\.pkl.*25 joints.*'coco17' has 17"):
        import_pickle(path, tmp_path / "out.h5", layout="coco17")
    got = import_pickle(path, tmp_path / "out.h5", layout="body25")
    assert got.num_frames.tolist() == [4]
    with h5py.File(tmp_path / "out.h5") as h5:
        assert h5.attrs["layout"] == "body25"


def test_not_a_pickle_and_unsafe_pickle(tmp_path):
    (tmp_path / "junk.pkl").write_bytes(b"hello")
    with pytest.raises(InputError, match=r"junk\.pkl.*not a readable skeleton pickle"):
        import_pickle(tmp_path / "junk.pkl", tmp_path / "out.h5")
    _write(tmp_path / "evil.pkl", {"split": {}, "annotations": [], "x": print})
    with pytest.raises(InputError, match=r"evil\.pkl: refused: it references builtins\.print"):
        import_pickle(tmp_path / "evil.pkl", tmp_path / "out.h5")
    with pytest.raises(InputError, match=r"nope\.pkl.*not found"):
        import_pickle(tmp_path / "nope.pkl", tmp_path / "out.h5")


def test_split_selection_and_score_in_keypoint(tmp_path):
    anns = [_ann("c1"), _ann("c2", keypoint=np.full((1, 4, 17, 3), 0.5, np.float64))]
    del anns[1]["keypoint_score"]
    path = _write(tmp_path / "ntu.pkl", {"split": {"xsub_train": ["c1"], "xsub_val": ["c2"],
                                                   "xview_train": ["c1", "c2"], "extra": ["gone"]},
                                         "annotations": anns})
    got = import_pickle(path, tmp_path / "out.h5", splits=["xsub_train", "xsub_val"])
    assert got.split.tolist() == ["xsub_train", "xsub_val"]
    with h5py.File(tmp_path / "out.h5") as h5:
        assert (h5["clips/c2/keypoints"][()] == np.float32(0.5)).all()
    with pytest.raises(InputError, match="no split"):
        import_pickle(path, tmp_path / "o2.h5", splits=["train"])


def test_openpose_person_missing_parts_and_bad_lengths():
    kp = openpose_person({"pose_keypoints_2d": [1.0] * 75, "hand_left_keypoints_2d": []})
    assert kp.shape == (137, 3) and kp[:25].all() and not kp[25:].any()
    with pytest.raises(InputError, match="f.json: face_keypoints_2d has 9 values"):
        openpose_person({"pose_keypoints_2d": [1.0] * 75, "face_keypoints_2d": [0.0] * 9}, source="f.json")
