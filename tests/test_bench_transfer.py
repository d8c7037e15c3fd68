"""The transfer benchmark's data (benchmarks/bench_transfer.py) on the three real skeleton sets:
the pretraining set of a target is the other two, every joint mapped by name into Kinect v1's 20
and their classes side by side; a few-shot split keeps `per_class` training clips per class and
every test clip; a kept run is reused only with the settings it was made with."""

import json
import pickle
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT))

from benchmarks.bench_common import prepare, train_and_score  # noqa: E402
from benchmarks.bench_transfer import CONFIG, few_shot, pretraining_pickle, regime_settings  # noqa: E402

BENCH = yaml.safe_load(CONFIG.read_text())
needs_data = pytest.mark.skipif(not all((ROOT / d["pickle"]).is_file() for d in BENCH["datasets"].values()),
                                reason=f"real skeleton pickles not found in {DATA}")


@needs_data
def test_pretraining_set_of_kard_is_florence_and_utkinect_side_by_side(tmp_path):
    out = pretraining_pickle(BENCH, ["florence", "utkinect"], tmp_path / "pre.pkl")
    with open(out, "rb") as f:
        pre = pickle.load(f)
    def annotations(name):
        with open(ROOT / BENCH["datasets"][name]["pickle"], "rb") as f:   # the real data, trusted here
            return pickle.load(f)["annotations"]

    florence, utk = annotations("florence"), annotations("utkinect")
    anns = pre["annotations"]
    assert len(anns) == len(florence) + len(utk) and not list(tmp_path.glob("*.partial"))
    assert sorted({a["label"] for a in anns}) == list(range(9 + 10))       # 9 Florence classes, then UTKinect's 10
    assert all(a["keypoint"].shape[2] == 20 for a in anns)                 # Kinect v1's 20 joints
    # a Florence head lands on Kinect v1's head (joint 3), its hands on no joint (score 0)
    first = anns[0]
    assert np.allclose(first["keypoint"][..., 3, :], florence[0]["keypoint"][..., 0, :])
    assert (first["keypoint_score"][..., [7, 11]] == 0).all()             # hand_left, hand_right: Florence has none
    assert anns[len(florence)]["label"] == 9 + utk[0]["label"]


@needs_data
def test_few_shot_keeps_every_clip_and_three_per_class(tmp_path):
    spec = BENCH["datasets"]["florence"]
    _, manifest, _ = prepare(ROOT / spec["pickle"], spec["layout"], BENCH["split_map"], tmp_path / "data")
    whole = pd.read_csv(manifest)
    few = pd.read_csv(few_shot(manifest, 3, 0, tmp_path / "few.csv"))
    assert len(few) == len(whole)                                 # the store's clips all listed
    assert (few[few.split == "train"].label.value_counts() == 3).all() and few[few.split == "train"].label.nunique() == 9
    assert few[few.split == "test"].equals(whole[whole.split == "test"])
    again = pd.read_csv(few_shot(manifest, 3, 0, tmp_path / "again.csv"))
    other = pd.read_csv(few_shot(manifest, 3, 1, tmp_path / "other.csv"))
    assert again.equals(few) and not other.equals(few)
    assert few_shot(manifest, None, 0, tmp_path / "all.csv") == manifest


def test_regimes_and_kept_runs(tmp_path):
    assert regime_settings(BENCH, "full") == (None, None)
    assert regime_settings(BENCH, "few") == (3, None)
    assert regime_settings(BENCH, "few_long") == (3, 48)
    data = []
    for name in ("keypoints.h5", "clips.csv", "classes.csv"):
        (tmp_path / name).write_text(name)
        data.append(tmp_path / name)
    run = tmp_path / "run"
    run.mkdir()
    (run / "result.json").write_text(json.dumps({"top1": 0.5, "settings": "made-elsewhere"}))
    with pytest.raises(SystemExit, match="made with other settings"):
        train_and_score("joint", {"seed": 0}, tuple(data), run)


@needs_data
def test_self_supervised_and_cotrained_starts_run_beside_scratch_and_are_kept(tmp_path, capsys):
    """--starts selfsup both cotrain on Florence (the smallest set), shrunk to minutes: the table
    holds each start against scratch, the self-supervised weights start the target's models, the
    cotrained model saw the other sets and the few labelled Florence clips (its classes last)
    and is scored on Florence's, and a second call reuses every kept run."""
    from benchmarks.bench_transfer import main

    shrink = ["--set", "recipe.pose_model.input={frames: 8, size: 16, test_size: 16}",
              "--set", "recipe.pose_model.network.base_channels=4",
              "--set", "recipe.pose_model.optim.epochs=1", "--set", "recipe.pretrain.optim.epochs=1",
              "--set", "recipe.test.views=1"]
    argv = ["--targets", "florence", "--regimes", "few", "--seeds", "0", "--models", "joint",
            "--starts", "selfsup", "both", "cotrain", "--threads", "1", "--out", str(tmp_path), *shrink]
    summary = main(argv)
    rows = summary["results"]["florence"]
    assert set(rows) == {"few/scratch/joint", "few/selfsup/joint", "few/both/joint", "few/cotrain/joint"}
    table = (tmp_path / "table.md").read_text()
    assert "| florence | few | joint | selfsup |" in table and "| florence | few | joint | both |" in table
    weights = tmp_path / "selfsup" / "florence_selfsup" / "joint" / "weights.pth"
    assert weights.is_file() and (tmp_path / "selfsup" / "florence_both" / "joint" / "weights.pth").is_file()
    model = torch.load(tmp_path / "runs" / "florence_few_s0_selfsup_joint" / "model.pt", weights_only=True)
    assert model["init"]["source"] == str(weights) and set(model["init"]["fresh"]) == {"head.fc.weight", "head.fc.bias"}
    cotrained = pd.read_csv(tmp_path / "cotrain" / "florence_few_s0" / "clips.csv")
    sources = sum(len(pickle.loads((ROOT / BENCH["datasets"][n]["pickle"]).read_bytes())["annotations"])
                  for n in ("kard", "utkinect"))
    florence = cotrained[cotrained.label >= 18 + 10]                     # KARD's 18, UTKinect's 10, then Florence's 9
    assert (cotrained.split == "train").sum() == sources + 27 and (florence.split == "train").sum() == 27
    assert (cotrained.split == "test").sum() == len(florence) - 27 == (cotrained.label >= 28).sum() - 27
    kept = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("result.json")}
    assert main(argv)["results"] == summary["results"]
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("result.json")} == kept
