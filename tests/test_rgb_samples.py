"""The RGB sample path: the worker decodes and cuts, rgb_views resamples, mirrors and
normalises a whole batch. Checked against an independent per-pixel bilinear sampler on the
decoded frames, against the mirror and the out-of-frame convention, against PIL's filtered
downscale where frames decode at reduced size, across loader workers, and on broken stores."""

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from mgpipe.config import defaults
from mgpipe.formats import frames as frame_store
from mgpipe.formats.frames import decode_jpeg, encode_jpeg
from mgpipe.io import InputError
from mgpipe.learning.samples import ClipDataset, collate, make_loader

_SCHEMA = defaults()
MEAN = np.array(_SCHEMA["rgb"]["mean"], np.float32)
STD = np.array(_SCHEMA["rgb"]["std"], np.float32)
SETTINGS = dict(sigma=1.0, padding=0.25, mean=MEAN.tolist(), std=STD.tolist(), seed=0)


def _image(width, height, seed):
    """A smooth colour image (JPEG keeps it well) with some texture."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(width, height)
    planes = [np.sin(6 * x + 4 * y + p) * 90 + 128 + rng.normal(0, 8, (height, width)) for p in rng.uniform(0, 6, 3)]
    return Image.fromarray(np.clip(np.stack(planes, -1), 0, 255).astype(np.uint8))


def _frames(path, clips: dict, width, height, quality=95):
    with frame_store.writer(path, max_side=max(width, height), jpeg_quality=quality) as w:
        for cid, n in clips.items():
            w.add(cid, [encode_jpeg(_image(width, height, 10 * i + len(cid)), quality) for i in range(n)],
                  width, height, 1.0)
    return path


def _data(path, ids, frames, size, **kw):
    manifest = pd.DataFrame({"clip_id": ids, "label": range(len(ids)), "split": "test"})
    kw = {"train": False, **SETTINGS, **kw}
    return ClipDataset(manifest, "test", {"rgb": (frames, size)}, frames_h5=path, **kw)


def _decoded(path, cid, i):
    ds, _ = frame_store.Reader(path).clip(cid)
    return np.asarray(decode_jpeg(ds[i]), np.float64)


def _bilinear(img, region, size):
    """Reference: sample img [H, W, 3] at the centres of a size x size grid over region
    (edge coordinates), bilinear, zero outside the image, one pixel at a time."""
    H, W, _ = img.shape
    x0, y0, x1, y1 = region
    out = np.zeros((size, size, 3))
    for i in range(size):
        for j in range(size):
            x = x0 + (j + 0.5) * (x1 - x0) / size - 0.5   # pixel-centre coordinates
            y = y0 + (i + 0.5) * (y1 - y0) / size - 0.5
            xa, ya = int(np.floor(x)), int(np.floor(y))
            for yy, wy in ((ya, 1 - (y - ya)), (ya + 1, y - ya)):
                for xx, wx in ((xa, 1 - (x - xa)), (xa + 1, x - xa)):
                    if 0 <= yy < H and 0 <= xx < W:
                        out[i, j] += wy * wx * img[yy, xx]
    return out


def _pixels(batch_rgb):
    """Network input [B, 3, T, S, S] back to 0..255 colour values [B, T, S, S, 3]."""
    x = batch_rgb.permute(0, 2, 3, 4, 1).double().numpy()
    return x * STD + MEAN


def test_rgb_view_equals_an_independent_bilinear_sampler(tmp_path):
    store = _frames(tmp_path / "frames.h5", {"c0": 3}, 64, 48)
    data = _data(store, ["c0"], 3, 40)        # no keypoints: the view is the whole frame
    sample = data[0]
    batch = data.to_device(collate([sample]), "cpu")
    assert batch["rgb"].shape == (1, 3, 3, 40, 40) and batch["rgb"].dtype == torch.float32
    got = _pixels(batch["rgb"])[0]
    for t in range(3):   # 3 frames of a 3-frame clip: one each
        want = _bilinear(_decoded(store, "c0", t), (0, 0, 64, 48), 40)
        np.testing.assert_allclose(got[t], want, atol=2e-3)


def test_mirrored_view_is_the_mirror_image(tmp_path):
    store = _frames(tmp_path / "frames.h5", {"c0": 4}, 64, 48)
    data = _data(store, ["c0"], 2, 32, views=1, flip=True)
    assert len(data) == 2   # the view and its mirrored copy
    batch = data.to_device(collate([data[0], data[1]]), "cpu")["rgb"]
    torch.testing.assert_close(batch[1], batch[0].flip(-1), atol=1e-4, rtol=0)


def test_view_beyond_the_frame_reads_black(tmp_path):
    store = _frames(tmp_path / "frames.h5", {"c0": 2}, 64, 48)
    data = _data(store, ["c0"], 2, 32)
    # a view reaching 32 px left of the frame: half the output columns lie outside it
    cut, view = data._rgb("c0", np.array([-32.0, 0.0, 32.0, 48.0]), 2, 32, (0, 0, 1, 1), 1.0, (0, 0),
                          False, np.random.default_rng(0))
    assert cut.shape[2] <= 34   # only the pixels the view can touch are cut out
    got = _pixels(rgb := data.to_device(collate([{"rgb": cut, "rgb_view": view, "label": 0}]), "cpu")["rgb"])[0]
    assert rgb.shape == (1, 3, 2, 32, 32)
    np.testing.assert_allclose(got[:, :, :15], 0.0, atol=1e-3)     # columns whose taps are all outside
    want = _bilinear(_decoded(store, "c0", 0), (-32, 0, 32, 48), 32)
    np.testing.assert_allclose(got[0], want, atol=2e-3)


def test_large_views_decode_at_reduced_size_without_aliasing(tmp_path):
    store = _frames(tmp_path / "frames.h5", {"c0": 2}, 400, 300)
    data = _data(store, ["c0"], 2, 48)
    sample = data[0]
    # 300 px of view for 48 px of output: decoded at 1/4 (75 px; 1/8 would give 37, under 0.8 x 48)
    assert sample["rgb"].shape[1:3] == (75, 100)
    got = _pixels(data.to_device(collate([sample]), "cpu")["rgb"])[0, 0]
    filtered = np.asarray(Image.fromarray(_decoded(store, "c0", 0).astype(np.uint8)).resize((48, 48), Image.BILINEAR),
                          np.float64)   # PIL's bilinear downscale widens its filter: no aliasing
    assert np.abs(got - filtered)[2:-2, 2:-2].mean() < 3.0
    # without reduction, one bilinear tap per 6 px would alias the texture: clearly worse
    plain = _bilinear(_decoded(store, "c0", 0), (0, 0, 400, 300), 48)
    assert np.abs(plain - filtered)[2:-2, 2:-2].mean() > np.abs(got - filtered)[2:-2, 2:-2].mean()


def test_batches_pad_cuts_of_different_sizes_and_workers_change_nothing(tmp_path):
    store = _frames(tmp_path / "frames.h5", {"a": 5, "b": 3, "c": 6}, 64, 48)
    manifest = pd.DataFrame({"clip_id": ["a", "b", "c"], "label": [0, 1, 2], "split": "train"})
    data = ClipDataset(manifest, "train", {"rgb": (4, 24)}, frames_h5=store, train=True, flip=True,
                       crop_area=(0.3, 1.0), **SETTINGS)
    alone = [data.to_device(collate([data[i]]), "cpu")["rgb"][0] for i in range(3)]
    for workers in (0, 2):
        loader = make_loader(data, 3, device="cpu", workers=workers)
        (batch,) = list(loader)
        for i in range(3):   # padding another sample's cut to the batch's size changes nothing
            torch.testing.assert_close(batch["rgb"][i], alone[i], atol=1e-5, rtol=0)


def test_reduction_keeps_the_bilinear_step_between_1_25x_up_and_1_6x_down(tmp_path):
    store = _frames(tmp_path / "frames.h5", {"c0": 2}, 320, 240)
    for size, want in ((96, (120, 160)), (150, (120, 160)), (160, (240, 320)), (40, (60, 80))):
        # 240 px of view: for 96 px, 1/2 (120 px, shrunk 1.25x) rather than the full frame (2.5x);
        # for 150, 1/2 enlarged 1.25x; for 160 the full frame (1/2 would enlarge it 1.33x)
        assert tuple(_data(store, ["c0"], 1, size)[0]["rgb"].shape[1:3]) == want, size


def test_broken_frames_are_one_line_errors(tmp_path):
    wrong = tmp_path / "wrong.h5"   # attributes that do not describe the frames
    with frame_store.writer(wrong, max_side=64, jpeg_quality=90) as w:
        w.add("c0", [encode_jpeg(_image(64, 48, 0), 90)] * 2, 80, 60, 1.0)
    # (refused from the JPEG header, before decoding)
    with pytest.raises(InputError, match=r"wrong\.h5: clip 'c0' frame 0 is not the 80x60 its attributes say \(its JPEG header declares 64x48"):
        _data(wrong, ["c0"], 2, 32)[0]
    broken = tmp_path / "broken.h5"   # a JPEG cut short
    jpeg = encode_jpeg(_image(64, 48, 0), 90)
    with frame_store.writer(broken, max_side=64, jpeg_quality=90) as w:
        w.add("c0", [jpeg, jpeg[: len(jpeg) // 3]], 64, 48, 1.0)
    with pytest.raises(InputError, match=r"broken\.h5: clip 'c0' frame 1 is not a readable JPEG") as e:
        _data(broken, ["c0"], 2, 32)[0]
    assert "\n" not in str(e.value)
    with pytest.raises(InputError, match=r"broken\.h5: no frames for clip 'zz'"):
        _data(broken, ["zz"], 2, 32)[0]
