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


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_nodes_train_the_model_of_one_process(demo_stores, tmp_path):
    """train.nodes: two torchrun agents as two nodes (one process each, gloo, c10d rendezvous
    on 127.0.0.1), batch 4 per process, against one process with batch 8: the same model and the
    same logged metrics within float tolerance (batch statistics synchronised, train.sync_bn;
    dropout off, as its masks depend on the process layout)."""
    import json

    from mgpipe.tools.multinode import torchrun_args

    cfg = yaml.safe_load(open("tests/data/tiny.yaml"))
    cfg["pose_model"]["network"]["dropout"] = 0.0

    def command(out, batch):
        run_cfg = json.loads(json.dumps(cfg))
        run_cfg["pose_model"]["optim"]["batch_size"] = batch
        return ["-m", "mgpipe", "train", "joint", "--config-json", json.dumps(run_cfg),
                "--manifest", str(demo_stores / "clips.csv"), "--classes", str(demo_stores / "classes.csv"),
                "--keypoints", str(demo_stores / "keypoints.h5"), "--out-dir", str(out),
                "--state-dir", str(out / "state"), "--threads", "1", "--set", "train.keep_state=true"]

    env = dict(os.environ, OMP_NUM_THREADS="1")
    one = subprocess.run([sys.executable, *command(tmp_path / "one", 8)], capture_output=True, text=True,
                         timeout=300, env=env)
    assert one.returncode == 0, one.stderr[-3000:]
    agent = [sys.executable, "-m", "torch.distributed.run",
             *torchrun_args(2, 1, f"127.0.0.1:{free_port()}", "mgpipe-test")[1:], *command(tmp_path / "two", 4)]
    agents = [subprocess.Popen(agent, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
              for _ in range(2)]
    outs = [a.communicate(timeout=300)[0] for a in agents]
    assert [a.returncode for a in agents] == [0, 0], "\n".join(o[-2000:] for o in outs)
    assert "joint: data-parallel over world size 2 (2 node(s) x 1 process(es)), synchronised batch statistics" in "".join(outs)
    # (the CPU all-reduce's deprecation notice is silenced where it is called, not on import)
    assert "all_reduce is deprecated" not in "".join(outs)

    diffs = {}
    for name in ("model.pt", "state/last.pt"):  # the kept epoch, and the last one
        a = torch.load(tmp_path / "one" / name, weights_only=False)["model"]
        b = torch.load(tmp_path / "two" / name, weights_only=False)["model"]
        assert a.keys() == b.keys()
        diffs[name] = max((a[k].double() - b[k].double()).abs().max().item() for k in a)
    print("max parameter difference, two nodes vs one process:", diffs)
    assert max(diffs.values()) < 1e-5, diffs
    log_one, log_two = (pd.read_csv(tmp_path / run / "log.csv").drop(columns="seconds") for run in ("one", "two"))
    pd.testing.assert_frame_equal(log_one, log_two, atol=1e-5, rtol=0)
