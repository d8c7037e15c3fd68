"""Several skeleton pickles as one dataset (dataset.skeletons as a list; mgpipe/sources/skeleton_sources.py):
the three real skeleton sets of ../shared/data, three joint layouts, combined through the real
workflow into Kinect v1's 20 joints; bad sources are one line before any job."""

import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from mgpipe.io import InputError
from mgpipe.layouts import convert, get_layout
from mgpipe.sources.skeleton_sources import combine

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
TRANSFER = yaml.safe_load((REPO / "benchmarks" / "transfer.yaml").read_text())
SPLITS = {"xsub_train": "train", "xsub_val": "test"}


def real_sources():
    out = []
    for name, spec in TRANSFER["datasets"].items():
        path = REPO / spec["pickle"]
        if not path.is_file():
            pytest.skip(f"real data {path} not found (../shared/data beside the checkout)")
        out.append({"path": str(path), "layout": spec["layout"], "name": name, "split_map": SPLITS})
    return out


def test_three_real_sets_combine_by_joint_name(tmp_path):
    sources = real_sources()
    counts = combine(sources, "kinect_v1_20", tmp_path / "all.pkl")
    assert counts == {"kard": {"train": 270, "test": 270}, "florence": {"train": 109, "test": 106},
                      "utkinect": {"train": 100, "test": 100}}
    with open(tmp_path / "all.pkl", "rb") as f:
        data = pickle.load(f)
    anns = {a["frame_dir"]: a for a in data["annotations"]}
    assert len(anns) == 955 and len(data["split"]["train"]) == 479
    # labels side by side: KARD 0-17, Florence 18-26, UTKinect 27-36
    by_source = {}
    for a in data["annotations"]:
        by_source.setdefault(a["frame_dir"].split("__")[0], set()).add(a["label"])
    assert by_source == {"kard": set(range(18)), "florence": set(range(18, 27)), "utkinect": set(range(27, 37))}
    # a KARD clip: its joints moved by name, exactly; the joints KARD lacks score 0
    with open(sources[0]["path"], "rb") as f:
        kard = pickle.load(f)["annotations"][0]
    mine = anns[f"kard__{kard['frame_dir']}"]
    kp = np.concatenate([kard["keypoint"], kard["keypoint_score"][..., None]], -1)
    expected = convert(kp, get_layout("openni15"), get_layout("kinect_v1_20"))
    np.testing.assert_array_equal(mine["keypoint"], expected[..., :2])
    np.testing.assert_array_equal(mine["keypoint_score"], expected[..., 2])
    assert (mine["keypoint_score"] == 0).any(axis=(0, 1)).sum() == 20 - 15


@pytest.mark.parametrize("change, message", [
    (lambda s: s[0].update(path="/nonexistent.pkl"), "source 1 (kard): /nonexistent.pkl does not exist"),
    (lambda s: s[1].update(name="kard"), "the name 'kard' is used twice"),
    (lambda s: s[0].update(layout="nope"), "source 1 (kard): unknown keypoint layout 'nope'"),
    (lambda s: s[0].update(split_map={"train_x": "train"}), "split_map names split(s) ['train_x']"),
    (lambda s: s[0].update(class_map={0: 1}), "class_map does not map label(s) [1, 2, 3, 4, 5]"),
    (lambda s: s[0].update(class_names=["a", "b"]), "label 17 has no name: class_names lists 2"),
])
def test_bad_sources_are_one_line(tmp_path, change, message):
    sources = real_sources()
    change(sources)
    with pytest.raises(InputError) as e:
        combine(sources, "kinect_v1_20", tmp_path / "all.pkl")
    assert message in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "all.pkl").exists()


def test_the_workflow_reads_several_pickles_as_one_dataset(tmp_path):
    """Snakemake: combine_skeletons -> clips -> pose for real on the three sets; the manifest's
    counts per source dataset, and a changed source list reruns the combination."""
    from workflow_runs import make_workdir, smk

    sources = real_sources()
    workdir = make_workdir(tmp_path / "wf")
    config = {"results": "results/multi", "mode": "pose",
              "dataset": {"kind": "pyskl", "skeletons": sources},
              "pose": {"backend": "pickle", "layout": "kinect_v1_20"}}
    (workdir / "multi.yaml").write_text(yaml.safe_dump(config))
    targets = ["results/multi/clips.csv", "results/multi/keypoints.h5"]
    smk(workdir, "--cores", "2", "--configfile", "multi.yaml", "--", *targets)
    manifest = pd.read_csv(workdir / "results/multi/clips.csv", dtype={"clip_id": str, "video_id": str})
    manifest["source"] = manifest.clip_id.str.split("__").str[0]
    counts = manifest.groupby(["source", "split"]).size().to_dict()
    print("manifest clips per source dataset and split:", counts)
    # (no source has a val split: the clips stage holds out dataset.val_fraction of the training clips)
    assert counts == {("florence", "test"): 106, ("florence", "train"): 91, ("florence", "val"): 18,
                      ("kard", "test"): 270, ("kard", "train"): 231, ("kard", "val"): 39,
                      ("utkinect", "test"): 100, ("utkinect", "train"): 85, ("utkinect", "val"): 15}
    assert manifest.label.nunique() == 37
    log = (workdir / "results/multi/logs/combine_skeletons.log").read_text()
    assert "skeletons florence: 215 of 215 clips (106 test, 109 train), labels 0-8 -> from 18" in log
    assert "Nothing to be done" in smk(workdir, "-n", "--cores", "2", "--configfile", "multi.yaml", "--",
                                       *targets).stdout
    # one source fewer: the combination (and so the rest) is planned again
    config["dataset"]["skeletons"] = sources[:2]
    (workdir / "multi.yaml").write_text(yaml.safe_dump(config))
    plan = smk(workdir, "-n", "--cores", "2", "--configfile", "multi.yaml", "--", *targets).stdout
    assert "rule combine_skeletons:" in plan and "rule clips:" in plan
    # a bad source stops the plan in one line, before any job
    config["dataset"]["skeletons"] = [dict(sources[0], path="missing.pkl")]
    (workdir / "multi.yaml").write_text(yaml.safe_dump(config))
    proc = smk(workdir, "-n", "--cores", "2", "--configfile", "multi.yaml", check=False)
    lines = [x for x in (proc.stdout + proc.stderr).splitlines() if x.startswith("mgpipe:")]
    assert proc.returncode != 0 and lines == [
        "mgpipe: config key dataset.skeletons: source 1 (kard): missing.pkl does not exist"], proc.stderr
    assert "Traceback" not in proc.stderr
