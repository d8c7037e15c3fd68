"""Python entry point: a trained mgpipe model classifies a video file or a keypoint sequence.

What `mmaction.apis.inference_recognizer` is to MMAction2:

    from mgpipe.api import Recognizer

    recognizer = Recognizer("results/demo/models/joint/model.pt")
    pred = recognizer.classify_keypoints(keypoints, width=320, height=240)   # [T, V, 3] or [M, T, V, 3]
    pred.top(3)        # [(class name, probability), ...], best first
    pred.name, pred.probability, pred.probabilities   # the best class; every class's probability

    pred = Recognizer("results/demo/models/fused_full/model.pt").classify_video(
        "clip.mp4", skeletons="openpose_json/")   # or a config whose pose.backend runs a pose model

Every input setting (frame count, size, heatmap settings, keypoint layout) comes from the
model's own record, as `mgpipe predict` takes it; `config` (a mapping of the workflow config's
keys) may add what the record does not hold: the pose backend that extracts keypoints from a
video, the device, the test views. A setting it gives that contradicts the model's is refused.
Bad input raises `mgpipe.io.InputError` with one line naming the problem.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mgpipe import config as mgconfig
from mgpipe.formats import keypoints as keypoint_store
from mgpipe.io import InputError
from mgpipe.layouts import get_layout
from mgpipe.learning.inference import load_model
from mgpipe.learning.samples import model_samples
from mgpipe.runtime import seed_everything, set_threads
from mgpipe.stages.clips import MANIFEST_COLUMNS
from mgpipe.stages.predict import _classes, _fit_inputs, _model_probs, video_probabilities


@dataclass(frozen=True)
class Prediction:
    """One clip's class probabilities, in the model's class order."""

    model: str                    # the model's registry name (joint, fused_full, ...)
    label_ids: tuple[int, ...]    # each class's label id
    names: tuple[str, ...]        # each class's name
    probabilities: np.ndarray     # float [K], sums to 1

    @property
    def index(self) -> int:
        return int(np.argmax(self.probabilities))

    @property
    def label_id(self) -> int:
        return self.label_ids[self.index]

    @property
    def name(self) -> str:
        return self.names[self.index]

    @property
    def probability(self) -> float:
        return float(self.probabilities[self.index])

    def top(self, k: int = 5) -> list[tuple[str, float]]:
        order = np.argsort(-self.probabilities, kind="stable")[:k]
        return [(self.names[i], float(self.probabilities[i])) for i in order]


class Recognizer:
    """A trained model (`model.pt` of `mgpipe train` or `merge`), loaded once."""

    def __init__(self, checkpoint, config: dict | None = None, *, threads: int = 1, progress: bool = False):
        self.checkpoint = Path(checkpoint)
        if not self.checkpoint.is_file():
            raise InputError(f"{self.checkpoint}: model checkpoint not found")
        user = dict(config or {})
        self.given = _dotted_keys(user)
        self.config = mgconfig.validate(user, "Recognizer config", partial=True)
        self.model, self.ckpt, self.spec = load_model(self.checkpoint)
        self.config = _fit_inputs(self.checkpoint, self.ckpt, self.spec, self.config, self.given)
        self.classes = _classes(self.checkpoint, self.ckpt)
        self.threads, self.progress = threads, progress
        self.model.eval()

    @property
    def names(self) -> list[str]:
        return list(self.classes.name)

    def _prediction(self, probs: np.ndarray) -> Prediction:
        return Prediction(self.spec.name, tuple(int(i) for i in self.classes.label_id),
                          tuple(str(n) for n in self.classes.name), np.asarray(probs, dtype=np.float64))

    def classify_video(self, video, *, skeletons=None) -> Prediction:
        """The whole video as one clip: decoded, its keypoints extracted with the config's
        pose.backend (or read from `skeletons`, an OpenPose folder or pickle), sampled as in testing."""
        probs, _, _ = video_probabilities(video, self.checkpoint, self.config, skeletons=skeletons,
                                          threads=self.threads, progress=self.progress, given=None,
                                          loaded=(self.model, self.ckpt, self.spec))
        return self._prediction(probs[0])

    def classify_keypoints(self, keypoints, *, width: int, height: int) -> Prediction:
        """A keypoint sequence in the model's layout: float [T, V, 3] (x, y in pixels of a
        width x height frame, score 0..1; a missing joint scores 0) or [M, T, V, 3] for M people;
        [..., 2] means every joint was seen. Only models that read keypoints alone take this."""
        if self.spec.frame_input is not None:
            raise InputError(f"{self.checkpoint}: the {self.spec.name} model reads video frames; "
                             "use classify_video")
        layout = get_layout(self.config["pose"]["layout"])
        kp = _checked_keypoints(keypoints, len(layout.joints), width, height)
        set_threads(self.threads)
        seed_everything(self.config["seed"])
        clip = "keypoints"
        row = {"clip_id": clip, "video_id": clip, "video": "", "start_frame": 0,
               "end_frame": kp.shape[1] - 1, "num_frames": kp.shape[1], "label": 0, "label_id": 0,
               "class_name": "", "subject_id": 0, "split": "test", "width": int(width),
               "height": int(height), "fps": 0.0}
        manifest = pd.DataFrame([row], columns=MANIFEST_COLUMNS)
        with tempfile.TemporaryDirectory(prefix="mgpipe-api-") as tmp:
            store = Path(tmp) / "keypoints.h5"
            with keypoint_store.writer(store, layout, source="mgpipe.api") as w:
                w.add(clip, kp, width, height)
            data = model_samples(self.spec, self.config, manifest, "test", train=False, frames_h5=None,
                                 keypoints_h5=store, views=self.config["test"]["views"],
                                 flip=self.config["test"]["flip"])
            from mgpipe.learning import imbalance

            offset = imbalance.logit_offset(self.ckpt, self.checkpoint, self.config["test"]["logit_adjust"])
            probs = _model_probs(self.model, self.spec, data, self.config, self.progress, offset)
        return self._prediction(probs[0])


def _dotted_keys(data: dict, prefix: str = "") -> set:
    keys = set()
    for key, value in data.items():
        keys.add(prefix + str(key))
        if isinstance(value, dict):
            keys |= _dotted_keys(value, f"{prefix}{key}.")
    return keys


def _checked_keypoints(keypoints, joints: int, width, height) -> np.ndarray:
    """[M, T, V, 3] float32 of a user's array, or InputError naming what is wrong."""
    try:
        kp = np.asarray(keypoints, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise InputError(f"keypoints: not a numeric array ({e})") from None
    if kp.ndim == 3:
        kp = kp[None]
    if kp.ndim != 4 or kp.shape[-1] not in (2, 3) or 0 in kp.shape[:3]:
        raise InputError(f"keypoints: shape {tuple(np.shape(keypoints))}; expected [T, V, 3] or [M, T, V, 3] "
                         "(x, y, score; or x, y)")
    if kp.shape[2] != joints:
        raise InputError(f"keypoints: {kp.shape[2]} joints; the model's layout has {joints}")
    if kp.shape[0] > keypoint_store.MAX_PERSONS:
        raise InputError(f"keypoints: {kp.shape[0]} people; at most {keypoint_store.MAX_PERSONS}")
    if kp.shape[-1] == 2:
        kp = np.concatenate([kp, np.ones(kp.shape[:-1] + (1,))], axis=-1)
    if not np.isfinite(kp).all():
        raise InputError("keypoints: NaN or infinite values (mark a missing joint with score 0)")
    if not ((kp[..., 2] >= 0) & (kp[..., 2] <= 1)).all():
        raise InputError("keypoints: scores outside 0..1")
    for name, side in (("width", width), ("height", height)):
        if not (isinstance(side, (int, np.integer)) and 0 < side <= keypoint_store.MAX_FRAME_SIDE):
            raise InputError(f"{name} {side!r}: the frame's size in pixels, a whole number from 1 "
                             f"to {keypoint_store.MAX_FRAME_SIDE}")
    return kp.astype(np.float32)
