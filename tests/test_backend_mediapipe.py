"""The mediapipe pose backend with its real weights, on real photos, in its own environment.

mediapipe 0.10.21 needs numpy < 2, so the backend runs under the side interpreter made by
scripts/install_mediapipe.sh: MGPIPE_MEDIAPIPE_PYTHON, else <repo>/.venvs/mediapipe/bin/python.
Without it these tests skip, or fail where MGPIPE_REQUIRE_BACKENDS=1 (CI).

The face and body boxes below were read off the photos by eye (photo pixels, x0, y0, x1, y1).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import mediapipe_python

from mgpipe.layouts import MEDIAPIPE33_HANDS
from mgpipe.tools.photo_video import map_points, pan_zoom_video, sample_photo

REPO = Path(__file__).resolve().parents[1]
J = {name: i for i, name in enumerate(MEDIAPIPE33_HANDS.joints)}
FACE = ["nose", "left_eye_inner", "left_eye", "left_eye_outer", "right_eye_inner", "right_eye",
        "right_eye_outer", "left_ear", "right_ear", "left_mouth_corner", "right_mouth_corner"]
HANDS = slice(33, 75)


@pytest.fixture(scope="module")
def side_python() -> str:
    return mediapipe_python()


def run_side(python: str, args: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONNOUSERSITE="1")
    p = subprocess.run([python, *args], env=env, capture_output=True, text=True, timeout=timeout,
                       check=False)
    if p.returncode != 0:
        pytest.fail(f"{python} {' '.join(args)} failed ({p.returncode}):\n{p.stderr[-3000:]}")
    return p


def test_pan_zoom_affines_say_where_photo_points_land(tmp_path):
    """Gaussian blobs at known photo points: their centroids in the decoded frames must sit where
    the returned affines put them (main environment only, no pose model)."""
    h, w = 300, 256
    points = np.array([[60.3, 100.7], [200.0, 250.2], [128.0, 150.0]])
    yy, xx = np.mgrid[0:h, 0:w] + 0.5  # pixel centres, continuous coordinates
    blobs = sum(np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 4.0 ** 2)) for x, y in points)
    photo = np.repeat((255 * np.clip(blobs, 0, 1)).astype(np.uint8)[..., None], 3, axis=2)
    affines = pan_zoom_video(photo, tmp_path / "blobs.mp4", frames=12, size=(160, 120), seed=3,
                             fill=0)
    frames = _decode(tmp_path / "blobs.mp4")
    assert affines.shape == (12, 2, 3) and len(frames) == 12
    fy, fx = np.mgrid[0:120, 0:160] + 0.5
    for affine, frame in zip(affines, frames):
        g = np.clip(frame[..., 1].astype(float) - 20, 0, None)
        for x, y in map_points(affine, points):
            m = g * ((fx - x) ** 2 + (fy - y) ** 2 < 8 ** 2)
            assert abs((m * fx).sum() / m.sum() - x) < 0.3 and abs((m * fy).sum() / m.sum() - y) < 0.3
        # the whole photo (the default person region) stays in view
        corners = map_points(affine, np.array([[0, 0], [w, h]]))
        assert corners.min() >= -1e-6 and corners[1, 0] <= 160 + 1e-6 and corners[1, 1] <= 120 + 1e-6
    zoom = affines[:, 0, 0] / affines[:, 0, 0].min()
    assert 1.2 < zoom.max() <= 1.5 + 1e-9


def test_sample_photos(monkeypatch):
    photo = sample_photo("grace_hopper")
    assert photo.shape == (600, 512, 3) and photo.dtype == np.uint8
    with pytest.raises(ValueError, match="grace_hopper"):
        sample_photo("mona_lisa")
    monkeypatch.setitem(sys.modules, "skimage", None)  # as if scikit-image were not installed
    with pytest.raises(ModuleNotFoundError, match="scikit-image"):
        sample_photo("astronaut")


# Runs under the side interpreter: every photo through Holistic and Pose (static mode), the
# clip-reset behaviour, the option errors, and what mediapipe itself says its landmark order is.
STILLS = r"""
import json, sys
import numpy as np
from mediapipe.python.solutions import hands, pose
from mgpipe.pose.backends import mediapipe_backend as mb

work = sys.argv[1]
images = dict(np.load(f"{work}/images.npz"))
out, info = {}, {}
for model in ("holistic", "pose"):
    est = mb.make_estimator({"model": model, "static_image_mode": True})
    info["layout"] = est.layout
    for name, image in images.items():
        out[f"{model}/{name}"] = est(image)
    est.close()

photo, other = images["grace_hopper"], images["noise"]
video = mb.make_estimator({})
out["reset/fresh"] = video(photo)
video(np.ascontiguousarray(photo[:, ::-1]))
video(other)
video.reset()
out["reset/after"] = video(photo)
try:
    video(photo[..., 0])
    info["bad_image"] = None
except ValueError as e:
    info["bad_image"] = str(e)
video.close()

info["bad_options"] = []
for options in json.loads(sys.argv[2]):
    try:
        mb.make_estimator(options).close()
        info["bad_options"].append(None)
    except ValueError as e:
        info["bad_options"].append(str(e))
info["complexities"] = mb.available_model_complexities()
info["pose_landmarks"] = [p.name for p in pose.PoseLandmark]
info["hand_landmarks"] = [p.name for p in hands.HandLandmark]
np.savez(f"{work}/results.npz", **out)
with open(f"{work}/info.json", "w") as f:
    json.dump(info, f)
"""

# (options, the option name the error must mention)
BAD_OPTIONS = [
    ({"model": "hands"}, "model"),
    ({"model_complexity": 2}, "model_complexity"),  # pose_landmark_heavy is not in the wheel
    ({"model_complexity": 0}, "model_complexity"),  # nor pose_landmark_lite
    ({"model_complexity": "1"}, "model_complexity"),
    ({"min_detection_confidence": 1.5}, "min_detection_confidence"),
    ({"min_tracking_confidence": "high"}, "min_tracking_confidence"),
    ({"static_image_mode": "yes"}, "static_image_mode"),
    ({"refine_face": True}, "refine_face"),
]


@pytest.fixture(scope="module")
def stills(side_python, tmp_path_factory):
    work = tmp_path_factory.mktemp("mediapipe_stills")
    rng = np.random.default_rng(0)
    images = {"grace_hopper": sample_photo("grace_hopper"),
              "grey": np.full((240, 320, 3), 128, np.uint8),
              "noise": rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)}
    try:
        images["astronaut"] = sample_photo("astronaut")
    except ModuleNotFoundError:
        pass
    np.savez(work / "images.npz", **images)
    run_side(side_python, ["-c", STILLS, str(work), json.dumps([o for o, _ in BAD_OPTIONS])])
    with np.load(work / "results.npz") as z:
        results = dict(z)
    info = json.loads((work / "info.json").read_text())
    return results, info


def test_layout_is_mediapipes_landmark_order(stills):
    _, info = stills
    assert info["layout"] == MEDIAPIPE33_HANDS.name
    renamed = {"mouth_left": "left_mouth_corner", "mouth_right": "right_mouth_corner"}
    pose_names = [renamed.get(n.lower(), n.lower()) for n in info["pose_landmarks"]]
    # HandLandmark: WRIST, THUMB_CMC, ..., INDEX_FINGER_MCP, ..., PINKY_TIP
    hand_names = ["hand_wrist" if n == "WRIST" else n.lower().replace("_finger", "")
                  for n in info["hand_landmarks"]]
    expected = (pose_names + [f"left_{n}" for n in hand_names]
                + [f"right_{n}" for n in hand_names])
    assert list(MEDIAPIPE33_HANDS.joints) == expected


def _inside(point, box) -> bool:
    x0, y0, x1, y1 = box
    return x0 <= point[0] <= x1 and y0 <= point[1] <= y1


def _check_person(kp, image_shape, boxes, confident):
    assert kp.dtype == np.float32 and kp.shape == (1, 75, 3)
    person = kp[0]
    for name, box in boxes.items():
        assert _inside(person[J[name], :2], box), f"{name} at {person[J[name], :2]}, outside {box}"
    for name in confident:
        assert person[J[name], 2] >= 0.9, f"{name} score {person[J[name], 2]}"
    assert np.all((person[:, 2] >= 0) & (person[:, 2] <= 1))
    # the subject faces the camera: their left side is on the image's right
    for part in ("eye", "eye_outer", "ear", "mouth_corner", "shoulder"):
        assert person[J[f"left_{part}"], 0] > person[J[f"right_{part}"], 0], part
    chin = max(person[J["left_mouth_corner"], 1], person[J["right_mouth_corner"], 1])
    assert person[J["left_shoulder"], 1] > chin and person[J["right_shoulder"], 1] > chin


# Grace Hopper (512 x 600): face x 160-370, y 140-335; the jacket's shoulders near y 370-430;
# both hands below the photo's bottom edge.
GRACE_HOPPER_BOXES = {
    "nose": (240, 195, 295, 255),
    "right_eye": (200, 170, 260, 215), "left_eye": (280, 165, 335, 215),
    "right_ear": (155, 175, 215, 265), "left_ear": (320, 175, 380, 265),
    "right_mouth_corner": (225, 255, 265, 290), "left_mouth_corner": (280, 255, 320, 290),
    "right_shoulder": (20, 340, 180, 470), "left_shoulder": (330, 340, 500, 470),
}


@pytest.mark.parametrize("model", ["holistic", "pose"])
def test_keypoints_on_grace_hopper(stills, model):
    results, _ = stills
    kp = results[f"{model}/grace_hopper"]
    _check_person(kp, (600, 512), GRACE_HOPPER_BOXES, FACE + ["left_shoulder", "right_shoulder"])
    person = kp[0]
    for wrist in ("left_wrist", "right_wrist"):
        x, y, score = person[J[wrist]]
        assert y > 600 or score < 0.5, f"{wrist} at ({x}, {y}) score {score}: no hand is in view"
    # no hand in view: both hands missing (zero), in Holistic as in Pose (which has no hands)
    assert not person[HANDS].any()


def test_pose_and_holistic_share_the_body_model(stills):
    results, _ = stills
    body = slice(0, 33)
    diff = np.abs(results["holistic/grace_hopper"][0, body, :2] - results["pose/grace_hopper"][0, body, :2])
    assert diff.max() < 1.0


# Astronaut (512 x 512): face x 175-275, y 60-185; suit shoulders near y 240-260; her right
# glove at the bottom left, cut by the photo's edge.
ASTRONAUT_BOXES = {
    "nose": (205, 110, 240, 145),
    "right_eye": (185, 92, 220, 118), "left_eye": (230, 95, 265, 122),
    "right_mouth_corner": (195, 135, 220, 160), "left_mouth_corner": (222, 140, 250, 165),
    "right_shoulder": (60, 200, 160, 300), "left_shoulder": (260, 200, 360, 300),
    "right_wrist": (90, 430, 200, 512),
}


def test_keypoints_on_astronaut(stills):
    results, _ = stills
    if "holistic/astronaut" not in results:
        pytest.skip("scikit-image (the astronaut photo) is not installed")
    _check_person(results["holistic/astronaut"], (512, 512), ASTRONAUT_BOXES,
                  FACE + ["left_shoulder", "right_shoulder"])


@pytest.mark.parametrize("model", ["holistic", "pose"])
@pytest.mark.parametrize("image", ["grey", "noise"])
def test_nobody_gives_no_rows(stills, model, image):
    kp = stills[0][f"{model}/{image}"]
    assert kp.shape == (0, 75, 3) and kp.dtype == np.float32


def test_reset_starts_a_clip_afresh(stills):
    results, _ = stills
    # after other frames and reset(), the photo gives exactly what a new estimator gives
    np.testing.assert_array_equal(results["reset/after"], results["reset/fresh"])
    assert results["reset/fresh"].shape == (1, 75, 3)


def test_bad_options_and_inputs_are_named(stills):
    _, info = stills
    assert info["complexities"] == [1]
    for (options, key), message in zip(BAD_OPTIONS, info["bad_options"]):
        assert message is not None, f"{options} was accepted"
        assert key in message, message
    assert "model_complexity" in info["bad_options"][1] and "heavy" in info["bad_options"][1]
    assert info["bad_image"] and "uint8" in info["bad_image"]


def _decode(path) -> list[np.ndarray]:
    import av

    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def _frame_store(frames: list[np.ndarray], path, clip_id: str) -> None:
    """A frame store as decode writes it (frames decode as JPEG only), at JPEG quality 100 so
    that H.264 is what alters the frames."""
    from PIL import Image

    from mgpipe.formats import frames as frame_store

    with frame_store.writer(path, max_side=0, jpeg_quality=100) as w:
        jpegs = [frame_store.encode_jpeg(Image.fromarray(f), 100) for f in frames]
        w.add(clip_id, jpegs, width=frames[0].shape[1], height=frames[0].shape[0], scale=1.0)


# Measured on grace_hopper, 48 frames at 320 x 240, seeds 0-3 (seed 0 is tested), frame pixels:
#   default (video tracking, smoothing): face median 2.4 / 2.8 / 3.5 / 3.2, worst per-frame face
#     median 5.7 / 5.4 / 5.6 / 9.9; shoulders median 7.3 / 7.6 / 7.9 / 8.2 (MediaPipe's landmark
#     smoothing lags about 0.6 frame behind this fast camera: ~2 px of the face error)
#   static_image_mode: face median 2.2 / 2.2 / 2.0 / 2.2, worst per-frame 4.0 / 3.9 / 3.4 / 3.9;
#     shoulders 6.2 / 6.7 / 7.7 / 7.0
# Shoulders under a dark jacket are ambiguous, so they get a bound relative to shoulder width
# (which is 95-145 px in these frames).
TRACKING_BOUNDS = {  # options -> (face median, worst per-frame face median, shoulders / width)
    "video": ({}, 4.5, 9.0, 0.12),
    "static": ({"static_image_mode": True}, 3.5, 6.0, 0.12),
}


@pytest.mark.parametrize("mode", list(TRACKING_BOUNDS))
def test_pan_zoom_video_tracks_the_photo_keypoints(stills, side_python, tmp_path, mode):
    import h5py

    options, face_median, face_frame, shoulder_rel = TRACKING_BOUNDS[mode]
    photo = sample_photo("grace_hopper")
    affines = pan_zoom_video(photo, tmp_path / "pan.mp4", frames=48, size=(320, 240), seed=0)
    frames = _decode(tmp_path / "pan.mp4")
    assert len(frames) == 48 and frames[0].shape == (240, 320, 3)
    _frame_store(frames, tmp_path / "frames.h5", "c0")
    job = {"backend": "mediapipe", "options": options, "frames": str(tmp_path / "frames.h5"),
           "clips": ["c0"], "out": str(tmp_path / "pose.h5")}
    (tmp_path / "job.json").write_text(json.dumps(job))
    run_side(side_python, ["-m", "mgpipe.pose.backends.worker", str(tmp_path / "job.json")])
    with h5py.File(tmp_path / "pose.h5", "r") as h5:
        assert h5.attrs["layout"] == MEDIAPIPE33_HANDS.name
        people, counts = h5["clips/c0/people"][()], h5["clips/c0/counts"][()]
    assert counts.tolist() == [1] * 48, "the person must be found in every frame"

    reference = stills[0]["holistic/grace_hopper"][0, :, :2]  # found on the still photo
    expected = np.stack([map_points(a, reference) for a in affines])
    error = np.linalg.norm(people[:, :, :2] - expected, axis=-1)
    face = [J[n] for n in FACE]
    shoulders = [J["left_shoulder"], J["right_shoulder"]]
    assert people[:, face + shoulders, 2].min() > 0.5
    width = np.linalg.norm(expected[:, shoulders[0]] - expected[:, shoulders[1]], axis=-1)
    measured = (np.median(error[:, face]), np.median(error[:, face], axis=1).max(),
                np.median(error[:, shoulders] / width[:, None]))
    print(f"{mode}: face median {measured[0]:.2f} px, worst frame {measured[1]:.2f} px, "
          f"shoulders {measured[2]:.3f} of their width")
    assert measured[0] <= face_median
    assert measured[1] <= face_frame
    assert measured[2] <= shoulder_rel
