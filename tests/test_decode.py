import av
import h5py
import numpy as np

from mgpipe.clips import build_manifest
from mgpipe.decode import build_frame_store, read_frames


def test_frame_store_is_frame_exact(small_dataset):
    d = small_dataset
    manifest, _ = build_manifest(d / "labels.csv", d / "split.csv", d / "videos")
    out = d / "frames.h5"
    stats = build_frame_store(manifest, out, max_side=0, quality=95, threads=2, progress=False)
    assert stats["clips"] == len(manifest) and stats["frames"] == manifest.num_frames.sum()
    with av.open(str(d / "videos" / "a.mp4")) as c:
        truth = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    row = manifest[(manifest.video_id == "a") & (manifest.start_frame == 12)].iloc[0]
    with h5py.File(out) as h5:
        assert len(h5["clips"][row.clip_id]) == row.num_frames
        imgs = read_frames(h5, row.clip_id, [0, 5])
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
    build_frame_store(manifest, out, max_side=32, progress=False)
    with h5py.File(out) as h5:
        ds = h5["clips"][manifest.clip_id[0]]
        assert (ds.attrs["width"], ds.attrs["height"]) == (32, 24) and ds.attrs["scale"] == 0.5
