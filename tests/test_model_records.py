"""Models know what they were trained on (issue 18): checkpoints record their class table,
keypoint layout and input settings; test, predict and the ensemble refuse data, configs and
score files that disagree with one line, never a traceback or a plausible wrong answer."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from mgpipe import config as mgconfig
from mgpipe.formats import checkpoints
from mgpipe.io import InputError
from mgpipe.learning import specs
from mgpipe.stages import train as train_mod

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "tests" / "data" / "tiny.yaml"


def tiny_config():
    cfg = yaml.safe_load(TINY.read_text())
    for section in ("rgb", "pose_model"):
        cfg[section]["optim"].update(epochs=1)
    return mgconfig.validate(cfg)


def train(name, cfg, data, out, classes=None):
    train_mod.run(name, cfg, manifest_csv=data / "clips.csv", classes_csv=classes or data / "classes.csv",
                  frames_h5=data / "frames.h5", keypoints_h5=data / "keypoints.h5", out_dir=out,
                  state_dir=out / "state", progress=False)
    return out / "model.pt"


def fewer_classes(stores, out):
    """The demo data less its last two classes (class table and clips): a model of fewer classes."""
    out.mkdir()
    classes = pd.read_csv(stores / "classes.csv")
    kept = len(classes) - 2
    classes[classes.label < kept].to_csv(out / "classes.csv", index=False)
    manifest = pd.read_csv(stores / "clips.csv", dtype={"video_id": str, "clip_id": str})
    manifest[manifest.label < kept].to_csv(out / "clips.csv", index=False)
    (out / "frames.h5").symlink_to(stores / "frames.h5")
    # a keypoint store of exactly these clips (train refuses a store built from another manifest)
    shutil.copy(stores / "keypoints.h5", out / "keypoints.h5")
    with h5py.File(out / "keypoints.h5", "a") as h5:
        for cid in set(h5["clips"]) - set(manifest[manifest.label < kept].clip_id):
            del h5["clips"][cid]
    return out


@pytest.fixture(scope="module")
def trained(demo_stores, tmp_path_factory):
    root = tmp_path_factory.mktemp("records")
    cfg = tiny_config()
    models = {"config": cfg, "root": root,
              "joint": train("joint", cfg, demo_stores, root / "joint"),
              "rgb": train("rgb", cfg, demo_stores, root / "rgb")}
    few = fewer_classes(demo_stores, root / "few_data")
    models["few"] = train("joint", cfg, few, root / "few")
    return models


def mgpipe(*args, cwd):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "mgpipe", "-q", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def one_line_error(proc) -> str:
    """The command failed with exactly one stderr line and no traceback; that line."""
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


def test_train_and_merge_record_what_the_model_was_trained_on(demo_stores, trained, tmp_path):
    from mgpipe.formats.keypoints import Reader
    from mgpipe.stages.merge import merge_checkpoints

    cfg = trained["config"]
    ckpt = checkpoints.load(trained["joint"])
    table = pd.read_csv(demo_stores / "classes.csv", dtype={"name": str}, keep_default_na=False)
    assert [(c["label"], c["label_id"], c["name"]) for c in ckpt["classes"]] == \
        list(zip(table.label, table.label_id, table.name))
    layout = Reader(demo_stores / "keypoints.h5").layout
    assert ckpt["layout"]["joints"] == list(layout.joints) and len(ckpt["layout"]["limbs"]) == layout.num_limbs
    assert ckpt["inputs"] == {"heatmaps.padding": 0.25, "pose_model.input.frames": 8, "heatmaps.sigma": 0.6,
                              "pose_model.input.test_size": 8}
    assert ckpt["settings"]["pose_model"]["input"] == cfg["pose_model"]["input"]
    rgb = checkpoints.load(trained["rgb"])
    assert rgb["inputs"]["rgb.size"] == 32 and rgb["inputs"]["rgb.frames"] == 2 and "heatmaps.sigma" not in rgb["inputs"]
    assert len(checkpoints.load(trained["few"])["classes"]) == len(table) - 2

    merged = tmp_path / "merged.pt"
    merge_checkpoints(trained["rgb"], trained["joint"], cfg, "fused_full", merged)
    m = checkpoints.load(merged)
    assert m["classes"] == ckpt["classes"] and m["layout"] == ckpt["layout"]
    assert m["inputs"] == specs.get("fused_full").input_settings(cfg)
    # two models of different class tables are not merged
    with pytest.raises(InputError, match="trained on different class tables"):
        merge_checkpoints(trained["rgb"], trained["few"], cfg, "fused_full", tmp_path / "bad.pt")


def test_merge_of_models_that_do_not_fit_the_fused_network_is_one_line(trained, tmp_path):
    """A joint model of other widths than the config's fused pose pathway: exit 2, one line
    naming both files and the key (not a ValueError's traceback)."""
    other = tmp_path / "widths.yaml"
    other.write_text(yaml.safe_dump({"pose_model": {"network": {"base_channels": 8}}}))
    proc = mgpipe("merge", "--rgb", trained["rgb"], "--pose", trained["joint"], "--model", "fused_full",
                  "--config", TINY, other, "--out", tmp_path / "merged.pt", cwd=tmp_path)
    line = one_line_error(proc)
    assert f"{trained['rgb']} + {trained['joint']}: cannot merge" in line, line
    assert "base_channels" in line and not (tmp_path / "merged.pt").exists(), line


def test_test_of_a_model_on_a_manifest_of_more_classes_is_refused(demo_stores, trained, tmp_path):
    out = tmp_path / "scores.csv"
    proc = mgpipe("test", trained["few"], "--config", TINY, "--manifest", demo_stores / "clips.csv",
                  "--keypoints", demo_stores / "keypoints.h5", "--out", out, cwd=tmp_path)
    line = one_line_error(proc)
    k = len(pd.read_csv(demo_stores / "classes.csv"))
    assert f"{trained['few']}: the model has {k - 2} classes" in line and f"{k} classes" in line
    assert "clips.csv" in line and not out.exists()
    # and with the run's class table given: refused by that too
    with pytest.raises(InputError, match=rf"class table differs from .*classes\.csv \({k - 2} vs {k} classes\)"):
        from mgpipe.stages.score import score_model
        few = trained["root"] / "few_data"
        score_model(trained["few"], trained["config"], manifest_csv=few / "clips.csv", frames_h5=None,
                    keypoints_h5=few / "keypoints.h5", out_csv=out, progress=False,
                    classes_csv=demo_stores / "classes.csv")


def test_test_refuses_a_disagreeing_config_and_fills_what_it_leaves_out(demo_stores, trained, tmp_path):
    common = ["--manifest", demo_stores / "clips.csv", "--keypoints", demo_stores / "keypoints.h5"]
    (tmp_path / "other.yaml").write_text("heatmaps: {sigma: 1.5}\n")
    proc = mgpipe("test", trained["joint"], "--config", TINY, "other.yaml", *common,
                  "--out", tmp_path / "s.csv", cwd=tmp_path)
    line = one_line_error(proc)
    assert f"{trained['joint']}: the model was trained with heatmaps.sigma = 0.6, the config sets 1.5" in line
    # A config that says nothing of the inputs (the schema's defaults for them, `given` holds
    # none): the model's settings are used, and the scores are those of the run's config.
    from mgpipe.stages.score import score_model

    bare_cfg = mgconfig.validate({"test": {"views": 2, "batch_size": 8}})
    assert bare_cfg["heatmaps"]["sigma"] != 0.6 or bare_cfg["pose_model"]["input"]["test_size"] != 8
    data = dict(manifest_csv=demo_stores / "clips.csv", frames_h5=None, keypoints_h5=demo_stores / "keypoints.h5",
                progress=False)
    score_model(trained["joint"], bare_cfg, out_csv=tmp_path / "bare.csv", given={"test", "test.views",
                "test.batch_size"}, **data)
    score_model(trained["joint"], trained["config"], out_csv=tmp_path / "full.csv",
                classes_csv=demo_stores / "classes.csv", **data)
    bare, full = pd.read_csv(tmp_path / "bare.csv"), pd.read_csv(tmp_path / "full.csv")
    assert bare.equals(full) and len(full.columns) == 3 + len(pd.read_csv(demo_stores / "classes.csv"))


def test_a_keypoint_layout_mismatch_is_one_line(demo_stores, trained, tmp_path):
    from conftest import pose_settings

    from mgpipe.stages.clips import read_manifest
    from mgpipe.stages.pose import build_keypoint_store

    manifest = read_manifest(demo_stores / "clips.csv")
    manifest = manifest[manifest.split != "train"]
    manifest.to_csv(tmp_path / "clips.csv", index=False)
    build_keypoint_store(manifest, demo_stores / "demo" / "skeletons", tmp_path / "body25.h5",
                         **pose_settings(layout="body25"), progress=False)
    proc = mgpipe("test", trained["joint"], "--config", TINY, "--manifest", tmp_path / "clips.csv",
                  "--keypoints", tmp_path / "body25.h5", "--out", tmp_path / "s.csv", cwd=tmp_path)
    line = one_line_error(proc)
    assert "trained on keypoint layout 'coco17' (17 joints)" in line
    assert "body25.h5 has layout 'body25' (25 joints)" in line and not (tmp_path / "s.csv").exists()
    # predict with a config of another layout: refused before any decoding
    (tmp_path / "b25.yaml").write_text("pose: {layout: body25}\n")
    video = sorted((demo_stores / "demo" / "videos").glob("*.mp4"))[0]
    proc = mgpipe("predict", video, "--model", trained["joint"], "--config", TINY, "b25.yaml",
                  "--skeletons", demo_stores / "demo" / "skeletons", cwd=tmp_path)
    assert "the config's pose.layout has layout 'body25' (25 joints)" in one_line_error(proc)


def test_predict_refuses_a_disagreeing_config_and_uses_the_models_settings(demo_stores, trained, tmp_path):
    video = sorted((demo_stores / "demo" / "videos").glob("*.mp4"))[0]
    common = ["--model", trained["joint"], "--skeletons", demo_stores / "demo" / "skeletons"]
    (tmp_path / "wide.yaml").write_text("pose_model: {input: {test_size: 16}}\n")
    proc = mgpipe("predict", video, *common, "--config", TINY, "wide.yaml", cwd=tmp_path)
    line = one_line_error(proc)
    assert line.startswith("mgpipe predict: error: ")
    assert f"{trained['joint']}: the model was trained with pose_model.input.test_size = 8, the config sets 16" in line
    # the run's config, and a config that leaves the model's settings out, give one prediction
    (tmp_path / "bare.yaml").write_text("test: {views: 2, batch_size: 8}\ntrain: {device: cpu}\n")
    for name, cfg in (("full", [TINY]), ("bare", ["bare.yaml"])):
        proc = mgpipe("predict", video, *common, "--config", *cfg, "--out-dir", tmp_path / name, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
    full = json.loads((tmp_path / "full" / "prediction.json").read_text())
    bare = json.loads((tmp_path / "bare" / "prediction.json").read_text())
    assert full["top_k"] == bare["top_k"] and len(full["top_k"]) == 5
    table = pd.read_csv(demo_stores / "classes.csv", dtype={"name": str}, keep_default_na=False)
    assert {r["class"] for r in full["top_k"]} <= set(table.name)   # the model's own class table
    # a --classes table that is not the model's is refused (before any decoding)
    from mgpipe.stages.predict import predict_video

    with pytest.raises(InputError, match=r"class table differs from .*few_data/classes\.csv \(\d+ vs \d+ classes\)"):
        predict_video(video, trained["joint"], trained["config"], classes_csv=trained["root"] / "few_data" / "classes.csv")
    # so is an --ignore id that is not one of its classes
    with pytest.raises(InputError, match="--ignore 12345: the model has no class of that label id"):
        predict_video(video, trained["joint"], trained["config"], spot=True, ignore=[12345])


@pytest.mark.parametrize("args, problem", [
    (["--window", "nan", "--spot"], "argument --window: nan: a positive finite number of seconds"),
    (["--window", "0"], "argument --window: 0: a positive finite number of seconds"),
    (["--stride", "inf"], "argument --stride: inf: a positive finite number of seconds"),
    (["--stride", "-1"], "argument --stride: -1: a positive finite number of seconds"),
    (["--threshold", "1.5"], "argument --threshold: 1.5: a probability between 0 and 1"),
    (["--top-k", "0"], "argument --top-k: 0: a whole number of at least 1"),
    (["--top-k", "abc"], "argument --top-k: 'abc' is not a number"),
    (["--ignore", "7,abc"], "argument --ignore: '7,abc': comma-separated integer label ids expected"),
])
def test_bad_predict_numbers_are_one_line(tmp_path, args, problem):
    proc = mgpipe("predict", "v.mp4", "--model", "m.pt", *args, cwd=tmp_path)
    assert one_line_error(proc).startswith(f"mgpipe predict: error: {problem}")


def test_a_checkpoint_without_its_record_is_refused(demo_stores, trained, tmp_path):
    from mgpipe.stages.score import score_model

    old = {k: v for k, v in torch.load(trained["joint"], weights_only=True).items()
           if k not in ("classes", "layout", "inputs", "settings")}
    torch.save(old, tmp_path / "old.pt")
    with pytest.raises(InputError, match=r"old\.pt: the checkpoint does not record what the model was "
                                         r"trained on \(no classes, layout, inputs; .*\): retrain it$"):
        score_model(tmp_path / "old.pt", trained["config"], manifest_csv=demo_stores / "clips.csv",
                    frames_h5=None, keypoints_h5=demo_stores / "keypoints.h5", out_csv=tmp_path / "s.csv")
    assert not (tmp_path / "s.csv").exists()


# ---- the ensemble -------------------------------------------------------------------------

def _score_file(path, classes, rng, n=8):
    from mgpipe.formats import scores

    labels = np.arange(n) % len(classes)
    rows = pd.DataFrame({"clip_id": [f"c{i}" for i in range(n)], "split": ["test"] * n, "label": labels})
    scores.write(path, [scores.table(rows, {"joint": rng.dirichlet(np.ones(len(classes)), n)}, classes)])
    return path


def test_the_ensemble_refuses_score_files_of_different_class_tables(tmp_path):
    from mgpipe.stages.ensemble import build_report

    rng = np.random.default_rng(0)
    table = [{"label_id": i, "name": n} for i, n in [(1, "nod"), (2, "shrug"), (3, "wave")]]
    pd.DataFrame({"label": [0, 1, 2], "label_id": [1, 2, 3], "name": ["nod", "shrug", "wave"]}).to_csv(
        tmp_path / "classes.csv", index=False)
    a = _score_file(tmp_path / "a.csv", table, rng)
    cases = {"count": (table[:2], r"\(3 vs 2 classes\)"),
             "order": ([table[1], table[0], table[2]], r"\(output 0 is class 1 'nod' vs 2 'shrug'\)"),
             "names": ([table[0], table[1], {"label_id": 3, "name": "wink"}], r"\(output 2 is class 3 'wave' vs 3 'wink'\)")}
    for what, (other, message) in cases.items():
        b = _score_file(tmp_path / f"b_{what}.csv", other, rng)
        with pytest.raises(InputError, match=rf"a\.csv and .*b_{what}\.csv: score files of different class "
                                             rf"tables {message}"):
            build_report({"joint": a, "limb": b}, tmp_path / "classes.csv", tmp_path / "out",
                         members={"joint": 1, "limb": 1})
    # one run's files against another run's class table
    with pytest.raises(InputError, match=r"a\.csv: its class table differs from .*other\.csv \(3 vs 4 classes\)"):
        pd.DataFrame({"label": range(4), "label_id": range(1, 5), "name": ["nod", "shrug", "wave", "x"]}).to_csv(
            tmp_path / "other.csv", index=False)
        build_report({"joint": a}, tmp_path / "other.csv", tmp_path / "out", members={"joint": 1})
    assert not (tmp_path / "out").exists()
    build_report({"joint": a}, tmp_path / "classes.csv", tmp_path / "out", members={"joint": 1})
    assert (tmp_path / "out" / "metrics.json").exists()


def test_the_ensemble_cli_refuses_in_one_line(tmp_path):
    rng = np.random.default_rng(1)
    table = [{"label_id": i, "name": f"c{i}"} for i in range(3)]
    pd.DataFrame({"label": range(3), "label_id": range(3), "name": ["c0", "c1", "c2"]}).to_csv(
        tmp_path / "classes.csv", index=False)
    a = _score_file(tmp_path / "joint.csv", table, rng)
    b = _score_file(tmp_path / "limb.csv", table[::-1], rng)
    (tmp_path / "e.yaml").write_text("ensemble: {members: {joint: 1.0, limb: 1.0}}\n")
    proc = mgpipe("ensemble", "--scores", f"joint={a}", f"limb={b}", "--classes", tmp_path / "classes.csv",
                  "--out-dir", tmp_path / "out", "--config", "e.yaml", cwd=tmp_path)
    assert "score files of different class tables (output 0 is class 0 'c0' vs 2 'c2')" in one_line_error(proc)


# ---- plots of hostile class names -----------------------------------------------------------

NAMES = ["$x^2$", "a$b", "50%_\\", "$\\frac{$", "$a$$"]


def test_class_names_with_mathtext_render_literally(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mgpipe.stages.ensemble import plot_confusion
    from mgpipe.stages.predict import Windows, plot_timeline, spot_segments

    # the names really are hostile: as mathtext, "$\frac{$" fails when the figure is drawn
    fig, ax = plt.subplots()
    ax.set_title(NAMES[3])
    with pytest.raises(ValueError):
        fig.savefig(tmp_path / "mathtext.png")
    plt.close(fig)

    n = len(NAMES)
    plot_confusion(np.eye(n, dtype=int) * 3 + 1, NAMES, tmp_path / "confusion.png", title="t")
    assert (tmp_path / "confusion.png").stat().st_size > 1000
    classes = pd.DataFrame({"label": range(n), "label_id": range(n), "name": NAMES})
    win = Windows(np.array([0, 10, 20]), np.array([19, 29, 39]), 25.0)
    probs = np.full((3, n), 0.05)
    probs[:, 3] = 0.8
    segments = spot_segments(probs, win, classes, threshold=0.5)
    plot_timeline(probs, win, classes, segments, tmp_path / "timeline.png", threshold=0.5, title="$v$.mp4")
    assert len(segments) == 1 and (tmp_path / "timeline.png").stat().st_size > 1000
