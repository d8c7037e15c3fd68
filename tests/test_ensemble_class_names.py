"""The ensemble stage on a generic dataset whose classes are named by numbers (classes.csv names
0, 1, 2 are read back as text, not as integers that metrics.json cannot take as keys)."""

import json

import numpy as np
import pandas as pd
import pytest

from mgpipe.ensemble import run
from mgpipe.io import InputError


def _scores(path, labels, rng, model="joint"):
    probs = rng.dirichlet(np.ones(3), size=len(labels))
    probs[np.arange(len(labels)), labels] += 1   # mostly right
    frame = pd.DataFrame({"clip_id": [f"c{i:03d}" for i in range(len(labels))], "label": labels,
                          "split": ["val"] * 3 + ["test"] * (len(labels) - 3)})
    for k in range(3):
        frame[f"{model}:{k}"] = probs[:, k] / probs.sum(1)
    frame.to_csv(path, index=False)
    return path


def test_numeric_class_names_reach_metrics_json(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.array([0, 1, 2] + [0, 1, 2, 2, 1, 0, 0])
    pd.DataFrame({"label": [0, 1, 2], "label_id": [10, 20, 30], "name": ["10", "20", "30"]}).to_csv(
        tmp_path / "classes.csv", index=False)
    files = {"joint": _scores(tmp_path / "joint.csv", labels, rng),
             "limb": _scores(tmp_path / "limb.csv", labels, rng, "limb")}
    report = run(files, tmp_path / "classes.csv", tmp_path / "out", members={"joint": 1, "limb": 1})
    saved = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert saved["classes"] == ["10", "20", "30"]
    assert set(saved["ensemble"]["per_class"]) == {"10", "20", "30"}
    assert saved["ensemble"]["top1"] == report["ensemble"]["top1"]
    assert "| 10 |" in (tmp_path / "out" / "summary.md").read_text()


def test_duplicate_class_names_are_refused(tmp_path):
    pd.DataFrame({"label": [0, 1], "label_id": [1, 2], "name": ["nod", "nod"]}).to_csv(
        tmp_path / "classes.csv", index=False)
    with pytest.raises(InputError, match=r"classes\.csv: class name 'nod' appears twice"):
        run({}, tmp_path / "classes.csv", tmp_path / "out", members={})
