"""The challenges' metrics (mgpipe/stages/ensemble.py metrics()): top-1, top-5, mean class accuracy,
macro-F1 and the per-class table, on hand-made predictions; per_class.csv and the summary."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from mgpipe.stages.ensemble import build_report, metrics

# 7 test clips, 5 classes; predictions by hand:
#   class 0: 3 clips, predicted 4 times, 2 right -> recall 2/3, precision 1/2, F1 4/7
#   class 1: 2 clips, predicted 2 times, 1 right -> recall 1/2, precision 1/2, F1 1/2
#   class 2: 2 clips, never predicted            -> recall 0, precision undefined, F1 0
#   class 3: no clips, predicted once (wrongly)  -> recall undefined, precision 0, F1 0
#   class 4: no clips, never predicted           -> left out of every average
LABELS = np.array([0, 0, 0, 1, 1, 2, 2])
PREDS = np.array([0, 0, 1, 1, 3, 0, 0])


def one_hot_probs(preds, k=5):
    probs = torch.full((len(preds), k), 0.01)
    probs[torch.arange(len(preds)), torch.as_tensor(preds)] = 0.9
    return probs


def test_metrics_by_hand():
    m = metrics(one_hot_probs(PREDS), LABELS, 5)
    assert m["top1"] == pytest.approx(3 / 7, abs=1e-6)
    # mean class accuracy: the recall of the classes with test clips (0, 1, 2)
    assert m["mean_class_accuracy"] == pytest.approx((2 / 3 + 1 / 2 + 0) / 3, abs=1e-6)
    # macro-F1: classes with clips or predictions (0, 1, 2, 3), as scikit-learn's macro average
    assert m["macro_f1"] == pytest.approx((4 / 7 + 1 / 2 + 0 + 0) / 4, abs=1e-6)
    assert m["per_class"] == pytest.approx({0: 2 / 3, 1: 0.5, 2: 0.0}, abs=1e-6)
    rows = {r["label"]: r for r in m["class_table"]}
    assert [(rows[k]["count"], rows[k]["predicted"]) for k in range(5)] == [(3, 4), (2, 2), (2, 0), (0, 1), (0, 0)]
    assert rows[0]["precision"] == 0.5 and rows[0]["f1"] == pytest.approx(4 / 7, abs=1e-6)
    assert rows[2]["recall"] == 0.0 and rows[2]["precision"] is None and rows[2]["f1"] == 0.0
    assert rows[3]["recall"] is None and rows[3]["precision"] == 0.0 and rows[3]["f1"] == 0.0
    assert rows[4]["recall"] is None and rows[4]["precision"] is None


def test_perfect_predictions_give_one_everywhere():
    m = metrics(one_hot_probs(LABELS), LABELS, 5)
    assert m["top1"] == m["mean_class_accuracy"] == m["macro_f1"] == 1.0


def test_top5_counts_a_label_among_the_five_largest():
    probs = torch.tensor([[0.5, 0.2, 0.1, 0.1, 0.05, 0.05], [0.5, 0.2, 0.1, 0.1, 0.06, 0.04]])
    m = metrics(probs, np.array([4, 5]), 6)
    assert m["top1"] == 0.0 and m["top5"] == 0.5


def _scores(path, probs, labels):
    frame = pd.DataFrame({"clip_id": [f"c{i}" for i in range(len(labels))], "label": labels, "split": "test"})
    for k, name in enumerate(["nod", "shrug", "rub", "wave", "clap"]):
        frame[f"joint:{k}:{k + 1}:{name}"] = probs[:, k].numpy()
    frame.to_csv(path, index=False)
    return path


def test_the_ensemble_stage_writes_per_class_csv_and_summary_tables(tmp_path):
    pd.DataFrame({"label": range(5), "label_id": range(1, 6), "name": ["nod", "shrug", "rub", "wave", "clap"]}
                 ).to_csv(tmp_path / "classes.csv", index=False)
    probs = one_hot_probs(PREDS)
    files = {"joint": _scores(tmp_path / "joint.csv", probs / probs.sum(1, keepdim=True), LABELS)}
    build_report(files, tmp_path / "classes.csv", tmp_path / "out", members={"joint": 1})
    saved = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert saved["ensemble"]["macro_f1"] == pytest.approx(0.267857, abs=1e-6)
    assert saved["models"]["joint"]["joint"]["macro_f1"] == saved["ensemble"]["macro_f1"]
    table = pd.read_csv(tmp_path / "out" / "per_class.csv", keep_default_na=False)
    assert list(table.columns) == ["label", "class", "count", "predicted", "recall", "precision", "f1"]
    assert list(table["class"]) == ["nod", "shrug", "rub", "wave", "clap"]
    assert table.loc[2, "precision"] == "" and table.loc[3, "recall"] == ""   # undefined: left empty
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "| macro-F1 |" in summary and "0.2679" in summary
    assert "| rub | 2 | 0 | 0.0000 | - | 0.0000 |" in summary
    assert "<th>precision</th>" in (tmp_path / "out" / "summary.html").read_text()
