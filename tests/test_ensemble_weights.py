"""Ensemble weights chosen on the validation split (ensemble.weights: search): known answers on
hand-made score files, the test split's scores never reaching the choice, no validation split,
and the old ensemble.search key refused in one line."""

import json
import logging
import math

import numpy as np
import pandas as pd
import pytest

from mgpipe import config
from mgpipe.formats import scores
from mgpipe.stages.ensemble import build_report, grid_steps, search_weights, simplex_grid

CLASSES = [{"label_id": 10 + k, "name": f"g{k}"} for k in range(3)]


def _classes_csv(tmp_path):
    path = tmp_path / "classes.csv"
    pd.DataFrame({"label": range(3), "label_id": [c["label_id"] for c in CLASSES],
                  "name": [c["name"] for c in CLASSES]}).to_csv(path, index=False)
    return path


def weak_right(labels):
    """0.6 on the true class and 0.4 on the next one: right, but outvoted by a confident error."""
    p = np.zeros((len(labels), 3))
    p[np.arange(len(labels)), labels] = 0.6
    p[np.arange(len(labels)), (labels + 1) % 3] = 0.4
    return p


def sure_wrong(labels):
    """1.0 on the class after the true one (the class weak_right puts its 0.4 on)."""
    p = np.zeros((len(labels), 3))
    p[np.arange(len(labels)), (labels + 1) % 3] = 1.0
    return p


def write_scores(path, clip_ids, split, labels, streams: dict):
    rows = pd.DataFrame({"clip_id": clip_ids, "split": split, "label": labels})
    scores.write(path, [scores.table(rows, streams, CLASSES)])
    return path


def known_run(tmp_path, test_makers, test_order=None):
    """Score files of a fused member (rgb, pose) and a joint member. Validation (12 clips, 4 per
    class): rgb and joint weakly right, pose surely wrong, so a weight set is right on every
    clip exactly when pose's share is below 1/6 (0.6 (r + j) > 0.4 (r + j) + p). The test rows
    come from `test_makers` {stream: maker}, in `test_order`."""
    val_labels = np.arange(12) % 3
    test_labels = np.arange(9) % 3
    order = np.arange(9) if test_order is None else np.asarray(test_order)
    ids = [f"v{i:02d}" for i in range(12)] + [f"t{i:02d}" for i in order]
    split = ["val"] * 12 + ["test"] * 9
    labels = np.concatenate([val_labels, test_labels[order]])

    def probs(stream, val_maker):
        return np.vstack([val_maker(val_labels), test_makers[stream](test_labels)[order]])

    fused = write_scores(tmp_path / "fused_full.csv", ids, split, labels,
                         {"rgb": probs("rgb", weak_right), "pose": probs("pose", sure_wrong)})
    joint = write_scores(tmp_path / "joint.csv", ids, split, labels, {"joint": probs("joint", weak_right)})
    return {"fused_full": fused, "joint": joint}


def test_the_grid_covers_the_simplex_in_equal_steps():
    grid = simplex_grid(4, 20)
    assert len(grid) == math.comb(23, 3) == 1771 and np.allclose(grid.sum(1), 1)
    assert len({tuple(r) for r in (grid * 20).round().astype(int)}) == len(grid)
    assert [grid_steps(u) for u in (1, 4, 6, 8, 12)] == [20, 20, 11, 7, 5]
    assert all(math.comb(grid_steps(u) + u - 1, u - 1) <= 5000 for u in range(1, 30))


def test_two_members_get_the_known_weights():
    """joint weakly right, limb surely wrong on every val clip: the ensemble is right exactly
    when joint's share is above 5/6; of the grid's 0.85 .. 1.0 the nearest to uniform is 0.85."""
    labels = np.arange(9) % 3
    frame = lambda name, maker: pd.DataFrame(scores.table(
        pd.DataFrame({"clip_id": [f"c{i}" for i in range(9)], "split": "val", "label": labels}),
        {name: maker(labels)}, CLASSES))
    found = search_weights({"joint": frame("joint", weak_right), "limb": frame("limb", sure_wrong)},
                           labels, {"joint": 1.0, "limb": 1.0})
    assert found["weights"] == {"joint": 0.85, "limb": 0.15} and found["stream_weights"] == {}
    assert found["evaluations"] == 2 + 21 and found["grid_step"] == 0.05


def test_member_and_stream_weights_are_the_known_ones(tmp_path, caplog):
    """Units (rgb r, pose p, joint j): every val clip is right when p < 1/6; uniform is (1/4, 1/4,
    1/2), and the nearest right set on the 1/20 grid is p 0.15, r 0.30, j 0.55: fused 0.45 at
    rgb:pose 2:1, joint 0.55."""
    files = known_run(tmp_path, {"rgb": weak_right, "pose": sure_wrong, "joint": weak_right})
    with caplog.at_level(logging.INFO, logger="mgpipe.stages.ensemble"):
        report = build_report(files, _classes_csv(tmp_path), tmp_path / "out",
                              members={"fused": 1.0, "joint": 1.0}, weights="search", variants_order=["full"])
    sets = report["ensemble_weights"]["sets"]
    assert sets["searched"]["weights"] == {"fused_full": 0.45, "joint": 0.55}
    assert sets["searched"]["stream_weights"] == {"fused_full": {"rgb": 0.666667, "pose": 0.333333}}
    assert sets["searched"]["val"]["top1"] == 1.0 and sets["uniform"]["val"]["top1"] == 0.0
    assert report["ensemble_weights"]["applied"] == "searched" and report["ensemble"]["searched_on_val"]
    assert report["ensemble"]["weights"] == sets["searched"]["weights"]
    assert report["ensemble"]["top1"] == sets["searched"]["test"]["top1"] == 1.0    # applied to test
    assert report["ensemble_weights"]["search"]["evaluations"] == 2 + 231
    assert "searched on the validation split (12 clips; 233 weight sets" in caplog.text
    saved = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert saved["ensemble_weights"] == report["ensemble_weights"]
    md = (tmp_path / "out" / "summary.md").read_text()
    assert "| **searched (applied)** | fused_full 0.45 (rgb:pose 0.667:0.333), joint 0.55 | 1.0000 |" in md
    assert "| uniform | fused_full 0.5, joint 0.5 | 0.0000 |" in md
    assert "| config | fused_full 0.5, joint 0.5 |" in md
    assert "searched (applied)</td>" in (tmp_path / "out" / "summary.html").read_text()


def test_the_test_split_cannot_change_the_chosen_weights(tmp_path):
    """The same val rows with test rows that favour other weights (pose right, rgb and joint
    wrong), shuffled: the same weights are chosen, and the test split would have chosen others."""
    classes = _classes_csv(tmp_path)
    chosen = []
    for name, makers, order in [
            ("a", {"rgb": weak_right, "pose": sure_wrong, "joint": weak_right}, None),
            ("b", {"rgb": sure_wrong, "pose": weak_right, "joint": sure_wrong}, [4, 7, 0, 8, 2, 5, 1, 3, 6])]:
        (tmp_path / name).mkdir()
        files = known_run(tmp_path / name, makers, order)
        report = build_report(files, classes, tmp_path / name / "out", members={"fused_full": 1.0, "joint": 1.0},
                              weights="search")
        searched = report["ensemble_weights"]["sets"]["searched"]
        chosen.append((searched["weights"], searched["stream_weights"], searched["val"]))
        test_frames = {m: scores.read(p).query("split == 'test'").sort_values("clip_id") for m, p in files.items()}
        on_test = search_weights(test_frames, test_frames["joint"].label.to_numpy(), {"fused_full": 1.0, "joint": 1.0})
    assert chosen[0] == chosen[1]
    assert report["ensemble"]["top1"] == 0.0          # b's test rows: the val choice is wrong there
    assert on_test["weights"] != chosen[1][0]         # (a search that saw them would choose others)


def test_without_a_validation_split_the_config_weights_are_kept(tmp_path, caplog):
    labels = np.arange(9) % 3
    ids = [f"t{i}" for i in range(9)]
    files = {"joint": write_scores(tmp_path / "joint.csv", ids, "test", labels, {"joint": weak_right(labels)}),
             "limb": write_scores(tmp_path / "limb.csv", ids, "test", labels, {"limb": sure_wrong(labels)})}
    with caplog.at_level(logging.WARNING, logger="mgpipe.stages.ensemble"):
        report = build_report(files, _classes_csv(tmp_path), tmp_path / "out",
                              members={"joint": 6.0, "limb": 1.0}, weights="search")
    assert "no validation split" in caplog.text and "config weights are kept" in caplog.text
    assert report["ensemble_weights"]["applied"] == "config" and "searched" not in report["ensemble_weights"]["sets"]
    assert report["ensemble"]["weights"] == {"joint": 6.0, "limb": 1.0} and not report["ensemble"]["searched_on_val"]
    assert report["ensemble"]["top1"] == 1.0           # 6 x 0.6 > 6 x 0.4 + 1 on every clip
    assert report["ensemble_weights"]["sets"]["uniform"]["test"]["top1"] == 0.0
    md = (tmp_path / "out" / "summary.md").read_text()
    assert "no validation split" in md and "| **config (applied)** | joint 0.857, limb 0.143 | - | - | - | 1.0000 |" in md


def test_the_old_search_key_is_refused_naming_the_new_one():
    with pytest.raises(config.ConfigError) as err:
        config.validate({"ensemble": {"search": True}})
    assert str(err.value) == ("config: unknown config key ensemble.search "
                              "(replaced by ensemble.weights: search, or config for false)")
    assert config.validate({"ensemble": {"weights": "search"}})["ensemble"]["weights"] == "search"
    assert config.defaults()["ensemble"]["weights"] == "config"
