"""mgpipe against MMAction2 itself, in its side environment (scripts/install_mmaction2.sh).

MMAction2 1.2.0 builds its own ResNet3dSlowOnly with PoseConv3D's joint and limb configs and its
RGBPoseConv3D, with random weights and BatchNorm statistics, and saves them in its checkpoint
format; mgpipe imports them and must give the same logits on the same input in eval mode. Then
mgpipe exports its models (joint, RGB, fused) and MMAction2 loads them with no missing or unexpected keys and gives
mgpipe's logits. The side interpreter is MGPIPE_MMACTION2_PYTHON, else
<repo>/.venvs/mmaction2/bin/python; without it these tests skip, unless MGPIPE_REQUIRE_BACKENDS=1
(CI), where they fail. One side process builds all three models (about 20 s), one loads the exports.
"""

import json
import subprocess
from pathlib import Path

import pytest
import torch
from conftest import side_environment

from mgpipe import cli
from mgpipe import config as mgconfig
from mgpipe.formats import checkpoints
from mgpipe.layouts import get_layout
from mgpipe.learning import specs
from mgpipe.learning.weights import initialise as tinit
from mgpipe.learning.weights.layout_map import PYSKL_COCO17, channel_pairs

ROOT = Path(__file__).resolve().parents[1]
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def side_python():
    return side_environment("mmaction2", "MGPIPE_MMACTION2_PYTHON")


def side(python, *args):
    proc = subprocess.run([python, str(ROOT / "tests" / "mmaction_side.py"), *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def built(side_python, tmp_path_factory):
    out = tmp_path_factory.mktemp("mmaction")
    side(side_python, "build", str(out))
    return out


def mgpipe_model(which):
    """mgpipe's network configured as MMAction2's: PoseConv3D's SlowOnly (its last stage strides
    time by 2), or the fused network at the RGBPoseConv3D defaults (= mgpipe's defaults)."""
    cfg = mgconfig.defaults()
    if which in ("rgbpose", "rgb"):
        name, channels = "fused_full" if which == "rgbpose" else "rgb", (17, 18)
    else:
        cfg["pose_model"]["network"]["temporal_strides"] = [1, 1, 2]
        name, channels = which, (17, 18)
    arch = specs.get(name).network(cfg, channels)
    return specs.build(arch, 60), arch, name


def mgpipe_inputs(which, inputs):
    """The side's inputs as mgpipe's model takes them: a pyskl limb volume's 17 channels moved to
    mgpipe's COCO-17 limb order (18 limbs; the shoulder-to-shoulder one, absent there, is zero)."""
    if which == "limb":
        src = inputs["pose"]
        pose = torch.zeros(src.shape[0], 18, *src.shape[2:])
        for j, i in channel_pairs(PYSKL_COCO17, get_layout("coco17"), "limb"):
            pose[:, j] = src[:, i]
        return (pose,)
    if which == "rgb":
        return (inputs["rgb"],)
    return (inputs["rgb"], inputs["pose"]) if which == "rgbpose" else (inputs["pose"],)


@torch.no_grad()
def mgpipe_logits(model, which, inputs):
    out = model.eval()(*mgpipe_inputs(which, inputs))
    return {"rgb": out["rgb"], "pose": out["pose"]} if which == "rgbpose" else {"logits": out["logits"]}


@pytest.fixture(scope="module")
def imported(built):
    models = {}
    for which in ("joint", "limb", "rgbpose"):
        model, arch, name = mgpipe_model(which)
        channels = "limb" if which == "limb" else "joint"
        report = tinit.initialise(model, arch, built / f"{which}.pth", channels=channels,
                                  target_layout=get_layout("coco17"))
        models[which] = (model, arch, name, report)
    # the RGB model from RGBPoseConv3D's RGB pathway (its wider stage 3 and 4 first blocks keep
    # their own input channels), to check the RGB SlowOnly against MMAction2's below
    model, arch, name = mgpipe_model("rgb")
    report = tinit.initialise(model, arch, built / "rgbpose.pth", channels="rgb")
    assert report["fresh"] == {} and len(report["partly"]) == 4
    models["rgb"] = (model, arch, name, report)
    return models


@pytest.mark.parametrize("which", ["joint", "limb", "rgbpose"])
def test_mmaction_checkpoints_give_the_same_logits_in_mgpipe(built, imported, which):
    model, _, _, report = imported[which]
    io = torch.load(built / f"{which}_io.pt", weights_only=True)
    ours = mgpipe_logits(model, which, io["inputs"])
    for stream, reference in io["logits"].items():
        diff = (ours[stream] - reference).abs().max().item()
        print(f"{which} {stream}: max |logit difference| {diff:.2e} (max |logit| {reference.abs().max():.2f})")
        assert diff < TOLERANCE
    assert report["ignored"] == []
    if which == "rgbpose":  # only mgpipe's own modules start fresh (fusion gates are zero: identity)
        assert report["fresh"] and all(k.startswith(("fusion.", "proto.")) for k in report["fresh"])
    elif which == "limb":
        assert report["channels"]["fresh"] == ["left_shoulder-right_shoulder"]
    else:
        assert report["fresh"] == {} and report["partly"] == {}


def test_mmaction_loads_mgpipe_exports_with_no_missing_keys(side_python, built, imported, tmp_path):
    jobs, expected = [], {}
    for which in ("joint", "rgb", "rgbpose"):
        model, arch, name, _ = imported[which]
        ckpt = tmp_path / f"{which}.pt"
        checkpoints.save({"model": model.state_dict(), "arch": arch, "num_classes": 60, "name": name,
                          "epoch": 1, "val_top1": None}, ckpt)
        out = tmp_path / f"{which}_mgpipe.pth"
        assert cli.main(["export-checkpoint", str(ckpt), "--out", str(out)]) == 0
        exported = torch.load(out, weights_only=True)
        (tmp_path / f"{which}.json").write_text(json.dumps(exported["meta"]["mmaction_model"]))
        # the round trip through the importer is exact
        back, _, _ = mgpipe_model(which)
        report = tinit.initialise(back, arch, out, target_layout=get_layout("coco17"))
        assert report["fresh"] == {} and report["ignored"] == []
        assert all(torch.equal(v, back.state_dict()[k]) for k, v in model.state_dict().items())
        io = torch.load(built / f"{'rgbpose' if which == 'rgb' else which}_io.pt", weights_only=True)
        if which == "rgb":
            io["inputs"] = {"rgb": io["inputs"]["rgb"]}
        torch.save(io["inputs"], tmp_path / f"{which}_in.pt")
        expected[which] = mgpipe_logits(model, which, io["inputs"])
        jobs.append({"name": which, "config": str(tmp_path / f"{which}.json"), "checkpoint": str(out),
                     "inputs": str(tmp_path / f"{which}_in.pt"), "out": str(tmp_path / f"{which}_out.pt")})
    (tmp_path / "jobs.json").write_text(json.dumps(jobs))
    report = side(side_python, "load", str(tmp_path / "jobs.json"))
    for which in ("joint", "rgb", "rgbpose"):
        assert report[which] == {"missing": [], "unexpected": []}, report[which]
        theirs = torch.load(tmp_path / f"{which}_out.pt", weights_only=True)
        for stream, ours in expected[which].items():
            diff = (ours - theirs[stream]).abs().max().item()
            print(f"export {which} {stream}: MMAction2 vs mgpipe max |logit difference| {diff:.2e}")
            assert diff < TOLERANCE
