"""Skeleton pickles, OpenPose frames and manifests are untrusted input (issue 18, cases 3, 7, 8).

Hostile files are made from the real pickles (../shared/data: kard2d.pkl, florence2d.pkl,
utkinect2d.pkl) and the real iMiGUE OpenPose frames. Each one ends in one InputError line
naming the file (and the annotation), never a traceback, a silent cast or unbounded memory;
the memory cases run the real command in a subprocess under an address-space limit.
"""

import json
import logging
import os
import pickle
import re
import resource
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from test_reliability import BASE_CONFIG, assert_refused, run_main, write_yaml

from mgpipe.formats import checkpoints
from mgpipe.io import InputError, read_csv_table
from mgpipe.sources.skeleton_io import (
    LIST_VALUES_BUDGET,
    OPENPOSE_MAX_BYTES,
    load_pickle_annotations,
    read_pickle_dataset,
)
from mgpipe.stages.clips import read_manifest
from mgpipe.stages.pose import read_openpose_frame

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
KARD, FLORENCE, UTKINECT = (SHARED / f"{n}2d.pkl" for n in ("kard", "florence", "utkinect"))
OPENPOSE_298 = SHARED / "imigue_openpose_excerpt" / "298"
# `mgpipe clips` / `mgpipe pose` on a small pickle need ~0.1 GB; 1 GiB of address space leaves
# room to spare and is far below what any of the hostile files below would grow to.
CHILD_ADDRESS_SPACE = 2**30
PYSKL = {"mode": "pose", "dataset": {"kind": "pyskl", "split_map": {"xsub_train": "train", "xsub_val": "test"},
                                     "subject_from": "_s(\\d+)_", "val_fraction": 0},
         "pose": {"backend": "pickle", "pickle_layout": "openni15", "layout": "openni15"}}


@pytest.fixture(scope="module")
def kard():
    """The clips of KARD's first two actions (60 annotations, all ten subjects), loaded with the
    plain unpickler (trusted test data)."""
    if not KARD.is_file():
        pytest.skip(f"real data {KARD} not found (../shared/data beside the checkout)")
    data = pickle.loads(KARD.read_bytes())
    keep = [a for a in data["annotations"] if a["label"] < 2]
    ids = {a["frame_dir"] for a in keep}
    return {"split": {k: [c for c in v if c in ids] for k, v in data["split"].items()}, "annotations": keep}


def _copy(data):
    return pickle.loads(pickle.dumps(data))


def _write(path: Path, data, protocol=4) -> Path:
    path.write_bytes(pickle.dumps(data, protocol=protocol))
    return path


def _refused(path: Path, match: str, layout="openni15") -> str:
    """The pickle is refused by the dataset reader in one line naming the file and `match`."""
    with pytest.raises(InputError) as e:
        read_pickle_dataset(path, layout)
    message = str(e.value)
    assert message.startswith(f"{path}: ") and "\n" not in message, message
    assert re.search(match, message), message
    return message


def _clips(capsys, tmp_path, pickle_path, config=None):
    cfg = write_yaml(tmp_path / "pyskl.yaml", config or PYSKL)
    return run_main(capsys, "clips", "--skeletons", pickle_path, "--config", *BASE_CONFIG, cfg,
                    "--out", tmp_path / "clips.csv", "--classes-out", tmp_path / "classes.csv")


def _splice(data, put, opcodes: bytes) -> bytes:
    """`data` pickled with one value (placed by `put(data, marker)`) replaced by `opcodes`, pickle
    opcodes that push one object pickle.dumps would not write."""
    marker = "SPLICE-MARKER-7f3a"
    put(data, marker)
    raw = pickle.dumps(data, protocol=2)   # protocol 2: no frames whose lengths would change
    token = b"X" + struct.pack("<I", len(marker)) + marker.encode()
    assert raw.count(token) == 1
    return raw.replace(token, opcodes)


def _deep(data, put, depth=100_000) -> bytes:
    """A list nested `depth` deep in place of one value (pickle.dumps would recurse too deep)."""
    return _splice(data, put, b"]" * depth + b"a" * (depth - 1))


def _shared_reference_bomb(data, annotation=0, persons=2000, frames=100_000):
    """Annotation `annotation`'s keypoints as nested lists sharing one real frame: ~0.4 MB of
    pickle that np.asarray would expand to persons x frames x 15 x 2 values (48 GB as float64)."""
    ann = data["annotations"][annotation]
    frame = [[float(x), float(y)] for x, y in ann["keypoint"][0, 0]]
    ann["keypoint"] = [[frame] * frames] * persons
    ann["keypoint_score"] = [[[1.0] * len(frame)] * frames] * persons
    return data


def _run_limited(*argv):
    """The real `mgpipe` command in a fresh interpreter under CHILD_ADDRESS_SPACE."""
    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (CHILD_ADDRESS_SPACE, CHILD_ADDRESS_SPACE))
    return subprocess.run([sys.executable, "-m", "mgpipe", "-q", *map(str, argv)], capture_output=True,
                          text=True, timeout=300, preexec_fn=limit)


# ----------------------------------------------------------------------------- memory (case 3)
@pytest.mark.parametrize("command", ["clips", "pose"])
def test_shared_reference_bomb_real_cli(command, kard, tmp_path):
    """Issue case 3: the nested-list bomb is counted before conversion and refused in one line,
    through the real command, within 1 GiB of address space (it asks for 48 GB)."""
    bomb = _write(tmp_path / "bomb.pkl", _shared_reference_bomb(_copy(kard)))
    assert bomb.stat().st_size < 2 * 2**20
    cfg = write_yaml(tmp_path / "pyskl.yaml", PYSKL)
    if command == "clips":
        argv = ["clips", "--skeletons", bomb, "--config", *BASE_CONFIG, cfg, "--out",
                tmp_path / "clips.csv", "--classes-out", tmp_path / "classes.csv"]
    else:  # the pose stage on a manifest made from the real pickle
        good = _write(tmp_path / "good.pkl", kard)
        assert _run_limited("clips", "--skeletons", good, "--config", *BASE_CONFIG, cfg, "--out",
                            tmp_path / "clips.csv", "--classes-out", tmp_path / "classes.csv").returncode == 0
        argv = ["pose", "--manifest", tmp_path / "clips.csv", "--skeletons", bomb, "--config",
                *BASE_CONFIG, cfg, "--out", tmp_path / "keypoints.h5"]
    proc = _run_limited(*argv)
    assert "Traceback" not in proc.stderr and "MemoryError" not in proc.stderr, proc.stderr[-2000:]
    line = assert_refused(proc.returncode, proc.stderr, command, bomb)
    assert "annotation 0 ('a01_s01_e01'): keypoint expands to 6e+09 values, beyond the file's budget" in line
    assert not (tmp_path / ("clips.csv" if command == "clips" else "keypoints.h5")).exists()


@pytest.mark.parametrize("opcodes", [
    b"\x80\x04]r" + struct.pack("<I", 2**30) + b".",        # LONG_BINPUT: the C unpickler's memo, 16 GB
    b"\x80\x05\x96" + struct.pack("<Q", 2**33) + b".",      # BYTEARRAY8: Python's zeroes 8 GB
    b"\x80\x04\x8e" + struct.pack("<Q", 2**40) + b"abc.",   # BINBYTES8
    b"\x80\x04\x95" + struct.pack("<Q", 2**40) + b"N.",     # FRAME
], ids=["memo index", "bytearray8", "binbytes8", "frame"])
def test_declared_size_bombs_real_cli(kard, tmp_path, opcodes):
    """A few bytes of pickle declaring gigabytes: refused in one line within 1 GiB."""
    bomb = tmp_path / "declared.pkl"
    bomb.write_bytes(opcodes)
    cfg = write_yaml(tmp_path / "pyskl.yaml", PYSKL)
    proc = _run_limited("clips", "--skeletons", bomb, "--config", *BASE_CONFIG, cfg, "--out",
                        tmp_path / "clips.csv", "--classes-out", tmp_path / "classes.csv")
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    line = assert_refused(proc.returncode, proc.stderr, "clips", bomb)
    # refused for what it holds, not because an allocation failed under the limit
    assert "MemoryError" not in line and ("expected a dict" in line or "not a readable skeleton pickle" in line)


def test_array_reconstructed_without_its_data(kard, tmp_path):
    """numpy's _reconstruct (whitelisted: every pickled array uses it) can declare an array of any
    shape without its data; converting it would fill 2.4 GB. Counted against the budget first."""
    shape = (200, 100_000, 15, 2)
    opcodes = (b"cnumpy._core.multiarray\n_reconstruct\ncnumpy\nndarray\n(" +
               b"".join(b"J" + struct.pack("<i", n) for n in shape) + b"tX\x02\x00\x00\x00f4\x87R")
    path = tmp_path / "empty.pkl"
    path.write_bytes(_splice(_copy(kard), lambda d, m: d["annotations"][1].__setitem__("keypoint", m), opcodes))
    _refused(path, r"annotation 1 \('a01_s01_e02'\): keypoint expands to 6e\+08 values, beyond the file's budget")


def test_budget_counts_shared_lists_but_real_lists_load(kard, tmp_path):
    """Keypoints given as plain lists (tolist) load as the arrays did; the count is of values,
    so a modest sharing ([[0, 0]] * 15 frames) passes."""
    data = _copy(kard)
    for ann in data["annotations"]:
        ann["keypoint"], ann["keypoint_score"] = ann["keypoint"].tolist(), ann["keypoint_score"].tolist()
    data["annotations"][1]["keypoint"][0][0] = [[0.0, 0.0]] * 15
    data["annotations"][1]["keypoint_score"][0][0] = [0.0] * 15
    got = load_pickle_annotations(_write(tmp_path / "lists.pkl", data), "openni15")
    for ann in kard["annotations"][2:]:
        np.testing.assert_array_equal(got[ann["frame_dir"]]["keypoint"][..., :2], ann["keypoint"])
    assert LIST_VALUES_BUDGET >= 2**24


# ----------------------------------------------------------------------------- quiet wrong answers (case 7)
@pytest.mark.parametrize("label, shown", [(2.7, "2.7"), (True, "True"), (np.float64(3.0), "np.float64(3.0)"),
                                          (1e30, "1e+30"), (10**30, str(10**30)), ("4", "'4'")])
def test_labels_must_be_integers(kard, tmp_path, label, shown):
    data = _copy(kard)
    data["annotations"][3]["label"] = label
    _refused(_write(tmp_path / "label.pkl", data),
             re.escape(f"annotation 3 ('a01_s02_e01'): label {shown} is not an integer"))


def test_numpy_integer_labels_still_load(kard, tmp_path):
    data = _copy(kard)
    data["annotations"][3]["label"] = np.int16(1)
    _, checked, _ = read_pickle_dataset(_write(tmp_path / "np.pkl", data), "openni15")
    assert checked["a01_s02_e01"]["label"] == 1


@pytest.mark.parametrize("as_list", [False, True])
def test_complex_keypoints_are_refused(kard, tmp_path, as_list):
    data = _copy(kard)
    kp = data["annotations"][5]["keypoint"].astype(np.complex64) + 1j
    data["annotations"][5]["keypoint"] = kp.tolist() if as_list else kp
    _refused(_write(tmp_path / "complex.pkl", data), r"annotation 5 \('a01_s02_e03'\): keypoint .*complex")


@pytest.mark.parametrize("dtype", [object, bool, "U8", "V8"])
def test_keypoint_arrays_of_other_dtypes_are_refused(kard, tmp_path, dtype):
    data = _copy(kard)
    data["annotations"][0]["keypoint"] = data["annotations"][0]["keypoint"].astype(dtype)
    _refused(_write(tmp_path / "dtype.pkl", data), r"annotation 0 \('a01_s01_e01'\): keypoint is an array of")


def test_percent_scores_are_rescaled_with_a_note(kard, tmp_path, caplog):
    data = _copy(kard)
    for ann in data["annotations"]:
        ann["keypoint_score"] = ann["keypoint_score"] * 100
    path = _write(tmp_path / "percent.pkl", data)
    with caplog.at_level(logging.WARNING, logger="mgpipe"):
        _, checked, _ = read_pickle_dataset(path, "openni15")
    assert f"{path}: keypoint scores run up to 100" in caplog.text and "divided by 100" in caplog.text
    for ann in kard["annotations"]:
        np.testing.assert_allclose(checked[ann["frame_dir"]]["keypoint"][..., 2], ann["keypoint_score"])


def test_scores_a_little_above_one_are_clipped_with_a_note(kard, tmp_path, caplog):
    data = _copy(kard)
    data["annotations"][7]["keypoint_score"] = data["annotations"][7]["keypoint_score"] * 1.03
    with caplog.at_level(logging.WARNING, logger="mgpipe"):
        _, checked, _ = read_pickle_dataset(_write(tmp_path / "hrnet.pkl", data), "openni15")
    assert "taken as at most 1" in caplog.text
    assert max(float(a["keypoint"][..., 2].max()) for a in checked.values()) == 1.0


@pytest.mark.parametrize("factor, match", [(250, "keypoint score 250 lies outside"),
                                           (-1, "keypoint score -1 is negative")])
def test_scores_outside_any_scale_are_refused(kard, tmp_path, factor, match):
    data = _copy(kard)
    data["annotations"][9]["keypoint_score"] = data["annotations"][9]["keypoint_score"] * factor
    _refused(_write(tmp_path / "scores.pkl", data), r"annotation 9 \('a01_s04_e01'\): " + match)


def test_ids_na_null_none_stay_strings_from_pickle_to_keypoints(kard, tmp_path, capsys):
    """Case 7: frame_dirs "NA", "null", "None" (pandas' default NaN words) go through clips, the
    manifest read back, and the pose stage, as text."""
    data = _copy(kard)
    names = {"a01_s01_e01": "NA", "a01_s02_e01": "null", "a01_s03_e01": "None", "a01_s04_e01": "nan"}
    for ann in data["annotations"]:
        ann["frame_dir"] = names.get(ann["frame_dir"], ann["frame_dir"])
    data["split"] = {k: [names.get(c, c) for c in v] for k, v in data["split"].items()}
    path = _write(tmp_path / "na.pkl", data)
    config = {**PYSKL, "dataset": {**PYSKL["dataset"], "subject_from": None}}
    rc, err = _clips(capsys, tmp_path, path, config)
    assert rc == 0, err
    manifest = read_manifest(tmp_path / "clips.csv")
    assert set(names.values()) <= set(manifest.video_id)
    assert manifest.video_id.map(type).eq(str).all() and manifest.width.isna().all()
    cfg = write_yaml(tmp_path / "pose.yaml", config)
    rc, err = run_main(capsys, "pose", "--manifest", tmp_path / "clips.csv", "--skeletons", path,
                       "--config", *BASE_CONFIG, cfg, "--out", tmp_path / "keypoints.h5")
    assert rc == 0, err
    with h5py.File(tmp_path / "keypoints.h5") as h5:
        na = manifest.clip_id[manifest.video_id == "NA"].item()
        assert h5[f"clips/{na}/keypoints"].shape[1] == kard["annotations"][0]["total_frames"]


def test_label_table_ids_na_null_none_through_clips_and_pose(tmp_path, capsys):
    """A generic label CSV with videos NA, null, None and their real OpenPose frames: clips,
    the manifest read back, the pose stage: ids stay text everywhere."""
    frames = sorted(OPENPOSE_298.glob("*_keypoints.json"))
    if not frames:
        pytest.skip(f"real data {OPENPOSE_298} not found")
    videos = ["NA", "null", "None"]
    for v in videos:
        (tmp_path / "skeletons" / v).mkdir(parents=True)
        for i, f in enumerate(frames):
            shutil.copy(f, tmp_path / "skeletons" / v / f"{v}_{i:012d}_keypoints.json")
    labels = tmp_path / "labels.csv"
    labels.write_text("video,start,end,label,subject,split\nNA,0,2,1,1,train\nnull,0,1,2,2,train\n"
                      "None,1,2,1,3,test\nNA,1,2,2,1,train\n")
    cfg = write_yaml(tmp_path / "csv.yaml", {"mode": "pose", "dataset": {"kind": "csv", "val_fraction": 0,
                                                                        "class_names": ["NA", "null"]}})
    rc, err = run_main(capsys, "clips", "--labels", labels, "--skeletons", tmp_path / "skeletons",
                       "--config", *BASE_CONFIG, cfg, "--out", tmp_path / "clips.csv",
                       "--classes-out", tmp_path / "classes.csv")
    assert rc == 0, err
    manifest = read_manifest(tmp_path / "clips.csv")
    assert manifest.video_id.tolist() == ["NA", "null", "None", "NA"]
    assert manifest.clip_id.tolist()[:3] == ["NA_000000_000002", "null_000000_000001", "None_000001_000002"]
    assert [c["name"] for c in checkpoints.class_table(tmp_path / "classes.csv")] == ["NA", "null"]
    assert manifest.class_name.tolist() == ["NA", "null", "NA", "null"]
    assert pd.api.types.is_numeric_dtype(manifest.start_frame) and manifest.width.isna().all()
    rc, err = run_main(capsys, "pose", "--manifest", tmp_path / "clips.csv", "--skeletons",
                       tmp_path / "skeletons", "--config", *BASE_CONFIG, cfg, "--out", tmp_path / "kp.h5")
    assert rc == 0, err
    with h5py.File(tmp_path / "kp.h5") as h5:
        assert sorted(h5["clips"]) == sorted(manifest.clip_id)


def test_csv_table_reads_ids_as_written(tmp_path):
    table = tmp_path / "scores.csv"
    table.write_text("clip_id,split,label,p\nNA,test,1,0.5\nnull,,2,\n007,None,3,0.25\n")
    got = read_csv_table(table, ("clip_id", "split"), "score file")
    assert got.clip_id.tolist() == ["NA", "null", "007"] and got.split.tolist() == ["test", "", "None"]
    assert got.label.tolist() == [1, 2, 3] and np.isnan(got.p[1]) and got.p[2] == 0.25
    with pytest.raises(InputError, match=re.escape(f"{tmp_path / 'none.csv'}: score file not found")):
        read_csv_table(tmp_path / "none.csv", ("clip_id",), "score file")


# ----------------------------------------------------------------------------- tracebacks (case 8)
@pytest.mark.parametrize("key, value, match", [
    ("total_frames", None, "total_frames None does not match keypoint's 86 frames"),
    ("total_frames", "abc", "total_frames 'abc' does not match"),
    ("total_frames", 86.5, "total_frames 86.5 does not match"),
    ("img_shape", (float("inf"), 640), r"img_shape \(inf, 640\) is not \(height, width\)"),
    ("img_shape", (1e30, 640), r"img_shape \(1e\+30, 640\) is not a frame size"),
    ("img_shape", (480, 0), r"img_shape \(480, 0\) is not a frame size"),
    ("img_shape", "480x640", r"img_shape '480x640' is not \(height, width\)"),
    ("frame_dir", ["a"], r"annotation 0: frame_dir \['a'\] is not a string"),
    ("img_shape", np.array(480), r"img_shape array\(480\) is not \(height, width\)"),
    ("original_shape", np.array([480.0, 640.0]), None),   # whole numbers as floats: read
])
def test_bad_annotation_values_are_one_line(kard, tmp_path, key, value, match):
    data = _copy(kard)
    data["annotations"][0][key] = value
    path = _write(tmp_path / "value.pkl", data)
    if match is None:
        data["annotations"][0].pop("img_shape")
        _, checked, _ = read_pickle_dataset(_write(tmp_path / "value.pkl", data), "openni15")
        assert (checked["a01_s01_e01"]["height"], checked["a01_s01_e01"]["width"]) == (480, 640)
    else:
        _refused(path, match)


@pytest.mark.parametrize("where", ["label", "frame_dir", "img_shape", "keypoint", "split entry", "annotations"])
def test_deep_nesting_is_one_line(kard, tmp_path, where):
    """A list nested 100000 deep (pickle.dumps cannot even write one) where a value should be."""
    def put(data, marker):
        if where == "split entry":
            data["split"]["xsub_train"][0] = marker
        elif where == "annotations":
            data["annotations"] = marker
        else:
            data["annotations"][0][where] = marker
    path = tmp_path / "deep.pkl"
    path.write_bytes(_deep(_copy(kard), put))
    _refused(path, {"label": "label .* is not an integer", "frame_dir": "frame_dir .* is not a string",
                    "img_shape": "img_shape .* is not", "keypoint": "keypoint is nested deeper",
                    "split entry": "split 'xsub_train' lists", "annotations": "annotation 0 is a list, expected a dict"}[where])


def test_deep_nesting_through_the_cli(kard, tmp_path, capsys):
    path = tmp_path / "deep.pkl"
    path.write_bytes(_deep(_copy(kard), lambda d, m: d["annotations"][2].__setitem__("label", m)))
    rc, err = _clips(capsys, tmp_path, path)
    line = assert_refused(rc, err, "clips", path)
    assert "annotation 2 ('a01_s01_e03'): label [[[...]]] is not an integer" in line
    assert "Traceback" not in err and not (tmp_path / "clips.csv").exists()


def test_label_file_linked_to_dev_zero(tmp_path):
    from mgpipe.sources.label_tables import read_labels

    (tmp_path / "Sample0001").mkdir()
    link = tmp_path / "Sample0001" / "Sample0001_finelabels.csv"
    link.symlink_to("/dev/zero")
    with pytest.raises(InputError, match=re.escape(f"{link}: label file is not a regular file")):
        read_labels("smg", tmp_path)
    with pytest.raises(InputError, match=re.escape(f"{link}: label CSV is not a regular file")):
        read_labels("csv", link)


def test_sparse_pickle_beyond_memory(tmp_path, capsys):
    """A sparse file declaring more bytes than half the machine's memory is not read."""
    huge = tmp_path / "sparse.pkl"
    with open(huge, "wb") as f:
        f.truncate(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2 + 1)
    rc, err = _clips(capsys, tmp_path, huge)
    assert "such a file can plausibly hold" in assert_refused(rc, err, "clips", huge)


def test_pickle_linked_to_dev_zero(tmp_path, capsys):
    link = tmp_path / "zero.pkl"
    link.symlink_to("/dev/zero")
    rc, err = _clips(capsys, tmp_path, link)
    assert "not a regular file" in assert_refused(rc, err, "clips", link)


# ----------------------------------------------------------------------------- OpenPose frames
def _frame_copy(tmp_path) -> Path:
    real = sorted(OPENPOSE_298.glob("*_keypoints.json"))
    if not real:
        pytest.skip(f"real data {OPENPOSE_298} not found")
    (tmp_path / "298").mkdir(exist_ok=True)
    return shutil.copy(real[0], tmp_path / "298" / real[0].name)


@pytest.mark.parametrize("kind", ["dev zero", "fifo", "huge", "deep"])
def test_openpose_frame_that_cannot_be_read_whole(kind, tmp_path):
    target = Path(_frame_copy(tmp_path))
    target.unlink()
    if kind == "dev zero":
        target.symlink_to("/dev/zero")
    elif kind == "fifo":
        os.mkfifo(target)   # opening it for reading would wait for a writer forever
    elif kind == "huge":
        with open(target, "wb") as f:
            f.truncate(OPENPOSE_MAX_BYTES + 1)
    else:
        target.write_text("[" * 200_000 + "]" * 200_000)
    with pytest.raises(InputError) as e:
        read_openpose_frame(target)
    message = str(e.value)
    assert message.startswith(f"{target}: ") and "\n" not in message
    assert {"dev zero": "not a regular file", "fifo": "not a regular file", "huge": "more than the",
            "deep": "not an OpenPose keypoint file"}[kind] in message


def test_openpose_dev_zero_at_the_pose_stage(tmp_path, capsys):
    """Through `mgpipe pose`: a frame file linked to /dev/zero is one line naming it."""
    frame = Path(_frame_copy(tmp_path))
    manifest = tmp_path / "clips.csv"
    pd.DataFrame([{"clip_id": "298_001000_001001", "video_id": "298", "video": "", "start_frame": 1000,
                   "end_frame": 1001, "num_frames": 2, "label": 0, "label_id": 1, "class_name": "a",
                   "subject_id": 1, "split": "train", "width": 1280, "height": 720, "fps": 25}]).to_csv(manifest, index=False)
    zero = frame.parent / frame.name.replace("1000", "1001")
    zero.symlink_to("/dev/zero")
    rc, err = run_main(capsys, "pose", "--manifest", manifest, "--skeletons", tmp_path, "--config",
                       *BASE_CONFIG, "--out", tmp_path / "kp.h5")
    assert "not a regular file" in assert_refused(rc, err, "pose", zero)
    assert not (tmp_path / "kp.h5").exists()


# ----------------------------------------------------------------------------- fuzz ("Must show")
# Seeded mutations of the three real pickles (annotation fields' types, values, shapes and dtypes,
# dropped keys, nesting, shared-reference lists; then raw bytes of the pickle stream) and of the
# real OpenPose frames (values, types, lengths; raw bytes). Each mutated file either reads or
# ends in one InputError line naming the file: never another exception, never above the memory
# bound (the address space this process may grow by while fuzzing).
FUZZ_SEED = 18
FUZZ_PICKLES, FUZZ_PICKLE_BYTES, FUZZ_JSON = 400, 300, 300
FUZZ_HEADROOM = 2**30
FLORENCE_LAYOUT = {"name": "florence15", "limbs": [], "joints": [
    "head", "neck", "spine", "left_shoulder", "left_elbow", "left_wrist", "right_shoulder",
    "right_elbow", "right_wrist", "left_hip", "left_knee", "left_ankle", "right_hip", "right_knee",
    "right_ankle"]}
KEYS = ("frame_dir", "label", "img_shape", "original_shape", "total_frames", "keypoint", "keypoint_score")


def _address_space() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmSize in /proc/self/status")


class _MemoryBound:
    """RLIMIT_AS at the current address space + FUZZ_HEADROOM for the block, restored after."""

    def __enter__(self):
        self.saved = resource.getrlimit(resource.RLIMIT_AS)
        bound = _address_space() + FUZZ_HEADROOM
        if self.saved[1] != resource.RLIM_INFINITY:
            bound = min(bound, self.saved[1])
        resource.setrlimit(resource.RLIMIT_AS, (bound, self.saved[1]))

    def __exit__(self, *exc):
        resource.setrlimit(resource.RLIMIT_AS, self.saved)


def _real_sets():
    sets = [(p, lay) for p, lay in ((KARD, "openni15"), (FLORENCE, FLORENCE_LAYOUT), (UTKINECT, "kinect_v1_20"))
            if p.is_file()]
    if len(sets) < 3:
        pytest.skip("real pickles not found in ../shared/data")
    return [(pickle.loads(p.read_bytes()), lay) for p, lay in sets]


def _hostile_value(rng, ann):
    kp, score = ann["keypoint"], ann.get("keypoint_score")
    score = score if isinstance(score, np.ndarray) and score.dtype.kind == "f" else kp[..., 0]
    values = [
        None, "abc", "", "NA", 2.7, True, 1e30, -1, 10**30, 10**5000, float("nan"), float("inf"), 1 + 2j,
        [], {}, (), [[[[]]]], "../x", "a/b", "x\n", np.array(5), np.float64(3.0), np.int64(2),
        (float("inf"), 640), (1e30, 1e30), (480, 640, 3), kp.astype(np.complex64), kp.astype(object),
        kp.astype(bool), kp.astype("U4"), kp.astype(np.float16), kp.astype(np.int32), kp[0], kp[..., 0],
        kp[None], kp.swapaxes(1, 2), kp[:, :0], kp[:, :, :3], kp.tolist(), kp * 1e30, kp * np.nan,
        score * 100, score - 2, score.tolist(),
        np.zeros((1, 2, 3, 4, 5), np.float32), kp.reshape(-1), [kp[0, 0].tolist()] * 3,
    ]
    return values[rng.integers(len(values))]


def _mutate_dataset(rng, data):
    """One to three random structural mutations of a (small) pickle dataset, in place."""
    anns = data["annotations"]
    for _ in range(rng.integers(1, 4)):
        op = rng.integers(11)
        ann = anns[rng.integers(len(anns))] if anns else {}
        key = KEYS[rng.integers(len(KEYS))]
        if op <= 2 and isinstance(ann, dict) and isinstance(ann.get("keypoint"), np.ndarray) \
                and ann["keypoint"].dtype.kind == "f":
            ann[key] = _hostile_value(rng, ann)
        elif op == 3 and isinstance(ann, dict):
            ann.pop(key, None)
        elif op == 4:
            data.pop(("split", "annotations")[rng.integers(2)], None)
        elif op == 5 and isinstance(ann, dict) and isinstance(ann.get("keypoint"), np.ndarray):
            # keypoints as lists of shared references, sometimes far beyond the budget
            frame = ann["keypoint"][0, 0].tolist()
            frames, persons = int(rng.choice([3, 1000, 10**6])), int(rng.choice([1, 2, 3000]))
            ann["keypoint"] = [[frame] * frames] * persons
            ann.pop("keypoint_score", None) if rng.random() < 0.5 else None
        elif op == 6 and isinstance(ann, dict) and key in ann:
            ann[key] = [ann[key]] if rng.random() < 0.5 else {"value": ann[key]}
        elif op == 7 and data.get("split"):
            name = list(data["split"])[rng.integers(len(data["split"]))]
            ids = data["split"][name]
            choice = rng.integers(4)
            if choice == 0 and ids:
                ids[rng.integers(len(ids))] = [None, 5, ["x"], "missing", b"x"][rng.integers(5)]
            elif choice == 1:
                data["split"][7] = ids
            elif choice == 2:
                data["split"][name] = "abc"
            else:
                data["split"]["xsub_val"] = list(ids)   # one clip in two splits
        elif op == 8 and anns:
            anns.append(_copy(anns[0]) if rng.random() < 0.5 else ann)   # a frame_dir twice
        elif op == 9 and anns:
            anns[rng.integers(len(anns))] = [None, "ann", [ann], 3][rng.integers(4)]
        elif op == 10:
            for a in anns:
                if isinstance(a, dict) and isinstance(a.get("keypoint_score"), np.ndarray):
                    a["keypoint_score"] = a["keypoint_score"] * float(rng.choice([100, 1.02, -1, 1e6, 0]))
    return data


def _small(rng, data, n):
    pick = sorted(rng.choice(len(data["annotations"]), size=n, replace=False))
    anns = [_copy(data["annotations"][i]) for i in pick]
    ids = {a["frame_dir"] for a in anns}
    return {"split": {k: [c for c in v if c in ids] for k, v in data["split"].items()}, "annotations": anns}


def _mutate_bytes(rng, raw: bytes) -> bytes:
    raw = bytearray(raw)
    for _ in range(rng.integers(1, 3)):
        op, at = (0 if rng.random() < 0.5 else rng.integers(1, 5)), int(rng.integers(len(raw)))
        if op == 0:
            for i in rng.integers(len(raw), size=rng.integers(1, 9)):
                raw[i] = int(rng.integers(256))
        elif op == 1:
            raw[at:at] = bytes(rng.integers(256, size=rng.integers(1, 16)).astype(np.uint8))
        elif op == 2:
            del raw[at:at + int(rng.integers(1, 64))]
        elif op == 3:
            raw = raw[:at]
        else:
            raw[at:at] = raw[at:at + int(rng.integers(1, 256))]
    return bytes(raw)


def _outcome(call, path: Path, failures: list) -> str:
    """'read', 'refused' (one InputError line naming the file) or 'FAILED' (anything else)."""
    try:
        call()
        return "read"
    except InputError as e:
        message = str(e)
        if message.startswith(f"{path}: ") and "\n" not in message:
            return "refused (MemoryError)" if "MemoryError" in message else "refused"
        failures.append(f"{path.name}: InputError not naming the file on one line: {message[:300]!r}")
    except Exception as e:   # noqa: BLE001 - what the fuzz test exists to catch
        failures.append(f"{path.name}: {type(e).__name__}: {str(e)[:300]}")
    return "FAILED"


def test_fuzz_pickles_and_openpose_frames(tmp_path, capsys):
    from mgpipe.sources.label_tables import read_pyskl

    started = time.process_time()
    rng = np.random.default_rng(FUZZ_SEED)
    sets = _real_sets()
    frames = [json.loads(p.read_text()) for p in sorted(OPENPOSE_298.glob("*_keypoints.json"))]
    if not frames:
        pytest.skip(f"real data {OPENPOSE_298} not found")
    counts, failures = {}, []

    def tally(kind, outcome):
        counts.setdefault(kind, {"read": 0, "refused": 0, "refused (MemoryError)": 0, "FAILED": 0})[outcome] += 1

    def read(path, layout):
        if rng.random() < 0.5:
            read_pyskl(path, layout=layout, split_map={"xsub_train": "train", "xsub_val": "test"})
        else:
            load_pickle_annotations(path, layout)

    with _MemoryBound():
        for i in range(FUZZ_PICKLES):
            data, layout = sets[i % 3]
            mutated = _mutate_dataset(rng, _small(rng, data, 4))
            if rng.random() < 0.1:
                mutated = [mutated] if rng.random() < 0.5 else {"data": mutated}
            path = tmp_path / f"m{i}.pkl"
            path.write_bytes(pickle.dumps(mutated, protocol=int(rng.integers(2, 6))))
            tally("pickle fields", _outcome(lambda: read(path, layout), path, failures))
            path.unlink()
        for i in range(FUZZ_PICKLE_BYTES):
            data, layout = sets[i % 3]
            raw = pickle.dumps(_small(rng, data, 2), protocol=int(rng.integers(2, 6)))
            path = tmp_path / f"b{i}.pkl"
            path.write_bytes(_mutate_bytes(rng, raw))
            tally("pickle bytes", _outcome(lambda: read(path, layout), path, failures))
            path.unlink()
        for i in range(FUZZ_JSON):
            path = tmp_path / f"j{i}_keypoints.json"
            path.write_bytes(_mutated_frame(rng, frames[i % len(frames)]))
            tally("openpose json", _outcome(lambda: read_openpose_frame(path), path, failures))
            path.unlink()
    with capsys.disabled():
        print(f"\nfuzz (seed {FUZZ_SEED}, {time.process_time() - started:.1f} s CPU): " + "; ".join(f"{k}: {sum(v.values())} mutations, {v['read']} read, "
                                                          f"{v['refused']} refused, {v['refused (MemoryError)']} refused by an allocation "
                                                          "beyond the bound" for k, v in counts.items()))
    assert not failures, f"{len(failures)} mutated file(s) not read or refused in one line:\n" + "\n".join(failures[:20])
    for kind, v in counts.items():   # the mutations reach both outcomes, and none ran into the bound
        assert v["read"] > 0 and v["refused"] > 0 and v["refused (MemoryError)"] == 0, (kind, v)


def _mutated_frame(rng, frame) -> bytes:
    frame = json.loads(json.dumps(frame))
    if rng.random() < 0.35:
        text = json.dumps(frame).encode()
        return _mutate_bytes(rng, text)
    people = frame.get("people", [])
    for _ in range(rng.integers(1, 4)):
        op = rng.integers(7)
        person = people[rng.integers(len(people))] if people else {}
        key = ("pose_keypoints_2d", "hand_left_keypoints_2d", "hand_right_keypoints_2d",
               "face_keypoints_2d", "person_id")[rng.integers(5)]
        values = person.get(key)
        if op == 0 and isinstance(values, list) and values:
            values[rng.integers(len(values))] = [None, "0.5", True, 1e308, -1e308, [1.0], {"x": 1}, 10**30,
                                                 -5.0, 2.0][rng.integers(10)]
        elif op == 1 and isinstance(values, list):
            del values[rng.integers(len(values) + 1):]
        elif op == 2 and isinstance(values, list):
            values.extend([0.5] * int(rng.integers(1, 10)))
        elif op == 3:
            person[key] = [None, "abc", 5, {}, [[0.5] * 3] * 25][rng.integers(5)]
        elif op == 4:
            person.pop(key, None)
        elif op == 5:
            frame["people"] = [None, {}, "x", [[]], people * 3, []][rng.integers(6)]
            people = frame["people"] if isinstance(frame["people"], list) else []
            people = [p for p in people if isinstance(p, dict)]
        else:
            frame.pop("people", None) if rng.random() < 0.5 else frame.update(version="x")
    return json.dumps(frame).encode()
