"""Self-supervised pretraining (pretrain.models; mgpipe/stages/pretrain.py, models/masked.py):
the masked model's invariants on hand-made volumes, the stage on real KARD keypoints (it learns,
its weights start the model's training, same seed same weights, a killed run resumes exactly),
its one-line refusals, and the workflow's plan and a real run."""

import logging
from pathlib import Path

import pytest
import torch
from conftest import build_manifest, pose_settings, run_cli
from workflow_runs import make_workdir, planned, smk

from mgpipe import config as mgconfig
from mgpipe.formats import checkpoints
from mgpipe.learning.weights import init_source, mmaction
from mgpipe.models.masked import MaskedHeatmapModel, hidden_blocks
from mgpipe.stages import pretrain as pretrain_mod
from mgpipe.stages import train as train_mod
from mgpipe.stages.clips import read_manifest

KARD = Path(__file__).resolve().parents[2] / "shared" / "data" / "kard2d.pkl"
TINY_POSE = {"base_channels": 4, "stage_blocks": [1, 1, 1], "inflate": [0, 1, 1],
             "spatial_strides": [2, 2, 2], "temporal_strides": [1, 1, 1], "dropout": 0.2}


# ---- the masked model -------------------------------------------------------------------------

def test_hidden_blocks_hide_whole_blocks_in_the_asked_share():
    shape, cell = (3, 5, 16, 24, 24), (1, 8)   # 16 frames / 4 x 3 x 3 = 36 blocks per sample
    hidden = hidden_blocks(shape, cell, mask_frames=4, ratio=0.6, generator=torch.Generator().manual_seed(0))
    assert hidden.shape == (3, 1, 16, 24, 24) and hidden.dtype == torch.bool
    blocks = hidden.view(3, 4, 4, 3, 8, 3, 8)   # [N, t-blocks, 4, h-blocks, 8, w-blocks, 8]
    per_block = blocks.float().mean(dim=(2, 4, 6))
    assert set(per_block.unique().tolist()) == {0.0, 1.0}       # a block is hidden whole or not at all
    assert per_block.sum(dim=(1, 2, 3)).tolist() == [round(0.6 * 36)] * 3
    assert not torch.equal(hidden[0], hidden[1])                # each sample its own draw
    # at least one block shown and one hidden, whatever the ratio; a grid that does not divide
    for ratio in (0.01, 0.99):
        h = hidden_blocks((2, 1, 5, 10, 10), (1, 8), 4, ratio)
        assert h.shape == (2, 1, 5, 10, 10)
        assert all(0 < h[i].sum() < h[i].numel() for i in range(2))


def test_the_network_never_sees_what_it_must_fill_in_and_starts_at_empty_heatmaps():
    torch.manual_seed(0)
    model = MaskedHeatmapModel(5, TINY_POSE).eval()
    x = torch.rand(2, 5, 8, 16, 16)
    hidden = hidden_blocks(x.shape, model.cell, 4, 0.5, torch.Generator().manual_seed(1))
    changed = torch.where(hidden, torch.rand_like(x), x)       # other values only where hidden
    with torch.no_grad():
        assert model(x, hidden).shape == x.shape
        torch.nn.init.normal_(model.decoder[-1].weight)         # (a trained decoder: not all zero)
        torch.testing.assert_close(model(x, hidden), model(changed, hidden))
    fresh = MaskedHeatmapModel(5, TINY_POSE)
    parts = fresh.loss(fresh(x, hidden), x, hidden)
    assert float(parts["explained"]) == 0.0                     # the decoder's output starts at zero


def test_the_loss_counts_the_hidden_elements_only():
    x = torch.zeros(1, 2, 4, 8, 8)
    x[0, 0, :, 2, 3] = 1.0                                      # one joint's peak, in every frame
    hidden = torch.zeros(1, 1, 4, 8, 8, dtype=torch.bool)
    hidden[..., :4, :4] = True                                  # hides the peak
    perfect = MaskedHeatmapModel.loss(x.clone(), x, hidden)
    assert float(perfect["loss"]) == 0.0 and float(perfect["explained"]) == 1.0
    empty = MaskedHeatmapModel.loss(torch.zeros_like(x), x, hidden)
    assert float(empty["explained"]) == 0.0 and float(empty["loss"]) == 1.0
    half = MaskedHeatmapModel.loss(x * 0.5, x, hidden)
    assert float(half["loss"]) == pytest.approx(0.25)           # (1 - 0.5)^2 of the peak's energy
    wrong_where_shown = x.clone()
    wrong_where_shown[..., 6:, 6:] = 5.0
    assert float(MaskedHeatmapModel.loss(wrong_where_shown, x, hidden)["loss"]) == 0.0


# ---- the stage on real keypoints --------------------------------------------------------------

@pytest.fixture(scope="module")
def kard(tmp_path_factory):
    """Real KARD keypoints: 3 training clips per class (54), the rest of the training split as
    unassigned clips (labels to be unused), its test split."""
    if not KARD.is_file():
        pytest.skip(f"real data {KARD} not found (../shared/data beside the checkout)")
    from mgpipe.stages.clips import write_csv
    from mgpipe.stages.pose import build_keypoint_store

    root = tmp_path_factory.mktemp("kard")
    manifest, classes = build_manifest(None, None, None, kind="pyskl", mode="pose", pose_backend="pickle",
                                       skeletons_dir=KARD, pickle_layout="openni15",
                                       split_map={"xsub_train": "train", "xsub_val": "test"},
                                       subject_from=r"_s(\d+)_", val_fraction=0.0)
    few = manifest[manifest.split == "train"].groupby("label").head(3).index
    manifest.loc[(manifest.split == "train") & ~manifest.index.isin(few), "split"] = "unassigned"
    write_csv(manifest, root / "clips.csv")
    write_csv(classes, root / "classes.csv")
    build_keypoint_store(manifest, KARD, root / "kp.h5", progress=False,
                         **pose_settings(backend="pickle", layout="openni15", pickle_layout="openni15"))
    return root


def config(epochs=3, **pretrain):
    cfg = mgconfig.defaults()
    cfg["mode"] = "pose"
    cfg["pose_model"]["network"] = dict(TINY_POSE)
    cfg["pose_model"]["input"] = {"frames": 8, "size": 16, "test_size": 16}
    cfg["pose_model"]["optim"].update(epochs=1, batch_size=16)
    cfg["train"].update(device="cpu", keep_state=True)
    cfg["pretrain"].update(models=["joint"], **pretrain)
    cfg["pretrain"]["optim"].update(epochs=epochs, batch_size=16, lr=0.05, warmup_epochs=0)
    return mgconfig.validate(cfg)


def pretrain(cfg, stores, out, init=None, model="joint"):
    return pretrain_mod.run(model, cfg, manifest_csv=stores / "clips.csv", keypoints_h5=stores / "kp.h5",
                            out_dir=out, state_dir=out / "state", init=init, progress=False)


def test_pretraining_on_real_clips_learns_and_starts_the_models_training(kard, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    cfg = config(epochs=4)
    record = pretrain(cfg, kard, tmp_path / "pre")
    history = [line for line in (tmp_path / "pre" / "log.csv").read_text().splitlines()[1:]]
    explained = [float(row.split(",")[3]) for row in history]
    print("\nexplained per epoch:", explained)
    manifest = read_manifest(kard / "clips.csv")
    assert (manifest.split == "train").sum() == 54                 # 3 per class: the few labelled
    assert record["clips"] == (manifest.split != "test").sum() and len(explained) == 4   # never test
    assert explained[-1] > explained[0] and explained[-1] > 0.05   # it learns to fill in the hidden joints
    assert (tmp_path / "pre" / "curve.png").stat().st_size > 0
    saved = torch.load(tmp_path / "pre" / "weights.pth", weights_only=True)
    assert set(saved) == {"meta", "state_dict"} and mmaction.structure(saved["state_dict"]) == "single"
    assert saved["meta"]["mgpipe"]["name"] == "joint" and saved["meta"]["mgpipe"]["layout"]["name"] == "openni15"
    assert not any(k.startswith("cls_head.") for k in saved["state_dict"])
    # the model's training starts from it: every pathway tensor loaded, only the head fresh
    source = init_source.resolve(cfg, "joint")
    assert source.kind == init_source.SELF_SUPERVISED and source.file.endswith("pretrained/joint/weights.pth")
    train_mod.run("joint", cfg, manifest_csv=kard / "clips.csv", classes_csv=kard / "classes.csv", frames_h5=None,
                  keypoints_h5=kard / "kp.h5", out_dir=tmp_path / "joint", state_dir=tmp_path / "joint_state",
                  init=init_source.given(tmp_path / "pre" / "weights.pth"), progress=False)
    report = checkpoints.load(tmp_path / "joint" / "model.pt")["init"]
    assert set(report["fresh"]) == {"head.fc.weight", "head.fc.bias"} and not report["ignored"]
    assert len(report["loaded"]) == len(saved["state_dict"])


def test_same_seed_same_weights_and_a_killed_pretraining_resumes_exactly(kard, tmp_path, monkeypatch, caplog):
    cfg = config(epochs=3)
    pretrain(cfg, kard, tmp_path / "a")
    pretrain(cfg, kard, tmp_path / "b")
    a = torch.load(tmp_path / "a" / "weights.pth", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "b" / "weights.pth", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    # killed in epoch 2 (at its first step), then run again: the same weights as uninterrupted
    real_step, calls = torch.optim.SGD.step, {"n": 0}
    steps_per_epoch = (read_manifest(kard / "clips.csv").split != "test").sum() // 16

    def dies_in_epoch_two(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == steps_per_epoch + 1:
            raise KeyboardInterrupt
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.SGD, "step", dies_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        pretrain(cfg, kard, tmp_path / "killed")
    monkeypatch.setattr(torch.optim.SGD, "step", real_step)
    assert not (tmp_path / "killed" / "weights.pth").exists()
    caplog.set_level(logging.INFO)
    pretrain(cfg, kard, tmp_path / "killed")
    assert "pretrain joint: resuming after epoch 1" in caplog.text
    resumed = torch.load(tmp_path / "killed" / "weights.pth", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], resumed[k]) for k in a)
    # other settings never resume that state: it is set aside and the run starts at epoch 1
    caplog.clear()
    pretrain(config(epochs=3, mask={"ratio": 0.4, "frames": 4}), kard, tmp_path / "killed")
    assert "pretrain joint: from epoch 1" in caplog.text and "set aside" in caplog.text


def test_a_supervised_start_then_self_supervised(kard, tmp_path, caplog):
    """init.joint names where the pretraining starts (supervised, then self-supervised): the
    report is logged and kept in the weights' record."""
    from test_transfer import randomised, save_pyskl

    caplog.set_level(logging.INFO)
    cfg = config(epochs=1)
    ntu, arch = randomised("joint", (17, 18), 60, cfg=cfg)
    pyskl = save_pyskl(ntu, arch, tmp_path / "posec3d_joint_ntu60.pth")
    record = pretrain(cfg, kard, tmp_path / "pre", init=init_source.given(pyskl))
    assert "pretrain joint: init from" in caplog.text and "coco17 -> openni15" in caplog.text
    assert record["init"]["source"] == str(pyskl)
    meta = torch.load(tmp_path / "pre" / "weights.pth", weights_only=True)["meta"]
    assert meta["mgpipe"]["pretrain"]["init"]["source"] == str(pyskl)


def test_bad_requests_are_one_line(kard, tmp_path, capsys):
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text("mode: pose\npretrain: {models: [joint], splits: [val]}\n"
                        "pose_model: {input: {frames: 8, size: 16, test_size: 16}}\n")
    base = ["pretrain", "joint", "--config", str(cfg_file), "--manifest", kard / "clips.csv",
            "--keypoints", kard / "kp.h5", "--out-dir", tmp_path / "out"]
    rc, err = run_cli(capsys, *base)
    assert rc == 2 and err.strip().count("\n") == 0 and "no clips in the splits val (pretrain.splits)" in err, err
    rc, err = run_cli(capsys, *base, "--init-layout", "coco17")
    assert rc == 2 and "--init-layout names the keypoint layout of the --init file: give --init too" in err, err
    # an init of another architecture (a limb model for the joint pathway)
    limb = tmp_path / "limb.pth"
    torch.save({"meta": {"mgpipe": {"name": "limb"}}, "state_dict": {"backbone.conv1.conv.weight": torch.zeros(1)}},
               limb)
    rc, err = run_cli(capsys, *base[:4], "--set", "pretrain.splits=[train]", *base[4:], "--init", limb)
    assert rc == 2 and err.strip().count("\n") == 0 and "a limb model cannot initialise a model on joint heatmaps" in err
    assert not (tmp_path / "out" / "weights.pth").exists()


# ---- the workflow -----------------------------------------------------------------------------

def test_the_plan_pretrains_before_training_and_refuses_what_it_cannot(tmp_path):
    work = make_workdir(tmp_path / "wf")
    (work / "pre.yaml").write_text("pretrain: {models: [joint, limb], optim: {epochs: 1, batch_size: 4}}\n")
    proc = smk(work, "-n", "--cores", "1", "--configfile", "tiny.yaml", "pre.yaml")
    assert planned(proc)["pretrain"] == 2, proc.stdout[-2000:]
    assert "output: results/tiny/pretrained/joint/weights.pth" in proc.stdout
    assert "--init results/tiny/pretrained/joint/weights.pth" in proc.stdout      # the training's start
    (work / "bad.yaml").write_text("pretrain: {models: [limb]}\nlimb: {enabled: false}\n")
    proc = smk(work, "-n", "--cores", "1", "--configfile", "tiny.yaml", "bad.yaml", check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "config key pretrain.models: limb is pretrained but limb.enabled is false" in proc.stderr, proc.stderr[-2000:]


def test_a_real_run_pretrains_and_a_changed_mask_reruns_pretraining_and_training(tmp_path):
    """Pose-only, joint only: the chain runs, a second run has nothing to do, a new mask
    reruns the pretraining and, through its new weights, the joint training and what follows."""
    work = make_workdir(tmp_path / "wf")
    (work / "pre.yaml").write_text(
        "mode: pose\nlimb: {enabled: false}\nensemble: {members: {joint: 1.0}}\n"
        "pretrain: {models: [joint], optim: {epochs: 2, batch_size: 4, lr: 0.02}}\n")
    args = ("--cores", "2", "--configfile", "tiny.yaml", "pre.yaml")
    smk(work, *args)
    results = work / "results" / "tiny"
    first = torch.load(results / "pretrained" / "joint" / "weights.pth", weights_only=True)["state_dict"]
    assert "init from results/tiny/pretrained/joint/weights.pth" in (results / "logs" / "train_joint.log").read_text()
    assert "Nothing to be done" in smk(work, "-n", *args).stdout
    # (8 x 8 px volumes are one cell of the tiny pathway: blocks of 2 frames, not 4, change the mask)
    (work / "mask.yaml").write_text("pretrain: {mask: {frames: 2}}\n")
    proc = smk(work, "-n", *args, "mask.yaml")
    assert {"pretrain": 1, "train": 1, "test": 1, "ensemble": 1}.items() <= planned(proc).items(), proc.stdout
    smk(work, *args, "mask.yaml")
    second = torch.load(results / "pretrained" / "joint" / "weights.pth", weights_only=True)["state_dict"]
    assert any(not torch.equal(first[k], second[k]) for k in first)
