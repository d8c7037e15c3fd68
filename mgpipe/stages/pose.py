"""Stage 3: keypoints per clip frame, mapped to a named layout, in an HDF5 keypoint store.

Backends (config `pose.backend`):
- openpose: provided OpenPose per-frame JSON (iMiGUE ships its skeletons this way);
- pickle: a provided pyskl / MMAction2 skeleton pickle;
- mediapipe, mmpose: a pose model run on the decoded frames, in a worker process that may use
  another interpreter (`pose.python`; see mgpipe/pose/backends).

Whatever the source, each frame gives zero or more people; with several the main subject is
followed from frame to frame (nearest centre to the previous choice), so the clip shows one person
throughout. Frames without anybody, crowded frames, missing and low-confidence joints are counted
in the stage log.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pandas as pd

from mgpipe.config import IMAGE_BACKENDS, reads_frames
from mgpipe.formats import keypoints as keypoint_store
from mgpipe.io import InputError
from mgpipe.layouts import BODY25_HANDS_FACE, convert, get_layout
from mgpipe.runtime import progress as progress_bar
from mgpipe.sources.skeleton_io import openpose_frame_path, openpose_person, read_openpose_json

log = logging.getLogger(__name__)


# Beyond this many pixels a coordinate is no position in any video frame (8K is 7680 wide).
_MAX_COORDINATE = 65536.0
_OPENPOSE_PARTS = ("pose_keypoints_2d", "hand_left_keypoints_2d", "hand_right_keypoints_2d",
                   "face_keypoints_2d")


def read_openpose_frame(path: Path) -> np.ndarray:
    """People of one OpenPose JSON frame as BODY_25 + hands + face [P, 137, 3]; [0, 137, 3] when
    nobody. Parts a file lacks (no hands or face) are zeros, i.e. missing joints.

    Values must be numbers or null. A joint with a null, NaN or infinite value, a coordinate
    beyond +-65536 px or a score outside [0, 1] is missing (zeros): no detector writes such a
    joint, and one of them would otherwise stretch the clip's box over the whole heatmap."""
    frame = read_openpose_json(path)   # bounded: a regular file of plausible size
    if not isinstance(frame, dict) or "people" not in frame:
        what = "an object without 'people'" if isinstance(frame, dict) else f"a JSON {type(frame).__name__}"
        raise InputError(f"{path}: not an OpenPose keypoint file (it holds {what}, expected an "
                         "object with a 'people' list)")
    people = frame["people"]
    if not isinstance(people, list) or not all(isinstance(p, dict) for p in people):
        raise InputError(f"{path}: 'people' is not a list of person objects")
    for i, person in enumerate(people):
        for key in _OPENPOSE_PARTS:
            values = person.get(key)
            if values is None:
                continue
            if not isinstance(values, list):
                raise InputError(f"{path}: person {i}: {key} is a {type(values).__name__}, "
                                 "expected a list of numbers")
            bad = next((v for v in values if v is not None and (
                isinstance(v, bool) or not isinstance(v, (int, float)))), None)
            if bad is not None:
                raise InputError(f"{path}: person {i}: {key} holds {bad!r}, expected numbers")
    try:
        with np.errstate(over="ignore", invalid="ignore"):  # 1e39 -> inf, handled just below
            out = [openpose_person(person, source=str(path)) for person in people]
    except OverflowError:  # an integer literal beyond any float
        raise InputError(f"{path}: a keypoint value is too large to be a number of pixels") from None
    n = BODY25_HANDS_FACE.num_joints
    if not out:
        return np.zeros((0, n, 3), np.float32)
    kp = np.stack(out)
    with np.errstate(invalid="ignore"):
        unusable = (~np.isfinite(kp).all(-1) | (np.abs(kp[..., :2]) > _MAX_COORDINATE).any(-1)
                    | (kp[..., 2] < 0) | (kp[..., 2] > 1))
    if unusable.any():
        log.warning("%s: %d joint(s) with null, NaN, infinite or out-of-range values read as "
                    "missing", path, int(unusable.sum()))
        kp[unusable] = 0
    return kp


def _centre(person: np.ndarray):
    valid = person[:, 2] > 0
    return person[valid, :2].mean(0) if valid.any() else None


def pick_main_person(frames: list[np.ndarray]) -> tuple[np.ndarray, int]:
    """[T, V, 3] following one person: start with the most confident, then nearest centre."""
    T, V = len(frames), frames[0].shape[1] if frames else 0
    out = np.zeros((T, V, 3), np.float32)
    previous, crowded = None, 0
    for t, people in enumerate(frames):
        if len(people) == 0:
            continue
        crowded += len(people) > 1
        if previous is None or len(people) == 1:
            choice = int(np.argmax(people[:, :, 2].sum(1)))
        else:
            dist = [np.inf if (c := _centre(p)) is None else float(np.linalg.norm(c - previous))
                    for p in people]
            choice = int(np.argmin(dist))
        out[t] = people[choice]
        previous = _centre(people[choice]) if _centre(people[choice]) is not None else previous
    return out, crowded


def summarise_clip(frames: list[np.ndarray], src, dst, low_score: float):
    """People per frame in layout `src` -> the main person's [1, T, V, 3] in `dst`, and counts."""
    frames = [convert(people, src, dst) for people in frames]
    if not frames:
        frames = [np.zeros((0, dst.num_joints, 3), np.float32)]
    kp, crowded = pick_main_person(frames)
    present = kp[:, :, 2] > 0
    counts = Counter(
        frames=len(frames),
        empty_frames=sum(len(p) == 0 for p in frames),
        multi_person_frames=crowded,
        missing_joints=int((~present).sum()),
        low_confidence_joints=int((present & (kp[:, :, 2] < low_score)).sum()),
    )
    return kp[None], counts  # M = 1: the main subject


def extract_video(job):
    """Keypoints of all clips of one video from its OpenPose folder (runs in a worker)."""
    skeletons_dir, video_id, clips, layout_name, low_score = job
    layout = get_layout(layout_name)
    folder = Path(skeletons_dir) / video_id
    if not folder.is_dir():
        raise InputError(f"{folder}: OpenPose folder of video {video_id} not found")
    counts = Counter()
    result = {}
    for clip_id, start, end in clips:
        frames = []
        for f in range(start, end + 1):
            try:
                people = read_openpose_frame(openpose_frame_path(skeletons_dir, video_id, f))
            except FileNotFoundError:
                counts["missing_files"] += 1
                people = np.zeros((0, BODY25_HANDS_FACE.num_joints, 3), np.float32)
            frames.append(people)
        result[clip_id], clip_counts = summarise_clip(frames, BODY25_HANDS_FACE, layout, low_score)
        counts.update(clip_counts)
    return result, counts


def _openpose_source(manifest, skeletons_dir, layout, low_score, threads, progress):
    jobs = []
    for video_id, group in manifest.groupby("video_id", sort=True):
        clips = [(r.clip_id, int(r.start_frame), int(r.end_frame)) for r in group.itertuples()]
        jobs.append((str(skeletons_dir), video_id, clips, layout, low_score))
    pool = get_context("fork").Pool(threads) if threads > 1 and len(jobs) > 1 else None
    try:
        results = pool.imap(extract_video, jobs) if pool else map(extract_video, jobs)
        for clips, counts in progress_bar(results, total=len(jobs), desc="pose", unit="video",
                                          enabled=progress):
            yield clips, counts, {}
    finally:
        if pool:
            pool.terminate()


def clip_from_annotations(annotations: dict, row, path) -> tuple[np.ndarray, tuple[int, int]]:
    """A manifest row's keypoints [M, T, V, 3] out of pickle annotations: the annotation named
    like the clip (trimmed datasets), else the one named like the video, sliced to the clip."""
    if row.clip_id in annotations:
        ann = annotations[row.clip_id]
        kp = ann["keypoint"]
    elif row.video_id in annotations:
        ann = annotations[row.video_id]
        kp = ann["keypoint"][:, int(row.start_frame):int(row.end_frame) + 1]
        if kp.shape[1] < int(row.num_frames):
            raise InputError(f"{path}: annotation {row.video_id!r} has {ann['keypoint'].shape[1]} "
                             f"frames; clip {row.clip_id} needs frames {row.start_frame}-{row.end_frame}")
    else:
        raise InputError(f"{path}: no annotation with frame_dir {row.clip_id!r} or {row.video_id!r}")
    return kp, (ann["width"], ann["height"])


def _pickle_source(manifest, path, layout, low_score, pickle_layout, progress):
    from mgpipe.sources.skeleton_io import load_pickle_annotations

    src = get_layout(pickle_layout)
    annotations = load_pickle_annotations(path, src)
    dst = get_layout(layout)
    for row in progress_bar(list(manifest.itertuples()), desc="pose", unit="clip",
                            enabled=progress):
        kp, size = clip_from_annotations(annotations, row, path)
        # (before choosing people: a NaN score would hide a whole person of a frame)
        kp, lost = drop_non_finite(kp)
        # Each frame's people: the annotation's persons that have any joint in that frame.
        frames = [kp[kp[:, t, :, 2].max(axis=1) > 0, t] if len(kp) else kp[:, t]
                  for t in range(kp.shape[1])]
        clip, counts = summarise_clip(frames, src, dst, low_score)
        yield {row.clip_id: clip}, counts + lost, {row.clip_id: size}


def _image_source(manifest, frames_h5, backend, layout, low_score, threads, python, options, progress):
    from mgpipe.formats import frames as frame_store
    from mgpipe.pose.runner import run_image_backend

    frames = frame_store.Reader(frames_h5)
    frames.check_manifest(manifest)  # an untrusted store: its metadata against the manifest first
    frames.close()
    dst = get_layout(layout)
    for clip_id, src_name, frames in run_image_backend(
            manifest.clip_id.tolist(), frames_h5, backend, options=options, python=python,
            workers=threads, progress=progress):
        clip, counts = summarise_clip(frames, get_layout(src_name), dst, low_score)
        yield {clip_id: clip}, counts, {}


PROVIDED = ("openpose", "pickle")


def build_keypoint_store(manifest: pd.DataFrame, skeletons, out_h5, *, backend, layout, low_score,
                         python, options, pickle_layout, outlier_margin, frames_h5=None,
                         threads=1, progress=True) -> dict:
    """Keypoints of every manifest clip from `backend` into the store at out_h5 (atomically).

    backend, layout, low_score, python, options, pickle_layout, outlier_margin: the settings of
    the config's pose section, all required (the schema holds their defaults).
    skeletons: the OpenPose folder (openpose) or the pickle file (pickle); frames_h5: the frame
    store the image backends (mediapipe, mmpose) look at. layout, pickle_layout: a built-in
    layout's name or a layout definition {name, joints, limbs} (see mgpipe.layouts); the store
    records a defined layout's joints and limbs, so later stages need no config to read it.
    Joints that cannot be positions in the picture count as missing (their score becomes 0):
    NaN or infinite values, and joints more than `outlier_margin` (a fraction of the frame's
    width or height) outside the frame. The frame size is the video's or the pickle's img_shape;
    without either (pose-only mode), a robust estimate from the clip's own keypoints (see
    drop_outliers). One such joint would otherwise stretch the clip's compact box over the whole
    heatmap. Both kinds are counted in the log and the clips that lost joints are listed.
    Returns the counts that are logged.
    """
    stored_layout = get_layout(layout)  # fail early on an unknown name or a bad definition
    size = {r.clip_id: (r.width, r.height) for r in manifest.itertuples()}
    if backend == "openpose":
        source = _openpose_source(manifest, skeletons, layout, low_score, threads, progress)
    elif backend == "pickle":
        source = _pickle_source(manifest, skeletons, layout, low_score, pickle_layout, progress)
    elif reads_frames(backend):
        if frames_h5 is None:
            raise InputError(f"pose backend {backend} needs the frame store (frames_h5)")
        source = _image_source(manifest, frames_h5, backend, layout, low_score, threads, python,
                               options or {}, progress)
    else:
        raise InputError(f"unknown pose backend {backend!r}; use one of "
                         f"{', '.join(PROVIDED + IMAGE_BACKENDS)}")

    t0, totals = time.time(), Counter()
    cleaned: dict[str, None] = {}  # clips that lost joints, in store order
    with keypoint_store.writer(out_h5, stored_layout, source=backend) as store:
        for clips, counts, sizes in source:
            totals.update(counts)
            if counts.get("non_finite_joints") and len(clips) == 1:  # cleaned by the source
                cleaned.update(dict.fromkeys(clips))
            for cid, kp in clips.items():
                w, h = sizes.get(cid, size[cid])
                known = not (pd.isna(w) or pd.isna(h))
                kp, lost = drop_outliers(kp, (w, h) if known else None, outlier_margin)
                totals.update(lost)
                if sum(lost.values()):
                    cleaned[cid] = None
                if not known:  # pose-only mode with no image size anywhere
                    w, h = _extent(kp)
                    totals["size_from_keypoints"] += 1
                store.add(cid, kp, w, h)
        stats = dict(sorted(totals.items()), clips=len(manifest), seconds=round(time.time() - t0, 2))
        log.info("pose: %s", stats)
        if cleaned:
            log.warning("pose: %d clip(s) lost joints that were not finite or far outside the frame: %s%s",
                        len(cleaned), ", ".join(list(cleaned)[:50]), " ..." if len(cleaned) > 50 else "")
        if stats.get("frames") and stats.get("empty_frames", 0) == stats["frames"]:
            # Every frame empty is a wrong input (paths, layout, model), not data to train on.
            raise InputError(f"pose backend {backend}: nobody found in any of the {stats['frames']} "
                             "frames; check the keypoint source or the pose model")
    return stats


def drop_non_finite(kp: np.ndarray) -> tuple[np.ndarray, Counter]:
    """A copy of keypoints [..., 3] with every joint holding a NaN or infinite value set to
    missing (zeros), and their count."""
    kp = np.array(kp, dtype=np.float32, copy=True)
    counts = Counter()
    with np.errstate(invalid="ignore", over="ignore"):
        bad = ~np.isfinite(kp).all(-1)
    if bad.any():
        counts["non_finite_joints"] = int(bad.sum())
        kp[bad] = 0
    return kp, counts


def drop_outliers(kp: np.ndarray, size, margin: float) -> tuple[np.ndarray, Counter]:
    """Keypoints [M, T, V, 3] with unusable joints set to missing (all zeros), and their counts.

    non_finite_joints: NaN or infinite x, y or score. out_of_frame_joints: a present joint
    (score > 0) more than `margin` x the frame size outside the frame (width, height) `size`.
    Without a size, the frame is estimated from the clip itself: the 1st..99th percentile range
    of its joints in x and y, so that a few wild joints cannot move the estimate, and joints
    beyond one such range past either end are dropped (they lie where no joint of this person
    comes near)."""
    kp, counts = drop_non_finite(kp)
    present = kp[..., 2] > 0
    if not present.any():
        return kp, counts
    xy = kp[..., :2]
    if size is not None:
        lo = -margin * np.asarray(size, np.float64)
        hi = (1 + margin) * np.asarray(size, np.float64)
    else:
        q_lo, q_hi = np.percentile(xy[present], [1, 99], axis=0)
        span = np.maximum(q_hi - q_lo, 1.0)
        lo, hi = q_lo - span, q_hi + span
    outside = present & ((xy < lo) | (xy > hi)).any(-1)
    if outside.any():
        counts["out_of_frame_joints"] = int(outside.sum())
        kp[outside] = 0
    return kp, counts


def _extent(kp: np.ndarray) -> tuple[int, int]:
    """Width and height that hold every keypoint of a clip (pose-only mode without an image
    size): the compact box is then clipped to where the person was seen."""
    valid = kp[..., 2] > 0
    if not valid.any():
        return 1, 1
    xy = kp[..., :2][valid]
    return int(np.ceil(xy[:, 0].max())) + 1, int(np.ceil(xy[:, 1].max())) + 1
