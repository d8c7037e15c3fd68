"""Offline real-weights pose backend: MediaPipe 0.10.21's legacy `solutions` (Holistic or Pose).

Runs in the side environment made by scripts/install_mediapipe.sh (mediapipe 0.10.21 needs
numpy < 2 and protobuf < 5), so it imports only the standard library, numpy and mediapipe.
Only the models inside the wheel are used; nothing is downloaded.

Rows follow the layout "mediapipe33_hands" (mgpipe/layouts.py): MediaPipe's 33 pose landmarks
in PoseLandmark order, then the subject's left hand and right hand (21 points each, HandLandmark
order). Scores: pose landmarks carry their visibility; the legacy API gives hand landmarks no
per-point score, so a found hand scores 1 and a missing hand is all zeros (missing). MediaPipe
follows at most one person, so a frame yields [1, 75, 3] or, with nobody found, [0, 75, 3].

Options (all optional):
    model                     "holistic" (body + both hands, default) or "pose" (body only)
    model_complexity          pose landmark model; only those whose file ships in the wheel
                              (0.10.21: 1 = pose_landmark_full)
    min_detection_confidence  0.5
    min_tracking_confidence   0.5
    static_image_mode         False: track within a clip (reset() between clips); True: detect
                              afresh on every frame
    smooth_landmarks          True: MediaPipe's temporal filter in video mode
"""

from __future__ import annotations

import os

import numpy as np

LAYOUT = "mediapipe33_hands"
NUM_POSE = 33
NUM_HAND = 21
NUM_JOINTS = NUM_POSE + 2 * NUM_HAND
LEFT_HAND = slice(NUM_POSE, NUM_POSE + NUM_HAND)
RIGHT_HAND = slice(NUM_POSE + NUM_HAND, NUM_JOINTS)

MODELS = ("holistic", "pose")
DEFAULTS = {
    "model": "holistic",
    "model_complexity": 1,
    "min_detection_confidence": 0.5,
    "min_tracking_confidence": 0.5,
    "static_image_mode": False,
    "smooth_landmarks": True,
}
# Pose and Holistic pick their landmark model by model_complexity; the legacy API would try to
# download the files the wheel lacks, which cannot work offline.
POSE_LANDMARK_MODELS = {0: "pose_landmark_lite.tflite", 1: "pose_landmark_full.tflite",
                        2: "pose_landmark_heavy.tflite"}


def available_model_complexities() -> list[int]:
    """model_complexity values whose pose landmark model is installed with mediapipe."""
    import mediapipe

    folder = os.path.join(os.path.dirname(mediapipe.__file__), "modules", "pose_landmark")
    return [c for c, name in sorted(POSE_LANDMARK_MODELS.items())
            if os.path.isfile(os.path.join(folder, name))]


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def validate_options(options: dict | None) -> dict:
    """Options merged over DEFAULTS; a ValueError names any option that cannot be used."""
    options = dict(options or {})
    unknown = sorted(set(options) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"unknown mediapipe backend option(s) {', '.join(map(repr, unknown))}; "
                         f"known: {', '.join(sorted(DEFAULTS))}")
    opts = {**DEFAULTS, **options}
    if opts["model"] not in MODELS:
        raise ValueError(f"option model={opts['model']!r} is not one of "
                         f"{', '.join(map(repr, MODELS))}")
    for key in ("min_detection_confidence", "min_tracking_confidence"):
        value = opts[key]
        if not _is_number(value) or not 0.0 <= float(value) <= 1.0:
            raise ValueError(f"option {key}={value!r} must be a number in [0, 1]")
        opts[key] = float(value)
    for key in ("static_image_mode", "smooth_landmarks"):
        if not isinstance(opts[key], (bool, np.bool_)):
            raise ValueError(f"option {key}={opts[key]!r} must be true or false")
        opts[key] = bool(opts[key])
    complexity = opts["model_complexity"]
    if not _is_number(complexity) or complexity not in POSE_LANDMARK_MODELS:
        raise ValueError(f"option model_complexity={complexity!r} must be one "
                         f"of {sorted(POSE_LANDMARK_MODELS)}")
    available = available_model_complexities()
    if complexity not in available:
        raise ValueError(
            f"option model_complexity={complexity!r} needs "
            f"{POSE_LANDMARK_MODELS[int(complexity)]}, which the installed mediapipe does not ship "
            f"(models cannot be downloaded at run time); available: {available}")
    opts["model_complexity"] = int(complexity)
    return opts


def _points(landmarks, width: int, height: int, visibility: bool) -> np.ndarray:
    # Normalised [0, 1] image coordinates -> pixels; points may lie outside the image.
    pts = np.array([(p.x, p.y, p.visibility if visibility else 1.0) for p in landmarks.landmark],
                   dtype=np.float32)
    pts[:, 0] *= width
    pts[:, 1] *= height
    np.clip(pts[:, 2], 0.0, 1.0, out=pts[:, 2])
    return pts


class Estimator:
    layout = LAYOUT

    def __init__(self, options: dict):
        self._solution = None
        self.options = validate_options(options)
        from mediapipe.python.solutions import holistic, pose

        o = self.options
        common = {"static_image_mode": o["static_image_mode"],
                  "model_complexity": o["model_complexity"],
                  "smooth_landmarks": o["smooth_landmarks"],
                  "enable_segmentation": False,
                  "min_detection_confidence": o["min_detection_confidence"],
                  "min_tracking_confidence": o["min_tracking_confidence"]}
        if o["model"] == "holistic":
            self._solution = holistic.Holistic(refine_face_landmarks=False, **common)
        else:
            self._solution = pose.Pose(**common)
        self._hands = o["model"] == "holistic"

    def reset(self) -> None:
        # Restarting the graph drops the tracked region and the smoothing filters' state, so a
        # new clip starts from person detection as on a fresh estimator.
        if self._solution is None:
            raise RuntimeError("mediapipe estimator is closed")
        self._solution.reset()

    def __call__(self, image: np.ndarray) -> np.ndarray:
        if self._solution is None:
            raise RuntimeError("mediapipe estimator is closed")
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"mediapipe backend expected an H x W x 3 uint8 RGB image, got "
                             f"shape {image.shape} dtype {image.dtype}")
        height, width = image.shape[:2]
        result = self._solution.process(np.ascontiguousarray(image))
        if result.pose_landmarks is None:
            return np.zeros((0, NUM_JOINTS, 3), np.float32)
        person = np.zeros((1, NUM_JOINTS, 3), np.float32)
        person[0, :NUM_POSE] = _points(result.pose_landmarks, width, height, visibility=True)
        if self._hands:
            # Holistic derives each hand's region from the same-named pose wrist, so its
            # left_hand_landmarks is the subject's left hand (unlike the Hands solution's
            # handedness label, which assumes a mirrored selfie image). Checked on a photo of a
            # man whose left hand rests on his right chest: the left hand came out there, at the
            # pose's left_wrist, and the right hand at the right_wrist by his side.
            if result.left_hand_landmarks is not None:
                person[0, LEFT_HAND] = _points(result.left_hand_landmarks, width, height, False)
            if result.right_hand_landmarks is not None:
                person[0, RIGHT_HAND] = _points(result.right_hand_landmarks, width, height, False)
        return person

    def close(self) -> None:
        if self._solution is not None:
            self._solution.close()
            self._solution = None


def make_estimator(options: dict) -> Estimator:
    return Estimator(options)
