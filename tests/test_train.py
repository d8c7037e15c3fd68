"""The training loop: outputs, CPU determinism, exact resume after a kill, the merge stage."""

import pandas as pd
import pytest
import torch
import yaml

from mgpipe import config as mgconfig
from mgpipe import train as train_mod
from mgpipe.evaluate import score_model
from mgpipe.merge import merge_checkpoints
from mgpipe.zoo import load_checkpoint


def tiny_config(**optim):
    cfg = yaml.safe_load(open("tests/data/tiny.yaml"))
    for section in ("rgb", "pose_model", "fused"):
        cfg[section]["optim"].update(optim)
    return mgconfig.validate(cfg)


def train(name, cfg, stores, out, init=None):
    return train_mod.run(name, cfg, manifest_csv=stores / "clips.csv", classes_csv=stores / "classes.csv",
                         frames_h5=stores / "frames.h5", heatmaps_h5=stores / "heatmaps.h5",
                         out_dir=out, state_dir=out / "state", init=init, progress=False)


def weights(path):
    return torch.load(path, weights_only=False)["model"]


def test_training_outputs_and_determinism(demo_stores, tmp_path):
    cfg = tiny_config(epochs=2)
    train("joint", cfg, demo_stores, tmp_path / "a")
    train("joint", cfg, demo_stores, tmp_path / "b")
    log = pd.read_csv(tmp_path / "a" / "log.csv")
    assert list(log.epoch) == [1, 2] and {"train_loss", "val_top1_joint", "val_top1"} <= set(log.columns)
    assert (tmp_path / "a" / "curve.png").stat().st_size > 1000
    assert log.equals(pd.read_csv(tmp_path / "b" / "log.csv"))
    wa, wb = weights(tmp_path / "a" / "model.pt"), weights(tmp_path / "b" / "model.pt")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def _fused_init(cfg, stores, tmp_path):
    train("rgb", cfg, stores, tmp_path / "rgb")
    train("joint", cfg, stores, tmp_path / "joint")
    merged = tmp_path / "merged.pt"
    merge_checkpoints(tmp_path / "rgb" / "model.pt", tmp_path / "joint" / "model.pt", cfg, "full",
                      stores / "heatmaps.h5", merged)
    return merged


def test_killed_fused_training_resumes_exactly(demo_stores, tmp_path, monkeypatch):
    cfg = tiny_config(epochs=3, lr_steps=[2])
    merged = _fused_init(cfg, demo_stores, tmp_path)
    train("fused_full", cfg, demo_stores, tmp_path / "whole", init=merged)

    real_predict, calls = train_mod.predict, {"n": 0}

    def dies_in_epoch_two(*a, **k):  # validation of epoch 2 never finishes: a kill mid-run
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real_predict(*a, **k)

    monkeypatch.setattr(train_mod, "predict", dies_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        train("fused_full", cfg, demo_stores, tmp_path / "killed", init=merged)
    assert not (tmp_path / "killed" / "model.pt").exists()
    monkeypatch.setattr(train_mod, "predict", real_predict)
    train("fused_full", cfg, demo_stores, tmp_path / "killed", init=merged)

    whole = pd.read_csv(tmp_path / "whole" / "log.csv").drop(columns="seconds")
    resumed = pd.read_csv(tmp_path / "killed" / "log.csv").drop(columns="seconds")
    assert whole.equals(resumed)
    wa, wb = weights(tmp_path / "whole" / "model.pt"), weights(tmp_path / "killed" / "model.pt")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    banks = [k for k in wa if k.endswith("prototypes")]
    assert banks and any(wa[k].abs().sum() > 0 for k in banks)   # the bank was trained and restored


def test_changed_settings_do_not_resume_stale_state(demo_stores, tmp_path, caplog):
    caplog.set_level("INFO")
    train("joint", tiny_config(epochs=1), demo_stores, tmp_path / "m")
    train("joint", tiny_config(epochs=2, lr=0.03), demo_stores, tmp_path / "m")
    assert "starting afresh" in caplog.text
    assert list(pd.read_csv(tmp_path / "m" / "log.csv").epoch) == [1, 2]


def test_scores_have_one_row_per_clip_and_stream_columns(demo_stores, tmp_path):
    cfg = tiny_config(epochs=1)
    train("limb", cfg, demo_stores, tmp_path / "limb")
    out = tmp_path / "limb.csv"
    score_model(tmp_path / "limb" / "model.pt", cfg, manifest_csv=demo_stores / "clips.csv",
                frames_h5=demo_stores / "frames.h5", heatmaps_h5=demo_stores / "heatmaps.h5",
                out_csv=out, progress=False)
    scores = pd.read_csv(out)
    manifest = pd.read_csv(demo_stores / "clips.csv")
    assert len(scores) == (manifest.split != "train").sum()
    probs = scores[[f"limb:{k}" for k in range(7)]].to_numpy()
    assert abs(probs.sum(1) - 1).max() < 1e-4
    model, ckpt = load_checkpoint(tmp_path / "limb" / "model.pt")
    assert ckpt["name"] == "limb"
