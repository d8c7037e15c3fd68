import copy

import pytest
import torch

from mgpipe.models.fusion import CrossModalFusion
from mgpipe.models.heads import ClsHead
from mgpipe.models.resnet3d import Bottleneck3d, ResNet3dSlowOnly
from mgpipe.models.rgbpose import build_fused
from mgpipe.models.single import build_single

POSE = dict(base_channels=32, stage_blocks=[4, 6, 3], inflate=[0, 1, 1],
            spatial_strides=[2, 2, 2], temporal_strides=[1, 1, 1], dropout=0.5)
RGB = dict(base_channels=64, stage_blocks=[3, 4, 6, 3], inflate=[0, 0, 1, 1],
           spatial_strides=[1, 2, 2, 2], temporal_strides=[1, 1, 1, 1], dropout=0.5)
SMALL_POSE = dict(POSE, base_channels=8, stage_blocks=[1, 1, 1])
SMALL_RGB = dict(RGB, base_channels=8, stage_blocks=[1, 1, 1, 1])
PROTO = dict(enabled=True, streams=["rgb", "pose"], dim=16, momentum=0.9, alpha=0.125,
             tau=0.125, weight=0.1, tp_only=False)
K = 5


def small_cfg(fusion=True, proto=True):
    return {"rgb": SMALL_RGB, "pose": SMALL_POSE,
            "fusion": {"enabled": fusion, "hidden": 16},
            "prototype": dict(PROTO, enabled=proto)}


def small_inputs(n=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, 3, 4, 128, 128, generator=g),
            torch.rand(n, 17, 16, 32, 32, generator=g))


def nparams(m):
    return sum(p.numel() for p in m.parameters())


@pytest.fixture(scope="module")
def paper_fused():
    torch.manual_seed(0)
    cfg = {"rgb": RGB, "pose": POSE, "fusion": {"enabled": True, "hidden": 256},
           "prototype": dict(PROTO, dim=256), "speed_ratio": 4, "channel_ratio": 4}
    return build_fused(K, 17, cfg).eval()


# ---------------------------------------------------------------- pathways at paper sizes
def test_pose_pathway_parameter_count():
    m = ResNet3dSlowOnly("pose", 17, POSE)
    n = nparams(m)
    print(f"pose pathway (V=17) parameters: {n}")
    assert abs(n - 2.0e6) / 2.0e6 < 0.02
    assert m.out_channels == 512 and m.stage_out_channels == [128, 256, 512]


def test_pose_output_shape():
    m = ResNet3dSlowOnly("pose", 17, POSE).eval()
    with torch.no_grad():
        y = m(torch.rand(1, 17, 32, 56, 56))
    assert y.shape == (1, 512, 32, 7, 7)


def test_rgb_output_shape():
    m = ResNet3dSlowOnly("rgb", 3, RGB).eval()
    assert m.stage_out_channels == [256, 512, 1024, 2048]
    with torch.no_grad():
        y = m(torch.randn(1, 3, 8, 224, 224))
    assert y.shape == (1, 2048, 8, 7, 7)


def test_stems_and_blocks():
    p = ResNet3dSlowOnly("pose", 17, POSE)
    r = ResNet3dSlowOnly("rgb", 3, RGB)
    assert p.stem[0].stride == (1, 1, 1) and p.stem[3].stride == (1, 1, 1)
    assert r.stem[0].stride == (1, 2, 2) and r.stem[3].stride == (1, 2, 2)
    assert p.stem[0].kernel_size == (1, 7, 7) and p.stem[0].padding == (0, 3, 3)
    # inflate per stage: (0, 1, 1) for pose
    assert p.layers[0][1].conv1.kernel_size == (1, 1, 1)
    assert p.layers[1][0].conv1.kernel_size == (3, 1, 1)
    assert p.layers[1][0].conv1.padding == (1, 0, 0)
    assert r.layers[1][0].conv1.kernel_size == (1, 1, 1)
    assert r.layers[2][0].conv1.kernel_size == (3, 1, 1)
    # conv2 carries the stride, downsample only in the first block
    assert p.layers[0][0].conv2.stride == (1, 2, 2) and p.layers[0][0].downsample is not None
    assert r.layers[0][0].conv2.stride == (1, 1, 1) and r.layers[0][0].downsample is not None
    assert all(b.downsample is None for b in list(r.layers[3])[1:])
    for m in (p, r):
        for mod in m.modules():
            if isinstance(mod, Bottleneck3d):
                assert torch.all(mod.bn3.weight == 0)
                assert torch.all(mod.bn1.weight == 1)
            if isinstance(mod, torch.nn.Conv3d):
                assert mod.bias is None


def test_head_init():
    torch.manual_seed(0)
    h = ClsHead(512, 100, 0.5)
    assert torch.all(h.fc.bias == 0)
    assert 0.008 < h.fc.weight.std().item() < 0.012


def test_fused_paper_size_logits(paper_fused):
    with torch.no_grad():
        out = paper_fused(torch.randn(1, 3, 8, 224, 224), torch.rand(1, 17, 32, 56, 56))
    assert out["rgb"].shape == (1, K) and out["pose"].shape == (1, K)
    assert out["rgb_features"].shape == (1, 2048)
    assert out["pose_features"].shape == (1, 512)


def test_lateral_channel_arithmetic(paper_fused):
    rp, pp = paper_fused.rgb_path, paper_fused.pose_path
    assert rp.layers[2][0].conv1.in_channels == 640
    assert rp.layers[2][0].downsample[0].in_channels == 640
    assert rp.layers[3][0].conv1.in_channels == 1280
    assert rp.layers[3][0].downsample[0].in_channels == 1280
    assert pp.layers[1][0].conv1.in_channels == 160
    assert pp.layers[1][0].downsample[0].in_channels == 160
    assert pp.layers[2][0].conv1.in_channels == 320
    assert pp.layers[2][0].downsample[0].in_channels == 320
    # only the first block is widened
    assert rp.layers[2][1].conv1.in_channels == 1024
    assert pp.layers[1][1].conv1.in_channels == 256
    # laterals
    for e, w in enumerate([128, 256]):
        c = paper_fused.pose_to_rgb[e]
        assert (c.in_channels, c.out_channels) == (w, w)
        assert c.kernel_size == (7, 1, 1) and c.stride == (4, 1, 1) and c.padding == (3, 0, 0)
    for e, (i, o) in enumerate([(512, 32), (1024, 64)]):
        c = paper_fused.rgb_to_pose[e].conv
        assert isinstance(c, torch.nn.ConvTranspose3d)
        assert (c.in_channels, c.out_channels) == (i, o)
        assert c.kernel_size == (7, 1, 1) and c.stride == (4, 1, 1)
    assert len(paper_fused.fusion) == 2
    assert set(paper_fused.proto.keys()) == {"rgb", "pose"}


# ---------------------------------------------------------------- single stream
def test_single_stream_outputs():
    torch.manual_seed(0)
    m = build_single("pose", 17, K, SMALL_POSE).eval()
    x = small_inputs()[1]
    with torch.no_grad():
        out = m(x)
        feats = m.backbone(x).mean(dim=(2, 3, 4))
    assert out["logits"].shape == (2, K) and out["features"].shape == (2, 128)
    assert torch.allclose(out["features"], feats, atol=1e-6)
    assert torch.allclose(out["logits"], m.head.fc(feats), atol=1e-6)


# ---------------------------------------------------------------- fused small model
def test_fused_small_forward_backward_and_loss():
    torch.manual_seed(0)
    m = build_fused(K, 17, small_cfg()).train()
    rgb, pose = small_inputs()
    out = m(rgb, pose)
    labels = torch.tensor([0, 3])
    losses = m.loss(out, labels)
    assert set(losses) == {"loss", "ce_rgb", "ce_pose", "proto_rgb", "proto_pose"}
    expect = (losses["ce_rgb"] + losses["ce_pose"]
              + 0.1 * (losses["proto_rgb"] + losses["proto_pose"]))
    assert torch.allclose(losses["loss"], expect)
    losses["loss"].backward()
    assert m.pose_to_rgb[0].weight.grad is not None
    assert torch.isfinite(m.rgb_path.stem[0].weight.grad).all()

    m2 = build_fused(K, 17, small_cfg(proto=False))
    assert len(m2.proto) == 0
    assert set(m2.loss(m2(rgb, pose), labels)) == {"loss", "ce_rgb", "ce_pose"}


def test_streams_interact_through_laterals():
    torch.manual_seed(0)
    m = build_fused(K, 17, small_cfg()).eval()
    rgb, pose = small_inputs()
    with torch.no_grad():
        a = m(rgb, pose)["rgb_features"]
        b = m(rgb, pose * 2 + 1)["rgb_features"]
    assert not torch.allclose(a, b)


def test_exchange_order_uses_fused_pre_concat_tensors():
    torch.manual_seed(0)
    m = build_fused(K, 17, small_cfg()).eval()
    for f in m.fusion:  # make the fusion non-trivial
        for p in (f.rgb_out.weight, f.rgb_out.bias, f.pose_out.weight, f.pose_out.bias):
            torch.nn.init.normal_(p, std=0.1)
    seen = {}

    def keep(name):
        def hook(mod, inp, out):
            seen[name] = (inp, out)
        return hook

    m.fusion[0].register_forward_hook(keep("fusion"))
    m.pose_to_rgb[0].register_forward_hook(keep("p2r"))
    m.rgb_to_pose[0].register_forward_hook(keep("r2p"))
    m.rgb_path.layers[2].register_forward_hook(keep("rgb3"))
    m.pose_path.layers[1].register_forward_hook(keep("pose2"))
    with torch.no_grad():
        m(*small_inputs())
    f_rgb, f_pose = seen["fusion"][1]
    assert not torch.equal(f_rgb, seen["fusion"][0][0])  # fusion did change the tensors
    assert torch.equal(seen["p2r"][0][0], f_pose)
    assert torch.equal(seen["r2p"][0][0], f_rgb)
    x3 = seen["rgb3"][0][0]
    assert torch.equal(x3, torch.cat([f_rgb, seen["p2r"][1]], 1))
    x2 = seen["pose2"][0][0]
    assert torch.equal(x2, torch.cat([f_pose, seen["r2p"][1]], 1))


def test_bad_configs_raise():
    with pytest.raises(ValueError):
        build_fused(K, 17, dict(small_cfg(), rgb=dict(SMALL_RGB, stage_blocks=[1, 1, 1],
                                                       inflate=[0, 0, 1],
                                                       spatial_strides=[1, 2, 2],
                                                       temporal_strides=[1, 1, 1])))
    bad = dict(SMALL_POSE)
    del bad["inflate"]
    with pytest.raises(ValueError):
        build_single("pose", 17, K, bad)
    with pytest.raises(ValueError):
        ResNet3dSlowOnly("depth", 1, SMALL_POSE)


# ---------------------------------------------------------------- fusion module
def test_fusion_identity_at_init_and_gradients():
    torch.manual_seed(0)
    f = CrossModalFusion(24, 12, 8)
    xr = torch.randn(2, 24, 4, 6, 6)
    xp = torch.randn(2, 12, 16, 6, 6)
    yr, yp = f(xr, xp)
    assert torch.equal(yr, xr) and torch.equal(yp, xp)
    w = torch.randn_like(yr)
    (yr * w).sum().add((yp * torch.randn_like(yp)).sum()).backward()
    for p in (f.rgb_out.weight, f.pose_out.weight, f.rgb_out.bias, f.pose_out.bias):
        assert p.grad is not None and p.grad.abs().sum() > 0
    assert f.pose_out.stride == (4, 1, 1)


def test_fusion_nontrivial_after_update_and_shapes():
    torch.manual_seed(0)
    f = CrossModalFusion(24, 12, 8)
    torch.nn.init.normal_(f.rgb_out.weight)
    torch.nn.init.normal_(f.pose_out.weight)
    xr, xp = torch.randn(2, 24, 4, 6, 6), torch.randn(2, 12, 16, 6, 6)
    yr, yp = f(xr, xp)
    assert yr.shape == xr.shape and yp.shape == xp.shape
    assert not torch.allclose(yr, xr) and not torch.allclose(yp, xp)
    # the pose side depends on the RGB input (cross-modal)
    _, yp2 = f(xr * 3, xp)
    assert not torch.allclose(yp, yp2)


def test_fusion_disabled_costs_nothing():
    torch.manual_seed(0)
    on = build_fused(K, 17, small_cfg(fusion=True, proto=False))
    off = build_fused(K, 17, small_cfg(fusion=False, proto=False))
    assert off.fusion is None
    assert not any("fusion" in n for n, _ in off.named_parameters())
    assert not any("fusion" in n for n in off.state_dict())
    assert nparams(on) - nparams(off) == nparams(on.fusion)
    # identity fusion: same weights give the same outputs
    off.load_state_dict({k: v for k, v in on.state_dict().items() if "fusion" not in k})
    on.eval(), off.eval()
    with torch.no_grad():
        a, b = on(*small_inputs()), off(*small_inputs())
    assert torch.equal(a["rgb"], b["rgb"]) and torch.equal(a["pose"], b["pose"])


def test_fused_state_dict_roundtrip():
    torch.manual_seed(0)
    m = build_fused(K, 17, small_cfg())
    m2 = copy.deepcopy(m)
    for p in m2.parameters():
        p.data.add_(1.0)
    m2.load_state_dict(m.state_dict())
    for (n, a), (_, b) in zip(m.state_dict().items(), m2.state_dict().items()):
        assert torch.equal(a, b), n
