import pytest
import torch

from mgpipe.models.rgbpose import build_fused
from mgpipe.models.single import build_single
from mgpipe.stages.merge import IncompatibleModels, merge_into

SMALL_POSE = dict(base_channels=8, stage_blocks=[1, 1, 1], inflate=[0, 1, 1],
                  spatial_strides=[2, 2, 2], temporal_strides=[1, 1, 1], dropout=0.5)
SMALL_RGB = dict(base_channels=8, stage_blocks=[1, 1, 1, 1], inflate=[0, 0, 1, 1],
                 spatial_strides=[1, 2, 2, 2], temporal_strides=[1, 1, 1, 1], dropout=0.5)
K = 6


def fused_cfg(fusion=True):
    return {"rgb": SMALL_RGB, "pose": SMALL_POSE,
            "fusion": {"enabled": fusion, "hidden": 16},
            "prototype": {"enabled": True, "streams": ["rgb", "pose"], "dim": 16,
                          "momentum": 0.9, "alpha": 0.125, "tau": 0.125, "weight": 0.1,
                          "tp_only": False}}


def inputs(n=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, 3, 4, 128, 128, generator=g),
            torch.rand(n, 17, 16, 32, 32, generator=g))


def randomise(model, x):
    """Non-trivial weights: random BN affine (incl. the zero-init residual BN), random head,
    and BN running statistics from a few training-mode forwards."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm3d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
        model.head.fc.weight.normal_(0, 0.5)
        model.head.fc.bias.normal_(0, 0.5)
        model.train()
        for i in range(3):
            model(x * (1 + 0.3 * i) + 0.1 * i)
    model.eval()
    return model


@pytest.fixture(scope="module")
def pretrained():
    torch.manual_seed(0)
    rgb_x, pose_x = inputs(seed=7)
    rgb = randomise(build_single("rgb", 3, K, SMALL_RGB), rgb_x)
    pose = randomise(build_single("pose", 17, K, SMALL_POSE), pose_x)
    return rgb, pose


def test_merge_equivalence(pretrained):
    rgb, pose = pretrained
    torch.manual_seed(1)
    fused = build_fused(K, 17, fused_cfg(fusion=True))
    lat_before = {k: v.clone() for k, v in fused.state_dict().items()
                  if k.startswith(("pose_to_rgb", "rgb_to_pose", "fusion", "proto"))}
    report = merge_into(fused, rgb, pose)
    fused.eval()
    rx, px = inputs()
    with torch.no_grad():
        out = fused(rx, px)
        r_ref, p_ref = rgb(rx), pose(px)
    # the reference logits are non-trivial (not all equal), so the comparison means something
    assert r_ref["logits"].std() > 1e-3 and p_ref["logits"].std() > 1e-3
    assert torch.allclose(out["rgb"], r_ref["logits"], atol=1e-5, rtol=0)
    assert torch.allclose(out["pose"], p_ref["logits"], atol=1e-5, rtol=0)
    assert torch.allclose(out["rgb_features"], r_ref["features"], atol=1e-5, rtol=0)
    assert torch.allclose(out["pose_features"], p_ref["features"], atol=1e-5, rtol=0)

    # fresh modules untouched
    sd = fused.state_dict()
    for k, v in lat_before.items():
        assert torch.equal(sd[k], v), k
    # 2 widened stages per pathway x (conv1, downsample conv)
    assert report["widened"] == 8
    assert report["fresh"] == len(lat_before)
    n_single = (len(rgb.state_dict()) + len(pose.state_dict()))
    assert report["copied"] + report["widened"] == n_single

    # widened weights: pretrained in own channels, zeros in lateral channels
    w = fused.rgb_path.layers[2][0].conv1.weight
    src = rgb.backbone.layers[2][0].conv1.weight
    assert torch.equal(w[:, : src.shape[1]], src)
    assert torch.all(w[:, src.shape[1]:] == 0)

    # the check can fail: a non-zero lateral weight breaks the equivalence
    with torch.no_grad():
        fused.pose_path.layers[1][0].conv1.weight[:, -1].fill_(0.5)
        out2 = fused(rx, px)
    assert not torch.allclose(out2["pose"], p_ref["logits"], atol=1e-5, rtol=0)


def test_merge_without_fusion(pretrained):
    rgb, pose = pretrained
    fused = build_fused(K, 17, fused_cfg(fusion=False))
    merge_into(fused, rgb, pose)
    fused.eval()
    rx, px = inputs()
    with torch.no_grad():
        out = fused(rx, px)
        assert torch.allclose(out["rgb"], rgb(rx)["logits"], atol=1e-5, rtol=0)
        assert torch.allclose(out["pose"], pose(px)["logits"], atol=1e-5, rtol=0)


def _snapshot(m):
    return {k: v.clone() for k, v in m.state_dict().items()}


def test_merge_rejects_incompatible(pretrained):
    rgb, pose = pretrained
    fused = build_fused(K, 17, fused_cfg())
    before = _snapshot(fused)

    pose25 = build_single("pose", 25, K, SMALL_POSE)
    with pytest.raises(IncompatibleModels, match=r"pose_path\.stem\.0\.weight"):
        merge_into(fused, rgb, pose25)

    rgb_k = build_single("rgb", 3, K + 1, SMALL_RGB)
    with pytest.raises(IncompatibleModels, match=r"rgb_head\.fc\.weight"):
        merge_into(fused, rgb_k, pose)

    pose_t = build_single("pose", 17, K, dict(SMALL_POSE, temporal_strides=[1, 1, 2]))
    with pytest.raises(IncompatibleModels, match="temporal_strides"):
        merge_into(fused, rgb, pose_t)

    with pytest.raises(IncompatibleModels):
        merge_into(fused, pose, rgb)  # swapped

    # nothing was modified by the failed merges
    after = fused.state_dict()
    for k, v in before.items():
        assert torch.equal(after[k], v), k
