"""Real (not dry) reruns of the tiny workflow: a rerun must produce new results where an input
changed, keep every file that nothing changed, and never hand back a model trained before.

The plan Snakemake prints is not enough: training state lives outside the declared outputs, so
a rerun planned correctly could still resume a finished old state and write the old model again.
These tests look at the files and the weights.
"""

import hashlib
from pathlib import Path

import pytest
import torch
from workflow_runs import planned, smk, tiny_run_copy

pytestmark = pytest.mark.slow

MODELS = ("rgb", "joint", "limb", "fused_full", "fused_plain")


def identity(path: Path) -> tuple:
    """Which file this is: a rewritten file gets a new inode (outputs are renamed into place)."""
    st = path.stat()
    return st.st_ino, st.st_mtime_ns


def weights(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def snapshot(results: Path) -> dict:
    out = {}
    for m in MODELS:
        model = results / "models" / m / "model.pt"
        out[m] = {"file": identity(model), "weights": weights(model),
                  "scores": identity(results / "scores" / f"{m}.csv")}
    out["metrics"] = hashlib.sha256((results / "ensemble" / "metrics.json").read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return tiny_run_copy(tmp_path_factory, "reruns")


def results(workdir):
    return workdir / "results" / "tiny"


def test_ensemble_weight_change_reruns_nothing_upstream(run):
    before = snapshot(results(run))
    (run / "weights.yaml").write_text("ensemble:\n  members: {fused: 2.0, joint: 0.5, limb: 1.0}\n")
    assert planned(smk(run, "-n", "--cores", "2", "--configfile", "tiny.yaml", "weights.yaml")) == {
        "ensemble": 1, "all": 1}
    smk(run, "--cores", "2", "--configfile", "tiny.yaml", "weights.yaml")
    after = snapshot(results(run))
    for m in MODELS:
        assert after[m]["file"] == before[m]["file"] and after[m]["scores"] == before[m]["scores"], m
    # back to the tiny config's weights: only the ensemble again, same metrics as before
    smk(run, "--cores", "2", "--configfile", "tiny.yaml")
    assert snapshot(results(run))["metrics"] == before["metrics"]


def test_forced_rerun_of_the_joint_model_trains_from_epoch_one(run):
    r = results(run)
    before = snapshot(r)
    smk(run, "--cores", "2", "--configfile", "tiny.yaml", "-R", "results/tiny/models/joint/model.pt")
    after = snapshot(r)
    log = (r / "logs" / "train_joint.log").read_text()
    assert "training from epoch 1" in log and "resuming" not in log
    assert "epoch=1 " in log and "epoch=2 " in log          # both epochs really ran
    # new files for the joint model and everything trained from it ...
    for m in ("joint", "fused_full", "fused_plain"):
        assert after[m]["file"] != before[m]["file"], m
        assert "training from epoch 1" in (r / "logs" / f"train_{m}.log").read_text()
    # ... and none for the models that do not depend on it
    for m in ("rgb", "limb"):
        assert after[m]["file"] == before[m]["file"], m
    # Training is deterministic on the CPU: retraining from the same inputs gives the same weights.
    for m in ("joint", "fused_full", "fused_plain"):
        assert same_weights(after[m]["weights"], before[m]["weights"]), m


def test_changed_heatmap_sigma_retrains_pose_models_with_new_weights(run):
    r = results(run)
    before = snapshot(r)
    (run / "sigma.yaml").write_text("heatmaps:\n  sigma: 1.5\n")
    smk(run, "--cores", "2", "--configfile", "tiny.yaml", "sigma.yaml")
    after = snapshot(r)
    for m in ("joint", "limb", "fused_full", "fused_plain"):
        assert after[m]["file"] != before[m]["file"], m
        assert not same_weights(after[m]["weights"], before[m]["weights"]), f"{m} kept its old weights"
        assert "resuming" not in (r / "logs" / f"train_{m}.log").read_text()
    # the RGB model does not read heatmaps: neither retrained nor rescored
    assert after["rgb"]["file"] == before["rgb"]["file"]
    assert after["rgb"]["scores"] == before["rgb"]["scores"]
    assert not (r / "state" / "joint").exists()  # a finished training's state is removed (train.keep_state)
