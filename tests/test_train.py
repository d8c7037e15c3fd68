"""The training loop: outputs, CPU determinism, exact resume after a kill, the merge stage."""

import pandas as pd
import pytest
import torch
import yaml
from conftest import kill_in_epoch_two

from mgpipe import config as mgconfig
from mgpipe.learning.inference import load_model
from mgpipe.learning.weights import init_source
from mgpipe.stages import train as train_mod
from mgpipe.stages.merge import merge_checkpoints
from mgpipe.stages.score import score_model


def tiny_config(**optim):
    cfg = yaml.safe_load(open("tests/data/tiny.yaml"))
    for section in ("rgb", "pose_model", "fused"):
        cfg[section]["optim"].update(optim)
    # these tests check what a finished job's state may and may not do when it is kept; its
    # removal (the default) is tested in tests/test_logs_and_state.py
    cfg.setdefault("train", {})["keep_state"] = True
    return mgconfig.validate(cfg)


def train(name, cfg, stores, out, init=None):
    return train_mod.run(name, cfg, manifest_csv=stores / "clips.csv", classes_csv=stores / "classes.csv",
                         frames_h5=stores / "frames.h5", keypoints_h5=stores / "keypoints.h5",
                         out_dir=out, state_dir=out / "state",
                         init=None if init is None else init_source.given(init), progress=False)


def weights(path):
    return torch.load(path, weights_only=True)["model"]


def deterministic_log(path) -> pd.DataFrame:
    """A training log without its wall-clock column (timings are never reproducible)."""
    return pd.read_csv(path).drop(columns="seconds")


def test_training_outputs_and_determinism(demo_stores, tmp_path):
    cfg = tiny_config(epochs=2)
    train("joint", cfg, demo_stores, tmp_path / "a")
    train("joint", cfg, demo_stores, tmp_path / "b")
    log = pd.read_csv(tmp_path / "a" / "log.csv")
    assert list(log.epoch) == [1, 2] and {"train_loss", "val_top1_joint", "val_top1"} <= set(log.columns)
    assert (tmp_path / "a" / "curve.png").stat().st_size > 1000
    assert deterministic_log(tmp_path / "a" / "log.csv").equals(deterministic_log(tmp_path / "b" / "log.csv"))
    wa, wb = weights(tmp_path / "a" / "model.pt"), weights(tmp_path / "b" / "model.pt")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def _fused_init(cfg, stores, tmp_path):
    train("rgb", cfg, stores, tmp_path / "rgb")
    train("joint", cfg, stores, tmp_path / "joint")
    merged = tmp_path / "merged.pt"
    merge_checkpoints(tmp_path / "rgb" / "model.pt", tmp_path / "joint" / "model.pt", cfg, "fused_full", merged)
    return merged


def test_killed_fused_training_resumes_exactly(demo_stores, tmp_path, monkeypatch):
    cfg = tiny_config(epochs=3, lr_steps=[2])
    merged = _fused_init(cfg, demo_stores, tmp_path)
    train("fused_full", cfg, demo_stores, tmp_path / "whole", init=merged)

    revive = kill_in_epoch_two(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        train("fused_full", cfg, demo_stores, tmp_path / "killed", init=merged)
    assert not (tmp_path / "killed" / "model.pt").exists()
    revive()
    train("fused_full", cfg, demo_stores, tmp_path / "killed", init=merged)

    whole = deterministic_log(tmp_path / "whole" / "log.csv")
    resumed = deterministic_log(tmp_path / "killed" / "log.csv")
    assert whole.equals(resumed)
    wa, wb = weights(tmp_path / "whole" / "model.pt"), weights(tmp_path / "killed" / "model.pt")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    banks = [k for k in wa if k.endswith("prototypes")]
    assert banks and any(wa[k].abs().sum() > 0 for k in banks)   # the bank was trained and restored


def test_changed_settings_do_not_resume_stale_state(demo_stores, tmp_path, caplog):
    caplog.set_level("INFO")
    train("joint", tiny_config(epochs=1), demo_stores, tmp_path / "m")
    train("joint", tiny_config(epochs=2, lr=0.03), demo_stores, tmp_path / "m")
    assert "set aside the state of another training job" in caplog.text
    assert list(pd.read_csv(tmp_path / "m" / "log.csv").epoch) == [1, 2]


def test_scores_have_one_row_per_clip_and_stream_columns(demo_stores, tmp_path):
    cfg = tiny_config(epochs=1)
    train("limb", cfg, demo_stores, tmp_path / "limb")
    out = tmp_path / "limb.csv"
    score_model(tmp_path / "limb" / "model.pt", cfg, manifest_csv=demo_stores / "clips.csv",
                frames_h5=demo_stores / "frames.h5", keypoints_h5=demo_stores / "keypoints.h5",
                out_csv=out, progress=False)
    scores = pd.read_csv(out)
    manifest = pd.read_csv(demo_stores / "clips.csv")
    assert len(scores) == (manifest.split != "train").sum()
    classes = pd.read_csv(demo_stores / "classes.csv", dtype={"name": str}, keep_default_na=False)
    probs = scores[[f"limb:{k}:{c.label_id}:{c.name}" for k, c in enumerate(classes.itertuples())]].to_numpy()
    assert abs(probs.sum(1) - 1).max() < 1e-4
    model, ckpt, _ = load_model(tmp_path / "limb" / "model.pt")
    assert ckpt["name"] == "limb"


# ---- resumable state never goes stale -----------------------------------------------------------
# Each case trains into a folder that already holds a finished state of another job and checks
# the result, not only the log: the old model must not come back.

def _relabelled_manifest(stores, out_dir):
    """Two training clips of different classes swap labels: same counts, same sizes, other data."""
    manifest = pd.read_csv(stores / "clips.csv", dtype={"video_id": str, "clip_id": str})
    train_rows = manifest.index[manifest.split == "train"]
    a = train_rows[0]
    b = next(i for i in train_rows if manifest.label[i] != manifest.label[a])
    manifest.loc[[a, b], "label"] = manifest.loc[[b, a], "label"].to_numpy()
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in ("frames.h5", "keypoints.h5", "heatmaps.h5", "classes.csv"):
        (out_dir / name).symlink_to(stores / name)
    manifest.to_csv(out_dir / "clips.csv", index=False)
    return out_dir


def test_changed_labels_with_the_same_counts_retrain(demo_stores, tmp_path, caplog):
    caplog.set_level("INFO")
    cfg = tiny_config(epochs=2)
    train("joint", cfg, demo_stores, tmp_path / "m")
    first = weights(tmp_path / "m" / "model.pt")
    other = _relabelled_manifest(demo_stores, tmp_path / "relabelled")
    train("joint", cfg, other, tmp_path / "m")
    assert "set aside the state of another training job" in caplog.text
    assert "resuming" not in caplog.text
    assert not all(torch.equal(first[k], v) for k, v in weights(tmp_path / "m" / "model.pt").items())


def test_changed_keypoint_content_retrains(demo_stores, tmp_path, caplog):
    import shutil

    import h5py

    caplog.set_level("INFO")
    cfg = tiny_config(epochs=2)
    train("joint", cfg, demo_stores, tmp_path / "m")
    first = weights(tmp_path / "m" / "model.pt")
    other = tmp_path / "moved"
    other.mkdir()
    for name in ("frames.h5", "heatmaps.h5", "classes.csv", "clips.csv"):
        (other / name).symlink_to(demo_stores / name)
    shutil.copy(demo_stores / "keypoints.h5", other / "keypoints.h5")
    size = (other / "keypoints.h5").stat().st_size
    with h5py.File(other / "keypoints.h5", "r+") as h5:   # same shapes: the file keeps its size
        for clip in list(h5["clips"])[:4]:
            kp = h5["clips"][clip]["keypoints"]
            moved = kp[()]
            moved[..., 0] = moved[..., 0][..., ::-1]       # joints trade x positions
            kp[...] = moved
    assert (other / "keypoints.h5").stat().st_size == size
    train("joint", cfg, other, tmp_path / "m")
    assert "set aside the state of another training job" in caplog.text
    assert not all(torch.equal(first[k], v) for k, v in weights(tmp_path / "m" / "model.pt").items())


def test_new_initial_weights_of_the_same_size_retrain(demo_stores, tmp_path, caplog):
    caplog.set_level("INFO")
    cfg = tiny_config(epochs=1)
    merged_a = _fused_init(cfg, demo_stores, tmp_path)
    merged_b = tmp_path / "b" / "merged.pt"     # same name: torch writes it into the archive
    reseeded = tiny_config(epochs=1)
    reseeded["seed"] = 1                       # other fresh laterals and fusion weights
    merge_checkpoints(tmp_path / "rgb" / "model.pt", tmp_path / "joint" / "model.pt", reseeded, "fused_full", merged_b)
    assert merged_a.stat().st_size == merged_b.stat().st_size
    train("fused_full", cfg, demo_stores, tmp_path / "f", init=merged_a)
    from_a = weights(tmp_path / "f" / "model.pt")
    train("fused_full", cfg, demo_stores, tmp_path / "f", init=merged_b)
    from_b = weights(tmp_path / "f" / "model.pt")
    assert not all(torch.equal(from_a[k], from_b[k]) for k in from_a)
    assert "resuming" not in caplog.text


def test_a_finished_state_is_retrained_not_handed_back(demo_stores, tmp_path, caplog):
    """A forced rerun (snakemake -R) of a finished job trains again from epoch 1."""
    caplog.set_level("INFO")
    cfg = tiny_config(epochs=2)
    train("joint", cfg, demo_stores, tmp_path / "m")
    first = weights(tmp_path / "m" / "model.pt")
    (tmp_path / "m" / "model.pt").unlink()
    caplog.clear()
    train("joint", cfg, demo_stores, tmp_path / "m")
    assert "set aside the state of a finished job" in caplog.text
    assert "training from epoch 1" in caplog.text and "resuming" not in caplog.text
    again = weights(tmp_path / "m" / "model.pt")
    assert all(torch.equal(first[k], again[k]) for k in first)   # deterministic on the CPU


def test_unreadable_state_is_set_aside(demo_stores, tmp_path, caplog):
    caplog.set_level("INFO")
    state = tmp_path / "m" / "state"
    state.mkdir(parents=True)
    (state / "last.pt").write_bytes(b"\x80\x04not a checkpoint")
    train("joint", tiny_config(epochs=1), demo_stores, tmp_path / "m")
    assert "last.pt: not a PyTorch checkpoint (looks like a plain Python pickle)" in caplog.text
    assert (state / "stale" / "last.pt").exists() and (tmp_path / "m" / "model.pt").exists()


def test_a_second_job_on_one_state_folder_is_refused(demo_stores, tmp_path):
    import fcntl

    from mgpipe.io import InputError

    state = tmp_path / "m" / "state"
    state.mkdir(parents=True)
    with open(state / "lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)   # as a running job holds it
        with pytest.raises(InputError, match="another training job is using this state folder"):
            train("joint", tiny_config(epochs=1), demo_stores, tmp_path / "m")
    assert not (tmp_path / "m" / "model.pt").exists()


def test_training_without_a_validation_split_keeps_the_last_epoch(demo_stores, tmp_path):
    manifest = pd.read_csv(demo_stores / "clips.csv", dtype={"video_id": str, "clip_id": str})
    manifest.loc[manifest.split == "val", "split"] = "train"
    data = tmp_path / "noval"
    data.mkdir()
    for name in ("frames.h5", "keypoints.h5", "heatmaps.h5", "classes.csv"):
        (data / name).symlink_to(demo_stores / name)
    manifest.to_csv(data / "clips.csv", index=False)
    train("joint", tiny_config(epochs=3, lr_steps=[2]), data, tmp_path / "m")
    ckpt = torch.load(tmp_path / "m" / "model.pt", weights_only=True)
    assert ckpt["epoch"] == 3 and ckpt["val_top1"] is None and "last epoch" in ckpt["selected"]
    log = pd.read_csv(tmp_path / "m" / "log.csv")
    assert list(log.epoch) == [1, 2, 3] and not any(c.startswith("val_") for c in log.columns)


def test_a_diverged_training_is_one_line_with_its_own_exit_status(demo_stores, tmp_path, capsys):
    """A training whose loss became NaN or infinite had valid input: exit 3 (not 2, bad input),
    one line naming the model, the epoch and the learning rate."""
    from conftest import run_cli

    cfg = tmp_path / "huge_lr.yaml"
    cfg.write_text(yaml.safe_dump({"pose_model": {"optim": {"lr": 1e30}}}))
    rc, err = run_cli(capsys, "train", "joint", "--config", "tests/data/tiny.yaml", cfg,
                      "--manifest", demo_stores / "clips.csv", "--classes", demo_stores / "classes.csv",
                      "--keypoints", demo_stores / "keypoints.h5", "--out-dir", tmp_path / "m")
    # (the lines before it are the training's INFO log, which goes to stderr)
    errors = [line for line in err.splitlines() if " INFO " not in line]
    assert rc == 3 and len(errors) == 1, err
    assert errors[0].startswith("mgpipe train: error: joint: the ") and "in epoch 1;" in errors[0], err
    assert "lower the learning rate (1e+30)" in errors[0], err
    assert not (tmp_path / "m" / "model.pt").exists()


@pytest.mark.parametrize("problem", ["no train split", "stages disagree", "fused stages", "zoom upside down"])
def test_user_data_the_networks_cannot_take_is_one_line(demo_stores, tmp_path, capsys, problem):
    """What used to end in a ValueError's traceback from the samples or the model code: exit 2,
    one line naming the file or the config key."""
    from conftest import run_cli

    manifest = demo_stores / "clips.csv"
    cfg = tmp_path / "extra.yaml"
    cfg.write_text("{}")
    if problem == "no train split":
        rows = pd.read_csv(manifest, dtype=str, keep_default_na=False)
        manifest = tmp_path / "clips.csv"
        rows.assign(split=rows.split.replace("train", "val")).to_csv(manifest, index=False)
        expected = f"{manifest}: no clips in the train split"
    elif problem == "stages disagree":
        cfg.write_text(yaml.safe_dump({"pose_model": {"network": {"stage_blocks": [1, 1]}}}))
        expected = "config key pose_model.network.inflate has 3 entries; pose_model.network.stage_blocks has 2"
    elif problem == "zoom upside down":   # (each end is positive: the schema passes it)
        cfg.write_text(yaml.safe_dump({"pose_model": {"augment": {"scale": [1.2, 0.8]}}}))
        expected = "config key pose_model.augment.scale: [1.2, 0.8] is not a range [low, high]"
    else:
        cfg.write_text(yaml.safe_dump({"pose_model": {"network": {
            "stage_blocks": [1, 1, 1, 1], "inflate": [0, 1, 1, 1], "spatial_strides": [2, 2, 2, 2],
            "temporal_strides": [1, 1, 1, 1]}}}))
        expected = "config key pose_model.network.stage_blocks has 4 stages; the fused network"
    rc, err = run_cli(capsys, "train", "joint", "--config", "tests/data/tiny.yaml", cfg, "--manifest", manifest,
                      "--classes", demo_stores / "classes.csv", "--keypoints", demo_stores / "keypoints.h5",
                      "--out-dir", tmp_path / "m")
    errors = [line for line in err.splitlines() if " INFO " not in line]
    assert rc == 2 and len(errors) == 1 and "Traceback" not in err, err
    assert expected in errors[0], err
