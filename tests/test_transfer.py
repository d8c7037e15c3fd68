"""Initial weights (mgpipe/learning/weights/): mgpipe models, pyskl / MMAction2 checkpoints, RGBPoseConv3D
pathways, keypoint layouts, the export, refusals. Cheap: tiny networks; the one training run uses
18 real KARD clips for one epoch. MMAction2's own models are in test_transfer_mmaction.py."""

import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import build_manifest, pose_settings
from workflow_runs import make_workdir, smk

from mgpipe import cli
from mgpipe import config as mgconfig
from mgpipe.formats import checkpoints
from mgpipe.io import InputError
from mgpipe.layouts import get_layout
from mgpipe.learning import specs
from mgpipe.learning.weights import init_source, mmaction
from mgpipe.learning.weights import initialise as tinit
from mgpipe.learning.weights.layout_map import PYSKL_COCO17, channel_pairs

KARD = Path(__file__).resolve().parents[2] / "shared" / "data" / "kard2d.pkl"
TINY_RGB = {"base_channels": 4, "stage_blocks": [1, 1, 1, 1], "inflate": [0, 0, 1, 1],
            "spatial_strides": [1, 2, 2, 2], "temporal_strides": [1, 1, 1, 1], "dropout": 0.2}
TINY_POSE = {"base_channels": 4, "stage_blocks": [1, 1, 1], "inflate": [0, 1, 1],
             "spatial_strides": [2, 2, 2], "temporal_strides": [1, 1, 1], "dropout": 0.2}


def config(**overrides):
    cfg = mgconfig.defaults()
    cfg["rgb"]["network"], cfg["pose_model"]["network"] = dict(TINY_RGB), dict(TINY_POSE)
    cfg["fused"]["fusion"]["hidden"], cfg["fused"]["prototype"]["dim"] = 8, 8
    for key, value in overrides.items():
        cfg[key].update(value)
    return cfg


def randomised(name, channels, num_classes, seed=0, cfg=None):
    """(model, arch) of a registered model with every tensor random (BN statistics, fusion gates and
    prototypes included), so that a wrong or missing copy shows."""
    arch = specs.get(name).network(cfg or config(), channels)
    model = specs.build(arch, num_classes)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, t in model.state_dict().items():
            if t.is_floating_point():
                t.copy_(torch.rand(t.shape, generator=g) * 0.5 + 0.1)
            else:
                t.fill_(7)
    return model, arch


def save_mgpipe(model, arch, name, num_classes, path, layout=None):
    checkpoints.save({"model": model.state_dict(), "arch": arch, "num_classes": num_classes, "name": name,
                      "epoch": 3, "val_top1": None,
                      **({"layout": tinit.layout_record(layout)} if layout else {})}, path)
    return path


def save_pyskl(model, arch, path, extra_meta=None):
    """An mgpipe network saved the way pyskl / MMAction2 save theirs (names mapped, numpy in meta)."""
    state, _ = mmaction.export_state(model, arch)
    meta = {"epoch": 24, "best_score": np.float64(0.93), "CLASSES": np.arange(3), **(extra_meta or {})}
    torch.save({"meta": meta, "state_dict": state, "optimizer": {"state": {}}}, path)
    return path


def test_export_round_trip_is_exact(tmp_path):
    for name, channels in (("joint", (17, 18)), ("fused_full", (17, 18))):
        model, arch = randomised(name, channels, 5)
        src = save_mgpipe(model, arch, name, 5, tmp_path / f"{name}.pt")
        out = tmp_path / f"{name}.pth"
        assert cli.main(["export-checkpoint", str(src), "--out", str(out)]) == 0
        exported = torch.load(out, weights_only=True)
        assert set(exported) == {"meta", "state_dict"}
        assert all(k.startswith(("backbone.", "cls_head.")) for k in exported["state_dict"])
        assert exported["meta"]["mmaction_model"]["type"] == ("Recognizer3D" if name == "joint" else "MMRecognizer3D")
        back = specs.build(arch, 5)
        report = tinit.initialise(back, arch, out, target_layout=get_layout("coco17"))
        assert report["fresh"] == {} and report["ignored"] == [] and report["partly"] == {}
        a, b = model.state_dict(), back.state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a), name


def test_names_follow_mmaction_conventions():
    assert mmaction.mmaction_name("backbone.layers.0.2.bn3.running_var", "single", "single") == \
        "backbone.layer1.2.conv3.bn.running_var"
    assert mmaction.mmaction_name("backbone.layers.2.0.downsample.0.weight", "single", "single") == \
        "backbone.layer3.0.downsample.conv.weight"
    assert mmaction.mmaction_name("backbone.stem.1.weight", "single", "rgbpose", "pose") == \
        "backbone.pose_path.conv1.bn.weight"
    assert mmaction.mmaction_name("head.fc.bias", "single", "rgbpose", "rgb") == "cls_head.fc_rgb.bias"
    assert mmaction.mmaction_name("pose_to_rgb.1.weight", "fused", "rgbpose") == \
        "backbone.rgb_path.layer3_lateral.conv.weight"
    assert mmaction.mmaction_name("rgb_to_pose.0.bn.running_mean", "fused", "rgbpose") == \
        "backbone.pose_path.layer1_lateral.bn.running_mean"
    assert mmaction.mmaction_name("fusion.0.rgb_in.weight", "fused", "rgbpose") is None


def test_fused_model_from_an_rgbpose_checkpoint_and_either_pathway_for_a_single_model(tmp_path):
    fused, fused_arch = randomised("fused_plain", (17, 18), 60)
    path = save_pyskl(fused, fused_arch, tmp_path / "rgbpose.pth")
    # the fused model: everything MMAction2 has, laterals included; fusion and prototypes fresh
    target, arch = randomised("fused_full", (17, 18), 60, seed=1)
    report = tinit.initialise(target, arch, path, target_layout=get_layout("coco17"))
    assert report["fresh"] and all(k.startswith(("fusion.", "proto.")) for k in report["fresh"])
    assert "rgb_to_pose.0.conv.weight" in report["loaded"] and "pose_to_rgb.1.weight" in report["loaded"]
    # the joint model takes the pose pathway and head; its stage 2 and 3 first blocks get their own
    # input channels (the lateral ones dropped); the RGB pathway and the laterals are ignored
    joint, joint_arch = randomised("joint", (17, 18), 60, seed=2)
    report = tinit.initialise(joint, joint_arch, path, channels="joint", target_layout=get_layout("coco17"))
    assert report["fresh"] == {}
    assert set(report["partly"]) == {f"backbone.layers.{i}.0.{c}.weight" for i in (1, 2)
                                     for c in ("conv1", "downsample.0")}
    assert "backbone.pose_path.layer1_lateral.conv.weight" in report["ignored"]
    assert any(k.startswith("backbone.rgb_path.") for k in report["ignored"])
    src, dst = fused.state_dict(), joint.state_dict()
    assert torch.equal(dst["backbone.layers.2.0.conv1.weight"], src["pose_path.layers.2.0.conv1.weight"][:, :32])
    assert torch.equal(dst["head.fc.weight"], src["pose_head.fc.weight"])
    assert torch.equal(dst["backbone.layers.0.0.bn1.running_var"], src["pose_path.layers.0.0.bn1.running_var"])
    limb, limb_arch = randomised("limb", (17, 18), 60, seed=4)
    with pytest.raises(InputError, match="pose pathway takes joint heatmaps; a limb model starts from a limb"):
        tinit.initialise(limb, limb_arch, path, channels="limb", target_layout=get_layout("coco17"))
    # the RGB model takes the RGB pathway and fc_rgb
    rgb, rgb_arch = randomised("rgb", (17, 18), 60, seed=3)
    report = tinit.initialise(rgb, rgb_arch, path, channels="rgb")
    assert report["fresh"] == {} and torch.equal(rgb.state_dict()["head.fc.bias"], src["rgb_head.fc.bias"])


def test_limbs_follow_their_joints_across_limb_orders(tmp_path):
    # a pyskl limb checkpoint: 17 channels in PoseConv3D's limb order; mgpipe's COCO-17 has 18 limbs
    pyskl, arch17 = randomised("limb", (17, 17), 60)
    path = save_pyskl(pyskl, arch17, tmp_path / "limb.pth", {"mgpipe": None})
    limb, arch = randomised("limb", (17, 18), 10, seed=1)
    coco = get_layout("coco17")
    report = tinit.initialise(limb, arch, path, channels="limb", target_layout=coco)
    assert report["channels"]["fresh"] == ["left_shoulder-right_shoulder"]
    assert len(report["channels"]["copied"]) == 17
    src, dst = pyskl.state_dict()["backbone.stem.0.weight"], limb.state_dict()["backbone.stem.0.weight"]
    pairs = channel_pairs(PYSKL_COCO17, coco, "limb")
    assert len(pairs) == 17 and all(torch.equal(dst[:, j], src[:, i]) for j, i in pairs)
    assert set(report["fresh"]) == {"head.fc.weight", "head.fc.bias"}


def test_refusals_are_one_line(tmp_path):
    joint, arch = randomised("joint", (17, 18), 60)
    single = save_pyskl(joint, arch, tmp_path / "joint.pth")
    fused, fused_arch = randomised("fused_full", (17, 18), 60)
    with pytest.raises(InputError, match=r"no tensor of the .* matches the model.*through the merge"):
        tinit.initialise(fused, fused_arch, single, target_layout=get_layout("coco17"))
    rgbpose = save_pyskl(fused, fused_arch, tmp_path / "rgbpose.pth")
    state = torch.load(rgbpose, weights_only=False)
    state["state_dict"] = {k: v for k, v in state["state_dict"].items() if not k.startswith("backbone.rgb_path.layer4")}
    torch.save(state, tmp_path / "partial.pth")
    with pytest.raises(InputError, match=r"would leave pathway rgb_path untrained: 20 of its 85 tensors.*"
                                         r"\(first: rgb_path.layers.3.0.conv1.weight\)$"):
        tinit.initialise(fused, fused_arch, tmp_path / "partial.pth", target_layout=get_layout("coco17"))
    rgb, rgb_arch = randomised("rgb", (17, 18), 60)
    with pytest.raises(InputError, match=r"backbone.conv1.conv.weight has shape \(4, 17, 1, 7, 7\).*"
                                         r"another architecture"):
        tinit.initialise(rgb, rgb_arch, single, channels="rgb")
    limb_model, limb_arch = randomised("limb", (17, 18), 60)
    limb = save_mgpipe(limb_model, limb_arch, "limb", 60, tmp_path / "limb.pt")
    with pytest.raises(InputError, match="a limb model cannot initialise a model on joint heatmaps"):
        tinit.initialise(joint, arch, limb, channels="joint", target_layout=get_layout("coco17"))
    wide, wide_arch = randomised("joint", (20, 18), 60)
    other = save_pyskl(wide, wide_arch, tmp_path / "wide.pth")
    with pytest.raises(InputError, match=r"takes 20 channels.*name the checkpoint's layout"):
        tinit.initialise(joint, arch, other, channels="joint", target_layout=get_layout("coco17"))
    before = {k: v.clone() for k, v in joint.state_dict().items()}
    torch.save({"state_dict": {"encoder.weight": torch.zeros(3)}}, tmp_path / "foreign.pth")
    with pytest.raises(InputError, match="not a pyskl / MMAction2 ResNet3dSlowOnly or RGBPoseConv3D"):
        tinit.initialise(joint, arch, tmp_path / "foreign.pth", target_layout=get_layout("coco17"))
    assert all(torch.equal(before[k], v) for k, v in joint.state_dict().items())  # untouched


def test_a_results_folder_names_its_model_of_the_same_name(tmp_path):
    (tmp_path / "ntu" / "models" / "joint").mkdir(parents=True)
    cfg = config(init={"joint": str(tmp_path / "ntu"), "fused": {"path": "x.pth", "layout": "coco17"}})
    joint, fused = init_source.resolve(cfg, "joint"), init_source.resolve(cfg, "fused_plain")
    assert (joint.file, joint.kind, joint.layout) == (str(tmp_path / "ntu" / "models" / "joint" / "model.pt"),
                                                      "results folder", None)
    assert (fused.file, fused.kind, fused.layout) == ("x.pth", "file", "coco17")
    assert init_source.resolve(cfg, "limb") is None


class _Payload:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _hostile(path, marker):
    payload = _Payload()
    payload.marker = marker
    torch.save({"state_dict": {"backbone.conv1.conv.weight": torch.zeros(1)}, "meta": payload}, path)


def _train_args(stores, out, init):
    cfg = config(pose_model={"input": {"frames": 8, "size": 8, "test_size": 8}})
    return ["train", "joint", "--config-json", mgconfig.canonical(specs.get("joint").settings(cfg)),
            "--manifest", str(stores / "clips.csv"), "--classes", str(stores / "classes.csv"),
            "--keypoints", str(stores / "keypoints.h5"), "--init", str(init), "--out-dir", str(out)]


@pytest.mark.parametrize("kind", ["hostile", "truncated", "list", "empty_state"])
def test_hostile_or_malformed_init_is_refused_before_training(demo_stores, tmp_path, capsys, kind):
    init, marker = tmp_path / "init.pth", tmp_path / "marker"
    if kind == "hostile":
        _hostile(init, marker)
    elif kind == "truncated":
        torch.save({"state_dict": {"backbone.conv1.conv.weight": torch.zeros(4000)}}, init)
        init.write_bytes(init.read_bytes()[:3000])
    elif kind == "list":
        torch.save([torch.zeros(2)], init)
    else:
        torch.save({"meta": {}, "state_dict": {}}, init)
    out = tmp_path / "out"
    assert cli.main(_train_args(demo_stores, out, init)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(init) in err, err
    expected = {"hostile": "refused: it references posix.system", "truncated": "not a readable init checkpoint",
                "list": "holds a list", "empty_state": "holds no state_dict"}[kind]
    assert expected in err, err
    assert not marker.exists() and not (out / "model.pt").exists() and not (out / "state" / "last.pt").exists()


def test_workflow_refuses_a_hostile_init_before_any_job_and_passes_a_good_one(tmp_path):
    work = make_workdir(tmp_path / "wf")
    _hostile(work / "hostile.pt", work / "marker")
    (work / "init.yaml").write_text("init: {joint: hostile.pt}\n")
    proc = smk(work, "-n", "--cores", "1", "--configfile", "tiny.yaml", "init.yaml", check=False)
    assert proc.returncode != 0 and not (work / "marker").exists()
    lines = [l for l in (proc.stdout + proc.stderr).splitlines() if "init.joint" in l]
    assert len(lines) == 1 and "hostile.pt: init checkpoint refused" in lines[0], proc.stderr[-2000:]
    # a good file is the training job's input and argument; the fused variants keep the merge
    joint, arch = randomised("joint", (17, 18), 60, cfg=mgconfig.load(work / "tiny.yaml"))
    save_pyskl(joint, arch, work / "good.pth")
    (work / "init.yaml").write_text("init: {joint: good.pth}\n")
    proc = smk(work, "-n", "-p", "--cores", "1", "--configfile", "tiny.yaml", "init.yaml")
    assert "--init good.pth" in proc.stdout and "--init results/tiny/merged/fused_full.pt" in proc.stdout
    # the layout the config gives the file reaches the job on its command line (init_source)
    (work / "init.yaml").write_text("init: {joint: {path: good.pth, layout: coco17}}\n")
    proc = smk(work, "-n", "-p", "--cores", "1", "--configfile", "tiny.yaml", "init.yaml")
    assert "--init good.pth --init-layout coco17 " in proc.stdout, proc.stdout[-3000:]


def test_pyskl_joint_checkpoint_initialises_a_kard_model(tmp_path, caplog):
    """The must-show: a 60-class COCO-17 pyskl joint checkpoint starts an 18-class KARD model
    (OpenNI 15 joints). The training log lists the re-initialised head and the joints copied by
    name; the checkpoint keeps the report."""
    if not KARD.is_file():
        pytest.skip(f"real data {KARD} not found (../shared/data beside the checkout)")
    from mgpipe.stages import train as train_mod
    from mgpipe.stages.clips import write_csv
    from mgpipe.stages.pose import build_keypoint_store

    manifest, classes = build_manifest(None, None, None, kind="pyskl", mode="pose", pose_backend="pickle",
                                       skeletons_dir=KARD, pickle_layout="openni15",
                                       split_map={"xsub_train": "train", "xsub_val": "test"},
                                       subject_from=r"_s(\d+)_", val_fraction=0.0)
    manifest = manifest[manifest.split == "train"].groupby("label").head(1)  # one clip per class
    write_csv(manifest, tmp_path / "clips.csv")
    write_csv(classes, tmp_path / "classes.csv")
    build_keypoint_store(manifest, KARD, tmp_path / "kp.h5", progress=False,
                         **pose_settings(backend="pickle", layout="openni15", pickle_layout="openni15"))
    cfg = config(pose_model={"input": {"frames": 8, "size": 16, "test_size": 16},
                             "optim": {**mgconfig.defaults()["pose_model"]["optim"], "epochs": 1}})
    ntu, arch = randomised("joint", (17, 18), 60, cfg=cfg)
    pyskl = save_pyskl(ntu, arch, tmp_path / "posec3d_joint_ntu60.pth")
    caplog.set_level(logging.INFO)
    train_mod.run("joint", cfg, manifest_csv=tmp_path / "clips.csv", classes_csv=tmp_path / "classes.csv",
                  frames_h5=None, keypoints_h5=tmp_path / "kp.h5", out_dir=tmp_path / "kard",
                  state_dir=tmp_path / "state", init=init_source.given(pyskl), progress=False)
    text = caplog.text
    print("\n".join(l for l in text.splitlines() if "init" in l))
    assert "init fresh (60 classes in the source, 18 here): head.fc.weight, head.fc.bias" in text
    assert ("init joint channels coco17 -> openni15 (source layout pyskl's COCO-17 (17 channels)): copied by "
            "name: right_shoulder, right_elbow, left_shoulder, left_elbow, right_hip, right_knee, left_hip, "
            "left_knee; fresh: head, neck, right_hand, left_hand, spine_mid, right_foot, left_foot") in text
    report = checkpoints.load(tmp_path / "kard" / "model.pt")["init"]
    assert report["fresh"]["head.fc.weight"] == "60 classes in the source, 18 here"
    assert report["channels"]["copied"][:2] == ["right_shoulder", "right_elbow"]
    assert report["source"] == str(pyskl) and "cls_head.fc_cls.weight" in report["ignored"]


def _finetuned(stores, out, source, **finetune):
    """The joint model trained one step (one batch holds the training split) from `source`."""
    from mgpipe.stages import train as train_mod

    cfg = config(pose_model={"input": {"frames": 8, "size": 8, "test_size": 8},
                             "optim": {**mgconfig.defaults()["pose_model"]["optim"], "epochs": 1,
                                       "batch_size": 64, "warmup_epochs": 0, "clip_grad": 0}},
                 train={"device": "cpu", "keep_state": True,
                        "finetune": {**mgconfig.defaults()["train"]["finetune"], **finetune}})
    train_mod.run("joint", cfg, manifest_csv=stores / "clips.csv", classes_csv=stores / "classes.csv",
                  frames_h5=None, keypoints_h5=stores / "keypoints.h5", out_dir=out, state_dir=out / "state",
                  init=init_source.given(source), progress=False)
    return checkpoints.load(out / "model.pt")["model"]


def test_finetune_scales_the_loaded_tensors_rate_and_can_freeze_them(demo_stores, tmp_path, caplog):
    """train.finetune on a start whose head does not fit (3 more classes in the source): the
    loaded tensors take lr_scale x the rate, exactly (one SGD step: the same gradient, a scaled
    update), or sit out the frozen epochs untouched; the new head trains at the full rate."""
    from mgpipe.learning.samples import keypoint_channels

    classes = len(checkpoints.class_table(demo_stores / "classes.csv"))
    pose_input = {"input": {"frames": 8, "size": 8, "test_size": 8}}
    model, arch = randomised("joint", keypoint_channels(demo_stores / "keypoints.h5"), classes + 3,
                             cfg=config(pose_model=pose_input))
    source = save_mgpipe(model, arch, "joint", classes + 3, tmp_path / "source.pt", layout=get_layout("coco17"))
    start = model.state_dict()
    caplog.set_level(logging.INFO)
    full = _finetuned(demo_stores, tmp_path / "full", source)
    tenth = _finetuned(demo_stores, tmp_path / "tenth", source, lr_scale=0.1)
    frozen = _finetuned(demo_stores, tmp_path / "frozen", source, freeze_epochs=1)
    assert "joint: fine-tuning: " in caplog.text and "at 0.1 x the learning rate" in caplog.text
    loaded = [k for k, p in start.items() if k.endswith(".weight") and "conv" in k]
    assert loaded
    for key in loaded:
        step, scaled = full[key] - start[key], tenth[key] - start[key]
        assert step.abs().max() > 0, key
        torch.testing.assert_close(scaled, 0.1 * step, rtol=1e-3, atol=1e-7)
        assert torch.equal(frozen[key], start[key]), key        # frozen: not one update
    # the new head (3 classes fewer than the source's) takes the same full-rate step in all three
    assert torch.equal(tenth["head.fc.weight"], full["head.fc.weight"])
    assert torch.equal(frozen["head.fc.weight"], full["head.fc.weight"])
