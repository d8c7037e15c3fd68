"""The pose stage's backends: image backends through the worker protocol (with a small backend
module written here, so the plumbing is tested without mediapipe/mmpose), and provided pickles."""

import sys
import textwrap

import h5py
import numpy as np
import pandas as pd
import pytest
from conftest import build_manifest, decode_settings, pose_settings

from mgpipe.io import InputError
from mgpipe.layouts import COCO17
from mgpipe.sources.skeleton_io import export_pickle
from mgpipe.stages.decode import build_frame_store
from mgpipe.stages.pose import build_keypoint_store, clip_from_annotations

# Finds conftest.write_video's bright square; reports a COCO-17 person whose nose is the square's
# centre, a second, fainter person in frames with an even index from 4 on, nobody when the option
# says so. Errors in options behave like a real backend's.
BACKEND = '''
import numpy as np

class Square:
    layout = "coco17"

    def __init__(self, options):
        if options.get("bad"):
            raise ValueError("option 'bad' is not allowed")
        self.nobody = options.get("nobody", False)
        self.frame = 0

    def reset(self):
        self.frame = 0

    def __call__(self, image):
        self.frame += 1
        if self.nobody:
            return np.zeros((0, 17, 3), np.float32)
        ys, xs = np.nonzero(image.mean(axis=2) > 150)
        if not len(xs):
            return np.zeros((0, 17, 3), np.float32)
        person = np.zeros((17, 3), np.float32)
        person[:, 0], person[:, 1], person[:, 2] = xs.mean() + 0.5, ys.mean() + 0.5, 0.9
        person[5:, 2] = 0.2  # low-confidence body joints
        out = [person]
        if self.frame >= 5 and self.frame % 2 == 1:
            other = person.copy()
            other[:, 0] += 25
            other[:, 2] = 0.1
            out.append(other)
        return np.stack(out)

    def close(self):
        pass

def make_estimator(options):
    return Square(options)
'''


@pytest.fixture
def square_backend(tmp_path, monkeypatch):
    pkg = tmp_path / "plugins" / "squarepose"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "backend.py").write_text(textwrap.dedent(BACKEND))
    monkeypatch.setenv("MGPIPE_BACKEND_PATH", str(tmp_path / "plugins"))
    return "squarepose.backend"


@pytest.fixture
def frames(small_dataset):
    d = small_dataset
    manifest, _ = build_manifest(d / "labels.csv", d / "split.csv", d / "videos")
    build_frame_store(manifest, d / "frames.h5", **decode_settings(max_side=32), progress=False)  # half size
    return manifest, d / "frames.h5"


def square_centre(frame: int) -> tuple[float, float]:
    x0 = (2 * frame) % 54  # conftest.write_video: 64 wide, 10-pixel square
    return x0 + 5.0, 15.0


@pytest.mark.parametrize("workers", [1, 2])
def test_image_backend_keypoints_in_video_pixels(frames, square_backend, tmp_path, workers):
    manifest, frames_h5 = frames
    out = tmp_path / "kp.h5"
    stats = build_keypoint_store(manifest, None, out, **pose_settings(backend=square_backend),
                                 frames_h5=frames_h5, threads=workers, progress=False)
    row = manifest[(manifest.video_id == "a") & (manifest.start_frame == 12)].iloc[0]
    with h5py.File(out) as h5:
        kp = h5[f"clips/{row.clip_id}/keypoints"][()]
        assert h5.attrs["layout"] == "coco17" and h5.attrs["source"] == square_backend
    assert kp.shape == (1, row.num_frames, COCO17.num_joints, 3)
    for t in range(row.num_frames):
        x, y = square_centre(row.start_frame + t)
        # Found on a half-size JPEG frame and scaled back: within a pixel or two of the truth.
        assert abs(kp[0, t, 0, 0] - x) < 2.0 and abs(kp[0, t, 0, 1] - y) < 2.0
        assert kp[0, t, 0, 2] == pytest.approx(0.9)  # the main person, never the faint second one
    frames_total = int(manifest.num_frames.sum())
    crowded = sum(len(range(5, n + 1, 2)) for n in manifest.num_frames)
    assert stats["frames"] == frames_total and stats["empty_frames"] == 0
    assert stats["multi_person_frames"] == crowded
    assert stats["low_confidence_joints"] == frames_total * 12


def test_image_backend_shards_agree(frames, square_backend, tmp_path):
    manifest, frames_h5 = frames
    for n in (1, 3):
        build_keypoint_store(manifest, None, tmp_path / f"kp{n}.h5", **pose_settings(backend=square_backend),
                             frames_h5=frames_h5, threads=n, progress=False)
    with h5py.File(tmp_path / "kp1.h5") as a, h5py.File(tmp_path / "kp3.h5") as b:
        for cid in manifest.clip_id:
            np.testing.assert_array_equal(a[f"clips/{cid}/keypoints"][()], b[f"clips/{cid}/keypoints"][()])


def test_backend_errors_are_one_line(frames, square_backend, tmp_path):
    manifest, frames_h5 = frames
    with pytest.raises(InputError, match="option 'bad' is not allowed"):
        build_keypoint_store(manifest, None, tmp_path / "kp.h5",
                             **pose_settings(backend=square_backend, options={"bad": True}),
                             frames_h5=frames_h5, progress=False)
    with pytest.raises(InputError, match="nobody found in any"):
        build_keypoint_store(manifest, None, tmp_path / "kp.h5",
                             **pose_settings(backend=square_backend, options={"nobody": True}),
                             frames_h5=frames_h5, progress=False)
    with pytest.raises(InputError, match="cannot be imported.*install_mediapipe.sh"):
        # This interpreter has no mediapipe (it needs numpy < 2): the hint names the installer.
        build_keypoint_store(manifest, None, tmp_path / "kp.h5",
                             **pose_settings(backend="mediapipe", python=sys.executable),
                             frames_h5=frames_h5, progress=False)
    with pytest.raises(InputError, match="interpreter not found"):
        build_keypoint_store(manifest, None, tmp_path / "kp.h5",
                             **pose_settings(backend="mmpose", python=str(tmp_path / "nope/bin/python")),
                             frames_h5=frames_h5, progress=False)
    assert not (tmp_path / "kp.h5").exists()  # nothing half-written


def test_pickle_backend_round_trip_and_video_slices(demo_stores, tmp_path):
    manifest = pd.read_csv(demo_stores / "clips.csv", dtype={"clip_id": str, "video_id": str})
    export_pickle(demo_stores / "keypoints.h5", manifest, tmp_path / "clips.pkl")
    build_keypoint_store(manifest, tmp_path / "clips.pkl", tmp_path / "kp.h5",
                         **pose_settings(backend="pickle"), progress=False)
    with h5py.File(demo_stores / "keypoints.h5") as a, h5py.File(tmp_path / "kp.h5") as b:
        for cid in manifest.clip_id:
            np.testing.assert_array_equal(a[f"clips/{cid}/keypoints"][()], b[f"clips/{cid}/keypoints"][()])
            assert b[f"clips/{cid}"].attrs["width"] == a[f"clips/{cid}"].attrs["width"]
    # An untrimmed annotation (frame_dir = the video) is sliced to each clip's frames.
    row = manifest.iloc[1]
    video = {"keypoint": np.arange(2 * 400 * 17 * 3, dtype=np.float32).reshape(2, 400, 17, 3),
             "width": 160, "height": 120}
    kp, size = clip_from_annotations({row.video_id: video}, row, "x.pkl")
    np.testing.assert_array_equal(kp, video["keypoint"][:, row.start_frame:row.end_frame + 1])
    with pytest.raises(InputError, match="no annotation with frame_dir"):
        clip_from_annotations({}, row, "x.pkl")


def test_pickle_of_wrong_layout_is_named(demo_stores, tmp_path):
    manifest = pd.read_csv(demo_stores / "clips.csv", dtype={"clip_id": str, "video_id": str})
    export_pickle(demo_stores / "keypoints.h5", manifest, tmp_path / "clips.pkl")
    with pytest.raises(InputError, match=r"clips.pkl: .* 17 joints, layout 'body25' has 25"):
        build_keypoint_store(manifest, tmp_path / "clips.pkl", tmp_path / "kp.h5",
                             **pose_settings(backend="pickle", pickle_layout="body25"), progress=False)


def test_video_without_frames_of_a_person_is_counted(frames, square_backend, tmp_path):
    """A clip with nobody in it is empty frames in the counts, not an error (other clips have people)."""
    manifest, frames_h5 = frames
    with h5py.File(frames_h5, "a") as h5:  # make one clip's frames dark
        from PIL import Image

        from mgpipe.formats.frames import encode_jpeg

        cid = manifest.clip_id.iloc[0]
        dark = encode_jpeg(Image.new("RGB", (32, 24), (40, 40, 40)), 90)
        ds = h5["clips"][cid]
        for i in range(len(ds)):
            ds[i] = dark
    stats = build_keypoint_store(manifest, None, tmp_path / "kp.h5", **pose_settings(backend=square_backend),
                                 frames_h5=frames_h5, progress=False)
    assert stats["empty_frames"] == manifest.num_frames.iloc[0]
    with h5py.File(tmp_path / "kp.h5") as h5:
        assert not h5[f"clips/{cid}/keypoints"][..., 2].any()


def test_spot_metrics_on_hand_made_segments():
    from spotting import spot_metrics

    truth = pd.DataFrame({"start_frame": [0, 100, 200], "end_frame": [49, 149, 249], "label_id": [1, 2, 1]})
    spotted = pd.DataFrame({"start_frame": [10, 100, 120, 300], "end_frame": [59, 149, 160, 330],
                            "label_id": [1, 3, 2, 1]})
    m = spot_metrics(spotted, truth, iou=0.3)
    # [10, 59] hits [0, 49] (IoU 40/60); [100, 149] has the wrong class; [120, 160] hits the class-2
    # segment (IoU 30/61 = 0.49); [300, 330] overlaps nothing.
    assert m["true_positives"] == 2 and m["precision"] == 0.5 and m["recall"] == pytest.approx(2 / 3)
    assert spot_metrics(spotted, truth, iou=0.5)["true_positives"] == 1
    assert spot_metrics(spotted.iloc[:0], truth)["precision"] == 0.0


def test_spot_windows_cover_the_video_and_own_disjoint_spans():
    from mgpipe.stages.predict import owned_spans, windows

    win = windows(num_frames=103, fps=25, length_s=2.0, stride_s=0.5)
    assert win.starts[0] == 0 and win.ends[-1] == 102 and (win.ends - win.starts == 49).all()
    assert list(np.diff(win.starts[:-1])) == [12] * (len(win.starts) - 2)  # 0.5 s = 12.5 -> 12 frames
    lo, hi = owned_spans(win)
    assert lo[0] == 0 and hi[-1] == 103 and (lo[1:] == hi[:-1]).all() and (hi > lo).all()
    whole = windows(num_frames=30, fps=25, length_s=None, stride_s=None)
    assert list(whole.starts) == [0] and list(whole.ends) == [29]
    assert list(windows(num_frames=30, fps=25, length_s=2.0, stride_s=0.5).ends) == [29]  # shorter than a window
