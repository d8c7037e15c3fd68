"""mgpipe.api: a trained model classifies a keypoint array and a video file from Python, with the
same probabilities as the test stage gives the same clip; bad arrays are one-line InputErrors."""

import numpy as np
import pandas as pd
import pytest
from test_model_records import tiny_config, train

from mgpipe.api import Recognizer
from mgpipe.formats.keypoints import Reader
from mgpipe.io import InputError
from mgpipe.stages.score import score_model


@pytest.fixture(scope="module")
def joint_model(demo_stores, tmp_path_factory):
    root = tmp_path_factory.mktemp("api")
    return train("joint", tiny_config(), demo_stores, root / "joint")


def test_keypoints_give_the_test_stages_probabilities(joint_model, demo_stores, tmp_path):
    cfg = tiny_config()
    scores = tmp_path / "scores.csv"
    score_model(joint_model, cfg, manifest_csv=demo_stores / "clips.csv", frames_h5=None,
                keypoints_h5=demo_stores / "keypoints.h5", out_csv=scores, progress=False,
                classes_csv=demo_stores / "classes.csv")
    table = pd.read_csv(scores)
    recognizer = Recognizer(joint_model, {"test": {"views": cfg["test"]["views"]}})
    classes = pd.read_csv(demo_stores / "classes.csv")
    assert recognizer.names == list(classes.name)
    store = Reader(demo_stores / "keypoints.h5")
    # the first clip of each split: test views are drawn by (seed, clip's index in its split, view)
    for row in table.groupby("split").head(1).itertuples(index=False):
        kp, width, height = store.clip(row.clip_id)
        pred = recognizer.classify_keypoints(kp, width=width, height=height)
        expected = np.asarray(row[3:], dtype=float)
        np.testing.assert_allclose(pred.probabilities, expected, atol=2e-6)
        assert pred.name == classes.name[int(np.argmax(expected))]
        assert pred.top(2)[0] == (pred.name, pred.probability) and len(pred.top(2)) == 2
        # [T, V, 2] (every joint seen) is accepted too
        assert recognizer.classify_keypoints(kp[0, :, :, :2], width=width, height=height).probabilities.shape == (len(classes),)


def test_a_video_file_is_classified_with_its_keypoints(joint_model, demo_stores):
    demo = next(p for p in demo_stores.iterdir() if (p / "videos").is_dir())
    video = sorted((demo / "videos").iterdir())[0]
    pred = Recognizer(joint_model).classify_video(video, skeletons=demo / "skeletons")
    assert pred.model == "joint" and abs(pred.probabilities.sum() - 1) < 1e-5
    assert pred.name in pred.names


@pytest.mark.parametrize("keypoints, message", [
    (np.zeros(3), "expected [T, V, 3]"),
    (np.zeros((4, 3, 3)), "3 joints; the model's layout has 17"),
    (np.full((4, 17, 3), np.nan), "NaN or infinite"),
    (np.concatenate([np.ones((4, 17, 2)), np.full((4, 17, 1), 2.0)], -1), "scores outside 0..1"),
    ([["a"]], "not a numeric array"),
])
def test_bad_keypoint_arrays_are_one_line(joint_model, keypoints, message):
    with pytest.raises(InputError, match="keypoints: ") as e:
        Recognizer(joint_model).classify_keypoints(keypoints, width=160, height=120)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_a_frame_model_and_a_missing_file_are_refused(demo_stores, tmp_path):
    with pytest.raises(InputError, match="model checkpoint not found"):
        Recognizer(tmp_path / "none.pt")
    rgb = train("rgb", tiny_config(), demo_stores, tmp_path / "rgb")
    with pytest.raises(InputError, match="reads video frames; use classify_video"):
        Recognizer(rgb).classify_keypoints(np.zeros((4, 17, 3)), width=160, height=120)


# ---- the commands a user types: predict and test know their model ----------------------------

def _mgpipe(*args, cwd):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "mgpipe", "-q", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=600)


def test_predict_takes_every_setting_from_the_model(joint_model, demo_stores):
    """From the repository (whose config.yaml sets other input sizes than the tiny model's),
    predict needs no config; a --set that contradicts the model is refused in one line."""
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    demo = next(p for p in demo_stores.iterdir() if (p / "videos").is_dir())
    video = sorted((demo / "videos").iterdir())[0]
    proc = _mgpipe("predict", video, "--model", joint_model, "--skeletons", demo / "skeletons",
                   "--top-k", 3, cwd=repo)
    assert proc.returncode == 0, proc.stderr
    assert f"{video}: top-3 (joint)" in proc.stdout
    proc = _mgpipe("predict", video, "--model", joint_model, "--skeletons", demo / "skeletons",
                   "--set", "pose_model.input.frames=16", cwd=repo)
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(err) == 1, proc.stderr
    assert "the model was trained with pose_model.input.frames = 8, the config sets 16" in err[0]


def test_set_changes_one_setting_and_bad_items_are_one_line(tmp_path):
    from mgpipe.cli import _config, parser

    args = parser().parse_args(["heatmaps", "--keypoints", "k.h5", "--out", "h.h5", "--config-json", "{}",
                                "--set", "heatmaps.sigma=1.5", "--set", "heatmaps.size=[8]", "--set",
                                "heatmaps.size=12"])
    assert _config(args)["heatmaps"]["sigma"] == 1.5 and _config(args)["heatmaps"]["size"] == 12
    for item, line in [("heatmaps.sigma", "--set heatmaps.sigma: expected KEY=VALUE"),
                       ("heatmaps.sigma=abc", "heatmaps.sigma"),
                       ("heatmaps..x=1", "expected KEY=VALUE with a dotted key"),
                       ("seed.x=1", "config key seed: {'x': 1} is not of type 'integer'"),
                       ("heatmaps.sigma=[1", "--set heatmaps.sigma: not a YAML value")]:
        proc = _mgpipe("heatmaps", "--keypoints", tmp_path / "k.h5", "--out", tmp_path / "h.h5",
                       "--config-json", "{}", "--set", item, cwd=tmp_path)
        err = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(err) == 1 and line in err[0], (item, proc.stderr)
        assert "Traceback" not in proc.stderr and not (tmp_path / "h.h5").exists()


def test_version_and_grouped_help_with_defaults(tmp_path):
    import mgpipe

    proc = _mgpipe("--version", cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout.startswith(f"mgpipe {mgpipe.__version__} (Python ")
    assert "torch " in proc.stdout
    text = _mgpipe("--help", cwd=tmp_path).stdout
    groups = [text.index(g) for g in ("use a trained model:", "data and tools:", "workflow stages:")]
    assert groups == sorted(groups)
    assert text.index("  predict ") < groups[1] < text.index("  export-pickle ") < groups[2] < text.index("  train ")
    train = " ".join(_mgpipe("train", "--help", cwd=tmp_path).stdout.split())   # (argparse wraps lines)
    assert "(default: 1)" in train and "(default: config.yaml)" in train and "--set KEY=VALUE" in train
    assert train.count("(default: config.yaml)") == 1   # a text that says its own default is not given it twice
