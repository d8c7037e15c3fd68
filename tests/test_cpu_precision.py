"""bf16 autocast and channels_last_3d on the CPU: which precision a job gets, that the fast
forward matches fp32, and that a CPU training job in bf16 + channels_last_3d stays deterministic
and is scored in the layout it trained in."""

import logging

import pytest
import torch
from test_cuda import SMALL, _batch
from test_train import deterministic_log, tiny_config, train, weights

from mgpipe import runtime
from mgpipe.learning import specs
from mgpipe.stages.score import score_model

CPU = torch.device("cpu")


def test_channels_last_applies_on_the_cpu_and_bf16_only_where_native(monkeypatch, caplog):
    log = logging.getLogger("precision-test")
    assert runtime.step_precision({"amp": "none", "channels_last": True}, CPU) == (False, True)
    monkeypatch.setattr(runtime, "cpu_has_bf16", lambda: True)
    assert runtime.step_precision({"amp": "bf16", "channels_last": False}, CPU, log) == (True, False)
    monkeypatch.setattr(runtime, "cpu_has_bf16", lambda: False)
    with caplog.at_level(logging.WARNING):
        assert runtime.step_precision({"amp": "bf16", "channels_last": True}, CPU, log) == (False, True)
    assert "no native bf16" in caplog.text
    # on CUDA, bf16 is always native
    assert runtime.step_precision({"amp": "bf16", "channels_last": True}, torch.device("cuda")) == (True, True)


@pytest.mark.parametrize("name", ["joint", "limb", "fused_full"])
def test_bf16_channels_last_forward_matches_fp32_on_the_cpu(name):
    model = specs.build(specs.get(name).network(SMALL, (17, 17)), 5).eval()
    batch = _batch(name, CPU)
    with torch.no_grad():
        ref, _ = specs.get(name).forward(model, batch, CPU, False)
        model.to(memory_format=torch.channels_last_3d)
        same, _ = specs.get(name).forward(model, batch, CPU, True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            fast, _ = specs.get(name).forward(model, batch, CPU, True)
    for stream in ref:
        assert torch.allclose(same[stream], ref[stream], atol=1e-4, rtol=1e-4), stream
        assert torch.allclose(fast[stream].float(), ref[stream], atol=0.05, rtol=0.05), stream


def test_cpu_training_in_bf16_channels_last_is_deterministic_and_scored(demo_stores, tmp_path):
    cfg = tiny_config(epochs=2)
    cfg["train"].update(amp="bf16", channels_last=True)
    train("joint", cfg, demo_stores, tmp_path / "a")
    train("joint", cfg, demo_stores, tmp_path / "b")
    assert deterministic_log(tmp_path / "a" / "log.csv").equals(deterministic_log(tmp_path / "b" / "log.csv"))
    wa, wb = weights(tmp_path / "a" / "model.pt"), weights(tmp_path / "b" / "model.pt")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    # The precision settings are part of what a model is: fp32 contiguous gives another model.
    plain = tiny_config(epochs=2)
    train("joint", plain, demo_stores, tmp_path / "c")
    wc = weights(tmp_path / "c" / "model.pt")
    assert not all(torch.equal(wa[k], wc[k]) for k in wa)
    out = tmp_path / "scores.csv"
    summary = score_model(tmp_path / "a" / "model.pt", cfg, manifest_csv=demo_stores / "clips.csv",
                          frames_h5=None, keypoints_h5=demo_stores / "keypoints.h5", out_csv=out,
                          progress=False)
    plain_summary = score_model(tmp_path / "a" / "model.pt", plain, manifest_csv=demo_stores / "clips.csv",
                                frames_h5=None, keypoints_h5=demo_stores / "keypoints.h5",
                                out_csv=tmp_path / "plain.csv", progress=False)
    assert summary == plain_summary  # the layout changes the speed of scoring, not the scores
