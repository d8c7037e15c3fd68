"""The model registry: every registered model builds, takes its inputs and yields its streams;
the config decides which models the workflow trains and in which order."""

import pytest
import torch

from mgpipe.config import validate
from mgpipe.learning import specs

TINY_NET = {"base_channels": 2, "stage_blocks": [1, 1, 1], "inflate": [0, 1, 1],
            "spatial_strides": [2, 2, 2], "temporal_strides": [1, 1, 1], "dropout": 0.0}
TINY_RGB = {"base_channels": 2, "stage_blocks": [1, 1, 1, 1], "inflate": [0, 0, 1, 1],
            "spatial_strides": [1, 2, 2, 2], "temporal_strides": [1, 1, 1, 1], "dropout": 0.0}


def tiny_config(**over):
    return validate({"rgb": {"frames": 2, "size": 32, "network": TINY_RGB},
                     "pose_model": {"input": {"frames": 8, "size": 8, "test_size": 8}, "network": TINY_NET},
                     "fused": {"fusion": {"hidden": 4}, "prototype": {"dim": 4}},
                     "motion": {"frames": 2, "size": 32, "network": TINY_RGB},
                     "swin": {"variant": "t", "frames": 2, "size": 32}, **over})


@pytest.mark.parametrize("name", list(specs.REGISTRY))
def test_every_model_builds_and_yields_its_streams(name):
    spec = specs.get(name)
    config = tiny_config()
    model = specs.build(spec.network(config, (5, 7)), 3).eval()
    batch = {m: torch.rand(2, 3 if m in specs.FRAME_INPUTS else (5 if m == "joint" else 7), t, s, s)
             for m, (t, s) in spec.modalities(config, True).items()}
    logits, out = spec.forward(model, batch, torch.device("cpu"))
    assert list(logits) == spec.streams and all(z.shape == (2, 3) for z in logits.values())
    plain = model.loss(out, torch.tensor([0, 2]))["loss"].detach()
    assert float(plain) > 0
    # every network takes the class-balanced loss's weights; uniform weights change nothing
    uniform = model.loss(out, torch.tensor([0, 2]), class_weights=torch.ones(3))["loss"].detach()
    assert torch.allclose(uniform, plain)
    frames = {"rgb", "motion", "swin"} & set(spec.inputs)
    assert set(spec.stores) == ({"frames", "keypoints"} if frames else {"keypoints"})
    # a frame input is shaped by its own config section, recorded with the model
    assert all(k.split(".")[0] in ("heatmaps", "pose_model", *frames) for k in spec.input_settings(config))


def test_config_decides_the_trained_models_and_their_order():
    config = tiny_config(fused={"variants": ["plain", "full"]})
    assert specs.trained_models(config) == ["rgb", "joint", "limb", "fused_plain", "fused_full"]
    pose_only = tiny_config(mode="pose", limb={"enabled": False})
    assert specs.trained_models(pose_only) == ["joint"]
    members = tiny_config(motion={"enabled": True}, swin={"enabled": True})
    assert specs.trained_models(members) == ["rgb", "joint", "limb", "motion", "swin", "fused_full"]
    assert specs.trained_models({**members, "mode": "pose"}) == ["joint", "limb"]


def test_the_rgb_model_does_not_read_the_gaussian_width():
    config = tiny_config()
    rgb = specs.get("rgb").settings(config)
    assert rgb["heatmaps"] == {"padding": config["heatmaps"]["padding"]}
    assert specs.get("joint").settings(config)["heatmaps"] == config["heatmaps"]


def test_a_name_is_registered_once_and_unknown_names_say_which_exist():
    with pytest.raises(ValueError, match="registered twice"):
        specs.register(specs.get("joint"))
    from dataclasses import replace

    with pytest.raises(ValueError, match="more than one frame input"):
        specs.register(replace(specs.get("rgb"), name="two", inputs=("rgb", "motion")))
    with pytest.raises(ValueError, match="unknown inputs"):
        specs.register(replace(specs.get("rgb"), name="flow", inputs=("flow",)))
    with pytest.raises(ValueError, match="known: rgb, joint"):
        specs.get("jiont")
