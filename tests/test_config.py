import pytest
from conftest import run_cli

from mgpipe import config
from mgpipe.config import ConfigError


def test_shipped_configs_validate_and_fill_defaults():
    demo = config.load("config.yaml")
    assert demo["dataset"]["kind"] == "demo"
    assert demo["rgb"]["optim"]["momentum"] == 0.9          # filled from the schema
    paper = config.load("config/paper.yaml")
    assert paper["pose_model"]["network"]["stage_blocks"] == [4, 6, 3]
    assert paper["fused"]["optim"]["lr"] == 0.0075 and paper["fused"]["optim"]["lr_steps"] == [8, 22]


@pytest.mark.parametrize("bad, key", [
    ({"train": {"epochz": 3}}, "train.epochz"),
    ({"heatmaps": {"size": "big"}}, "heatmaps.size"),
    ({"rgb": {"optim": {"lr": -1}}}, "rgb.optim.lr"),
    ({"fused": {"variants": ["full", "nonsense"]}}, "fused.variants.1"),
    ({"colour": 1}, "colour"),
])
def test_wrong_values_give_one_line_naming_the_key(bad, key):
    with pytest.raises(ConfigError) as err:
        config.validate(bad)
    msg = str(err.value)
    assert key in msg and "\n" not in msg


def test_yaml_errors_name_the_file(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match=str(p)):
        config.load(p)


def test_canonical_params_ignore_key_order():
    assert config.canonical({"b": 1, "a": {"y": 2, "x": 1}}) == config.canonical({"a": {"x": 1, "y": 2}, "b": 1})


def test_code_digest_follows_module_source(tmp_path, monkeypatch):
    before = config.code_digest("heatmaps")
    assert before == config.code_digest("heatmaps")
    assert before != config.code_digest("decode")


def test_fused_shape_rules_are_checked_up_front():
    with pytest.raises(ConfigError, match="pose_model.input.frames .8. must be 4 x rgb.frames .4."):
        config.validate({"rgb": {"frames": 4, "size": 32}, "pose_model": {"input": {"frames": 8, "size": 8}}})
    with pytest.raises(ConfigError, match="pose_model.input.size"):
        config.validate({"rgb": {"frames": 2, "size": 32}, "pose_model": {"input": {"frames": 8, "size": 16}}})
    # a pathway that strides in time breaks the 4:1 ratio after its first stage (JHMDB's first
    # recipe: a traceback in the fused training after an hour of member trainings)
    strided = {"rgb": {"frames": 8, "size": 96}, "pose_model": {"input": {"frames": 32, "size": 24},
               "network": {**config.defaults()["pose_model"]["network"], "temporal_strides": [1, 2, 2]}}}
    with pytest.raises(ConfigError, match=r"pose_model.network.temporal_strides \[1, 2, 2\]: the fused network"):
        config.validate(strided)
    config.validate({**strided, "mode": "pose"})   # no fused network: a joint model may


def test_every_shipped_config_is_valid_on_top_of_the_demo():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    for path in sorted((root / "config").glob("*.yaml")):
        merged = config.load([root / "config.yaml", path])
        assert merged["results"] != "results/demo", f"{path} would overwrite the demo's results"


def test_several_config_files_merge_like_snakemake(tmp_path):
    (tmp_path / "a.yaml").write_text("pose: {layout: body25, low_score: 0.2}\nheatmaps: {size: 32}\n")
    (tmp_path / "b.yaml").write_text("pose: {low_score: 0.4}\n")
    merged = config.load([tmp_path / "a.yaml", tmp_path / "b.yaml"])
    assert merged["pose"]["layout"] == "body25" and merged["pose"]["low_score"] == 0.4
    assert merged["heatmaps"]["size"] == 32


def test_pose_only_mode_refuses_a_pose_model_backend():
    with pytest.raises(config.ConfigError, match="pose-only mode reads provided keypoints"):
        config.validate({"mode": "pose", "pose": {"backend": "mmpose"}})


@pytest.mark.parametrize("text, key", [
    ("rgb:\n  optim: {lr: .nan}\n", "rgb.optim.lr"),
    ("heatmaps:\n  sigma: .inf\n", "heatmaps.sigma"),
    ("train:\n  crop_area: [0.5, .nan]\n", "train.crop_area.1"),
    ("ensemble:\n  members: {joint: .inf}\n", "ensemble.members.joint"),
    ("pose_model:\n  optim: {momentum: .NaN}\n", "pose_model.optim.momentum"),
])
def test_nan_and_infinity_are_refused_for_every_number(tmp_path, text, key):
    """YAML's .nan/.inf pass JSON schema's `number`; a NaN learning rate would otherwise only
    show up as a diverged loss hours later."""
    p = tmp_path / "c.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as err:
        config.load(["config.yaml", p])
    msg = str(err.value)
    assert f"config key {key}" in msg and "not a finite number" in msg and "\n" not in msg


def test_defaults_are_the_schema_defaults_and_a_fresh_copy():
    d = config.defaults()
    assert d["decode"] == {"max_side": 340, "jpeg_quality": 90}
    assert d["heatmaps"] == {"size": 64, "sigma": 0.6, "padding": 0.25}
    d["heatmaps"]["size"] = 8
    assert config.defaults()["heatmaps"]["size"] == 64


# ----------------------------------------------------------------------------- stage commands
# demo-data, decode and heatmaps take their settings from the config like every other stage:
# --config-json holds only the sections the stage reads, the schema fills in the rest.
_run = run_cli


def _stage_argv(stage, tmp_path):
    """The command line of a stage without its settings (the paths need not exist: a bad
    setting is refused before anything is read)."""
    return {"demo-data": ["demo-data", tmp_path / "demo"],
            "decode": ["decode", "--manifest", tmp_path / "clips.csv", "--out", tmp_path / "frames.h5"],
            "heatmaps": ["heatmaps", "--keypoints", tmp_path / "kp.h5", "--out", tmp_path / "hm.h5"]}[stage]


@pytest.mark.parametrize("stage, bad, key", [
    ("demo-data", {"dataset": {"demo": {"num_subjects": 1}}}, "dataset.demo.num_subjects"),
    ("demo-data", {"seed": -1}, "seed"),
    ("decode", {"decode": {"max_side": "x"}}, "decode.max_side"),
    ("decode", {"decode": {"quality": 90}}, "decode.quality"),
    ("heatmaps", {"heatmaps": {"sigma": 0}}, "heatmaps.sigma"),
])
def test_stage_refuses_a_bad_setting_in_one_line(stage, bad, key, tmp_path, capsys):
    import json

    rc, err = _run(capsys, *_stage_argv(stage, tmp_path), "--config-json", json.dumps(bad))
    assert rc == 2, err
    assert err.startswith(f"mgpipe {stage}: error: --config-json: ") and err.count("\n") == 1, err
    assert key in err
    assert not list(tmp_path.iterdir())  # nothing written


@pytest.mark.parametrize("stage", ["demo-data", "decode", "heatmaps"])
def test_stage_settings_are_no_longer_flags(stage, tmp_path, capsys):
    flag = {"demo-data": "--subjects", "decode": "--max-side", "heatmaps": "--size"}[stage]
    with pytest.raises(SystemExit) as exit_:
        _run(capsys, *_stage_argv(stage, tmp_path), flag, "3")
    assert exit_.value.code == 2


def test_decode_and_heatmaps_read_their_settings_from_config_json(small_dataset, tmp_path, capsys):
    import h5py
    import numpy as np
    from conftest import build_manifest

    from mgpipe.stages.clips import write_csv

    manifest, _ = build_manifest(small_dataset / "labels.csv", small_dataset / "split.csv",
                                 small_dataset / "videos")
    write_csv(manifest.iloc[:1], tmp_path / "clips.csv")
    rc, err = _run(capsys, "decode", "--manifest", tmp_path / "clips.csv", "--config-json",
                   '{"decode": {"max_side": 32, "jpeg_quality": 50}}', "--out", tmp_path / "frames.h5")
    assert rc == 0, err
    with h5py.File(tmp_path / "frames.h5") as h5:
        assert (h5.attrs["max_side"], h5.attrs["jpeg_quality"]) == (32, 50)

    from mgpipe.formats import keypoints as keypoint_store
    from mgpipe.layouts import COCO17

    kp = np.zeros((1, 3, 17, 3), np.float32)
    kp[..., 0], kp[..., 1], kp[..., 2] = np.linspace(10, 90, 17), np.linspace(20, 80, 17), 1.0
    with keypoint_store.writer(tmp_path / "kp.h5", COCO17, source="test") as store:
        store.add("c0", kp, 100, 100)
    rc, err = _run(capsys, "heatmaps", "--keypoints", tmp_path / "kp.h5", "--config-json",
                   '{"heatmaps": {"size": 12, "sigma": 1.5}}', "--out", tmp_path / "hm.h5")
    assert rc == 0, err
    with h5py.File(tmp_path / "hm.h5") as h5:
        assert h5.attrs["size"] == 12 and h5.attrs["sigma"] == pytest.approx(1.5)
        assert h5.attrs["padding"] == pytest.approx(config.defaults()["heatmaps"]["padding"])
        assert h5["joint/c0"].shape == (3, 17, 12, 12)


def test_demo_data_reads_seed_and_dataset_demo_through_the_real_command(tmp_path):
    import json
    import subprocess
    import sys

    settings = {"seed": 5, "dataset": {"demo": {"num_subjects": 3, "segments_per_class": 1,
                                                "width": 64, "height": 64, "fps": 10}}}
    proc = subprocess.run([sys.executable, "-m", "mgpipe", "-q", "demo-data", str(tmp_path / "demo"),
                           "--config-json", json.dumps(settings)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    readme = (tmp_path / "demo" / "README.txt").read_text()
    assert ("generate(seed=5, num_subjects=3, segments_per_class=1, width=64, height=64, fps=10)"
            in readme)
    videos = sorted(p.name for p in (tmp_path / "demo" / "videos").iterdir())
    assert videos == ["v000.mp4", "v001.mp4", "v002.mp4"]
