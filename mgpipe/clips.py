"""Stage 1: the clip manifest, one row per labelled segment, from a label table and a split.

Every later stage reads only this manifest, so this is where bad input is caught: missing or
unreadable videos, frame ranges past the end of a video, unknown subjects. Nothing is trained
before the manifest is whole.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from .io import InputError, atomic_path

log = logging.getLogger(__name__)

LABEL_COLUMNS = ["video_id", "label_id", "start_frame", "end_frame", "subject_id"]
SPLITS = ("train", "val", "test")
MANIFEST_COLUMNS = [
    "clip_id", "video_id", "video", "start_frame", "end_frame", "num_frames", "label",
    "label_id", "class_name", "subject_id", "split", "width", "height", "fps",
]


def read_label_table(path) -> pd.DataFrame:
    path = Path(path)
    try:
        table = pd.read_csv(path, dtype={"video_id": str})
    except FileNotFoundError:
        raise InputError(f"{path}: label table not found") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: not a readable CSV label table ({e})") from None
    missing = [c for c in LABEL_COLUMNS if c not in table.columns]
    if missing:
        raise InputError(f"{path}: label table lacks column(s) {', '.join(missing)}")
    for col in ("label_id", "start_frame", "end_frame", "subject_id"):
        values = pd.to_numeric(table[col], errors="coerce")
        bad = table.index[values.isna()]
        if len(bad):
            raise InputError(f"{path}: row {bad[0] + 2} column {col}: {table[col][bad[0]]!r} is not a number")
        table[col] = values.astype(int)
    bad = table.index[table.end_frame < table.start_frame]
    if len(bad):
        raise InputError(f"{path}: row {bad[0] + 2}: end_frame < start_frame")
    if "class" not in table.columns:
        table["class"] = table.label_id.astype(str)
    return table


def read_split(path) -> pd.DataFrame:
    path = Path(path)
    try:
        split = pd.read_csv(path)
    except FileNotFoundError:
        raise InputError(f"{path}: split file not found") from None
    if not {"subject_id", "split"} <= set(split.columns):
        raise InputError(f"{path}: split file needs columns subject_id, split")
    bad = split[~split.split.isin(SPLITS)]
    if len(bad):
        raise InputError(f"{path}: unknown split {bad.split.iloc[0]!r} (use train, val or test)")
    dup = split.subject_id[split.subject_id.duplicated()]
    if len(dup):
        raise InputError(f"{path}: subject {dup.iloc[0]} is listed twice")
    return split


def assign_validation(split: pd.DataFrame, fraction: float, seed: int) -> pd.DataFrame:
    """Hold out whole training subjects for validation when the protocol names none (iMiGUE's
    cross-subject protocol has only train and test), so model selection never sees test data."""
    split = split.copy()
    if (split.split == "val").any() or fraction <= 0:
        return split
    train = np.sort(split.subject_id[split.split == "train"].to_numpy())
    n = max(1, int(round(fraction * len(train)))) if len(train) > 1 else 0
    held = np.random.default_rng(seed).choice(train, size=n, replace=False)
    split.loc[split.subject_id.isin(held), "split"] = "val"
    return split


def probe_video(path: Path) -> dict:
    """Frame count, size and rate from the container header (no decoding)."""
    import av

    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            frames = stream.frames
            rate = float(stream.average_rate or stream.guessed_rate or 25)
            if not frames and stream.duration is not None and stream.time_base is not None:
                frames = int(round(float(stream.duration * stream.time_base) * rate))
            return {"width": stream.codec_context.width, "height": stream.codec_context.height,
                    "fps": rate, "frames": int(frames)}
    except (av.error.FFmpegError, IndexError, OSError) as e:
        raise InputError(f"{path}: not a readable video ({type(e).__name__}: {e})") from None


def build_manifest(label_table, split_file, videos_dir, *, video_pattern="{video_id}.mp4",
                   classes=None, val_fraction=0.15, seed=0, on_missing="error",
                   skeletons_dir=None):
    """Return (manifest, classes): classes maps output index -> label_id and class name."""
    table = read_label_table(label_table)
    split = assign_validation(read_split(split_file), val_fraction, seed)

    class_ids = list(classes) if classes else sorted(table.label_id.unique())
    unknown = sorted(set(table.label_id) - set(class_ids))
    if unknown:
        raise InputError(f"{label_table}: label id(s) {unknown} are not in the configured classes")
    index = {c: i for i, c in enumerate(class_ids)}

    subjects = dict(zip(split.subject_id, split.split))
    unsplit = sorted(set(table.subject_id) - set(subjects))
    if unsplit:
        raise InputError(f"{split_file}: subject(s) {unsplit[:5]} of {label_table} have no split")

    rows, skipped = [], 0
    probes: dict[str, dict | InputError] = {}
    for i, r in table.iterrows():
        video = Path(videos_dir) / video_pattern.format(video_id=r.video_id)
        if r.video_id not in probes:
            try:
                if not video.is_file():
                    raise InputError(f"{video}: video not found (label table {label_table}, row {i + 2})")
                probes[r.video_id] = probe_video(video)
                folder = Path(skeletons_dir) / r.video_id if skeletons_dir else None
                if folder is not None and not folder.is_dir():
                    raise InputError(f"{folder}: keypoint folder of video {r.video_id} not found "
                                     f"(label table {label_table}, row {i + 2})")
            except InputError as e:
                probes[r.video_id] = e
        probe = probes[r.video_id]
        problem = probe if isinstance(probe, InputError) else None
        if problem is None and probe["frames"] and r.start_frame >= probe["frames"]:
            problem = InputError(f"{video}: segment starts at frame {r.start_frame} but the video "
                                 f"has {probe['frames']} frames (label table row {i + 2})")
        if problem is not None:
            if on_missing == "skip":
                log.warning("skipping row %d: %s", i + 2, problem)
                skipped += 1
                continue
            raise problem
        end = int(r.end_frame)
        if probe["frames"] and end >= probe["frames"]:
            log.warning("%s: segment %d-%d runs past the last frame %d; truncated",
                        video, r.start_frame, end, probe["frames"] - 1)
            end = probe["frames"] - 1
        rows.append({
            "clip_id": f"{r.video_id}_{int(r.start_frame):06d}_{end:06d}",
            "video_id": r.video_id, "video": str(video),
            "start_frame": int(r.start_frame), "end_frame": end,
            "num_frames": end - int(r.start_frame) + 1,
            "label": index[r.label_id], "label_id": int(r.label_id), "class_name": r["class"],
            "subject_id": int(r.subject_id), "split": subjects[r.subject_id],
            "width": probe["width"], "height": probe["height"], "fps": probe["fps"],
        })
    manifest = pd.DataFrame(rows, columns=MANIFEST_COLUMNS)
    dup = manifest.clip_id[manifest.clip_id.duplicated()]
    if len(dup):
        raise InputError(f"{label_table}: segment {dup.iloc[0]} is labelled twice")
    if manifest.empty:
        raise InputError(f"{label_table}: no usable clips ({skipped} skipped)")
    for name in ("train", "val", "test"):
        if not (manifest.split == name).any():
            raise InputError(f"{split_file}: no clips in the {name} split")
    log.info("manifest: %d clips (%s), %d classes, %d skipped", len(manifest),
             ", ".join(f"{k} {v}" for k, v in manifest.split.value_counts().sort_index().items()),
             len(class_ids), skipped)
    names = table.drop_duplicates("label_id").set_index("label_id")["class"]
    classes = pd.DataFrame({"label": range(len(class_ids)), "label_id": class_ids,
                            "name": [names.get(c, str(c)) for c in class_ids]})
    return manifest, classes


def write_csv(frame: pd.DataFrame, path) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def read_manifest(path) -> pd.DataFrame:
    return pd.read_csv(path, dtype={"video_id": str, "clip_id": str})
