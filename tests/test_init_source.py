"""Where a model starts (issue 27, item 3): init_source.resolve is the one reader of the config's
init section and swin.weights; each kind of source; the command line's sources; and training,
which takes the source it is given and never goes back to the config for it."""

import re
from pathlib import Path

import pytest
import torch
from conftest import run_cli
from test_train import tiny_config, train

from mgpipe import config as mgconfig
from mgpipe.io import InputError
from mgpipe.learning import specs
from mgpipe.learning.weights import init_source
from mgpipe.learning.weights.init_source import InitSource

REPO = Path(__file__).resolve().parents[1]


def config(**sections):
    cfg = mgconfig.defaults()
    for key, value in sections.items():
        if isinstance(value, dict):
            cfg[key].update(value)
        else:
            cfg[key] = value
    return cfg


# ---- each kind -------------------------------------------------------------------------------

def test_a_file_with_and_without_its_layout(tmp_path):
    cfg = config(init={"joint": "a/./joint.pth", "fused": {"path": "x.pth", "layout": "coco17"}})
    assert init_source.resolve(cfg, "joint") == InitSource("a/joint.pth", "file", "config key init.joint")
    # every fused variant reads init.fused
    assert init_source.resolve(cfg, "fused_plain") == InitSource("x.pth", "file", "config key init.fused", "coco17")


def test_a_results_folder_names_its_model_of_the_same_name(tmp_path):
    (tmp_path / "ntu" / "models" / "limb").mkdir(parents=True)
    source = init_source.resolve(config(init={"limb": str(tmp_path / "ntu")}), "limb")
    assert source == InitSource(str(tmp_path / "ntu" / "models" / "limb" / "model.pt"), "results folder",
                                "config key init.limb")


def test_a_torchvision_weight_name_is_its_file_in_torchs_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    source = init_source.resolve(config(swin={"variant": "t", "weights": "KINETICS400_V1"}), "swin")
    assert source.kind == "torchvision weight" and source.weights == "KINETICS400_V1"
    assert source.file == str(tmp_path / "torch" / "hub" / "checkpoints" / "swin3d_t-7615ae03.pth")
    assert source.named_by == "config key swin.weights" and source.layout is None
    # swin.weights as a file is a file; init.swin is no key of the config's
    assert init_source.resolve(config(swin={"weights": "w.pth"}), "swin") == \
        InitSource("w.pth", "file", "config key swin.weights")


def test_a_fused_model_given_no_file_starts_from_the_merge_stage(tmp_path):
    source = init_source.resolve(config(results="out/run"), "fused_full")
    assert source == InitSource("out/run/merged/fused_full.pt", "merged",
                                "config key init.fused (null: the merge stage's output)")
    # a single-pathway model given no file starts from scratch
    assert [m for m in specs.REGISTRY if init_source.resolve(config(), m) is None] == \
        ["rgb", "joint", "limb", "motion", "swin"]
    assert all(init_source.resolve(config(), m).kind == "merged" for m in specs.REGISTRY if m.startswith("fused_"))


def test_an_unknown_layout_or_weight_name_names_the_key():
    with pytest.raises(InputError, match=r"^config key init.fused: unknown keypoint layout 'nope'"):
        init_source.resolve(config(init={"fused": {"path": "x.pth", "layout": "nope"}}), "fused_full")
    with pytest.raises(InputError, match=r"^config key swin.weights: 'KINETICS9' is not a torchvision weight name"):
        init_source.resolve(config(swin={"variant": "t", "weights": "KINETICS9"}), "swin")


# ---- the command line ------------------------------------------------------------------------

def test_the_command_line_wins_and_without_it_the_config_is_resolved(tmp_path):
    cfg = config(init={"joint": {"path": "elsewhere.pt", "layout": "openni15"}}, results=str(tmp_path))
    assert init_source.from_command_line(cfg, "joint", tmp_path / "mine.pt") == \
        InitSource(str(tmp_path / "mine.pt"), "file", "--init")
    assert init_source.from_command_line(cfg, "joint", "mine.pt", "coco17").layout == "coco17"
    assert init_source.from_command_line(cfg, "joint") == init_source.resolve(cfg, "joint")
    with pytest.raises(InputError, match="--init-layout names the keypoint layout of the --init file"):
        init_source.from_command_line(cfg, "joint", layout="coco17")
    with pytest.raises(InputError, match="^--init-layout: unknown keypoint layout 'nope'"):
        init_source.from_command_line(cfg, "joint", "mine.pt", "nope")
    # without the workflow there is no merge job: the merged weights must be there
    with pytest.raises(InputError, match=r"merged/fused_full.pt: not found: fused_full starts from the merge"):
        init_source.from_command_line(cfg, "fused_full")
    (tmp_path / "merged").mkdir()
    (tmp_path / "merged" / "fused_full.pt").write_bytes(b"")
    assert init_source.from_command_line(cfg, "fused_full").kind == "merged"


def test_init_and_init_weights_exclude_each_other(capsys):
    with pytest.raises(SystemExit):
        run_cli(capsys, "train", "swin", "--config-json", "{}", "--manifest", "m.csv", "--classes", "c.csv",
                "--keypoints", "k.h5", "--out-dir", "out", "--init", "a.pth", "--init-weights", "KINETICS400_V1")
    assert "not allowed with argument" in capsys.readouterr().err


# ---- the one reader --------------------------------------------------------------------------

def test_training_uses_only_the_source_it_is_given(demo_stores, tmp_path):
    """The config names another file and another layout: training reads neither (a missing
    file, a layout of other joints), only the source the command passes; without one, it
    starts from scratch whatever the config's init section says."""
    cfg = tiny_config(epochs=1)
    train("joint", cfg, demo_stores, tmp_path / "first")
    first = tmp_path / "first" / "model.pt"
    cfg["init"]["joint"] = {"path": str(tmp_path / "missing.pt"), "layout": "openni15"}
    train("joint", cfg, demo_stores, tmp_path / "given", init=first)
    record = torch.load(tmp_path / "given" / "model.pt", weights_only=False)["init"]
    assert record["source"] == str(first) and not record["channels"]   # no mapping from openni15
    assert len(record["loaded"]) > 10 and not record["partly"]
    train("joint", cfg, demo_stores, tmp_path / "none")
    assert torch.load(tmp_path / "none" / "model.pt", weights_only=False)["init"] is None


def test_only_init_source_reads_the_init_keys():
    """No other module of the package or rule reads the config's init section or a spec's
    weights key: they get an InitSource."""
    reads = re.compile(r"""config\[["']init["']\]|\[["']swin["']\]\[["']weights["']\]|get\(["']init["']\)"""
                       r"|\bspec\.weights\b|\.weights_key\(|\bconfig_key\(")
    readers = []
    for path in [*(REPO / "mgpipe").rglob("*.py"), *(REPO / "workflow" / "rules").glob("*.smk")]:
        if path.name != "init_source.py":
            readers += [f"{path.relative_to(REPO)}: {m.group()}" for m in reads.finditer(path.read_text())]
    assert readers == []
    source = (REPO / "mgpipe" / "learning" / "weights" / "init_source.py").read_text()
    assert "def resolve(" in source and len(reads.findall(source)) >= 2   # (the pattern finds a reader)
