"""Tests for mgpipe.pose.heatmap_render: rendering semantics, box, flip, quantisation and the HDF5 store."""

from __future__ import annotations

import math
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import heatmap_settings

from mgpipe.formats import heatmaps as heatmap_store
from mgpipe.formats import keypoints as keypoint_store
from mgpipe.formats.keypoints import compact_box
from mgpipe.io import InputError
from mgpipe.layouts import COCO17, get_layout
from mgpipe.pose.heatmap_render import (
    build_heatmap_store,
    dequantise,
    flip_volume,
    quantise,
    render_joints,
    render_joints_loop,
    render_limbs,
    render_limbs_loop,
)

SIZE = 32
BOX = np.array([0, 0, SIZE, SIZE], np.float32)  # identity mapping onto a 32x32 grid
RENDERERS = [render_joints, render_joints_loop]
LIMB_RENDERERS = [render_limbs, render_limbs_loop]


def one_joint(x, y, s, v=3, joints=5, frames=1):
    kp = np.zeros((1, frames, joints, 3), np.float32)
    kp[0, :, v] = (x, y, s)
    return kp


# ----------------------------------------------------------------------------- joints
@pytest.mark.parametrize("render", RENDERERS)
def test_single_keypoint_peak_and_neighbours(render):
    sigma = 0.6
    hm = render(one_joint(10, 7, 1.0), BOX, SIZE, sigma)
    assert hm.shape == (1, 5, SIZE, SIZE) and hm.dtype == np.float32
    assert hm[0, 3, 7, 10] == pytest.approx(1.0)
    assert hm[0, 3].max() == hm[0, 3, 7, 10]
    e1 = math.exp(-1 / (2 * sigma ** 2))
    for yy, xx in ((7, 11), (7, 9), (6, 10), (8, 10)):
        assert hm[0, 3, yy, xx] == pytest.approx(e1, rel=1e-6)
    assert hm[0, 3, 8, 11] == pytest.approx(math.exp(-2 / (2 * sigma ** 2)), rel=1e-6)
    # 3 sigma = 1.8: |dx| = 2 is beyond the cut, and nothing else is drawn anywhere.
    assert hm[0, 3, 7, 12] == 0 and hm[0, 3, 9, 10] == 0
    assert np.count_nonzero(hm[0, 3]) == 9
    assert np.count_nonzero(hm[0, [0, 1, 2, 4]]) == 0


@pytest.mark.parametrize("render", RENDERERS)
def test_window_is_per_axis_three_sigma(render):
    sigma = 1.0  # cut at |dx| <= 3 and |dy| <= 3: a 7x7 square (corners included)
    hm = render(one_joint(15, 15, 1.0), BOX, SIZE, sigma)[0, 3]
    assert np.count_nonzero(hm) == 49
    assert hm[18, 18] == pytest.approx(math.exp(-18 / 2), rel=1e-6)
    assert hm[15, 19] == 0 and hm[19, 15] == 0


@pytest.mark.parametrize("render", RENDERERS)
def test_score_scales_and_tiny_or_missing_draw_nothing(render):
    full = render(one_joint(10, 7, 1.0), BOX, SIZE, 0.6)
    half = render(one_joint(10, 7, 0.5), BOX, SIZE, 0.6)
    np.testing.assert_allclose(half, full * 0.5, rtol=1e-6, atol=0)
    assert not render(one_joint(10, 7, 0.9e-4), BOX, SIZE, 0.6).any()
    assert not render(one_joint(10, 7, 1e-4), BOX, SIZE, 0.6).any()  # float32(1e-4) < 1e-4
    assert render(one_joint(10, 7, 1.001e-4), BOX, SIZE, 0.6).any()
    assert not render(one_joint(0, 0, 0.0), BOX, SIZE, 0.6).any()
    assert not render(one_joint(0, 0, 0.9), BOX, SIZE, 0.6).any()  # (0, 0) is the missing marker
    assert render(one_joint(0, 3, 0.9), BOX, SIZE, 0.6)[0, 3, 3, 0] == pytest.approx(0.9)


@pytest.mark.parametrize("render", RENDERERS)
def test_box_mapping(render):
    # Box (100, 50)-(164, 114) of 64 px onto a 32 grid: (120, 80) -> (10, 15).
    hm = render(one_joint(120, 80, 1.0), np.array([100, 50, 164, 114], np.float32), SIZE, 0.6)
    assert np.unravel_index(hm[0, 3].argmax(), hm[0, 3].shape) == (15, 10)
    assert hm[0, 3, 15, 10] == pytest.approx(1.0)
    # Non-square output: H=16, W=32 from a square box halves the y scale.
    hm = render(one_joint(16, 16, 1.0), BOX, (16, 32), 0.6)
    assert hm.shape == (1, 5, 16, 32) and hm[0, 3, 8, 16] == pytest.approx(1.0)


@pytest.mark.parametrize("render", RENDERERS)
def test_two_persons_elementwise_max(render):
    a = one_joint(10, 10, 0.8)
    b = one_joint(11, 10, 0.6)
    both = np.concatenate([a, b])
    got = render(both, BOX, SIZE, 0.6)
    want = np.maximum(render(a, BOX, SIZE, 0.6), render(b, BOX, SIZE, 0.6))
    np.testing.assert_array_equal(got, want)
    assert got[0, 3, 10, 11] == pytest.approx(0.6)  # b's peak beats a's tail there
    assert got[0, 3, 10, 10] == pytest.approx(0.8)
    # order of persons does not matter
    np.testing.assert_array_equal(render(both[::-1], BOX, SIZE, 0.6), got)


def test_keypoint_outside_grid_is_clipped():
    for render in RENDERERS:
        hm = render(one_joint(-1, 5, 1.0), BOX, SIZE, 0.6)
        assert hm[0, 3, 5, 0] == pytest.approx(math.exp(-1 / 0.72), rel=1e-6)
        assert not render(one_joint(-5, 5, 1.0), BOX, SIZE, 0.6).any()


# ----------------------------------------------------------------------------- limbs
def limb_kp(a, b, sa=1.0, sb=1.0):
    kp = np.zeros((1, 1, 3, 3), np.float32)
    kp[0, 0, 0] = (*a, sa)
    kp[0, 0, 1] = (*b, sb)
    return kp


@pytest.mark.parametrize("render", LIMB_RENDERERS)
def test_limb_on_segment_and_falloff(render):
    sigma = 0.6
    hm = render(limb_kp((5, 10), (20, 10), 0.9, 0.7), BOX, SIZE, sigma, [(0, 1), (1, 2)])
    assert hm.shape == (1, 2, SIZE, SIZE)
    ch = hm[0, 0]
    np.testing.assert_allclose(ch[10, 5:21], 0.7, rtol=1e-6)  # on the segment: min score
    np.testing.assert_allclose(ch[11, 5:21], 0.7 * math.exp(-1 / (2 * sigma ** 2)), rtol=1e-6)
    assert ch[10, 4] == pytest.approx(0.7 * math.exp(-1 / (2 * sigma ** 2)), rel=1e-6)  # beyond end
    assert ch[11, 4] == pytest.approx(0.7 * math.exp(-2 / (2 * sigma ** 2)), rel=1e-6)
    assert ch[12, 10] == 0 and ch[10, 3] == 0  # distance 2 > 3 sigma
    assert ch.max() == pytest.approx(0.7)
    assert not hm[0, 1].any()  # joint 2 is missing -> empty channel


@pytest.mark.parametrize("render", LIMB_RENDERERS)
def test_limb_round_cut_and_diagonal(render):
    hm = render(limb_kp((5, 5), (20, 20)), BOX, SIZE, 1.0, [(0, 1)])[0, 0]
    # distance from (12, 16) to the line y = x is 4 / sqrt(2) = 2.83 <= 3
    assert hm[16, 12] == pytest.approx(math.exp(-8 / 2), rel=1e-6)
    assert hm[17, 12] == 0  # distance 3.54 > 3
    # beyond the end point the distance is to the end point: (2, 2) away -> 2.83 (in), (3, 0)
    # -> 3 (in), (3, 1) -> 3.16 (out): a round cut, not a square one
    assert hm[3, 3] == pytest.approx(math.exp(-8 / 2), rel=1e-6)
    assert hm[5, 2] == pytest.approx(math.exp(-9 / 2), rel=1e-6)
    assert hm[4, 2] == 0


@pytest.mark.parametrize("render", LIMB_RENDERERS)
def test_limb_missing_or_low_score_endpoint_is_empty(render):
    for kp in (limb_kp((5, 10), (0, 0), 1.0, 0.0), limb_kp((5, 10), (20, 10), 1.0, 0.5e-4),
               limb_kp((0, 0), (20, 10), 0.9, 1.0)):
        assert not render(kp, BOX, SIZE, 0.6, [(0, 1)]).any()


@pytest.mark.parametrize("render", LIMB_RENDERERS)
def test_limb_zero_length_is_a_point(render):
    hm = render(limb_kp((8, 8), (8, 8), 0.5, 0.8), BOX, SIZE, 0.6, [(0, 1)])
    want = render_joints_loop(one_joint(8, 8, 0.5, v=0, joints=1), BOX, SIZE, 0.6)
    np.testing.assert_allclose(hm[0, 0, 6:11, 6:11] > 0, [[0, 0, 0, 0, 0], [0, 1, 1, 1, 0],
                                                         [0, 1, 1, 1, 0], [0, 1, 1, 1, 0],
                                                         [0, 0, 0, 0, 0]])
    assert hm[0, 0, 8, 8] == pytest.approx(0.5) and hm[0, 0, 7, 7] == pytest.approx(want[0, 0, 7, 7])


@pytest.mark.parametrize("render", LIMB_RENDERERS)
def test_limb_two_persons_max(render):
    a, b = limb_kp((5, 10), (20, 10), 0.4, 0.4), limb_kp((12, 3), (12, 25), 0.9, 0.9)
    got = render(np.concatenate([a, b]), BOX, SIZE, 0.6, [(0, 1)])
    want = np.maximum(render(a, BOX, SIZE, 0.6, [(0, 1)]), render(b, BOX, SIZE, 0.6, [(0, 1)]))
    np.testing.assert_array_equal(got, want)
    assert got[0, 0, 10, 12] == pytest.approx(0.9) and got[0, 0, 10, 6] == pytest.approx(0.4)


# ----------------------------------------------------------------------------- vectorised == loop
def random_clip(rng, persons, frames, joints=17, width=640, height=480):
    kp = np.zeros((persons, frames, joints, 3), np.float32)
    kp[..., 0] = rng.uniform(-30, width + 30, kp.shape[:-1])
    kp[..., 1] = rng.uniform(-30, height + 30, kp.shape[:-1])
    kp[..., 2] = rng.uniform(0, 1, kp.shape[:-1])
    kp[rng.random(kp.shape[:-1]) < 0.15] = 0
    kp[..., 2][rng.random(kp.shape[:-1]) < 0.05] = 5e-5
    # a few coincident limb endpoints (zero-length segments)
    kp[:, :3, 1, :2] = kp[:, :3, 0, :2]
    return kp


@pytest.mark.parametrize("sigma,size", [(0.6, 64), (0.7, (48, 56)), (1.7, 32), (0.5, 40)])
def test_vectorised_matches_loop(sigma, size):
    rng = np.random.default_rng(int(sigma * 10))
    for persons in (1, 3):
        kp = random_clip(rng, persons, 12)
        for box in (compact_box(kp, 640, 480, 0.25), np.array([40, 30, 300, 290], np.float32),
                    np.array([0, 0, 640, 480], np.float32)):
            a, b = render_joints(kp, box, size, sigma), render_joints_loop(kp, box, size, sigma)
            assert a.any() and np.abs(a - b).max() <= 1e-6
            a = render_limbs(kp, box, size, sigma, COCO17.limbs)
            b = render_limbs_loop(kp, box, size, sigma, COCO17.limbs)
            assert a.any() and np.abs(a - b).max() <= 1e-6


def test_channels_first_is_the_transpose(monkeypatch):
    """channels_first writes [C, T, H, W] directly, equal to the transposed [T, C, H, W]
    (also when frames are split into blocks)."""
    import mgpipe.pose.heatmap_render as hm
    rng = np.random.default_rng(5)
    kp = random_clip(rng, 2, 7)
    box = compact_box(kp, 640, 480, 0.25)
    for blocks in (None, 50):
        if blocks:
            monkeypatch.setattr(hm, "_CANDIDATES_PER_BLOCK", blocks)
        j = render_joints(kp, box, (24, 28), 0.9)
        jc = render_joints(kp, box, (24, 28), 0.9, channels_first=True)
        assert jc.shape == (17, 7, 24, 28) and jc.flags.c_contiguous and j.any()
        np.testing.assert_array_equal(jc, j.transpose(1, 0, 2, 3))
        lm = render_limbs(kp, box, (24, 28), 0.9, COCO17.limbs)
        lc = render_limbs(kp, box, (24, 28), 0.9, COCO17.limbs, channels_first=True)
        assert lc.shape == (18, 7, 24, 28) and lc.flags.c_contiguous and lm.any()
        np.testing.assert_array_equal(lc, lm.transpose(1, 0, 2, 3))


def test_vectorised_frame_blocks(monkeypatch):
    import mgpipe.pose.heatmap_render as hm
    rng = np.random.default_rng(1)
    kp = random_clip(rng, 2, 9)
    box = compact_box(kp, 640, 480, 0.25)
    want_j = render_joints(kp, box, 32, 0.8)
    want_l = render_limbs(kp, box, 32, 0.8, COCO17.limbs)
    monkeypatch.setattr(hm, "_CANDIDATES_PER_BLOCK", 50)  # forces one frame per block
    np.testing.assert_array_equal(render_joints(kp, box, 32, 0.8), want_j)
    np.testing.assert_array_equal(render_limbs(kp, box, 32, 0.8, COCO17.limbs), want_l)


def test_empty_inputs():
    empty = np.zeros((0, 4, 17, 3), np.float32)
    assert render_joints(empty, BOX, 16, 0.6).shape == (4, 17, 16, 16)
    assert not render_limbs(empty, BOX, 16, 0.6, COCO17.limbs).any()
    assert render_joints(np.zeros((4, 17, 3), np.float32), BOX, 16, 0.6).shape == (4, 17, 16, 16)


# ----------------------------------------------------------------------------- compact box
def test_compact_box_union_growth_square():
    kp = np.zeros((2, 3, 4, 3), np.float32)
    kp[0, 0, 0] = (100, 200, 0.9)
    kp[0, 2, 1] = (180, 220, 0.5)
    kp[1, 1, 2] = (140, 260, 0.3)  # other person, other frame: part of the union
    kp[1, 1, 3] = (500, 10, 0.5e-4)  # below the score floor: ignored
    box = compact_box(kp, 640, 480, 0.25)
    # union x 100..180 (80 wide), y 200..260 (60 high); centre (140, 230); half = 40 * 1.25
    np.testing.assert_allclose(box, [90, 180, 190, 280])
    assert box.dtype == np.float32 and box.shape == (4,)
    # padding is a parameter; the longer side wins in y too
    np.testing.assert_allclose(compact_box(kp[..., [1, 0, 2]], 640, 480, padding=0.0),
                               [190, 100, 270, 180])


def test_compact_box_zero_is_missing_and_may_leave_frame():
    kp = np.zeros((1, 2, 3, 3), np.float32)
    kp[0, 0, 0] = (5, 40, 1.0)
    kp[0, 1, 1] = (45, 60, 1.0)
    kp[0, 1, 2] = (0, 0, 1.0)  # (0, 0) with a score is still missing
    box = compact_box(kp[0], 640, 480, 0.25)  # [T, V, 3] works too
    np.testing.assert_allclose(box, [0, 25, 50, 75])
    kp[0, 1, 2] = (0, 50, 1.0)  # x == 0 alone is a real point
    np.testing.assert_allclose(compact_box(kp, 640, 480, 0.25), [-5.625, 21.875, 50.625, 78.125])


def test_compact_box_fallbacks():
    kp = np.zeros((1, 2, 2, 3), np.float32)
    np.testing.assert_array_equal(compact_box(kp, 640, 480, 0.25), [0, 0, 640, 480])  # nothing valid
    np.testing.assert_array_equal(compact_box(np.zeros((0, 5, 2, 3)), 64, 48, 0.25), [0, 0, 64, 48])
    kp[0, 0, 0] = (100, 100, 1)
    kp[0, 1, 1] = (109, 150, 1)  # 9 px wide < 10
    np.testing.assert_array_equal(compact_box(kp, 640, 480, 0.25), [0, 0, 640, 480])
    kp[0, 1, 1] = (110, 150, 1)  # exactly 10 px: kept
    np.testing.assert_allclose(compact_box(kp, 640, 480, 0.25), [73.75, 93.75, 136.25, 156.25])
    np.testing.assert_array_equal(compact_box(kp, 640, 480, 0.25, min_size=20), [0, 0, 640, 480])


# ----------------------------------------------------------------------------- flip, quantise
def test_flip_twice_is_identity_and_both_layouts():
    rng = np.random.default_rng(0)
    vol = rng.random((4, 17, 8, 10)).astype(np.float32)
    fi = COCO17.flip_index
    np.testing.assert_array_equal(flip_volume(flip_volume(vol, fi), fi), vol)
    ctw = np.ascontiguousarray(vol.transpose(1, 0, 2, 3))  # [C, T, H, W]
    np.testing.assert_array_equal(flip_volume(ctw, fi, axis=0),
                                  flip_volume(vol, fi).transpose(1, 0, 2, 3))
    assert not np.array_equal(flip_volume(vol, fi), vol)
    lv = rng.random((2, COCO17.num_limbs, 4, 4))
    np.testing.assert_array_equal(flip_volume(flip_volume(lv, COCO17.limb_flip_index),
                                              COCO17.limb_flip_index), lv)


def test_flip_left_wrist_becomes_right_wrist_mirrored():
    lw, rw = COCO17.joints.index("left_wrist"), COCO17.joints.index("right_wrist")
    kp = np.zeros((1, 2, 17, 3), np.float32)
    kp[0, :, lw] = (7, 12, 1.0)
    vol = render_joints(kp, BOX, SIZE, 0.6)
    flipped = flip_volume(vol, COCO17.flip_index)
    assert not flipped[:, lw].any()
    mirrored = kp.copy()
    mirrored[0, :, rw] = (SIZE - 1 - 7, 12, 1.0)  # x -> W - 1 - x
    mirrored[0, :, lw] = 0
    np.testing.assert_allclose(flipped, render_joints(mirrored, BOX, SIZE, 0.6), atol=1e-6)
    assert flipped[0, rw, 12, SIZE - 1 - 7] == pytest.approx(1.0)
    # limbs: left forearm (7, 9) becomes the right forearm (8, 10)
    lf, rf = COCO17.limbs.index((7, 9)), COCO17.limbs.index((8, 10))
    kp[0, :, 7] = (5, 5, 1.0)
    lv = flip_volume(render_limbs(kp, BOX, SIZE, 0.6, COCO17.limbs), COCO17.limb_flip_index)
    assert lv[:, rf].any() and not lv[:, lf].any()


def test_quantise_roundtrip():
    v = np.array([0.0, 1 / 255, 0.5, 0.998, 1.0, 1.2, -0.1], np.float32)
    q = quantise(v)
    assert q.dtype == np.uint8
    np.testing.assert_array_equal(q, [0, 1, 128, 254, 255, 255, 0])
    d = dequantise(q)
    assert d.dtype == np.float32 and d[4] == 1.0
    x = np.random.default_rng(0).random(1000).astype(np.float32)
    assert np.abs(dequantise(quantise(x)) - x).max() <= 0.5 / 255 + 1e-7


# ----------------------------------------------------------------------------- store
def write_keypoint_store(path, clips, layout="coco17"):
    with keypoint_store.writer(path, get_layout(layout), source="test") as store:
        for cid, (kp, w, h) in clips.items():
            store.add(cid, kp, w, h)


def small_store(tmp_path):
    rng = np.random.default_rng(3)
    kp_a = random_clip(rng, 2, 6)
    kp_b = random_clip(rng, 1, 4)
    kp_b[:, 1:3] = 0  # two empty frames
    clips = {"clip_b": (kp_b, 320, 240), "clip_a": (kp_a, 640, 480),
             "clip_empty": (np.zeros((0, 5, 17, 3), np.float32), 640, 480)}
    path = tmp_path / "kp.h5"
    write_keypoint_store(path, clips)
    return path, clips


def test_build_store(tmp_path):
    src, clips = small_store(tmp_path)
    out = tmp_path / "out" / "hm.h5"
    logs = []
    stats = build_heatmap_store(src, out, **heatmap_settings(size=24, sigma=0.7, padding=0.25),
                                progress=False, log=logs.append)
    assert stats["clips"] == 3 and stats["frames"] == 15
    assert stats["empty_frames"] == 2 + 5 + int((~(clips["clip_a"][0][..., 2] >= 1e-4).any(axis=(0, 2))).sum())
    assert len(logs) == 1 and "3 clips" in logs[0]
    assert sorted(p.name for p in out.parent.iterdir()) == ["hm.h5"]  # no temp file left behind
    reader = heatmap_store.Reader(out)
    assert reader.settings["sigma"] == pytest.approx(0.7) and reader.layout == COCO17
    with h5py.File(out, "r") as f:
        a = f.attrs
        assert (a["layout"], a["size"], a["num_joints"], a["num_limbs"], a["format_version"]) == \
            ("coco17", 24, 17, 18, heatmap_store.VERSION)
        assert a["sigma"] == pytest.approx(0.7) and a["padding"] == pytest.approx(0.25)
        for cid, (kp, w, h) in clips.items():
            t_ = kp.shape[1]
            for kind, c in (("joint", 17), ("limb", 18)):
                ds = f[kind][cid]
                assert ds.shape == (t_, c, 24, 24) and ds.dtype == np.uint8
                assert ds.chunks == ds.shape
                assert 32015 in [ds.id.get_create_plist().get_filter(i)[0]
                                 for i in range(ds.id.get_create_plist().get_nfilters())]
            box = reader.box(cid)
            np.testing.assert_allclose(box, compact_box(kp, w, h, 0.25))
            j = reader.volume(cid)
            assert j.dtype == np.uint8 and j.shape == (t_, 17, 24, 24)
            np.testing.assert_array_equal(j, quantise(render_joints(kp, box, 24, 0.7)))
            np.testing.assert_array_equal(reader.volume(cid, "limb"),
                                          quantise(render_limbs(kp, box, 24, 0.7, COCO17.limbs)))
        assert not f["joint"]["clip_empty"][()].any()
        np.testing.assert_array_equal(f["box"]["clip_empty"][()], [0, 0, 640, 480])
        assert not f["joint"]["clip_b"][()][1:3].any() and f["joint"]["clip_b"][()][0].any()


def test_build_store_deterministic_and_parallel(tmp_path):
    src, _ = small_store(tmp_path)
    one, two, par = tmp_path / "1.h5", tmp_path / "2.h5", tmp_path / "3.h5"
    build_heatmap_store(src, one, **heatmap_settings(size=16), progress=False)
    time.sleep(1.1)  # a timestamp written anywhere would now differ
    build_heatmap_store(src, two, **heatmap_settings(size=16), progress=False)
    assert one.read_bytes() == two.read_bytes()
    build_heatmap_store(src, par, **heatmap_settings(size=16), progress=False, threads=2)
    assert par.read_bytes() == one.read_bytes()


def test_build_store_without_limbs(tmp_path):
    src, _ = small_store(tmp_path)
    out = tmp_path / "j.h5"
    build_heatmap_store(src, out, **heatmap_settings(size=16), limbs=False, progress=False)
    with h5py.File(out, "r") as f:
        assert f.attrs["num_limbs"] == 0 and "limb" not in f and len(f["joint"]) == 3


def test_build_store_errors(tmp_path):
    kp = np.zeros((1, 0, 17, 3), np.float32)
    src = tmp_path / "bad.h5"
    write_keypoint_store(src, {"ok": (np.ones((1, 2, 17, 3)), 64, 64), "zero_frames": (kp, 64, 64)})
    out = tmp_path / "o" / "hm.h5"
    with pytest.raises(InputError, match="zero_frames"):
        build_heatmap_store(src, out, **heatmap_settings(), progress=False)
    assert list(out.parent.iterdir()) == []  # failed build leaves nothing
    write_keypoint_store(src, {"c": (np.ones((1, 2, 5, 3)), 64, 64)})
    with pytest.raises(InputError, match="shape"):
        build_heatmap_store(src, out, **heatmap_settings(), progress=False)
    with pytest.raises(InputError, match="not found"):
        build_heatmap_store(tmp_path / "nope.h5", out, **heatmap_settings(), progress=False)


# ----------------------------------------------------------------------------- the peer's semantics
def _peer():
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_data_path.py"
    spec = importlib.util.spec_from_file_location("bench_data_path", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("sigma", [0.6, 1.5])
def test_agrees_with_the_peer_inside_both_cuts(sigma):
    """PoseConv3D's published rendering (re-expressed in benchmarks/bench_data_path.py) and ours
    agree within 1/255 wherever both draw (docs/method.md §7 says where the cuts differ)."""
    peer = _peer()
    rng = np.random.default_rng(3)
    limbs = [(0, 1), (1, 2), (2, 3), (0, 4)]
    kp = random_clip(rng, 1, 8, joints=5)
    kp[..., 2] = np.where(kp[..., 2] > 0, 1.0, 0.0)
    box = np.array([0, 0, 640, 480], np.float32)
    grid = peer.to_grid(kp, box, 48)
    ours_j = render_joints(kp, box, 48, sigma)
    ours_l = render_limbs(kp, box, 48, sigma, limbs)
    assert peer.agreement(ours_j, peer.peer_joints(grid, 48, 48, sigma), grid, sigma, "joint", limbs) <= 1 / 255
    assert peer.agreement(ours_l, peer.peer_limbs(grid, 48, 48, sigma, limbs), grid, sigma, "limb", limbs) <= 1 / 255


def test_short_limb_differs_from_the_peer_as_documented():
    """A limb under one pixel: ours is the distance to the segment at the smaller score; the
    peer draws its first joint with that joint's score."""
    peer = _peer()
    kp = np.zeros((1, 1, 2, 3), np.float32)
    kp[0, 0] = [(20.0, 20.0, 0.9), (20.4, 20.0, 0.5)]
    box = np.array([0, 0, 48, 48], np.float32)
    ours = render_limbs(kp, box, 48, 1.0, [(0, 1)])[0, 0]
    theirs = peer.peer_limbs(peer.to_grid(kp, box, 48), 48, 48, 1.0, [(0, 1)])[0, 0]
    assert ours[20, 20] == pytest.approx(0.5) and theirs[20, 20] == pytest.approx(0.9)


@pytest.mark.parametrize("persons", [1, 3])
def test_quantised_rendering_equals_quantising_the_float_volume(persons):
    """The store's uint8 volumes are rendered directly; they must be exactly quantise() of the
    float rendering (max commutes with rounding)."""
    from mgpipe.pose.heatmap_render import quantise

    rng = np.random.default_rng(persons)
    kp = random_clip(rng, persons, 10)
    kp[0, 0, 0, 2] = 1.7  # a score above 1 is clipped like quantise() clips it
    box = compact_box(kp, 640, 480, 0.25)
    for first in (False, True):
        got = render_joints(kp, box, 40, 0.8, channels_first=first, quantised=True)
        assert got.dtype == np.uint8
        assert np.array_equal(got, quantise(render_joints(kp, box, 40, 0.8, channels_first=first)))
        got = render_limbs(kp, box, 40, 0.8, COCO17.limbs, channels_first=first, quantised=True)
        assert np.array_equal(got, quantise(render_limbs(kp, box, 40, 0.8, COCO17.limbs, channels_first=first)))


def test_data_path_benchmark_runs_on_real_skeletons(tmp_path):
    """benchmarks/bench_data_path.py end to end on a few real KARD clips: it prints the ratios and
    the renderers agree where their semantics do."""
    pickle = Path(__file__).resolve().parents[2] / "shared" / "data" / "kard2d.pkl"
    if not pickle.is_file():
        pytest.skip(f"real data not mounted: {pickle}")
    bench = _peer()
    results = bench.main(["--pickle", str(pickle), "--layout", "openni15", "--clips", "6", "--repeat", "1",
                          "--store-clips", "6", "--size", "32"])
    assert {"joint", "limb", "store_1"} <= set(results)
    assert results["joint"]["diff"] <= 1.5 / 255 and results["joint"]["ratio"] > 0
    assert results["limb"]["diff"] <= 1.5 / 255
    for kind in ("joint", "limb"):   # worker side = sample + collation, for both
        r = results[kind]
        assert r["ours_ms"] == pytest.approx(r["sample_ms"] + r["collate_ms"])
        assert r["peer_ms"] == pytest.approx(r["peer_sample_ms"] + r["peer_collate_ms"])
        assert r["step_ms"] > 0
    assert results["store_1"]["ours_clips_per_s"] > 0
