"""Stage 3: keypoints per clip frame, mapped to a named layout, in an HDF5 keypoint store.

Backend here: provided OpenPose per-frame JSON (iMiGUE ships its skeletons this way). A frame
file that is absent or lists nobody gives an empty frame; with several people the main subject is
followed from frame to frame (nearest centre to the previous choice), so the clip shows one
person throughout. Everything that was missing or doubtful is counted in the stage log.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from multiprocessing import get_context
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
from tqdm import tqdm

from .io import InputError, atomic_path
from .layouts import BODY25_HANDS_FACE, convert, get_layout
from .skeleton_io import KEYPOINT_STORE_VERSION as FORMAT_VERSION, openpose_person

log = logging.getLogger(__name__)


def openpose_frame_path(skeletons_dir, video_id: str, frame: int) -> Path:
    return Path(skeletons_dir) / video_id / f"{video_id}_{frame:012d}_keypoints.json"


def read_openpose_frame(path: Path) -> np.ndarray:
    """People of one OpenPose JSON frame as BODY_25 + hands + face [P, 137, 3]; [0, 137, 3] when
    nobody. Parts a file lacks (no hands or face) are zeros, i.e. missing joints."""
    try:
        people = json.loads(path.read_text())["people"]
    except FileNotFoundError:
        raise
    except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: not an OpenPose keypoint file ({type(e).__name__}: {e})") from None
    if not isinstance(people, list) or not all(isinstance(p, dict) for p in people):
        raise InputError(f"{path}: 'people' is not a list of person objects")
    out = [openpose_person(person, source=str(path)) for person in people]
    n = BODY25_HANDS_FACE.num_joints
    return np.stack(out) if out else np.zeros((0, n, 3), np.float32)


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
            counts["empty_frames"] += len(people) == 0
            frames.append(convert(people, BODY25_HANDS_FACE, layout))
        kp, crowded = pick_main_person(frames)
        counts["multi_person_frames"] += crowded
        present = kp[:, :, 2] > 0
        counts["missing_joints"] += int((~present).sum())
        counts["low_confidence_joints"] += int((present & (kp[:, :, 2] < low_score)).sum())
        counts["frames"] += len(frames)
        result[clip_id] = kp[None]  # M = 1: the main subject
    return result, counts


def build_keypoint_store(manifest: pd.DataFrame, skeletons_dir, out_h5, *, layout="coco17",
                         low_score=0.3, threads=1, progress=True) -> dict:
    get_layout(layout)  # fail early on an unknown name
    jobs = []
    for video_id, group in manifest.groupby("video_id", sort=True):
        clips = [(r.clip_id, int(r.start_frame), int(r.end_frame)) for r in group.itertuples()]
        jobs.append((str(skeletons_dir), video_id, clips, layout, low_score))
    size = {r.clip_id: (int(r.width), int(r.height)) for r in manifest.itertuples()}

    t0, totals = time.time(), Counter()
    with atomic_path(out_h5) as tmp, h5py.File(tmp, "w") as h5:
        h5.attrs.update(format_version=FORMAT_VERSION, layout=layout, source="openpose")
        pool = get_context("fork").Pool(threads) if threads > 1 else None
        results = pool.imap(extract_video, jobs) if pool else map(extract_video, jobs)
        try:
            for clips, counts in tqdm(results, total=len(jobs), desc="pose", unit="video",
                                      disable=not progress):
                totals.update(counts)
                for cid, kp in clips.items():
                    g = h5.create_group(f"clips/{cid}")
                    g.create_dataset("keypoints", data=kp)
                    g.attrs.update(width=size[cid][0], height=size[cid][1])
        finally:
            if pool:
                pool.terminate()
    stats = dict(sorted(totals.items()), clips=len(manifest), seconds=round(time.time() - t0, 2))
    log.info("pose: %s", stats)
    return stats


def read_keypoints(h5: h5py.File, clip_id: str) -> np.ndarray:
    return h5[f"clips/{clip_id}/keypoints"][()]
