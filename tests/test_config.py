import pytest

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
