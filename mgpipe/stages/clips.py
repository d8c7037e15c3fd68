"""Stage 1: the clip manifest, one row per labelled segment, from a label table and a split.

Every later stage reads only this manifest, so this is where bad input is caught: missing or
unreadable videos, frame ranges past the end of a video, unknown subjects, ids that cannot be
used in paths. Nothing is trained before the manifest is whole.

Outputs (classes.csv: label = output index, label_id, name) are ordered by this rule:
- `classes` given (dataset.classes): exactly those ids, in that order; a row with another id is
  an error naming its file and row.
- `classes` null: the sorted label ids, taken from the table together with the ids the format
  always has (iMiGUE: 1..31 and 99, so class k -> output k-1 and 99 -> output 31 on any part of
  the table). Ids the format does not know get outputs of their own in that sorted order, are
  listed in the log, and are named by their id.
Names: `class_names` (dataset.class_names, one per output) if given, else the format's (iMiGUE's
public list, MA-52's label_name.txt, a CSV's class column), else the id. Two outputs never share
a name: an id named after another class gets "class <id>".

A skeleton pickle (kind pyskl) is a whole dataset: its annotations are the clips (frames
0..T-1), its labels the classes, `split_map` turns its split names into train/val/test.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from mgpipe.config import reads_frames
from mgpipe.io import InputError, atomic_path, read_csv_table
from mgpipe.sources.video import frames_within

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
MANIFEST_COLUMNS = [
    "clip_id", "video_id", "video", "start_frame", "end_frame", "num_frames", "label",
    "label_id", "class_name", "subject_id", "split", "width", "height", "fps",
]
# Read back as written: a video called NA or None is an id, not a missing value.
MANIFEST_TEXT_COLUMNS = ("clip_id", "video_id", "video", "class_name", "split")


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


def probe_video(path: Path, *, timestamps: bool = False) -> dict:
    """Frame count, size as players show it and rate of a video; with `timestamps` (or when the
    container lists no frame count) also "times", each frame's seconds from the first frame.

    Reads the header, decodes the first frame (its display matrix says how players turn it:
    mgpipe.sources.video) and, for times, demuxes the packets (no decoding). A variable frame rate is
    marked ("variable": True) and logged; its seconds map to frames by the times."""
    import av

    from mgpipe.sources.video import GRID_TOLERANCE, display_size, frame_times, off_grid, orientation

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise InputError(f"{path}: not a video (no video stream)")
            stream = container.streams.video[0]
            stream.codec_context.thread_count = 1   # one frame: a thread pool costs more than it
            frames = stream.frames
            rate = float(stream.average_rate or stream.guessed_rate or 25)
            first = next(container.decode(stream), None)
            if first is None:
                raise InputError(f"{path}: damaged or not a video (no frame decodes)")
            ops, turned = orientation(first, path)
            width, height = display_size(first.width, first.height, ops)
            probe = {"width": width, "height": height, "fps": rate, "frames": int(frames),
                     "rotated": turned, "variable": False}
        if timestamps or not frames:
            with av.open(str(path)) as container:   # afresh: demuxing starts at the first packet
                times = frame_times(container, container.streams.video[0])
            probe["times"] = times
            # a container without a frame count (mkv, webm, some mp4): count the packets
            probe["frames"] = int(frames or len(times))
            grid = off_grid(times, rate)
            probe["variable"] = grid > GRID_TOLERANCE
            if probe["variable"]:
                log.info("%s: variable frame rate (frame times up to %.2f frame periods off the "
                         "nominal %.3g fps): seconds map to frames by their timestamps",
                         path, grid, rate)
    except (av.error.FFmpegError, OSError) as e:
        if path.is_file() and path.stat().st_size == 0:
            raise InputError(f"{path}: not a video (empty file)") from None
        raise InputError(f"{path}: not a readable video ({type(e).__name__}: {e})") from None
    if turned:
        log.info("%s: %s (stored %dx%d, as players show it)", path, turned, width, height)
    return probe


def _row_split(labels, split_file, label_table, val_fraction, seed) -> pd.Series:
    """Split of every label row: its own (generic CSV, MA-52 lists), else its subject's (split
    file, the format's folders or default protocol). Validation subjects are held out of the
    training subjects when nobody is in val."""
    table = labels.table
    own = labels.row_splits().fillna("").astype(str)
    if (own == "").any():
        r = table[own == ""].iloc[0]
        raise InputError(f"{r.source_file}: row {r.source_row} has no split; give dataset.split "
                         "(a CSV subject_id,split) or a split column")
    if not (own == "val").any() and val_fraction > 0:
        train_subjects = pd.DataFrame({"subject_id": sorted(set(table.subject_id[own == "train"]))})
        train_subjects["split"] = "train"
        held = assign_validation(train_subjects, val_fraction, seed)
        val = set(held.subject_id[held.split == "val"])
        own = own.where(~((own == "train") & table.subject_id.isin(val)), "val")
    return own


def _output_classes(table, classes, class_names, kind, source):
    """(ids in output order, names) by the rule in the module docstring."""
    from mgpipe.sources.label_tables import FORMAT_CLASS_IDS, FORMAT_CLASS_NAMES

    if classes:
        class_ids = [int(c) for c in classes]
        unknown = sorted(set(table.label_id) - set(class_ids))
        if unknown:
            raise InputError(f"{source}: label id(s) {unknown} are not in the configured classes")
    else:
        known = FORMAT_CLASS_IDS.get(kind, ())
        class_ids = sorted(set(int(k) for k in table.label_id) | set(known))
        if known and set(class_ids) - set(known):
            extra = sorted(set(class_ids) - set(known))
            log.warning("%s: label id(s) %s are not %s classes: they get outputs of their own, "
                        "named by their id", source, extra, kind)
    # one name per id (rows that name no class carry the id itself): two names are ambiguous
    names: dict[int, str] = {}
    where: dict[int, str] = {}
    format_names = FORMAT_CLASS_NAMES.get(kind, {})
    for k, n, file, row in zip(table.label_id, table["class"].astype(str), table.source_file,
                               table.source_row):
        k = int(k)
        if n == str(k):
            continue
        if k in names and names[k] != n:
            raise InputError(f"{file}: row {row}: label id {k} is named {n!r}, but "
                             f"{names[k]!r} at {where[k]}")
        names.setdefault(k, n)
        where.setdefault(k, f"row {row}" if file == table.source_file.iloc[0] else f"{file} row {row}")
    if class_names is not None:
        if len(class_names) != len(class_ids):
            raise InputError(f"{source}: dataset.class_names has {len(class_names)} names for "
                             f"{len(class_ids)} outputs (label ids {class_ids})")
        names = [str(n) for n in class_names]
        if len(set(names)) != len(names):
            twice = next(n for n in names if names.count(n) > 1)
            raise InputError(f"{source}: dataset.class_names lists {twice!r} twice")
        return class_ids, names
    unnamed = [c for c in class_ids if names.get(c, format_names.get(c, str(c))) == str(c)]
    if unnamed and not classes:
        log.info("%s: label id(s) %s have no class name: named by their id", source, unnamed)
    out = [names.get(c, format_names.get(c, str(c))) for c in class_ids]
    for i, c in enumerate(class_ids):
        if out.count(out[i]) > 1 and out[i] == str(c):   # the id is another class's name
            out[i] = f"class {c}"
    if len(set(out)) != len(out):
        twice = next(n for n in out if out.count(n) > 1)
        ids = [c for c, n in zip(class_ids, out) if n == twice]
        first = table[table.label_id == ids[1]]
        at = f"{first.source_file.iloc[0]}: row {first.source_row.iloc[0]}" if len(first) else source
        raise InputError(f"{at}: class name {twice!r} is given to label ids {ids}")
    return class_ids, out


def skeleton_length(backend: str, skeletons, video_id: str, cache: dict) -> int | None:
    """Frames of a video's provided keypoints (pose-only mode has no video to probe)."""
    if backend == "openpose":
        from mgpipe.sources.skeleton_io import openpose_frame_numbers

        frames = openpose_frame_numbers(skeletons, video_id)
        return frames[-1] + 1 if frames else None
    if backend == "pickle":
        if "pickle" not in cache:
            from mgpipe.sources.skeleton_io import load_pickle_annotations

            cache["pickle"] = load_pickle_annotations(skeletons, cache["pickle_layout"])
        ann = cache["pickle"].get(video_id)
        return None if ann is None else int(ann["keypoint"].shape[1])
    return None


def _source_problem(video_id, video, *, use_videos, backend, skeletons, where, cache,
                    timestamps=False):
    """Probe a video once (or check its keypoints in pose-only mode); InputError or a probe dict.
    timestamps: read every frame's time (the label table gives seconds)."""
    try:
        probe = {"width": np.nan, "height": np.nan, "fps": np.nan, "frames": 0}
        if use_videos:
            if not video.is_file():
                raise InputError(f"{video}: video not found ({where})")
            probe = probe_video(video, timestamps=timestamps)
        if backend == "openpose" and skeletons is not None:
            folder = Path(skeletons) / video_id
            if not folder.is_dir():
                raise InputError(f"{folder}: keypoint folder of video {video_id} not found ({where})")
        if not use_videos and skeletons is not None:
            probe["frames"] = skeleton_length(backend, skeletons, video_id, cache) or 0
        return probe
    except InputError as e:
        return e


def build_manifest(label_table, split_file, videos_dir, config: dict, *, skeletons_dir=None):
    """The clips stage: (manifest, classes) from a label table (or the skeleton pickle, for
    dataset.kind pyskl), read with the validated config's dataset, seed, mode and pose settings.
    The demo's label table is in iMiGUE's layout, with the demo's own classes and names."""
    ds = config["dataset"]
    kind, classes = ds["kind"], ds["classes"]
    if kind == "demo":
        from mgpipe.tools.demo_data import CLASSES

        kind = "imigue"
        if classes is None:
            classes = dict(CLASSES)
    return _build_manifest(
        label_table, split_file, videos_dir, kind=kind, time_unit=ds["time_unit"], fps=ds["fps"],
        video_pattern=ds["video_pattern"], classes=classes, val_fraction=ds["val_fraction"],
        seed=config["seed"], on_missing=ds["on_missing"], skeletons_dir=skeletons_dir,
        multi_class_segments=ds["multi_class_segments"],
        mode=config["mode"], pose_backend=config["pose"]["backend"],
        pickle_layout=config["pose"]["pickle_layout"], subject_from=ds["subject_from"],
        class_names=ds["class_names"], split_map=ds["split_map"])


def _build_manifest(label_table, split_file, videos_dir, *, kind, time_unit, fps, video_pattern,
                    classes, val_fraction, seed, on_missing, skeletons_dir, mode, pose_backend,
                    pickle_layout, subject_from, class_names, split_map,
                    multi_class_segments="error"):
    """Return (manifest, classes): classes maps output index -> label_id and class name.

    mode "pose" (pose-only) reads no video: frame counts of whole-video clips come from the
    provided keypoints, seconds are turned into frames at `fps`, and the image size is left
    empty for the pose stage to fill. kind "pyskl" reads clips, labels and splits from the
    skeleton pickle `skeletons_dir` (no label table, no videos; see label_tables.read_pyskl).
    classes: ids in output order (or a dict id -> name); class_names: one name per output.
    pickle_layout: a layout name or definition (mgpipe.layouts). The manifest has no val split
    when the labels name no val subjects and val_fraction is 0.
    """
    labels, label_table, cache = _read_labels(
        label_table, split_file, kind=kind, time_unit=time_unit, classes=classes, skeletons_dir=skeletons_dir,
        mode=mode, pose_backend=pose_backend, pickle_layout=pickle_layout, subject_from=subject_from,
        split_map=split_map, multi_class_segments=multi_class_segments)
    use_videos = mode == "full" or reads_frames(pose_backend)
    if use_videos and videos_dir is None:
        raise InputError(f"{label_table}: a videos folder is needed unless mode is pose")
    split_of = _row_split(labels, split_file, label_table, val_fraction, seed)
    class_ids, class_names = _output_classes(labels.table, classes, class_names, kind, label_table)
    rows, skipped = _clip_rows(
        labels.table, split_of, class_ids, class_names, videos_dir, video_pattern=video_pattern,
        row_word="annotation" if kind == "pyskl" else "row", use_videos=use_videos, pose_backend=pose_backend,
        skeletons_dir=skeletons_dir, cache=cache, fps=fps, on_missing=on_missing)
    manifest = pd.DataFrame(rows, columns=MANIFEST_COLUMNS)
    # a segment of several classes (dataset.multi_class_segments: each): one clip per class
    shared = manifest.clip_id.duplicated(keep=False)
    manifest.loc[shared, "clip_id"] += "_c" + manifest.label_id[shared].astype(str)
    _check_clips(manifest, label_table, split_file, val_fraction, skipped)
    log.info("manifest: %d clips (%s), %d classes, %d skipped%s", len(manifest),
             ", ".join(f"{k} {v}" for k, v in manifest.split.value_counts().sort_index().items()),
             len(class_ids), skipped, "" if use_videos else " (pose-only: no videos read)")
    classes = pd.DataFrame({"label": range(len(class_ids)), "label_id": class_ids,
                            "name": class_names})
    return manifest, classes


def _read_labels(label_table, split_file, *, kind, time_unit, classes, skeletons_dir, mode, pose_backend,
                 pickle_layout, subject_from, split_map, multi_class_segments):
    """(labels, the file they were read from, the probe cache): a label table, or for kind
    pyskl the skeleton pickle itself (its loaded contents kept in the cache for the probes)."""
    from mgpipe.sources.label_tables import read_labels, read_pyskl

    cache = {"pickle_layout": pickle_layout}
    if kind == "pyskl":
        if mode != "pose" or pose_backend != "pickle":
            raise InputError(f"{skeletons_dir}: dataset.kind pyskl has keypoints and no videos: "
                             "use mode: pose and pose.backend: pickle")
        if skeletons_dir is None:
            raise InputError("dataset.kind pyskl reads the skeleton pickle dataset.skeletons, "
                             "which is not set")
        labels, cache["pickle"] = read_pyskl(skeletons_dir, layout=pickle_layout,
                                             split_map=split_map, subject_from=subject_from,
                                             classes=classes)
        label_table = skeletons_dir
    else:
        if split_map is not None:
            raise InputError(f"{label_table}: dataset.split_map applies to kind pyskl only")
        labels = read_labels(kind, label_table, split=split_file, time_unit=time_unit,
                             classes=classes, subject_from=subject_from,
                             multi_class_segments=multi_class_segments)
    labels.table = labels.table.reset_index(drop=True)
    return labels, label_table, cache


def _clip_rows(table, split_of, class_ids, class_names, videos_dir, *, video_pattern, row_word, use_videos,
               pose_backend, skeletons_dir, cache, fps, on_missing) -> tuple[list[dict], int]:
    """(one manifest row per label row, rows skipped): each video probed once (its frame count
    and size, or the problem with it), each segment turned into its frame range. A problem
    ends the stage in one line, or skips the row with on_missing "skip"."""
    index = {c: i for i, c in enumerate(class_ids)}
    name_of = dict(zip(class_ids, class_names))
    rows, skipped = [], 0
    probes: dict[str, dict | InputError] = {}
    in_seconds = _in_seconds(table)
    for i, r in table.iterrows():
        name = video_pattern.format(video_id=r.video_id, split=split_of[i])
        video = Path(videos_dir) / name if videos_dir else Path(r.video_id)
        where = f"label table {r.source_file}, {row_word} {r.source_row}"
        if r.video_id not in probes:
            probes[r.video_id] = _source_problem(
                r.video_id, video, use_videos=use_videos, backend=pose_backend,
                skeletons=skeletons_dir, where=where, cache=cache,
                timestamps=bool(in_seconds[table.video_id == r.video_id].any()))
        probe = probes[r.video_id]
        problem = probe if isinstance(probe, InputError) else None
        if problem is None:
            start, end, problem = _frame_range(r, probe, fps, video, where)
        if problem is not None:
            if on_missing == "skip":
                log.warning("skipping row %s: %s", r.source_row, problem)
                skipped += 1
                continue
            raise problem
        rows.append({
            "clip_id": f"{r.video_id}_{start:06d}_{end:06d}",
            "video_id": r.video_id, "video": str(video) if use_videos else "",
            "start_frame": start, "end_frame": end, "num_frames": end - start + 1,
            "label": index[r.label_id], "label_id": int(r.label_id), "class_name": name_of[r.label_id],
            "subject_id": int(r.subject_id), "split": split_of[i],
            "width": probe["width"], "height": probe["height"],
            "fps": probe["fps"] if use_videos else fps,
        })
    return rows, skipped


def _check_clips(manifest: pd.DataFrame, label_table, split_file, val_fraction, skipped: int) -> None:
    """One line for a manifest no model can train on: a segment labelled twice, no clips, or a
    split without clips (no val split is allowed with val_fraction 0)."""
    dup = manifest.clip_id[manifest.clip_id.duplicated()]
    if len(dup):
        raise InputError(f"{label_table}: segment {dup.iloc[0]} is labelled twice")
    if manifest.empty:
        raise InputError(f"{label_table}: no usable clips ({skipped} skipped)")
    for name in ("train", "val", "test"):
        if not (manifest.split == name).any():
            if name == "val" and val_fraction <= 0:
                log.info("no val split (val_fraction 0 and no val subjects): models train "
                         "without validation")
                continue
            hint = (": only one training subject, none to hold out (set dataset.val_fraction: 0 "
                    "to train without validation)" if name == "val" else "")
            raise InputError(f"{split_file or label_table}: no clips in the {name} split{hint}")


def _in_seconds(table: pd.DataFrame) -> pd.Series:
    """Rows whose segment is given in seconds (a start time and no start frame)."""
    if "start_time" not in table:
        return pd.Series(False, index=table.index)
    start_frame = table["start_frame"] if "start_frame" in table else pd.Series(pd.NA, index=table.index)
    return table.start_time.notna() & (start_frame.isna() | (start_frame < 0)).fillna(True).astype(bool)


def _frame_range(r, probe, fps, video, where):
    """(start, end, problem) in frames for a label row: seconds converted with the video's rate
    (a variable-rate video: the frames whose timestamps lie in the segment), end -1 = the last
    frame, ends past the video truncated with a warning."""
    rate = probe["fps"] if probe["fps"] == probe["fps"] else fps  # NaN in pose-only mode
    total = int(probe["frames"] or 0)
    if pd.notna(r.get("start_time")) and (pd.isna(r.get("start_frame")) or r.get("start_frame") < 0):
        if probe.get("variable"):
            times = probe["times"]
            inside = frames_within(times, r.start_time, r.end_time)
            if inside is None:
                return 0, 0, InputError(
                    f"{video}: no frame lies in the segment {r.start_time:g}-{r.end_time:g} s "
                    f"(frames at {times[0]:g}-{times[-1]:g} s, variable frame rate) ({where})")
            start, end = inside
        else:
            start, end = int(round(r.start_time * rate)), int(round(r.end_time * rate))
    else:
        start, end = int(r.start_frame), int(r.end_frame)
    if end == -1:
        if not total:
            return 0, 0, InputError(f"{video}: number of frames unknown for a whole-video clip ({where})")
        end = total - 1
    if total and start >= total:
        return 0, 0, InputError(f"{video}: segment starts at frame {start} but the video has "
                                f"{total} frames ({where})")
    if total and end >= total:
        log.warning("%s: segment %d-%d runs past the last frame %d; truncated", video, start, end, total - 1)
        end = total - 1
    return start, end, None


def write_csv(frame: pd.DataFrame, path) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def read_manifest(path) -> pd.DataFrame:
    return read_csv_table(path, MANIFEST_TEXT_COLUMNS, "clip manifest")

