"""Label importers: the annotation files of each dataset users bring -> one canonical label table.

Pure parsing (no video access). `read_labels(kind, path, ...)` returns a `LabelSet` whose table has
one row per labelled segment in the columns of `COLUMNS` plus `SOURCE_COLUMNS` (the file and line it
came from, so later messages can point there); the clip stage turns it into the manifest.

Formats, as found in the public material (repository + path), and what is accepted here
-------------------------------------------------------------------------------------------
iMiGUE ("imigue")
  * Label table CSV with a header: video_id, label_id, start_time, start_frame, end_time, end_frame,
    class, subject_id, subject_gender, subject_nationality, win_or_lose (linuxsino/iMiGUE:
    Label/labels_20200831.csv). `class` is the micro-gesture class id (1..31, 99 for the
    non-micro-gesture class); `label_id` is only the running number of the segment within its
    video and is not read. start_frame/end_frame are integers at 25 fps, start_time/end_time
    decimal seconds (6.8553); the frames are used when the table has them, else the seconds
    (clock strings such as 00:01:02.120 are read too). The split is a separate CSV
    (subject_id, split); the official cross-subject protocol has 37 training and 35 test
    subjects (no validation subjects: the clip stage carves them out of train).
  * The MiGA challenge skeleton release: one folder per video, `<id>/<id>_label.csv`, no header,
    rows `label,start,end` with 0-based frames, under imigue_skeleton_train/ and
    imigue_skeleton_validate/ (mikecheninoulu/SMG: classification/iMiGUE/stgcn_imigue/tools/
    imigue_gendata.py and iMiGUEaccessSample.py, which also maps 99 -> 32 -> index 31). That layout
    names no subject, so each video becomes its own subject unless `subject_from` says otherwise.
  * Classes 1..31 and 99, named by IMIGUE_CLASS_NAMES: the public list of VUT-HFUT/MiGA2023_Track1
    (tools/glove/english_label.txt, indexes 0..31; class k -> index k-1, 99 -> index 31, the
    non-micro-gesture class "illustrative"). Without configured classes an iMiGUE run always has
    these 32 outputs in sorted id order (so 99 is the last), whichever classes the table holds.
SMG ("smg")
  * One folder per recording, `SampleNNNN/SampleNNNN_finelabels.csv`, no header, rows
    `label,start_frame,end_frame`, labels 1..17 (mikecheninoulu/SMG: classification/SMG/1_st-gcn_smg/
    tools/smg_gendata.py reads them with csv.reader and uses label-1; config/st_gcn/smg/train.yaml
    has num_class 17; online recognition/SMG/SMGaccessSample.py reads the same file). Beside it:
    SampleNNNN_data.csv (frames, fps, depth) and SampleNNNN_skeleton.csv, ignored here.
    40 recordings from 40 participants, so NNNN is the subject id.
  * The paper describes 16 micro-gesture classes plus one non-micro-gesture class; no file found
    names the classes or says which id is the non-MG one, so `class` is the id as text unless a
    `classes` mapping gives names.
  * Frame ranges: smg_gendata.py reads frames [start, end) and the iMiGUE reader [start, end]; the
    end is taken as inclusive here (at most one extra frame; the clip stage clips to the video).
  * Splits: the authors' classification code tests on subjects 36-40 and trains on the rest
    (`SMG_TEST_SUBJECTS`, used when nothing else gives a split). MiGA redistributed the files under
    split folders (smg_data_phase1/smg_skeleton_validate/Sample0031/..., seen in third-party code
    that reads SampleNNNN_color.mp4 videos beside them); a train/validate/test token in the name of
    a folder below the given root gives the split.
MA-52 ("ma52")
  * mmaction2 video lists, one per split: train_list_videos.txt, val_list_videos.txt,
    test_list_videos.txt, no header, `<file> <label>` separated by a space, labels 0..51
    (VUT-HFUT/Micro-Action: mar_scripts/manet/mmaction2/data/ma52/*_list_videos.txt; the same names
    in kunli-cs/MAC20205_starter_kit MAR/mmaction2/data/ma52/, videos under videos_{split}/, and in
    third-party code under MA-52/annotations/). Names are `<participant:4>_<body part:2>_<n:4>.mp4`
    (e.g. 0003_01_0001.mp4 9): the first field is the participant, the middle one the body-part
    label 0..6, which agrees with the official fine->coarse ranges (online_evaluation/eval.py).
  * label_name.txt: `<id>\\t<name>` for the 52 classes (same folder in that repository); read when
    present beside the lists.
  * The public test list names videos test0000.mp4... with every label 0: the test labels are
    withheld (challenge server), and no participant is known for them.
  * The official split is not subject-wise: the same participant appears in train and val lists,
    so LabelSet.split is None and the per-row split is the protocol.
Generic CSV ("csv")
  * Columns video, start, end, label, subject and optionally split and class (video_id, label_id,
    subject_id, class_name are accepted as aliases); comma, tab or semicolon separated; extra
    columns ignored. `time_unit` says whether start/end are frames or seconds (seconds may also be
    written [HH:]MM:SS.fff). Without a split column a split file must be given.
Skeleton pickle ("pyskl", read by `read_pyskl`)
  * A pyskl / MMAction2 skeleton pickle is a whole dataset: {'split': {name: [frame_dir, ...]},
    'annotations': [{frame_dir, label, img_shape, total_frames, keypoint [M, T, V, 2],
    keypoint_score [M, T, V]}]} (kennymckormick/pyskl: tools/data/README.md). Each annotation is
    one trimmed clip (frames 0..T-1) of class `label`; `split_map` maps the pickle's split names
    to train/val/test (pyskl's NTU pickles, and pickles made like them, call their test set
    xsub_val, so nothing is guessed: only names that already are train/val/test map to
    themselves). Clips in no mapped split are left out.
    Subjects: `subject_from`, a regular expression with one group over frame_dir (KARD's
    a01_s03_e02: "_s(\\d+)_"), else each clip is its own subject.

Identifiers that end up in paths and HDF5 group names (video ids, and so clip ids; pickle
frame_dirs) must not be empty, '.', '..', contain '/' or '\\' or a control character: such a row
is an error naming its file and row.

Class ids are integers; the model's outputs are the configured `classes` in their order, else
the sorted ids of the table and of the format's own class list (see mgpipe.stages.clips). Names come
from the format (iMiGUE's list, MA-52's label_name.txt, a CSV's class column), else the id
itself is the name.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from mgpipe.io import InputError, id_problem, read_regular_file
from mgpipe.sources.skeleton_io import read_pickle_dataset

log = logging.getLogger(__name__)

KINDS = ("imigue", "smg", "ma52", "csv")
COLUMNS = ["video_id", "label_id", "class", "subject_id", "start_frame", "end_frame",
           "start_time", "end_time", "split"]
SOURCE_COLUMNS = ["source_file", "source_row"]   # where each row was read, for later messages
SPLITS = ("train", "val", "test")
_SPLIT_ALIASES = {"training": "train", "valid": "val", "validate": "val", "validation": "val",
                  "testing": "test"}

IMIGUE_CLASS_IDS = tuple(range(1, 32)) + (99,)
# Output index i (class IMIGUE_CLASS_IDS[i]) -> name, from VUT-HFUT/MiGA2023_Track1
# tools/glove/english_label.txt (spelling as published there).
IMIGUE_CLASS_NAMES = (
    "turtle neck", "deep breath", "touch hat", "touch face", "touch forehead", "cover face",
    "rub eyes", "touch other face part", "touch ears", "bite nails", "touch chin", "touch neck",
    "play hair", "adjust tie", "touch chest", "scratch back", "fold arm", "tidy sleeve",
    "put arm back", "move torso", "sit straight", "scratch arm", "rub hand", "cross finger",
    "minaret hand", "play things", "withdraw arms", "head up", "bit lip", "arm akimbo",
    "shake shoulder", "illustrative",
)
IMIGUE_NAMES = dict(zip(IMIGUE_CLASS_IDS, IMIGUE_CLASS_NAMES))
# The class ids a format always has outputs for when no classes are configured, and their names.
FORMAT_CLASS_IDS = {"imigue": IMIGUE_CLASS_IDS}
FORMAT_CLASS_NAMES = {"imigue": IMIGUE_NAMES}
SMG_TEST_SUBJECTS = (36, 37, 38, 39, 40)
MA52_BODY_PARTS = ("body", "head", "upper limb", "lower limb", "body-hand", "head-hand", "leg-hand")
_MA52_BODY_FIRST = np.array([0, 5, 11, 24, 32, 38, 48])   # first fine label of each body part
_MA52_NAME = r"^(\d+)_\d+_\d+$"
_SMG_NAME = r"^Sample(\d+)$"

# Videos without a known subject get ids from here up, far from real subject numbers.
SYNTHETIC_SUBJECT_BASE = 1_000_000
def ma52_body_part(label_id):
    """MA-52 fine label(s) 0..51 -> body-part label(s) 0..6 (index into MA52_BODY_PARTS)."""
    return np.searchsorted(_MA52_BODY_FIRST, label_id, side="right") - 1


@dataclass
class LabelSet:
    """`table`: one row per segment, columns COLUMNS + SOURCE_COLUMNS (start/end_frame nullable
    Int64, end_frame -1 = to the last frame; start/end_time instead of frames when the source gives
    seconds; split "" where the source gives no per-row split). `split`: per-subject split
    (subject_id, split) from the split file, the format's folders or its default protocol; None
    when subjects straddle splits (MA-52) or nothing gives one."""

    table: pd.DataFrame
    split: pd.DataFrame | None = None
    kind: str = ""

    def row_splits(self) -> pd.Series:
        """The split of every row: its own where the source gives one, else its subject's ("" if
        neither is known; the caller decides whether that is an error)."""
        own = self.table["split"]
        if self.split is None:
            return own
        of_subject = self.table.subject_id.map(dict(zip(self.split.subject_id, self.split.split)))
        return own.where(own != "", of_subject.fillna(""))


def read_labels(kind: str, path, *, split=None, time_unit="frames", classes=None,
                subject_from=None, multi_class_segments="error") -> LabelSet:
    """Read one dataset's annotations (a file, or the folder holding them) into a LabelSet.

    split         path of a per-subject split CSV (subject_id, split), for rows without their own.
    time_unit     "frames" or "seconds": the unit of start/end in a generic CSV.
    classes       label ids the model has outputs for: a list, or a dict id -> name whose names
                  fill in the formats that have none.
    subject_from  "video" (each video its own subject), a column name, or a regular expression
                  with one (group) matched against the video file name; None: the format's own.
    """
    if kind == "pyskl":
        raise InputError(f"{path}: kind pyskl is a skeleton pickle, not a label table (read_pyskl)")
    if kind not in KINDS:
        raise InputError(f"unknown dataset kind {kind!r} (use {', '.join(KINDS)})")
    if time_unit not in ("frames", "seconds"):
        raise InputError(f"time_unit {time_unit!r}: use frames or seconds")
    if time_unit != "frames" and kind != "csv":
        raise InputError(f"time_unit {time_unit!r} applies to kind csv only; {kind} gives frames")
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: {kind} annotations not found")
    reader = {"imigue": _read_imigue, "smg": _read_smg, "ma52": _read_ma52, "csv": _read_generic}[kind]
    table, fallback = reader(path, time_unit=time_unit, subject_from=subject_from)
    if table.empty:
        raise InputError(f"{path}: no labelled segments")
    names = {int(k): str(v) for k, v in classes.items()} if isinstance(classes, dict) else {}
    class_ids = None if classes is None else [int(k) for k in classes]
    named = table.label_id.isin(names)   # configured names win over the format's
    table.loc[named, "class"] = table.label_id[named].map(names)
    _check_segments(table, class_ids, multi_class_segments)

    if split is not None:
        subjects = read_split_file(split)
        _first_bad(table, (table.split == "") & ~table.subject_id.isin(set(subjects.subject_id)),
                   lambda r: f"subject {r['subject_id']} has no split in {split}")
    else:
        subjects = _subject_split(table, path, fallback)
    labels = LabelSet(table, subjects, kind)
    _check_leak(table.assign(split=labels.row_splits()))
    labels.table = table.rename(columns={"_file": "source_file", "_row": "source_row"})[
        COLUMNS + SOURCE_COLUMNS].reset_index(drop=True)
    log.info("%s (%s): %d segments, %d videos, %d subjects, %d classes", path, kind, len(table),
             table.video_id.nunique(), table.subject_id.nunique(), table.label_id.nunique())
    return labels


def read_pyskl(path, *, layout="coco17", split_map=None, subject_from=None, classes=None):
    """A pyskl / MMAction2 skeleton pickle as a dataset: (LabelSet, annotations).

    One row per annotation in a mapped split: video_id = frame_dir, frames 0..T-1, class `label`
    (named by `classes` when a dict, else the id), split from `split_map` {pickle split name:
    train/val/test} (None: only names that already are train/val/test), subject from
    `subject_from` (a regular expression with one group over frame_dir) or one per clip.
    source_row is the annotation's index in the pickle. `annotations` is {frame_dir: checked
    annotation} (keypoints [M, T, V, 3] in `layout`, label, width, height) for the pose stage.
    """
    path = Path(path)
    splits, annotations, index = read_pickle_dataset(path, layout)
    if split_map is None:
        split_map = {n: _SPLIT_ALIASES.get(n.lower(), n.lower()) for n in splits
                     if _SPLIT_ALIASES.get(n.lower(), n.lower()) in SPLITS}
        if not split_map:
            raise InputError(f"{path}: none of the pickle's splits {sorted(splits)} is named train, "
                             "val or test; map them with dataset.split_map (e.g. {xsub_train: "
                             "train, xsub_val: test})")
    unknown = sorted(set(split_map) - set(splits))
    if unknown:
        raise InputError(f"{path}: dataset.split_map names split(s) {unknown} that the pickle "
                         f"lacks; it has {sorted(splits)}")
    bad = {k: v for k, v in split_map.items() if v not in SPLITS}
    if bad:
        raise InputError(f"{path}: dataset.split_map maps {bad}: use train, val or test")
    split_of: dict[str, str] = {}
    for name, target in split_map.items():
        for cid in splits[name]:
            if cid in split_of and split_of[cid] != target:
                raise InputError(f"{path}: clip {cid!r} is in {target} (split {name}) and in "
                                 f"{split_of[cid]}: dataset.split_map mixes two protocols?")
            split_of[cid] = target
    missing = sorted(set(split_of) - set(annotations))
    if missing:
        raise InputError(f"{path}: split lists {missing[0]!r} ({len(missing)} id(s) in all) "
                         "that has no annotation")
    kept = [cid for cid in annotations if cid in split_of]
    left_out = len(annotations) - len(kept)
    if left_out:
        log.info("%s: %d of %d annotations are in no mapped split and are left out", path,
                 left_out, len(annotations))
    if not kept:
        raise InputError(f"{path}: no annotation is in the mapped splits {sorted(split_map)}")
    raw = pd.DataFrame({"video": kept, "_file": str(path), "_row": [index[c] for c in kept]})
    names = {int(k): str(v) for k, v in classes.items()} if isinstance(classes, dict) else {}
    t = raw[["_file", "_row"]].copy()
    t["video_id"] = raw.video
    t["label_id"] = np.array([annotations[c]["label"] for c in kept], dtype=np.int64)
    _first_bad(t, t.label_id < 0, lambda r: f"frame_dir {r['video_id']!r}: label "
               f"{r['label_id']} is negative", word="annotation")
    t["class"] = t.label_id.map(lambda k: names.get(k, str(k)))
    t["subject_id"] = _subjects(raw, subject_from or "video", raw.video)
    t["start_frame"] = pd.array([0] * len(t), "Int64")
    t["end_frame"] = pd.array([annotations[c]["keypoint"].shape[1] - 1 for c in kept], "Int64")
    t["start_time"] = t["end_time"] = np.nan
    t["split"] = [split_of[c] for c in kept]
    if classes is not None:
        ids = [int(k) for k in classes]
        _first_bad(t, ~t.label_id.isin(ids), lambda r: f"frame_dir {r['video_id']!r}: label "
                   f"{r['label_id']} is not among the configured classes", word="annotation")
    subjects = _subject_split(t, path, None)
    labels = LabelSet(t, subjects, "pyskl")
    _check_leak(t, word="annotation")
    labels.table = t.rename(columns={"_file": "source_file", "_row": "source_row"})[
        COLUMNS + SOURCE_COLUMNS].reset_index(drop=True)
    log.info("%s (pyskl): %d clips (%s), %d subjects, %d classes", path, len(t), ", ".join(
        f"{k} {v}" for k, v in t.split.value_counts().sort_index().items()),
        t.subject_id.nunique(), t.label_id.nunique())
    return labels, {c: annotations[c] for c in kept}


def read_split_file(path) -> pd.DataFrame:
    """A per-subject split CSV (subject_id, split) -> DataFrame(subject_id, split)."""
    raw = _read_csv(path, "split file")
    cols = {c.lower(): c for c in raw.columns}
    subject, name = cols.get("subject_id") or cols.get("subject"), cols.get("split")
    if not (subject and name):
        raise InputError(f"{path}: row 1 (header) needs columns subject_id, split")
    out = pd.DataFrame({"subject_id": _integers(raw, subject), "split": _splits(raw, name)})
    _first_bad(raw, out.split == "", lambda r: "no split given", column=name)
    seen: dict[int, str] = {}
    for s, part, row in zip(out.subject_id, out.split, raw["_row"]):
        if s in seen:
            problem = "is listed twice" if seen[s] == part else f"is in both {seen[s]} and {part}"
            raise InputError(f"{path}: row {row}: subject {s} {problem}")
        seen[s] = part
    return out.reset_index(drop=True)


# --- readers: each returns (canonical table with _file/_row, fallback per-subject split) ---------

def _read_imigue(path: Path, *, time_unit, subject_from):
    if path.is_dir():
        table = _read_sample_folders(path, "_label.csv", subject_from or "video")
    else:
        raw = _read_csv(path, "label table")
        frames = {"start_frame", "end_frame"} <= set(raw.columns)
        half = {"start_frame", "end_frame"} & set(raw.columns)
        if half and not frames:   # half a frame range: not silently replaced by the seconds
            (have,) = half
            _need_columns(raw, path, [{"start_frame": "end_frame", "end_frame": "start_frame"}[have]])
        need = ["video_id", "class"] + ([] if frames else ["start_time", "end_time"])
        if subject_from is None:
            need.append("subject_id")
        _need_columns(raw, path, need)
        # `class` is the class id; label_id only numbers the segments of a video.
        cols = {"video": "video_id", "label": "class",
                "start": "start_frame" if frames else "start_time",
                "end": "end_frame" if frames else "end_time",
                "split": "split" if "split" in raw.columns else None}
        table = _canonical(raw, cols, unit="frames" if frames else "seconds",
                           subject=subject_from or "subject_id")
        if frames:   # the seconds beside the frames are informative only
            for col in ("start_time", "end_time"):
                if col in raw.columns:
                    table[col] = raw[col].map(_seconds)
    table["class"] = table.label_id.map(lambda k: IMIGUE_NAMES.get(k, str(k)))
    return table, None


def _read_smg(path: Path, *, time_unit, subject_from):
    table = _read_sample_folders(path, "_finelabels.csv", subject_from or _SMG_NAME)
    fallback = pd.DataFrame({"subject_id": sorted(table.subject_id.unique())})
    fallback["split"] = np.where(fallback.subject_id.isin(SMG_TEST_SUBJECTS), "test", "train")
    return table, fallback


def _read_sample_folders(root: Path, suffix: str, subject_from) -> pd.DataFrame:
    """The SMG / MiGA layout: <split folder>/<id>/<id><suffix>, rows label,start,end (no header)."""
    files = sorted(root.rglob(f"*{suffix}")) if root.is_dir() else [root]
    if not files:
        raise InputError(f"{root}: no *{suffix} files found (expected <id>/<id>{suffix})")
    parts = []
    for f in files:
        if not read_regular_file(f, "label file").decode("utf-8", "replace").strip():   # a recording
            # may have no gesture at all (read_regular_file: a name linked to /dev/zero is refused)
            log.warning("%s: empty label file skipped", f)
            continue
        rows = _read_lines(f, sep=",")
        bad = [r for r in rows if len(r[1]) != 3]
        if bad:
            raise InputError(f"{f}: row {bad[0][0]}: expected 3 fields label,start,end, "
                             f"found {len(bad[0][1])}")
        # only folders inside the dataset: a root called e.g. smg_test_copy names no split
        token = _split_token(f.relative_to(root).parts[:-1]) if root.is_dir() else ""
        video = f.name[:-len(suffix)] if f.name.endswith(suffix) else f.stem
        parts.append(pd.DataFrame({"label": [r[1][0] for r in rows], "start": [r[1][1] for r in rows],
                                   "end": [r[1][2] for r in rows], "video": video, "split": token,
                                   "_file": str(f), "_row": [r[0] for r in rows]}))
    if not parts:
        raise InputError(f"{root}: every *{suffix} file is empty: no labelled segments")
    raw = pd.concat(parts, ignore_index=True)
    cols = {"video": "video", "label": "label", "start": "start", "end": "end", "split": "split"}
    return _canonical(raw, cols, unit="frames", subject=subject_from)


def _read_ma52(path: Path, *, time_unit, subject_from):
    if path.is_dir():
        lists = [(s, d / f"{s}_list_videos.txt") for s in SPLITS for d in (path, path / "annotations")]
        lists = [(s, f) for s, f in lists if f.is_file()]
        if not lists:
            raise InputError(f"{path}: no train/val/test_list_videos.txt (MA-52 lists) found here "
                             f"or in {path / 'annotations'}")
    else:
        lists = [(_split_token([path.stem]), path)]
    parts = []
    for split, f in lists:
        rows = _read_lines(f)
        for line, fields in rows:
            if len(fields) != 2:
                problem = ("no label" if len(fields) < 2
                           else "more than one label (multi-label lists are not supported)")
                raise InputError(f"{f}: row {line}: {problem}")
        labels = [r[1][1] for r in rows]
        if len(rows) >= 20 and len(set(labels)) == 1:   # the public test list: 0 everywhere
            log.warning("%s: all %d labels are %s: placeholders? (MA-52's public test list withholds "
                        "its labels; scores on it mean nothing)", f, len(rows), labels[0])
        parts.append(pd.DataFrame({"video": [str(PurePosixPath(r[1][0]).with_suffix("")) for r in rows],
                                   "label": labels, "split": split, "_file": str(f),
                                   "_row": [r[0] for r in rows]}))
    raw = pd.concat(parts, ignore_index=True)
    names_file = next((f.parent / "label_name.txt" for _, f in lists
                       if (f.parent / "label_name.txt").is_file()), None)
    raw["class"] = raw.label.map(_label_names(names_file)).fillna(raw.label) if names_file else raw.label
    table = _canonical(raw, {"video": "video", "label": "label", "split": "split", "class": "class"},
                       unit="clip", subject=subject_from or _MA52_NAME)
    parsed = table.video_id.map(lambda v: PurePosixPath(v).name).str.extract(r"^\d+_(\d+)_\d+$")[0]
    named = parsed.notna()
    off = named & (pd.to_numeric(parsed, errors="coerce") != ma52_body_part(table.label_id))
    if off.any():
        r = table[off].iloc[0]
        log.warning("%s: %d video(s) whose name's body-part field disagrees with the label "
                    "(first: row %d, %s label %d): label numbering off by one?",
                    r["_file"], int(off.sum()), r["_row"], r["video_id"], r["label_id"])
    return table, None


def _read_generic(path: Path, *, time_unit, subject_from):
    raw = _read_csv(path, "label CSV")
    lower = {c.lower(): c for c in raw.columns}
    aliases = {"video": ("video", "video_id"), "start": ("start",), "end": ("end",),
               "label": ("label", "label_id"), "subject": ("subject", "subject_id"),
               "split": ("split",), "class": ("class", "class_name")}
    cols = {role: next((lower[a] for a in names if a in lower), None) for role, names in aliases.items()}
    required = ["video", "start", "end", "label"] + ([] if subject_from else ["subject"])
    missing = [role for role in required if cols[role] is None]
    if missing:
        raise InputError(f"{path}: row 1 (header) lacks column(s) {', '.join(missing)}")
    return _canonical(raw, cols, unit=time_unit, subject=subject_from or cols["subject"]), None


# --- shared parsing -------------------------------------------------------------------------------

def _canonical(raw: pd.DataFrame, cols: dict, *, unit: str, subject) -> pd.DataFrame:
    """Source strings (+ _file, _row) -> canonical columns, every value checked with its row."""
    t = raw[["_file", "_row"]].copy()
    t["video_id"] = raw[cols["video"]].astype(str).str.strip()
    _first_bad(t, t.video_id == "", lambda r: "no video name", column=cols["video"])
    _first_bad(t, t.video_id.map(id_problem).notna(),
               lambda r: f"video {id_problem(r['video_id'])}", column=cols["video"])
    t["label_id"] = _integers(raw, cols["label"])
    t["class"] = t.label_id.astype(str)
    if cols.get("class"):
        named = raw[cols["class"]].astype(str).str.strip()
        t["class"] = named.where(named != "", t["class"])
    t["subject_id"] = _subjects(raw, subject, t.video_id)
    if unit == "clip":   # trimmed clips: the whole video is the segment
        t["start_frame"], t["end_frame"] = pd.array([0] * len(t), "Int64"), pd.array([-1] * len(t), "Int64")
        t["start_time"] = t["end_time"] = np.nan
    elif unit == "frames":
        start, end = _integers(raw, cols["start"]), _integers(raw, cols["end"])
        _first_bad(t, start < 0, lambda r: "negative start frame", column=cols["start"])
        _first_bad(t, (end < start) & (end != -1), lambda r: "end < start", column=cols["end"])
        t["start_frame"], t["end_frame"] = start.astype("Int64"), end.astype("Int64")
        t["start_time"] = t["end_time"] = np.nan
    else:
        start, end = (_clock(raw, cols[k]) for k in ("start", "end"))
        _first_bad(t, start < 0, lambda r: "negative start time", column=cols["start"])
        _first_bad(t, end < start, lambda r: "end < start", column=cols["end"])
        t["start_frame"] = t["end_frame"] = pd.array([pd.NA] * len(t), "Int64")
        t["start_time"], t["end_time"] = start, end
    t["split"] = _splits(raw, cols.get("split"))
    return t


def _check_segments(table: pd.DataFrame, classes, multi_class_segments: str = "error") -> None:
    if classes is not None:
        _first_bad(table, ~table.label_id.isin(classes),
                   lambda r: f"label id {r['label_id']} is not among the configured classes")
    frames = "frames " + table.start_frame.astype(str) + "-" + table.end_frame.astype(str)
    span = np.where(table.start_frame.isna(),
                    table.start_time.astype(str) + "-" + table.end_time.astype(str) + " s",
                    np.where(((table.start_frame == 0) & (table.end_frame == -1)).fillna(False),
                             "(whole video)", frames))
    key = table.video_id + " " + pd.Series(span, index=table.index)
    first = table[~key.duplicated()].set_index(key[~key.duplicated()])

    def twice(r, why=""):
        return "segment {} is labelled twice (first at {} row {}){}".format(
            key[r.name], first["_file"][key[r.name]], first["_row"][key[r.name]], why)

    # The same class twice is a copied row; two classes may be a segment that shows two gestures
    # (iMiGUE's real table has 16): one sample per class where the config says so.
    same_class = pd.DataFrame({"key": key, "label": table.label_id}).duplicated()
    _first_bad(table, same_class, lambda r: twice(r, " with the same class"))
    if multi_class_segments != "each":
        _first_bad(table, key.duplicated(), lambda r: twice(
            r, ", with another class: set dataset.multi_class_segments: each to make each class "
               "a sample of its own"))
    elif key.duplicated().any():
        log.info("%d segment(s) carry two or more classes: each class is a sample of its own",
                 int(key[key.duplicated(keep=False)].nunique()))


def _check_leak(table: pd.DataFrame, word: str = "row") -> None:
    """A subject seen in training must not be tested on (validation may share, as in MA-52)."""
    train = table[table.split == "train"].drop_duplicates("subject_id").set_index("subject_id")
    clash = (table.split == "test") & table.subject_id.isin(train.index)
    _first_bad(table, clash, lambda r: "subject {} is in both train ({} {} {}) and test".format(
        r["subject_id"], train["_file"][r["subject_id"]], word, train["_row"][r["subject_id"]]),
        word=word)


def _subject_split(table: pd.DataFrame, path: Path, fallback):
    """Per-subject split from the per-row splits when every row has one and each subject a single
    one; else the format's default protocol when no row has a split; else None."""
    if (table.split == "").all():
        if fallback is not None:
            log.info("%s: no split given; the dataset's default protocol is used (%s)", path, ", ".join(
                f"{k} {v} subjects" for k, v in fallback.split.value_counts().sort_index().items()))
        return fallback
    if (table.split == "").any() or (table.groupby("subject_id").split.nunique() > 1).any():
        return None
    return table.drop_duplicates("subject_id")[["subject_id", "split"]].sort_values("subject_id") \
        .reset_index(drop=True)


def _subjects(raw: pd.DataFrame, how, videos: pd.Series) -> pd.Series:
    if how == "video":
        values = pd.Series(np.nan, index=raw.index)
    elif how in raw.columns:
        values = _integers(raw, how).astype(float)
    else:
        try:
            pattern = re.compile(how)
        except re.error as e:
            raise InputError(f"subject_from {how!r} is neither a column of {raw['_file'].iloc[0]} "
                             f"nor a regular expression ({e})") from None
        if pattern.groups != 1:
            raise InputError(f"subject_from {how!r} is not a column of {raw['_file'].iloc[0]}, and as "
                             f"a regular expression it needs exactly one (group) for the subject id")
        names = videos.map(lambda v: PurePosixPath(v).name)
        values = pd.to_numeric(names.str.extract(pattern)[0], errors="coerce")
    missing = values.isna()
    if missing.any():
        orphans = videos[missing]
        log.warning("%s: no subject id for %d video(s) (e.g. %s): each is its own subject, so no "
                    "subject-wise split is possible for them", raw["_file"][missing].iloc[0],
                    orphans.nunique(), orphans.iloc[0])
        values[missing] = SYNTHETIC_SUBJECT_BASE + pd.factorize(orphans)[0]
    return values.astype("int64")


def _integers(raw: pd.DataFrame, col: str) -> pd.Series:
    values = pd.to_numeric(raw[col].astype(str).str.strip(), errors="coerce")
    _first_bad(raw, values.isna() | (values % 1 != 0) | (values.abs() > 2**53),
               lambda r: f"{r[col]!r} is not an integer", column=col)
    return values.astype("int64")


def _clock(raw: pd.DataFrame, col: str) -> pd.Series:
    values = raw[col].map(_seconds)
    _first_bad(raw, values.isna(), lambda r: f"{r[col]!r} is not a time in seconds", column=col)
    return values


def _seconds(text) -> float:
    """'12.5', '01:02.5' or '00:01:02.5' -> seconds; anything else -> NaN."""
    try:
        fields = [float(x) for x in str(text).strip().split(":")]
    except ValueError:
        return np.nan
    if len(fields) > 3 or any(f < 0 for f in fields[1:]) or not all(np.isfinite(fields)):
        return np.nan
    total = 0.0
    for f in fields:
        total = total * 60 + f
    return total


def _splits(raw: pd.DataFrame, col) -> pd.Series:
    if col is None:
        return pd.Series("", index=raw.index, dtype=str)
    values = raw[col].astype(str).str.strip().str.lower().replace(_SPLIT_ALIASES)
    _first_bad(raw, ~values.isin(SPLITS + ("",)),
               lambda r: f"unknown split {r[col]!r} (use train, val or test)", column=col)
    return values


def _split_token(names) -> str:
    """The split named by folder/file names such as smg_skeleton_validate or train_list_videos."""
    found = {_SPLIT_ALIASES.get(w, w) for n in names for w in re.split(r"[^a-z]+", n.lower())}
    found &= set(SPLITS)
    return found.pop() if len(found) == 1 else ""


def _label_names(path: Path) -> dict:
    """label_name.txt: `<id><tab or space><name>` per line -> {id text: name}."""
    pairs = (line.strip().split(None, 1) for line in _text(path, "class name file"))
    return {p[0]: p[1].strip() for p in pairs if len(p) == 2 and p[0].isdigit()}


def _first_bad(frame: pd.DataFrame, mask, message, column=None, word="row") -> None:
    """Raise for the first row under `mask`, naming its file and row (`word`: what a row is)."""
    if bool(np.asarray(mask).any()):
        r = frame[np.asarray(mask)].iloc[0]
        where = f"{word} {r['_row']}" + (f", column {column}" if column else "")
        raise InputError(f"{r['_file']}: {where}: {message(r)}")


def _need_columns(raw: pd.DataFrame, path: Path, need) -> None:
    missing = [c for c in need if c not in raw.columns]
    if missing:
        raise InputError(f"{path}: row 1 (header) lacks column(s) {', '.join(missing)}")


def _text(path, what: str) -> list[str]:
    path = Path(path)
    if not path.exists() or path.is_dir():
        raise InputError(f"{path}: {what} not found")
    try:   # a regular file only: a name linked to /dev/zero or a FIFO would be read without end
        lines = read_regular_file(path, what).decode("utf-8-sig").splitlines()
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: {what} is not a text file ({e})") from None
    if not any(line.strip() for line in lines):
        raise InputError(f"{path}: {what} is empty")
    return lines


def _read_lines(path, sep=None) -> list[tuple[int, list[str]]]:
    """Headerless list -> [(line number, fields)]; a first line of only words is a header."""
    lines = _text(path, "annotation list")
    rows = [(i, [f.strip() for f in (line.split(sep) if sep else line.split())])
            for i, line in enumerate(lines, start=1) if line.strip()]
    if len(rows) > 1 and not any(re.fullmatch(r"-?[\d.]+", f) for f in rows[0][1]):
        rows = rows[1:]
    return rows


def _read_csv(path, what: str) -> pd.DataFrame:
    """CSV with a header, all cells as stripped strings, plus _file and _row (its line number)."""
    lines = _text(path, what)
    header = next(line for line in lines if line.strip())
    sep = max([",", "\t", ";"], key=header.count)
    try:
        raw = pd.read_csv(Path(path), sep=sep, dtype=str, keep_default_na=False,
                          skip_blank_lines=False, encoding="utf-8-sig")
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise InputError(f"{path}: not a readable CSV {what} ({e})") from None
    raw.columns = [str(c).strip() for c in raw.columns]
    raw = raw.apply(lambda c: c.fillna("").astype(str).str.strip())
    raw = raw[(raw != "").any(axis=1)].copy()   # blank lines, kept until now for row numbers
    if raw.empty:
        raise InputError(f"{path}: {what} has a header but no rows")
    raw["_row"], raw["_file"] = raw.index + 2, str(path)
    return raw
