import av
import h5py
import numpy as np
from conftest import build_manifest, decode_settings

from mgpipe.formats import frames as frame_store
from mgpipe.stages.decode import build_frame_store


def test_frame_store_is_frame_exact(small_dataset):
    d = small_dataset
    manifest, _ = build_manifest(d / "labels.csv", d / "split.csv", d / "videos")
    out = d / "frames.h5"
    stats = build_frame_store(manifest, out, max_side=0, quality=95, threads=2, progress=False)
    assert stats["clips"] == len(manifest) and stats["frames"] == manifest.num_frames.sum()
    with av.open(str(d / "videos" / "a.mp4")) as c:
        truth = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    row = manifest[(manifest.video_id == "a") & (manifest.start_frame == 12)].iloc[0]
    store = frame_store.Reader(out)
    assert len(store.clip(row.clip_id)[0]) == row.num_frames
    imgs = store.frames(row.clip_id, [0, 5])
    store.close()
    for img, k in zip(imgs, [12, 17]):
        err = np.abs(np.asarray(img, np.float32) - truth[k]).mean()
        assert err < 4, err                 # JPEG-close to the right frame...
        other = np.abs(np.asarray(img, np.float32) - truth[k + 3]).mean()
        assert other > err                  # ...and not to a neighbouring one
    assert not list(d.glob(".frames.h5*"))  # no temp file left


def test_resize_keeps_scale(small_dataset):
    d = small_dataset
    manifest, _ = build_manifest(d / "labels.csv", d / "split.csv", d / "videos")
    out = d / "frames.h5"
    build_frame_store(manifest, out, **decode_settings(max_side=32), progress=False)
    with h5py.File(out) as h5:
        ds = h5["clips"][manifest.clip_id[0]]
        assert (ds.attrs["width"], ds.attrs["height"]) == (32, 24) and ds.attrs["scale"] == 0.5


def test_damaged_video_is_refused_sound_short_one_kept(tmp_path):
    """Cut in its data, a video stops early with decoder errors: refused, naming the file. A
    sound video that merely ends before the clip does is decoded (the caller warns)."""
    import pytest

    from mgpipe.io import InputError
    from mgpipe.stages.decode import decode_video

    rng = np.random.default_rng(0)
    whole = tmp_path / "whole.mp4"
    with av.open(str(whole), "w", options={"movflags": "faststart"}) as out:  # index first
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for _ in range(30):
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 255, (48, 64, 3), np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    data = whole.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=rf"^{cut}: damaged video: decoding failed after \d+ frame\(s\) of the 30 "):
        decode_video((cut, [("c", 0, 29)], 0, 90))
    _, clips, _, _ = decode_video((whole, [("w", 20, 40)], 0, 90))
    assert len(clips["w"]) == 10
