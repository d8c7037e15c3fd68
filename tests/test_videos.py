"""Videos as players show them: rotation metadata, variable frame rates, containers without a
frame count, and broken videos. Every video here is real, written with PyAV, and read back with
PyAV's own reading before mgpipe's is trusted."""

import logging
import re
from fractions import Fraction

import av
import h5py
import numpy as np
import pandas as pd
import pytest
from conftest import build_manifest

from mgpipe.formats import frames as frame_store
from mgpipe.formats.frames import decode_jpeg
from mgpipe.io import InputError
from mgpipe.stages.clips import probe_video
from mgpipe.stages.decode import build_frame_store, decode_video

W, H = 64, 48


def marked(index: int, width=W, height=H) -> np.ndarray:
    """A frame that says which way is up and which frame it is: a white block top-left with a
    red one right of it (a turn and a mirror move them differently), and the frame index in
    binary as eight bands along the bottom (white = 1), which survive compression."""
    img = np.full((height, width, 3), 30, np.uint8)
    img[:height // 4, :width // 4] = 255
    img[:height // 4, width // 4:width // 2] = (255, 0, 0)
    band = width // 8
    for bit in range(8):
        if index >> bit & 1:
            img[height // 2:, bit * band:(bit + 1) * band] = 255
    return img


def index_of(img: np.ndarray) -> int:
    """The frame index written by `marked`, read from an upright frame."""
    height, width = img.shape[:2]
    band = width // 8
    lower = img[height // 2 + 2:, :, :].mean(axis=(0, 2))
    return sum(1 << bit for bit in range(8) if lower[bit * band + 2:(bit + 1) * band - 2].mean() > 128)


def write(path, count, *, times_ms=None, rotation=None, hflip=False, codec="libx264", fps=25,
          width=W, height=H):
    """A real video of `count` marked frames; times_ms: each frame's pts in ms (variable rate)."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if times_ms is not None:
            stream.time_base = stream.codec_context.time_base = Fraction(1, 1000)
        if rotation is not None or hflip:
            stream.set_display_rotation(rotation or 0, hflip=hflip)
        for i in range(count):
            frame = av.VideoFrame.from_ndarray(marked(i, width, height), format="rgb24")
            if times_ms is not None:
                frame.pts, frame.time_base = times_ms[i], Fraction(1, 1000)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def stored(out_h5, clip_id) -> list[np.ndarray]:
    store = frame_store.Reader(out_h5)
    try:
        return [np.asarray(img) for img in store.frames(clip_id, range(len(store.clip(clip_id)[0])))]
    finally:
        store.close()


def csv_table(path, rows):
    """A generic label CSV (kind csv): video, start, end, label, subject, split."""
    splits = ["train", "val", "test"]
    pd.DataFrame([{"video": v, "start": s, "end": e, "label": 1, "subject": i + 1,
                   "split": splits[min(i, 2)]} for i, (v, s, e) in enumerate(rows)]
                 ).to_csv(path, index=False)
    return path


# --- rotation --------------------------------------------------------------------------------

# (rotation, hflip) as written; the stored frame as numpy turns the upright source
TURNS = {
    "phone -90": ((-90, False), lambda a: np.rot90(a, -1)),        # players turn it clockwise
    "+90": ((90, False), lambda a: np.rot90(a, 1)),
    "180": ((180, False), lambda a: np.rot90(a, 2)),
    "mirror": ((0, True), lambda a: a[:, ::-1]),
    "mirror -90": ((-90, True), lambda a: a.transpose(1, 0, 2)),
}


@pytest.mark.parametrize("case", TURNS)
def test_rotation_metadata_is_applied_where_videos_are_read(tmp_path, case):
    """The probe (the manifest's size, which the keypoint outlier check uses) and the decoder
    both give the frame as players show it (checked against FFmpeg 5.1's own autorotation when
    this was written: the same pixels for all five)."""
    (rotation, hflip), turn = TURNS[case]
    video = write(tmp_path / "v.mp4", 3, rotation=rotation, hflip=hflip)
    with av.open(str(video)) as c:                       # PyAV reads back what was written
        first = next(c.decode(video=0))
        assert (first.width, first.height) == (W, H)
        # PyAV's int rotation: a half turn reads -180, and so does a left-right mirror
        assert first.rotation == (-180 if (rotation == 180 or hflip and not rotation) else rotation)
    want = turn(marked(0))
    probe = probe_video(video)
    assert (probe["height"], probe["width"]) == want.shape[:2]
    assert probe["rotated"].startswith("display matrix")
    _, clips, size, turned = decode_video((video, [("c", 0, 1)], 0, 95))
    assert turned and size == (want.shape[1], want.shape[0]) and len(clips["c"]) == 2
    img = np.asarray(decode_jpeg(clips["c"][0]), np.float32)
    assert img.shape == want.shape
    assert np.abs(img - want).mean() < 6
    for wrong in (v for k, (_, v) in TURNS.items() if k != case):
        if wrong(marked(0)).shape == want.shape:
            assert np.abs(img - wrong(marked(0))).mean() > 30   # no other turn looks the same


def test_phone_video_through_clips_and_decode(tmp_path, caplog):
    """A 320x240 phone video tagged -90 is stored 240x320 (as players show it), its manifest row
    says 240x320, the scale is against that size, and the turn is logged. An upright video next
    to it is stored as it always was."""
    videos = tmp_path / "videos"
    videos.mkdir()
    write(videos / "phone.mp4", 12, rotation=-90, width=320, height=240)
    write(videos / "flat.mp4", 12, width=320, height=240)
    table = csv_table(tmp_path / "labels.csv", [("phone", 0, 5), ("flat", 2, 7), ("phone", 6, 11)])
    with caplog.at_level(logging.INFO):
        manifest, _ = build_manifest(table, None, videos, kind="csv", time_unit="frames")
        build_frame_store(manifest, tmp_path / "frames.h5", max_side=160, quality=90, progress=False)
    sizes = {v: (w, h) for v, w, h in zip(manifest.video_id, manifest.width, manifest.height)}
    assert sizes == {"phone": (240, 320), "flat": (320, 240)}
    with h5py.File(tmp_path / "frames.h5") as h5:
        for cid, vid in zip(manifest.clip_id, manifest.video_id):
            attrs = h5["clips"][cid].attrs
            assert (attrs["width"], attrs["height"]) == tuple(s // 2 for s in sizes[vid])
            assert attrs["scale"] == 0.5
    phone = manifest.clip_id[manifest.video_id == "phone"].iloc[0]
    frames = stored(tmp_path / "frames.h5", phone)
    assert frames[0].shape == (160, 120, 3)
    assert frames[0][:20, -15:].mean() > 200 and frames[0][:20, :10].mean() < 80  # white top-right
    turned = [r.getMessage() for r in caplog.records if "display matrix" in r.getMessage()]
    assert any("clockwise" in m and "phone.mp4" in m for m in turned)
    assert not any("flat.mp4" in m for m in turned)


# --- variable frame rate ---------------------------------------------------------------------

# 100 frames 20 ms apart (0-1.98 s), then 20 frames 100 ms apart (2.0-3.9 s): 2.5-3.5 s holds
# frames 105-115, where the nominal rate (mp4: 31.7 fps on average; mkv: 25) said 79-111 (62-88).
VFR_MS = [20 * i for i in range(100)] + [2000 + 100 * i for i in range(20)]


@pytest.mark.parametrize("container", ["mp4", "mkv"])
def test_variable_frame_rate_maps_seconds_by_timestamps(tmp_path, container, caplog):
    videos = tmp_path / "videos"
    videos.mkdir()
    write(videos / f"vfr.{container}", len(VFR_MS), times_ms=VFR_MS)
    with av.open(str(videos / f"vfr.{container}")) as c:      # PyAV reads the times written
        assert [f.pts * f.time_base * 1000 for f in c.decode(video=0)] == VFR_MS
    table = csv_table(tmp_path / "labels.csv", [("vfr", 2.5, 3.5), ("vfr", 0.5, 1.0), ("vfr", 1.99, 2.05)])
    with caplog.at_level(logging.INFO):
        manifest, _ = build_manifest(table, None, videos, kind="csv", time_unit="seconds",
                                     video_pattern="{video_id}." + container)
    assert list(zip(manifest.start_frame, manifest.end_frame)) == [(105, 115), (25, 50), (100, 100)]
    assert any("variable frame rate" in r.getMessage() for r in caplog.records)
    build_frame_store(manifest, tmp_path / "frames.h5", max_side=0, quality=95, progress=False)
    for cid, start, end in zip(manifest.clip_id, manifest.start_frame, manifest.end_frame):
        assert [index_of(f) for f in stored(tmp_path / "frames.h5", cid)] == list(range(start, end + 1))


def test_segment_between_two_frames_is_refused_in_one_line(tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    write(videos / "vfr.mp4", len(VFR_MS), times_ms=VFR_MS)
    table = csv_table(tmp_path / "labels.csv", [("vfr", 2.51, 2.55), ("vfr", 0.0, 1.0), ("vfr", 2.0, 3.0)])
    with pytest.raises(InputError, match=r"vfr\.mp4: no frame lies in the segment 2\.51-2\.55 s "
                                         r"\(frames at 0-3\.9 s, variable frame rate\)") as e:
        build_manifest(table, None, videos, kind="csv", time_unit="seconds")
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("container", ["mp4", "mkv"])
def test_constant_frame_rate_seconds_map_as_before(tmp_path, container):
    """A constant-rate video maps seconds with its rate, rounded, exactly as before timestamps
    were read (round(seconds x 25)), halves included; mp4 and mkv (no frame count) alike."""
    videos = tmp_path / "videos"
    videos.mkdir()
    write(videos / f"v.{container}", 50)
    rows = [("v", s, s + 0.26) for s in [0.0, 0.3, 0.5, 0.51, 0.7, 1.02, 1.5]]
    manifest, _ = build_manifest(csv_table(tmp_path / "labels.csv", rows), None, videos, kind="csv",
                                 time_unit="seconds", video_pattern="{video_id}." + container)
    old = [(int(round(s * 25)), int(round(e * 25))) for _, s, e in rows]
    assert list(zip(manifest.start_frame, manifest.end_frame)) == old


# --- containers without a frame count --------------------------------------------------------

@pytest.mark.parametrize("container, codec", [("mkv", "libx264"), ("webm", "libvpx-vp9")])
def test_container_without_frame_count(tmp_path, container, codec):
    """mkv and webm list no frame count: the frames are counted from the packets, so a
    whole-video clip ends at the last frame and a segment past the end is cut there."""
    videos = tmp_path / "videos"
    videos.mkdir()
    write(videos / f"v.{container}", 30, codec=codec)
    with av.open(str(videos / f"v.{container}")) as c:
        assert c.streams.video[0].frames == 0                 # the case under test
    assert probe_video(videos / f"v.{container}")["frames"] == 30
    table = csv_table(tmp_path / "labels.csv", [("v", 0, -1), ("v", 20, 40), ("v", 5, 9)])
    manifest, _ = build_manifest(table, None, videos, kind="csv", time_unit="frames",
                                 video_pattern="{video_id}." + container)
    assert list(zip(manifest.start_frame, manifest.end_frame)) == [(0, 29), (20, 29), (5, 9)]
    build_frame_store(manifest, tmp_path / "frames.h5", max_side=0, quality=95, progress=False)
    whole = stored(tmp_path / "frames.h5", manifest.clip_id[0])
    assert [index_of(f) for f in whole] == list(range(30))


# --- broken videos ---------------------------------------------------------------------------

def _oblique(path):
    """A video whose display matrix turns it by 30 degrees."""
    c, s = np.cos(np.radians(30)), np.sin(np.radians(30))
    fixed = [int(round(v * 65536)) for v in (c, -s, 0, s, c, 0)]
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        stream.set_display_matrix(fixed[:2] + [0] + fixed[3:5] + [0, 0, 0, 1 << 30])
        for i in range(3):
            for packet in stream.encode(av.VideoFrame.from_ndarray(marked(i), format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


BROKEN = {
    "empty": (lambda p: p.write_bytes(b""), r"not a video \(empty file\)"),
    "text": (lambda p: p.write_text("not a video at all\n" * 50), r"not a readable video \("),
    "truncated mkv": (lambda p: p.write_bytes(write(p.with_suffix(".tmp.mkv"), 30).read_bytes()[:300]),
                      r"not a (readable )?video"),
    "oblique rotation": (_oblique, r"rotation metadata of -?30 degrees: only quarter turns"),
}


@pytest.mark.parametrize("case", BROKEN)
def test_broken_video_is_one_line_naming_it(tmp_path, case):
    make, message = BROKEN[case]
    videos = tmp_path / "videos"
    videos.mkdir()
    make(videos / "v.mkv")
    table = csv_table(tmp_path / "labels.csv", [("v", 0.0, 1.0)])
    with pytest.raises(InputError) as e:
        build_manifest(table, None, videos, kind="csv", time_unit="seconds", video_pattern="{video_id}.mkv")
    text = str(e.value)
    assert "\n" not in text and text.startswith(f"{videos / 'v.mkv'}: ")
    assert re.search(message, text), text


def test_pan_zoom_phone_video_is_shown_as_filmed(tmp_path):
    """photo_video films a phone video (stored sideways, display matrix -90): decoded, it shows
    the same frames as the upright film of the same camera path, so its affines still hold."""
    from mgpipe.tools.photo_video import pan_zoom_video

    photo = marked(5, 96, 64)
    upright = pan_zoom_video(photo, tmp_path / "flat.mp4", frames=4, size=(64, 48), seed=1)
    phone = pan_zoom_video(photo, tmp_path / "phone.mp4", frames=4, size=(64, 48), seed=1,
                           display_rotation=-90)
    np.testing.assert_array_equal(upright, phone)
    with av.open(str(tmp_path / "phone.mp4")) as c:
        first = next(c.decode(video=0))
        assert (first.width, first.height, first.rotation) == (48, 64, -90)
    shown = {}
    for name in ("flat", "phone"):
        _, clips, size, turned = decode_video((tmp_path / f"{name}.mp4", [("c", 0, 3)], 0, 95))
        assert size == (64, 48) and bool(turned) == (name == "phone")
        shown[name] = np.stack([np.asarray(decode_jpeg(f), np.float32) for f in clips["c"]])
    assert np.abs(shown["flat"] - shown["phone"]).mean() < 4


def test_predict_windows_of_a_variable_rate_video_hold_their_seconds(tmp_path):
    """predict/spot windows of a variable-rate video: each window holds the frames whose times
    fall in its seconds, and reports the seconds of those frames (not frame / nominal rate)."""
    from mgpipe.stages.predict import windows

    path = write(tmp_path / "vfr.mp4", len(VFR_MS), times_ms=VFR_MS)
    probe = probe_video(path, timestamps=True)
    assert probe["variable"]
    times = probe["times"]
    win = windows(probe["frames"], probe["fps"], 1.0, 0.5, times)
    begin, end = win.seconds(win.starts), win.seconds(win.ends + 1)
    for s, e, t0 in zip(win.starts, win.ends, begin):
        inside = np.flatnonzero((times >= t0 - 1e-6) & (times < t0 + 1.0 - 1e-6))
        assert (s, e) == (inside[0], inside[-1])
    # the 20 ms stretch gives windows of 50 frames, the 100 ms stretch windows of 10
    assert (win.ends - win.starts + 1).max() == 50 and (win.ends - win.starts + 1).min() == 10
    assert win.ends[-1] == len(VFR_MS) - 1 and win.starts[0] == 0
    assert end[-1] == pytest.approx(times[-1] + 1 / probe["fps"])
    # a constant-rate grid gives the same windows with and without times
    grid = np.arange(103) / 25
    a, b = windows(103, 25, 2.0, 0.4), windows(103, 25, 2.0, 0.4, grid)
    assert a.starts.tolist() == b.starts.tolist() and a.ends.tolist() == b.ends.tolist()
