"""The ensemble stage on a generic dataset whose classes are named by numbers (classes.csv names
0, 1, 2 are read back as text, not as integers that metrics.json cannot take as keys)."""

import json

import numpy as np
import pandas as pd
import pytest

from mgpipe.io import InputError
from mgpipe.stages.ensemble import build_report


def _scores(path, labels, rng, model="joint"):
    probs = rng.dirichlet(np.ones(3), size=len(labels))
    probs[np.arange(len(labels)), labels] += 1   # mostly right
    frame = pd.DataFrame({"clip_id": [f"c{i:03d}" for i in range(len(labels))], "label": labels,
                          "split": ["val"] * 3 + ["test"] * (len(labels) - 3)})
    for k, (label_id, name) in enumerate([(10, "10"), (20, "20"), (30, "30")]):
        frame[f"{model}:{k}:{label_id}:{name}"] = probs[:, k] / probs.sum(1)
    frame.to_csv(path, index=False)
    return path


def test_numeric_class_names_reach_metrics_json(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.array([0, 1, 2] + [0, 1, 2, 2, 1, 0, 0])
    pd.DataFrame({"label": [0, 1, 2], "label_id": [10, 20, 30], "name": ["10", "20", "30"]}).to_csv(
        tmp_path / "classes.csv", index=False)
    files = {"joint": _scores(tmp_path / "joint.csv", labels, rng),
             "limb": _scores(tmp_path / "limb.csv", labels, rng, "limb")}
    report = build_report(files, tmp_path / "classes.csv", tmp_path / "out", members={"joint": 1, "limb": 1})
    saved = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert saved["classes"] == ["10", "20", "30"]
    assert set(saved["ensemble"]["per_class"]) == {"10", "20", "30"}
    assert saved["ensemble"]["top1"] == report["ensemble"]["top1"]
    assert "| 10 |" in (tmp_path / "out" / "summary.md").read_text()


def test_duplicate_class_names_are_refused(tmp_path):
    pd.DataFrame({"label": [0, 1], "label_id": [1, 2], "name": ["nod", "nod"]}).to_csv(
        tmp_path / "classes.csv", index=False)
    with pytest.raises(InputError, match=r"classes\.csv: class name 'nod' appears twice"):
        build_report({}, tmp_path / "classes.csv", tmp_path / "out", members={})


def test_summary_says_what_fusion_and_prototype_loss_add():
    from mgpipe.stages.ensemble import ablation_effects, summary_markdown

    def variant(name, fusion, proto, top1):
        return {"variant": name, "fusion": fusion, "prototype": proto, "rgb": 0.5, "pose": 0.8,
                "rgb:pose 1:1": top1, "mean_class_accuracy": top1 - 0.1}

    report = {"num_test_clips": 4, "models": {}, "validation": "best epoch by validation top-1",
              "ensemble": {"weights": {"fused_full": 1.0}, "top1": 0.9, "top5": 1.0,
                           "mean_class_accuracy": 0.8, "per_class": {"a": 1.0}},
              "ablation": [variant("full", True, True, 0.92), variant("nofusion", False, True, 0.85),
                           variant("noproto", True, False, 0.9), variant("plain", False, False, 0.8)]}
    lines = ablation_effects(report)
    assert lines == [
        "Adding the fusion module (nofusion -> full): test top-1 0.8500 -> 0.9200 (+0.0700).",
        "Adding the prototype loss (noproto -> full): test top-1 0.9000 -> 0.9200 (+0.0200).",
        "Adding both (plain -> full): test top-1 0.8000 -> 0.9200 (+0.1200)."]
    md = summary_markdown(report)
    assert "| plain | no | no | 0.5000 | 0.8000 | 0.8000 | 0.7000 |" in md
    assert all(f"- {line}" in md for line in lines)
    report["ablation"] = report["ablation"][:1] + report["ablation"][3:]  # full and plain only
    assert ablation_effects(report) == [lines[2]]
