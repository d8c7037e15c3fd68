"""Data-parallel training as torchrun launches it (two CPU processes, gloo)."""

import os
import subprocess
import sys

import pandas as pd
import pytest
import torch
import yaml

pytest.importorskip("torch.distributed.run")


def test_torchrun_two_processes_train_one_model(demo_stores, tmp_path):
    cfg = yaml.safe_load(open("tests/data/tiny.yaml"))
    cfg["pose_model"]["optim"]["epochs"] = 2
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = tmp_path / "joint"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "mgpipe", "-q", "train", "joint", "--config-json", __import__("json").dumps(cfg),
           "--manifest", str(demo_stores / "clips.csv"), "--classes", str(demo_stores / "classes.csv"),
           "--keypoints", str(demo_stores / "keypoints.h5"), "--out-dir", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = pd.read_csv(out / "log.csv")
    assert list(log.epoch) == [1, 2]
    ckpt = torch.load(out / "model.pt", weights_only=True)
    assert ckpt["name"] == "joint"
    # each process saw half of each epoch; the logged totals cover both halves
    manifest = pd.read_csv(demo_stores / "clips.csv")
    assert (manifest.split == "train").sum() >= 8
