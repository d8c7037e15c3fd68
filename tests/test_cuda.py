"""The CUDA paths: bf16 autocast, channels_last_3d, torch.compile and a training job on the GPU.
They need a CUDA device and skip without one (benchmarks/gpu_check.sh runs them on a GPU)."""

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from mgpipe.learning import specs

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

SMALL = {
    "rgb": {"frames": 4, "size": 128, "network": {
        "base_channels": 8, "stage_blocks": [1, 1, 1, 1], "inflate": [0, 0, 1, 1],
        "spatial_strides": [1, 2, 2, 2], "temporal_strides": [1, 1, 1, 1], "dropout": 0.0}},
    "pose_model": {"input": {"frames": 16, "size": 32, "test_size": 32}, "network": {
        "base_channels": 8, "stage_blocks": [1, 1, 1], "inflate": [0, 1, 1],
        "spatial_strides": [2, 2, 2], "temporal_strides": [1, 1, 1], "dropout": 0.0}},
    "fused": {"fusion": {"hidden": 16}, "prototype": {
        "streams": ["rgb", "pose"], "dim": 16, "momentum": 0.9, "alpha": 0.125, "tau": 0.125,
        "weight": 0.1, "tp_only": False}},
}


def _batch(name, device, n=4, joints=17):
    torch.manual_seed(0)
    batch = {"label": torch.arange(n) % 5}
    for m, (t, s) in specs.get(name).modalities(SMALL, True).items():
        batch[m] = torch.rand(n, 3 if m == "rgb" else joints, t, s, s)
    return batch


@pytest.mark.parametrize("name", ["joint", "rgb", "fused_full"])
def test_bf16_channels_last_matches_fp32(name):
    device = torch.device("cuda")
    model = specs.build(specs.get(name).network(SMALL, (17, 17)), 5).to(device).eval()
    batch = _batch(name, device)
    with torch.no_grad():
        ref, _ = specs.get(name).forward(model, batch, device, False)
        model.to(memory_format=torch.channels_last_3d)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            got, _ = specs.get(name).forward(model, batch, device, True)
    for stream in ref:
        assert torch.allclose(got[stream].float(), ref[stream], atol=0.05, rtol=0.05), stream


def test_compiled_training_step_runs_and_learns():
    device = torch.device("cuda")
    model = specs.build(specs.get("joint").network(SMALL, (17, 17)), 5).to(device)
    model.to(memory_format=torch.channels_last_3d)
    step_model = torch.compile(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    batch = _batch("joint", device)
    labels = batch["label"].to(device)
    losses = []
    for _ in range(20):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits, _ = specs.get("joint").forward(step_model, batch, device, True)
            loss = F.cross_entropy(logits["joint"].float(), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.detach())
    assert torch.isfinite(torch.stack(losses)).all()
    assert losses[-1].item() < losses[0].item()


def test_training_job_on_the_gpu(demo_stores, tmp_path):
    """One real training job (the demo stores, bf16 + channels_last_3d) writes its model."""
    from mgpipe.config import load
    from mgpipe.stages.train import run

    config = load([REPO / "config.yaml"])
    config["train"].update(device="cuda", amp="bf16", channels_last=True, threads=1)
    config["pose_model"]["optim"].update(epochs=1)
    out = run("joint", config, manifest_csv=demo_stores / "clips.csv",
              classes_csv=demo_stores / "classes.csv", frames_h5=None,
              keypoints_h5=demo_stores / "keypoints.h5", out_dir=tmp_path / "joint",
              state_dir=tmp_path / "state", threads=1, progress=False)
    assert (tmp_path / "joint" / "model.pt").is_file()
    assert json.loads(json.dumps(out)) is not None


def test_batch_step_on_the_gpu_matches_the_cpu(demo_stores):
    """The batch step (RGB views resampled and normalised, heatmaps scattered) gives the same
    network input on the GPU as on the CPU, from the same uint8 cuts and drawn pixels, with
    the heatmap volumes in float32 and in bfloat16 (the dtype of a step under bf16 autocast)."""
    import pandas as pd

    from mgpipe.config import load
    from mgpipe.learning.samples import collate, model_samples

    config = load([REPO / "config.yaml"])
    manifest = pd.read_csv(demo_stores / "clips.csv", dtype={"clip_id": str, "video_id": str})
    for name in ("fused_full", "limb"):
        data = model_samples(specs.get(name), config, manifest, "train", train=True,
                             frames_h5=demo_stores / "frames.h5", keypoints_h5=demo_stores / "keypoints.h5")
        batch = collate([data[i] for i in range(min(6, len(data)))])
        for dtype in (torch.float32, torch.bfloat16):
            cpu = data.to_device(batch, "cpu", dtype)
            gpu = data.to_device(batch, "cuda", dtype)
            for key in cpu:
                assert gpu[key].dtype == cpu[key].dtype
                torch.testing.assert_close(gpu[key].cpu(), cpu[key], atol=1e-4, rtol=1e-4)
