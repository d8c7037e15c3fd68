"""The store formats: each writer's output reads back through its reader, and a store of another
kind, another format version, or no mgpipe store at all is refused with one line naming it."""

import h5py
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from mgpipe.formats import frames, heatmaps, keypoints, scores
from mgpipe.io import InputError
from mgpipe.layouts import COCO17


def _keypoints(tmp_path):
    kp = np.zeros((1, 4, 17, 3), np.float32)
    kp[..., 0], kp[..., 1], kp[..., 2] = np.linspace(100, 300, 17), np.linspace(50, 250, 17), 0.9
    with keypoints.writer(tmp_path / "kp.h5", COCO17, source="test") as store:
        store.add("c0", kp, 640, 480)
    return tmp_path / "kp.h5", kp


def test_keypoint_store_round_trip_and_the_box_it_owns(tmp_path):
    path, kp = _keypoints(tmp_path)
    store = keypoints.Reader(path)
    got, w, h = store.clip("c0")
    np.testing.assert_array_equal(got, kp)
    assert (w, h) == (640, 480) and store.layout == COCO17 and store.clip_ids() == ["c0"]
    np.testing.assert_allclose(store.box("c0", 0.25), keypoints.compact_box(kp, 640, 480, 0.25))
    assert keypoints.channels(path) == (17, len(COCO17.limbs))


def test_frame_store_round_trip(tmp_path):
    img = Image.new("RGB", (32, 24), (200, 30, 60))
    with frames.writer(tmp_path / "f.h5", max_side=32, jpeg_quality=90) as store:
        store.add("c0", [frames.encode_jpeg(img, 90)] * 3, 32, 24, scale=0.5)
    reader = frames.Reader(tmp_path / "f.h5")
    ds, attrs = reader.clip("c0")
    assert len(ds) == 3 and attrs == {"width": 32, "height": 24, "scale": 0.5}
    (back,) = reader.frames("c0", [2])
    assert np.abs(np.asarray(back, np.float32) - [200, 30, 60]).mean() < 6
    with pytest.raises(InputError, match="no frames for clip 'c9'"):
        reader.clip("c9")


def test_heatmap_store_round_trip(tmp_path):
    joint = np.full((2, 17, 4, 4), 7, np.uint8)
    with heatmaps.writer(tmp_path / "h.h5", layout=COCO17, size=(4, 4), sigma=0.6, padding=0.25,
                         limbs=False) as store:
        store.add("c0", [0, 0, 10, 10], joint, None)
    reader = heatmaps.Reader(tmp_path / "h.h5")
    np.testing.assert_array_equal(reader.volume("c0"), joint)
    assert reader.settings["num_limbs"] == 0 and reader.box("c0").tolist() == [0, 0, 10, 10]


@pytest.mark.parametrize("reader", [keypoints.Reader, frames.Reader, heatmaps.Reader])
def test_foreign_old_and_unmarked_stores_are_one_line(tmp_path, reader):
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as h5:
        h5.attrs.update(kind="scores-of-something", format_version=1)
    with pytest.raises(InputError, match=r"other\.h5: a scores-of-something store, not a"):
        reader(other).h5
    old = tmp_path / "old.h5"
    with h5py.File(old, "w") as h5:
        h5.attrs.update(kind=reader.KIND, format_version=reader.VERSION + 1)
    with pytest.raises(InputError, match=rf"old\.h5: \w+ store format {reader.VERSION + 1}, this mgpipe reads"):
        reader(old).h5
    bare = tmp_path / "bare.h5"
    h5py.File(bare, "w").close()
    with pytest.raises(InputError, match=r"bare\.h5: not a \w+ store of mgpipe"):
        reader(bare).h5
    text = tmp_path / "text.h5"
    text.write_text("not hdf5")
    with pytest.raises(InputError, match=r"text\.h5: not a readable"):
        reader(text).h5
    with pytest.raises(InputError, match="store not found"):
        reader(tmp_path / "absent.h5").h5


def test_score_file_round_trip_and_hostile_files(tmp_path):
    rows = pd.DataFrame({"clip_id": ["a", "b"], "split": ["test", "test"], "label": [0, 1]})
    probs = {"rgb": np.array([[0.9, 0.1], [0.2, 0.8]]), "pose": np.array([[0.6, 0.4], [0.5, 0.5]])}
    classes = [{"label_id": 7, "name": "nod, twice"}, {"label_id": 99, "name": "a:b $x$"}]
    scores.write(tmp_path / "s.csv", [scores.table(rows, probs, classes)])
    back = scores.read(tmp_path / "s.csv")
    assert scores.streams_of(back) == ["rgb", "pose"]
    assert scores.class_table(back) == [(7, "nod, twice"), (99, "a:b $x$")]
    np.testing.assert_allclose(scores.stream_probs(back, "pose").numpy(), probs["pose"], atol=1e-6)
    bad = {
        "no column 'label'": "clip_id,split,rgb:0:1:a\na,test,0.5\n",
        "no <stream>:<output>": "clip_id,split,label\na,test,0\n",
        "output columns": "clip_id,split,label,rgb:0:1:a,rgb:2:2:b\na,test,0,0.5,0.5\n",
        "different class tables": "clip_id,split,label,rgb:0:1:a,pose:0:2:a\na,test,0,0.5,0.5\n",
        "format 1": "clip_id,split,label,rgb:0\na,test,0,0.5\n",
        "non-numeric": "clip_id,split,label,rgb:0:1:a\na,test,0,high\n",
        "finite and within": "clip_id,split,label,rgb:0:1:a\na,test,0,7\n",
    }
    for problem, text in bad.items():
        (tmp_path / "bad.csv").write_text(text)
        with pytest.raises(InputError, match=problem):
            scores.read(tmp_path / "bad.csv")
