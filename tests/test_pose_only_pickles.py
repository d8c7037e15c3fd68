"""Pose-only mode end to end with real Snakemake on skeleton pickles as whole datasets
(dataset.kind pyskl): the real KARD pickle in its OpenNI layout, KARD coordinates remapped into
BODY_25, and KARD in a layout defined in the config. One shared workdir, tiny networks, 2 epochs."""

import json
import pickle
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from workflow_runs import make_workdir, smk

from mgpipe.layouts import BODY25, COCO17, OPENNI15, convert

pytestmark = pytest.mark.slow

KARD = Path(__file__).resolve().parents[2] / "shared" / "data" / "kard2d.pkl"
KARD_CONFIG = """results: results/{name}
mode: pose
dataset:
  kind: pyskl
  skeletons: {pickle}
  subject_from: "_s(\\\\d+)_"
"""


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    if not KARD.is_file():
        pytest.skip(f"real data {KARD} not found (../shared/data beside the checkout)")
    return make_workdir(tmp_path_factory.mktemp("pyskl"))


def _run(workdir, name, text):
    (workdir / f"{name}.yaml").write_text(text)
    smk(workdir, "--cores", "2", "--configfile", "tiny.yaml", f"{name}.yaml")
    return workdir / "results" / name


def _kard():
    with open(KARD, "rb") as f:
        return pickle.load(f)


def _subset(data, actions=4):
    """The clips of the first `actions` actions (all subjects and repetitions)."""
    keep = [a for a in data["annotations"] if a["label"] < actions]
    ids = {a["frame_dir"] for a in keep}
    return keep, {k: [c for c in v if c in ids] for k, v in data["split"].items()}


def test_kard_pickle_end_to_end_in_its_own_layout(workdir):
    r = _run(workdir, "kard", KARD_CONFIG.format(name="kard", pickle=KARD) +
             "  split_map: {xsub_train: train, xsub_val: test}\n"
             "pose: {backend: pickle, pickle_layout: openni15, layout: openni15}\n")
    manifest = pd.read_csv(r / "clips.csv")
    assert len(manifest) == 540 and manifest.video.isna().all()
    assert manifest.groupby("split").subject_id.nunique().to_dict() == {"test": 5, "train": 4, "val": 1}
    classes = pd.read_csv(r / "classes.csv", dtype={"name": str})
    assert classes.label_id.tolist() == list(range(18)) and classes.name.tolist() == [str(k) for k in range(18)]
    # numbers as class names (no names configured) reach metrics.json as text
    metrics = json.loads((r / "ensemble" / "metrics.json").read_text())
    assert metrics["num_test_clips"] == 270 and set(metrics["models"]) == {"joint", "limb"}
    assert set(metrics["ensemble"]["per_class"]) == set(classes.name)
    with h5py.File(r / "keypoints.h5", "r") as h5:
        assert h5.attrs["layout"] == "openni15" and len(h5["clips"]) == 540
        kp = h5[f"clips/{manifest.clip_id[0]}/keypoints"][()]
    first = _kard()["annotations"][0]
    np.testing.assert_array_equal(kp[0, :, :, :2], first["keypoint"][0])
    assert "label id(s)" in (r / "logs" / "clips.log").read_text()     # unnamed ids are listed


def test_body25_pickle_end_to_end(workdir, tmp_path):
    """KARD coordinates put into BODY_25 (head -> nose, hands -> wrists, feet -> ankles, torso ->
    mid hip; shared names by name), split names already train/test, converted to COCO-17."""
    keep, split = _subset(_kard())
    src = {n: i for i, n in enumerate(OPENNI15.joints)}
    dst = {n: i for i, n in enumerate(BODY25.joints)}
    remap = {"head": "nose", "right_hand": "right_wrist", "left_hand": "left_wrist",
             "right_foot": "right_ankle", "left_foot": "left_ankle", "spine_mid": "mid_hip"}
    anns = []
    for a in keep:
        xy = np.concatenate([a["keypoint"], a["keypoint_score"][..., None]], -1)
        body = convert(xy, OPENNI15, BODY25)
        for s, d in remap.items():
            body[..., dst[d], :] = xy[..., src[s], :]
        anns.append({**a, "keypoint": np.ascontiguousarray(body[..., :2]),
                     "keypoint_score": np.ascontiguousarray(body[..., 2])})
    path = tmp_path / "kard_body25.pkl"
    with open(path, "wb") as f:
        pickle.dump({"split": {"train": split["xsub_train"], "test": split["xsub_val"]},
                     "annotations": anns}, f)
    names = ["horizontal arm wave", "high arm wave", "two hand wave", "catch cap"]
    r = _run(workdir, "body25", KARD_CONFIG.format(name="body25", pickle=path) +
             f"  class_names: {json.dumps(names)}\n"
             "pose: {backend: pickle, pickle_layout: body25, layout: coco17}\n"
             "limb: {enabled: false}\nensemble: {members: {joint: 1.0}}\n")
    manifest = pd.read_csv(r / "clips.csv")
    assert len(manifest) == 120 and set(manifest.split) == {"train", "val", "test"}
    assert pd.read_csv(r / "classes.csv").name.tolist() == names
    metrics = json.loads((r / "ensemble" / "metrics.json").read_text())
    assert set(metrics["ensemble"]["per_class"]) <= set(names)
    with h5py.File(r / "keypoints.h5", "r") as h5:
        assert h5.attrs["layout"] == "coco17"
        kp = h5[f"clips/{manifest.clip_id[0]}/keypoints"][()]
    first = anns[0]
    coco = convert(np.concatenate([first["keypoint"], first["keypoint_score"][..., None]], -1),
                   BODY25, COCO17)
    np.testing.assert_array_equal(kp, coco)

    # The same pickle under a label table (kind csv, whole clips: end -1): the clip stage reads
    # the pickle for the clip lengths in pose.pickle_layout, not in the default coco17.
    rows = [(a["frame_dir"], 0, -1, a["label"], int(a["frame_dir"][5:7]),
             "train" if a["frame_dir"] in split["xsub_train"] else "test") for a in anns[:12]]
    pd.DataFrame(rows, columns=["video", "start", "end", "label", "subject", "split"]).to_csv(
        tmp_path / "labels.csv", index=False)
    (workdir / "csv.yaml").write_text(
        f"results: results/csv\nmode: pose\ndataset:\n  kind: csv\n  label_table: {tmp_path}/labels.csv\n"
        f"  skeletons: {path}\n  val_fraction: 0\npose: {{backend: pickle, pickle_layout: body25}}\n")
    smk(workdir, "--cores", "2", "--configfile", "tiny.yaml", "csv.yaml", "--until", "clips")
    clips = pd.read_csv(workdir / "results" / "csv" / "clips.csv")
    lengths = {a["frame_dir"]: a["keypoint"].shape[1] for a in anns}
    assert (clips.end_frame == clips.video_id.map(lengths) - 1).all() and len(clips) == 12
    assert set(clips.split) == {"train", "test"}


def _custom_pickle(tmp_path):
    """KARD with its joints in another order under a config-defined layout."""
    keep, split = _subset(_kard())
    order = list(range(15))[::-1]
    anns = [{**a, "keypoint": np.ascontiguousarray(a["keypoint"][:, :, order]),
             "keypoint_score": np.ascontiguousarray(a["keypoint_score"][:, :, order])} for a in keep]
    path = tmp_path / "kard_custom.pkl"
    with open(path, "wb") as f:
        pickle.dump({"split": split, "annotations": anns}, f)
    joints = [OPENNI15.joints[i] for i in order]
    limbs = [[OPENNI15.joints[a], OPENNI15.joints[b]] for a, b in OPENNI15.limbs]
    layout = json.dumps({"name": "kard_reversed", "joints": joints, "limbs": limbs})
    return path, layout, keep


def test_pickle_in_a_config_defined_layout_end_to_end(workdir, tmp_path):
    path, layout, keep = _custom_pickle(tmp_path)
    r = _run(workdir, "custom", KARD_CONFIG.format(name="custom", pickle=path) +
             "  split_map: {xsub_train: train, xsub_val: test}\n"
             f"pose: {{backend: pickle, pickle_layout: {layout}, layout: openni15}}\n"
             "limb: {enabled: false}\nensemble: {members: {joint: 1.0}}\n")
    manifest = pd.read_csv(r / "clips.csv")
    assert len(manifest) == 120
    with h5py.File(r / "keypoints.h5", "r") as h5:   # back in the OpenNI order, by joint name
        kp = h5[f"clips/{manifest.clip_id[0]}/keypoints"][()]
    np.testing.assert_array_equal(kp[0, :, :, :2], _kard()["annotations"][0]["keypoint"][0])
    assert json.loads((r / "ensemble" / "metrics.json").read_text())["num_test_clips"] == 60


def test_config_defined_layout_as_the_store_layout(workdir, tmp_path):
    """The defined layout is the store's: the store carries its joints and limbs, so the
    training stage (no pose config) rebuilds it, limbs included."""
    path, layout, _ = _custom_pickle(tmp_path)
    r = _run(workdir, "custom_store", KARD_CONFIG.format(name="custom_store", pickle=path) +
             "  split_map: {xsub_train: train, xsub_val: test}\n"
             f"pose: {{backend: pickle, pickle_layout: {layout}, layout: {layout}}}\n"
             "limb: {enabled: true}\n")
    with h5py.File(r / "keypoints.h5", "r") as h5:
        assert h5.attrs["layout"] == "kard_reversed" and "layout_joints" in h5.attrs
    assert set(json.loads((r / "ensemble" / "metrics.json").read_text())["models"]) == {"joint", "limb"}


def test_pyskl_config_errors_stop_with_one_line(workdir):
    (workdir / "bad.yaml").write_text(KARD_CONFIG.format(name="bad", pickle=KARD) +
                                      "pose: {backend: pickle, pickle_layout: openni15}\n")
    proc = smk(workdir, "--cores", "2", "--configfile", "tiny.yaml", "bad.yaml", "--until", "clips",
               check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Traceback" not in out
    assert "none of the pickle's splits ['xsub_train', 'xsub_val'] is named train, val or test" in out
    (workdir / "full.yaml").write_text(KARD_CONFIG.format(name="bad", pickle=KARD).replace(
        "mode: pose\n", "") + "pose: {backend: pickle, pickle_layout: openni15}\n")
    proc = smk(workdir, "-n", "--configfile", "tiny.yaml", "full.yaml", check=False)
    assert proc.returncode != 0
    assert "dataset.kind: pyskl provides keypoints and no videos" in proc.stdout + proc.stderr
