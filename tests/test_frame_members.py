"""The two optional frame-store members: the motion stream's input is the temporal difference of
the frames the RGB model would see (same store, same view), and the Video Swin member samples a
strided window and starts from torchvision-format weights (a local file or a weight name) with
its head replaced and the report logged; bad weights are refused in one line."""

import logging
import os
from collections import OrderedDict

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from mgpipe.config import defaults
from mgpipe.formats import frames as frame_store
from mgpipe.formats.frames import encode_jpeg
from mgpipe.io import InputError
from mgpipe.learning import specs
from mgpipe.learning.samples import ClipDataset, collate, window_indices
from mgpipe.learning.weights import init_source
from mgpipe.learning.weights.initialise import check_source, initialise, log_report

STD = [60.0, 50.0, 40.0]


def _store(path, images: list) -> str:
    """A frame store of one clip "c0" holding the given uint8 [H, W, 3] frames (JPEG quality 100)."""
    height, width, _ = images[0].shape
    with frame_store.writer(path, max_side=max(width, height), jpeg_quality=100) as w:
        w.add("c0", [encode_jpeg(Image.fromarray(img), 100) for img in images], width, height, 1.0)
    return str(path)


def _input(store, name, frames, size, *, train=False, **kw):
    """The finished network input [3, T, size, size] of one sample of clip c0."""
    manifest = pd.DataFrame({"clip_id": ["c0"], "label": [0], "split": ["train" if train else "test"]})
    data = ClipDataset(manifest, "train" if train else "test", {name: (frames, size)}, frames_h5=store,
                       train=train, sigma=1.0, padding=0.25, seed=0, **kw)
    return data.to_device(collate([data[0]]), "cpu")[name][0]


def _textured(seed, h=24, w=32):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.sin(x / 3 + seed)[..., None] * 60 + np.cos(y / 4)[..., None] * 40 + 120
    return np.clip(base + rng.normal(0, 5, (h, w, 3)), 0, 255).astype(np.uint8)


def test_motion_input_is_the_difference_of_the_rgb_views(tmp_path):
    # 5 frames, 4 differences: the first frames are 0..3 and the later ones 1..4 exactly
    store = _store(tmp_path / "f.h5", [_textured(i) for i in range(5)])
    mean = [3.0, -2.0, 1.0]
    rgb = _input(store, "rgb", 5, 16, mean=[0, 0, 0], std=STD)             # every frame, over std
    motion = _input(store, "motion", 4, 16, mean=mean, std=STD, gap=1)
    offset = torch.tensor(mean).view(3, 1, 1, 1) / torch.tensor(STD).view(3, 1, 1, 1)
    assert motion.shape == (3, 4, 16, 16)
    torch.testing.assert_close(motion, rgb[:, 1:] - rgb[:, :-1] - offset)


def test_motion_of_flat_frames_is_their_step_and_of_a_still_scene_zero_in_any_view(tmp_path):
    # a flat colour brightening by (15, 0, -10) per frame: every pixel of the input is the step / std
    flat = [np.broadcast_to(np.array([40 + 15 * i, 80, 200 - 10 * i], np.uint8), (24, 32, 3)).copy()
            for i in range(6)]
    motion = _input(_store(tmp_path / "flat.h5", flat), "motion", 3, 8, mean=[0, 0, 0], std=STD, gap=1)
    step = torch.tensor([15.0, 0.0, -10.0]) / torch.tensor(STD)
    torch.testing.assert_close(motion.mean((1, 2, 3)), step, atol=1.5 / 40, rtol=0)
    assert float((motion - step.view(3, 1, 1, 1)).abs().max()) < 1.5 / 40
    # a still textured scene under a random crop and mirror: both frames of a difference share the view
    still = _store(tmp_path / "still.h5", [_textured(7)] * 6)
    moved = _input(still, "motion", 3, 12, train=True, mean=[0, 0, 0], std=STD, gap=2,
                   flip=True, crop_area=(0.3, 0.6))
    assert moved.shape == (3, 3, 12, 12) and float(moved.abs().max()) == 0.0


def test_the_registry_routes_each_frame_input_to_its_own_settings():
    config = defaults()
    config["motion"].update(frames=3, size=40, gap=2, std=STD)
    config["swin"].update(frames=5, size=48, stride=3)
    motion, swin = specs.get("motion"), specs.get("swin")
    assert motion.modalities(config, False) == {"motion": (3, 40)} and swin.modalities(config, True) == {"swin": (5, 48)}
    assert motion.stores == swin.stores == ("frames", "keypoints")
    assert motion.input_settings(config)["motion.gap"] == 2 and swin.input_settings(config)["swin.stride"] == 3
    assert "rgb.size" not in swin.input_settings(config)


def test_swin_samples_a_strided_window_and_short_clips_whole():
    rng = np.random.default_rng(0)
    for _ in range(20):
        idx = window_indices(100, 8, 2, rng)
        assert list(np.diff(idx)) == [2] * 7 and 0 <= idx[0] and idx[-1] < 100
    short = window_indices(10, 8, 2, rng)                      # window of 15 > 10 frames: segments
    assert len(short) == 8 and short.max() < 10 and len(set(short)) == 8


def test_swin_reads_a_strided_window_of_the_frame_store_at_its_own_size(tmp_path):
    # frame i is flat grey 10 * i: the input's values say which frames the window took
    flat = [np.full((24, 32, 3), 10 * i, np.uint8) for i in range(20)]
    x = _input(_store(tmp_path / "f.h5", flat), "swin", 4, 16, mean=[0, 0, 0], std=[1, 1, 1], frame_stride=3)
    assert x.shape == (3, 4, 16, 16)
    taken = (x.mean((0, 2, 3)) / 10).round().int().tolist()
    assert [b - a for a, b in zip(taken, taken[1:])] == [3, 3, 3] and taken[0] + 9 < 20


@pytest.fixture(scope="module")
def swin():
    """A swin3d_t member for 3 classes and a torchvision-format state dict of another one (400
    classes, as torchvision's Kinetics-400 weights): every tensor shifted, so loading shows."""
    config = defaults()
    config["swin"].update(variant="t")
    arch = specs.get("swin").network(config, (17, 19))
    model = specs.build(arch, 3)
    source = OrderedDict((k, v + 0.5 if v.is_floating_point() else v.clone())
                         for k, v in model.net.state_dict().items())
    source["head.weight"], source["head.bias"] = torch.randn(400, 768), torch.zeros(400)
    return model, arch, source


def test_a_torchvision_state_dict_file_loads_with_the_head_replaced_and_logged(swin, tmp_path, caplog):
    model, arch, source = swin
    torch.save(source, tmp_path / "swin3d_t-kinetics.pth")
    head = model.net.head.weight.detach().clone()
    report = initialise(model, arch, tmp_path / "swin3d_t-kinetics.pth")
    assert torch.equal(model.net.patch_embed.proj.weight, source["patch_embed.proj.weight"])
    assert torch.equal(model.net.head.weight, head) and model.net.head.out_features == 3
    assert set(report["fresh"]) == {"net.head.weight", "net.head.bias"} and report["ignored"] == ["head.bias", "head.weight"]
    with caplog.at_level(logging.INFO):
        log_report(report, "swin", logging.getLogger("mgpipe.stages.train"))
    assert "swin: init fresh (head replaced: 400 classes in the source, 3 here): net.head.weight, net.head.bias" \
        in caplog.text
    assert f"{len(source) - 2} tensors loaded" in caplog.text


def _cache_with(monkeypatch, tmp_path, source, digest=None):
    """TORCH_HOME at tmp_path with `source` as the cached file of swin3d_t's KINETICS400_V1; its
    published name (the URL's file name) carries the file's own sha256 prefix (or `digest`), as
    torchvision's real names do (swin3d_t-7615ae03.pth): the real file is 120 MB and offline here."""
    import hashlib

    from mgpipe.models import swin as swin_module

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(source, cache / "staging.pth")
    digest = digest or hashlib.sha256((cache / "staging.pth").read_bytes()).hexdigest()[:8]
    (cache / "staging.pth").rename(cache / f"swin3d_t-{digest}.pth")
    monkeypatch.setattr(swin_module, "published_url",
                        lambda name, variant: f"https://download.pytorch.org/models/swin3d_t-{digest}.pth")
    return cache / f"swin3d_t-{digest}.pth"


def _plan_check(config, model="swin"):
    """The workflow's plan-time check of a model's init source."""
    check_source(config, model, init_source.resolve(config, model))


def test_a_weight_name_is_its_hash_checked_file_in_torchs_cache(swin, monkeypatch, tmp_path):
    """A weight name resolves to the cached file (read with mgpipe's restricted loader, never
    torchvision's get_state_dict); nothing is downloaded; a file named like the weight in the
    working folder is never taken for it."""
    from mgpipe.models.swin import weights_enum

    model, arch, source = swin
    enum = weights_enum("t")
    monkeypatch.setattr(enum, "get_state_dict", lambda *a, **k: pytest.fail("torchvision's loader used"))
    cached = _cache_with(monkeypatch, tmp_path, source)
    monkeypatch.chdir(tmp_path)
    torch.save({"patch_embed.proj.weight": torch.zeros(1)}, tmp_path / "KINETICS400_V1")  # never read
    report = initialise(model, arch, "KINETICS400_V1")
    assert report["format"] == "torchvision Swin3D_T_Weights.KINETICS400_V1" and len(report["fresh"]) == 2
    assert report["source"] == str(cached)
    assert torch.equal(model.net.patch_embed.proj.weight, source["patch_embed.proj.weight"])
    config = defaults()
    config["swin"].update(variant="t", weights="KINETICS400_V1", enabled=True)
    assert init_source.resolve(config, "swin") == init_source.InitSource(   # the rule's input
        str(cached), init_source.TORCHVISION, "config key swin.weights", weights="KINETICS400_V1")
    _plan_check(config)
    assert init_source.config_key("swin") == "swin.weights" and init_source.config_key("motion") == "init.motion"


def test_a_weight_name_not_cached_or_of_another_hash_is_one_line(swin, monkeypatch, tmp_path):
    model, arch, source = swin
    config = defaults()
    config["swin"].update(variant="t", weights="KINETICS400_V1", enabled=True)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    with pytest.raises(InputError) as e:
        _plan_check(config)
    cached = tmp_path / "empty" / "hub" / "checkpoints" / "swin3d_t-7615ae03.pth"
    assert str(e.value) == (
        f"torchvision weight KINETICS400_V1: swin3d_t-7615ae03.pth is not in torch's cache ({cached.parent}); "
        "mgpipe does not download in a job: fetch it once with python -c \"import torch; torch.hub."
        f"download_url_to_file('https://download.pytorch.org/models/swin3d_t-7615ae03.pth', '{cached}')\" "
        "(or set swin.weights to the file)")
    cached = _cache_with(monkeypatch, tmp_path, source, digest="00000000")
    before = model.net.patch_embed.proj.weight.detach().clone()
    for check in (lambda: _plan_check(config),
                  lambda: initialise(model, arch, "KINETICS400_V1")):
        with pytest.raises(InputError) as e:
            check()
        assert str(e.value).startswith(f"{cached}: torchvision weight KINETICS400_V1: the file's sha256 ")
        assert "does not begin with 00000000" in str(e.value) and "\n" not in str(e.value)
    assert torch.equal(model.net.patch_embed.proj.weight, before)


class _Hostile:
    def __reduce__(self):
        return os.system, ("echo pwned",)


@pytest.mark.parametrize("content, expected", [
    ("hostile", "refused: it references"),
    ("text", "not a PyTorch checkpoint (looks like text); Video Swin weights file must be written by torch.save"),
    ("numbers", "not a state dict of tensors"),
    ("variant", "weights of another Swin3D variant"),
])
def test_bad_weights_files_are_refused_in_one_line(swin, tmp_path, content, expected):
    model, arch, source = swin
    path = tmp_path / "weights.pth"
    if content == "hostile":
        torch.save({"patch_embed.proj.weight": _Hostile()}, path)
    elif content == "text":
        path.write_text("not weights\n")
    elif content == "numbers":
        torch.save({"patch_embed.proj.weight": 1.0}, path)
    else:  # swin3d_b's embedding width in a swin3d_t
        torch.save({**source, "patch_embed.proj.weight": torch.zeros(128, 3, 2, 4, 4)}, path)
    before = model.net.patch_embed.proj.weight.detach().clone()
    config = defaults()
    config["swin"].update(variant="t", weights=str(path))
    # (the plan-time check too: the variant's shapes are checked on a model on the meta device)
    checks = [lambda: initialise(model, arch, path), lambda: _plan_check(config)]
    for check in checks:
        with pytest.raises(InputError) as e:
            check()
        assert expected in str(e.value) and "\n" not in str(e.value) and str(path) in str(e.value)
    assert torch.equal(model.net.patch_embed.proj.weight, before)


def test_an_unknown_weight_name_is_one_line():
    config = defaults()
    config["swin"].update(variant="t", weights="KINETICS700_V9", enabled=True)
    with pytest.raises(InputError) as e:
        _plan_check(config)
    assert str(e.value) == ("config key swin.weights: 'KINETICS700_V9' is not a torchvision weight name of swin3d_t "
                            "(known: KINETICS400_V1, DEFAULT)")
