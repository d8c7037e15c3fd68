"""Skeleton import/export: pyskl / MMAction2 skeleton pickles and OpenPose whole-body people.

The pickle format (pyskl, MMAction2 PoseDataset):

    {'split': {name: [frame_dir, ...]},
     'annotations': [{'frame_dir': str, 'label': int, 'img_shape': (H, W),
                      'original_shape': (H, W), 'total_frames': T,
                      'keypoint': float32 [M, T, V, 2], 'keypoint_score': float32 [M, T, V]}]}

Our keypoint store is formats/keypoints.py's (keypoints float32 [M, T, V, 3] per clip, x, y,
score, with the frame size); import and export go through its writer and reader. Pickles do not
record their layout, so import takes it as an argument and checks V against it.

Loading a pickle can run code; import_pickle therefore unpickles with a whitelist of the few
globals that plain dicts/lists of numpy arrays need, and refuses anything else. A pickle is also
untrusted in size and type: it is unpickled by the pure-Python unpickler (its memo is a dict; the
C one allocates a memo array as long as the largest declared index, so 8 bytes can ask for 16 GB),
keypoints must be real numbers (ndarrays of an integer or float dtype, or nested lists whose
element count is taken before conversion and bounded by LIST_VALUES_BUDGET: shared references
make a 435 KB pickle hold 48 GB of lists), labels and total_frames integers, image sizes whole
numbers up to MAX_FRAME_SIDE, keypoint scores in [0, 1] (a file scored 0-100 is rescaled with a
note). Every refusal is one InputError naming the file and the annotation.
"""

from __future__ import annotations

import io
import json
import logging
import os
import pickle
import re
import reprlib
import struct
from pathlib import Path

import numpy as np
import pandas as pd

from mgpipe.formats import keypoints as keypoint_store
from mgpipe.io import InputError, atomic_path, id_problem, os_error_cause, read_regular_file
from mgpipe.layouts import BODY25_HANDS_FACE, get_layout

log = logging.getLogger(__name__)

UNASSIGNED = "unassigned"
PICKLE_PROTOCOL = 4

# The exact (module, name) pairs a skeleton pickle may reference: numpy arrays, scalars and
# dtypes (numpy 1.x and 2.x spellings) and a few plain containers. Nothing is matched by prefix:
# pickle resolves a dotted name by walking attributes, so "numpy.dtypes" + "__builtins__.get"
# reaches eval; a name containing a dot is refused whatever its module.
_NUMPY_DTYPE_CLASSES = (
    "BoolDType", "ByteDType", "BytesDType", "CLongDoubleDType", "Complex128DType", "Complex64DType",
    "DateTime64DType", "Float16DType", "Float32DType", "Float64DType", "Int16DType", "Int32DType",
    "Int64DType", "Int8DType", "IntDType", "LongDType", "LongDoubleDType", "LongLongDType",
    "ObjectDType", "ShortDType", "StrDType", "StringDType", "TimeDelta64DType", "UByteDType",
    "UInt16DType", "UInt32DType", "UInt64DType", "UInt8DType", "UIntDType", "ULongDType",
    "ULongLongDType", "UShortDType", "VoidDType",
)
_ALLOWED_GLOBALS = frozenset({
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"), ("collections", "OrderedDict"),
    ("builtins", "set"), ("builtins", "frozenset"), ("builtins", "slice"),
    ("builtins", "complex"),  # runs no code; loaded so that complex keypoints get their own message
    *(("numpy.dtypes", name) for name in _NUMPY_DTYPE_CLASSES),
})


# The keypoint and score values of one file, counted before any conversion, may be at most one
# per byte of the file (what ndarrays stored in it can hold) plus LIST_VALUES_BUDGET (values held
# as nested lists): shared references let a 435 KB pickle declare 48 GB of lists, and one array
# referenced by many annotations, or built by numpy's _reconstruct without its data, would be
# copied as often. A listed float takes 2 to 9 bytes of pickle, so the per-byte allowance covers
# real lists; 2**24 more values (64 MiB as float32) leave room for modest sharing such as
# [[0, 0]] * 17 for a frame without anybody.
LIST_VALUES_BUDGET = 2 ** 24
# img_shape / original_shape sides beyond this are no video frame (8K video is 7680 wide).
MAX_FRAME_SIDE = 65536
# Scores a little above 1 are heatmap maxima (pose models' scores can pass 1 slightly): taken
# as 1 with a note. A file whose scores go further, up to 100, is on a 0-100 scale.
_SCORE_SLACK = 1.5
_PERCENT = 100.0
_REAL_KINDS = "iuf"   # numpy dtype kinds of real numbers: signed, unsigned, float

_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother, _REPR.maxlong = 2, 60, 60, 40


def _show(value) -> str:
    """A short repr for messages, bounded in depth and length; never raises (a 100000-deep list
    or a 5000-digit int cannot be repr'd whole)."""
    try:
        return re.sub(r"\s+", " ", _REPR.repr(value))   # one line (an array's repr has several)
    except Exception:
        return f"a {type(value).__name__}"


def _error_text(error: BaseException) -> str:
    try:
        return str(error).splitlines()[0][:200] if str(error) else ""
    except Exception:   # an exception holding a hostile object (a KeyError of a deep list)
        return ""


class _Refused(pickle.UnpicklingError):
    pass


class _SafeUnpickler(pickle._Unpickler):
    """The pure-Python unpickler with a whitelist of globals. Not the C one: its memo is an array
    grown to the largest index a (LONG_)BINPUT declares, so an 8-byte pickle can make it zero
    16 GB; this one's memo is a dict. Both keep their stack on the heap (deep nesting loads).
    Every declared length is read as the bytes the stream holds (BYTEARRAY8 fixed below)."""

    def load_bytearray8(self):
        """BYTEARRAY8 (protocol 5) reading only the bytes the file holds: the stock one zeroes a
        bytearray of the declared size first (2 GB from a 12-byte pickle)."""
        (size,) = struct.unpack("<Q", self.read(8))
        data = self.read(size)   # at most what the stream holds
        if len(data) < size:
            raise pickle.UnpicklingError(f"BYTEARRAY8 declares {size} bytes, the pickle holds {len(data)}")
        self.append(bytearray(data))

    dispatch = {**pickle._Unpickler.dispatch, pickle.BYTEARRAY8[0]: load_bytearray8}

    def find_class(self, module, name):
        if "." not in name and (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise _Refused(f"refused: it references {str(module)[:100]}.{str(name)[:100]}, which a skeleton "
                       "pickle never holds (loading it could run code)")


def _largest_pickle() -> int | None:
    """Bytes a pickle may have: half the machine's memory (its bytes and the arrays made from
    them are both held; a sparse file of 20 GB would otherwise fill the memory with zeros)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (ValueError, OSError, AttributeError):
        return None


def _load_pickle(path: Path):
    try:
        data = read_regular_file(path, "skeleton pickle", _largest_pickle())
    except FileNotFoundError:
        raise InputError(f"{path}: skeleton pickle not found") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read skeleton pickle ({os_error_cause(e)[1]})") from None
    try:
        return _SafeUnpickler(io.BytesIO(data)).load()
    except _Refused as e:
        raise InputError(f"{path}: {e}") from None
    except Exception as e:  # any unpickling failure is bad input, whatever its type
        raise InputError(f"{path}: not a readable skeleton pickle ({type(e).__name__}: "
                         f"{_error_text(e)})") from None


def _frame_dir(value) -> str | None:
    """A frame_dir or split entry as text: a string, or an integer (some tools number clips)."""
    if isinstance(value, str):
        return value
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool) and abs(value) < 2**63:
        return str(int(value))
    return None


def _dataset_pickle(path: Path) -> tuple[dict, list]:
    """(split map {name: [frame_dir]}, annotation list) of a pyskl / MMAction2 pickle, checked
    for their types."""
    data = _load_pickle(path)
    if not isinstance(data, dict):
        raise InputError(f"{path}: skeleton pickle holds a {type(data).__name__}, expected a dict "
                         "with keys 'split' and 'annotations'")
    for key in ("split", "annotations"):
        if key not in data:
            raise InputError(f"{path}: skeleton pickle lacks key {key!r}")
    splits, annotations = data["split"], data["annotations"]
    if not isinstance(splits, dict) or not all(isinstance(v, (list, tuple)) for v in splits.values()):
        raise InputError(f"{path}: 'split' must map split names to lists of frame_dir")
    checked = {}
    for name, ids in splits.items():
        if not isinstance(name, str):
            raise InputError(f"{path}: split name {_show(name)} is not a string")
        checked[name] = [_frame_dir(c) for c in ids]
        if None in checked[name]:
            bad = ids[checked[name].index(None)]
            raise InputError(f"{path}: split {name!r} lists {_show(bad)}, expected frame_dir strings")
    if not isinstance(annotations, (list, tuple)):
        raise InputError(f"{path}: 'annotations' is a {type(annotations).__name__}, expected a list")
    return checked, annotations


def _integer(value) -> int | None:
    """`value` as an int when it is an integer (Python or numpy, or a 0-d integer array; not a
    bool, not a float such as 2.7 or 1e30), else None."""
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value[()]
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        return int(value)
    return None


def _shape_hw(ann: dict, path: Path, where: str) -> tuple[int | None, int | None]:
    """(height, width) of an annotation's frames; (None, None) when the pickle does not say (the
    pose stage then estimates the frame from the keypoints). Sides are whole numbers (480 or
    480.0) from 1 to MAX_FRAME_SIDE."""
    for key in ("img_shape", "original_shape"):
        if key not in ann:
            continue
        value = ann[key]
        pair = value.shape == (2,) if isinstance(value, np.ndarray) else (
            isinstance(value, (tuple, list)) and len(value) == 2)
        sides = list(value) if pair else []
        sides = [int(v) if isinstance(v, (float, np.floating)) and np.isfinite(v) and float(v).is_integer()
                 else _integer(v) for v in sides]
        if len(sides) != 2 or None in sides:
            raise InputError(f"{path}: {where}: {key} {_show(value)} is not (height, width)")
        if not all(1 <= v <= MAX_FRAME_SIDE for v in sides):
            raise InputError(f"{path}: {where}: {key} {_show(value)} is not a frame size (sides "
                             f"from 1 to {MAX_FRAME_SIDE} pixels)")
        return sides[0], sides[1]
    return None, None


class _Budget:
    """Keypoint and score values this file may still convert (see LIST_VALUES_BUDGET)."""

    def __init__(self, path: Path):
        try:
            file_bytes = path.stat().st_size
        except OSError:
            file_bytes = 0
        self.total = self.left = LIST_VALUES_BUDGET + file_bytes

    def spend(self, count: int, what: str, path: Path, where: str) -> None:
        if count > self.left:
            raise InputError(f"{path}: {where}: {what} expands to {count:.3g} values, beyond the "
                             f"file's budget of {self.total:.3g} ({LIST_VALUES_BUDGET:.3g} plus one "
                             "per byte of the file; lists of shared references?)")
        self.left -= count


def _listed_values(value, rank: int, memo: dict) -> int:
    """Values that nested lists/tuples `value` of depth `rank` convert to, counted without
    converting: a list shared by reference counts each time it is referenced (the array holds it
    that often) but is walked once (memo), so counting takes time in proportion to the file.
    Leaves must be real numbers (or ndarrays of real numbers filling the remaining ranks).
    Raises ValueError naming the first problem."""
    key = (id(value), rank)
    if key in memo:
        return memo[key]
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in _REAL_KINDS:
            raise ValueError(f"holds an array of {value.dtype}, expected real numbers")
        if value.ndim != rank:
            raise ValueError(f"nests an array of shape {value.shape} at depth {rank}")
        count = value.size
    elif isinstance(value, (list, tuple)):
        if rank == 0:
            raise ValueError("is nested deeper than its shape")
        count = sum(_listed_values(v, rank - 1, memo) for v in value)
    elif rank != 0:
        raise ValueError(f"holds {_show(value)} where a list is expected")
    elif isinstance(value, (complex, np.complexfloating)):
        raise ValueError(f"holds the complex number {_show(value)}; a coordinate or score is real")
    elif isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"holds {_show(value)}, expected numbers")
    else:
        count = 1
    memo[key] = count
    return count


def _real_array(value, rank: int, what: str, path: Path, where: str, budget: _Budget) -> np.ndarray:
    """An annotation's keypoint (rank 4) or keypoint_score (rank 3) as a float32 array: an ndarray
    of an integer or float dtype, or nested lists counted (and budgeted) before conversion."""
    shape = "[M, T, V, 2]" if rank == 4 else "[M, T, V]"
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in _REAL_KINDS:
            kind = "complex numbers: a coordinate or score is real" if value.dtype.kind == "c" else "no real numbers"
            raise InputError(f"{path}: {where}: {what} is an array of {value.dtype} ({kind})")
        if value.ndim != rank:
            raise InputError(f"{path}: {where}: {what} has shape {value.shape} ({value.dtype}), "
                             f"expected numbers {shape}")
        count = value.size
    elif isinstance(value, (list, tuple)):
        try:
            count = _listed_values(value, rank, {})
        except ValueError as e:
            raise InputError(f"{path}: {where}: {what} {e} (expected numbers {shape})") from None
    else:
        raise InputError(f"{path}: {where}: {what} is a {type(value).__name__}, expected numbers {shape}")
    budget.spend(count, what, path, where)
    try:
        with np.errstate(over="ignore", invalid="ignore"):  # 1e300 -> inf: a missing joint later
            return np.array(value, dtype=np.float32)   # a copy: the stages may write into it
    except (ValueError, TypeError, OverflowError) as e:   # ragged lists, ints beyond any float
        raise InputError(f"{path}: {where}: {what} is not an array {shape} of numbers "
                         f"({_error_text(e)})") from None


def _annotation_keypoints(ann: dict, path: Path, where: str, budget: _Budget) -> np.ndarray:
    """[M, T, V, 3] float32 x, y, score of one annotation."""
    if "keypoint" not in ann:
        raise InputError(f"{path}: {where}: missing key 'keypoint'")
    kp = _real_array(ann["keypoint"], 4, "keypoint", path, where, budget)
    if kp.shape[-1] not in (2, 3):
        raise InputError(f"{path}: {where}: keypoint has shape {kp.shape}, expected numbers "
                         "[M, T, V, 2]")
    if "keypoint_score" in ann:
        score = _real_array(ann["keypoint_score"], 3, "keypoint_score", path, where, budget)
        if score.shape != kp.shape[:3]:
            raise InputError(f"{path}: {where}: keypoint_score has shape {score.shape}, keypoint "
                             f"{kp.shape} needs [M, T, V] = {list(kp.shape[:3])}")
        return np.concatenate([kp[..., :2], score[..., None]], axis=-1)
    if kp.shape[-1] == 3:  # some pickles keep the score as a third coordinate
        return kp
    raise InputError(f"{path}: {where}: missing key 'keypoint_score'")


def _check_annotation(i: int, ann, path: Path, lay, budget: _Budget) -> tuple[str, dict]:
    """(frame_dir, {keypoint [M, T, V, 3] float32, label, width, height}) of annotation i."""
    where = f"annotation {i}"
    if not isinstance(ann, dict):
        raise InputError(f"{path}: {where} is a {type(ann).__name__}, expected a dict")
    for key in ("frame_dir", "label"):
        if key not in ann:
            raise InputError(f"{path}: {where}: missing key {key!r}")
    cid = _frame_dir(ann["frame_dir"])
    if cid is None:
        raise InputError(f"{path}: {where}: frame_dir {_show(ann['frame_dir'])} is not a string")
    where = f"annotation {i} ({_show(cid)})"
    if id_problem(cid):
        raise InputError(f"{path}: {where}: frame_dir cannot be used as a clip id "
                         f"({id_problem(cid)})")
    label = _integer(ann["label"])
    if label is None or not -2**31 <= label < 2**31:
        raise InputError(f"{path}: {where}: label {_show(ann['label'])} is not an integer "
                         "(a class id)")
    kp = _annotation_keypoints(ann, path, where, budget)
    if kp.shape[2] != lay.num_joints:
        raise InputError(f"{path}: {where}: keypoints have {kp.shape[2]} joints, layout "
                         f"{lay.name!r} has {lay.num_joints}")
    if "total_frames" in ann and _integer(ann["total_frames"]) != kp.shape[1]:
        raise InputError(f"{path}: {where}: total_frames {_show(ann['total_frames'])} does not "
                         f"match keypoint's {kp.shape[1]} frames")
    h, w = _shape_hw(ann, path, where)
    return cid, {"keypoint": kp, "label": label, "width": w, "height": h}


def _check_scores(checked: dict, path: Path) -> None:
    """Scores in [0, 1], checked over the whole file (non-finite ones are missing joints, dealt
    with by the pose stage). A file scored 0-100 is rescaled and a little above 1 is clipped,
    each with a logged note; negative scores or scores above 100 are refused."""
    top, where = -np.inf, None
    for i, (cid, ann) in enumerate(checked.items()):   # (every annotation is checked: i is its index)
        score = ann["keypoint"][..., 2]
        finite = score[np.isfinite(score)]
        if finite.size and finite.min() < 0:
            raise InputError(f"{path}: annotation {i} ({_show(cid)}): keypoint score "
                             f"{finite.min():.4g} is negative (scores lie in [0, 1])")
        if finite.size and finite.max() > top:
            top, where = float(finite.max()), f"{i} ({_show(cid)})"
    if top <= 1:
        return
    if top > _PERCENT:
        raise InputError(f"{path}: annotation {where}: keypoint score {top:.4g} lies outside "
                         "[0, 1] (and outside a 0-100 scale)")
    if top <= _SCORE_SLACK:
        log.warning("%s: keypoint scores up to %.4g (annotation %s): taken as at most 1", path,
                    top, where)
        for ann in checked.values():
            np.minimum(ann["keypoint"][..., 2], 1, out=ann["keypoint"][..., 2])
        return
    log.warning("%s: keypoint scores run up to %.4g (annotation %s): the file is on a 0-100 "
                "scale, divided by 100", path, top, where)
    for ann in checked.values():
        ann["keypoint"][..., 2] /= _PERCENT   # (the checked arrays are copies)


def check_annotations(annotations, path: Path, lay) -> dict:
    """Each pickle annotation checked, in the pickle's order: {frame_dir: {keypoint [M, T, V, 3]
    float32, label, width, height}}; the first bad one is an InputError naming the file and the
    annotation."""
    budget, checked = _Budget(path), {}
    for i, ann in enumerate(annotations):
        cid, value = _check_annotation(i, ann, path, lay, budget)
        if cid in checked:
            raise InputError(f"{path}: annotation {i} ({_show(cid)}): frame_dir appears twice")
        checked[cid] = value
    _check_scores(checked, path)
    return checked


def import_pickle(path, out_h5, *, layout: str = "coco17", splits=None) -> pd.DataFrame:
    """A pyskl/MMAction2 skeleton pickle -> our keypoint store at out_h5 (written atomically).

    Returns a manifest-like DataFrame (clip_id, label, split, num_frames, width, height) in the
    pickle's annotation order. A clip's split is the 'split' entry listing its frame_dir, or
    'unassigned' when none does. `splits` restricts which split names are used (pickles such as
    NTU's list every clip in two protocols, e.g. xsub_train and xview_train: pick one protocol's
    names); a clip listed by two of the used splits is an error.
    """
    path = Path(path)
    lay = get_layout(layout)
    split_map, annotations = _dataset_pickle(path)
    if splits is not None:
        unknown = sorted(set(splits) - set(split_map))
        if unknown:
            raise InputError(f"{path}: no split(s) {unknown} in the pickle; it has {sorted(split_map)}")
        split_map = {k: v for k, v in split_map.items() if k in set(splits)}

    split_of: dict[str, str] = {}
    for name, ids in split_map.items():
        for cid in ids:
            if cid in split_of and split_of[cid] != name:
                raise InputError(f"{path}: clip {cid!r} is in splits {split_of[cid]!r} and "
                                 f"{name!r}; choose one protocol's splits (splits=...)")
            split_of[cid] = str(name)

    rows = []
    with keypoint_store.writer(out_h5, lay, source=f"pickle:{path.name}") as store:
        for cid, ann in check_annotations(annotations, path, lay).items():
            if ann["width"] is None:
                raise InputError(f"{path}: annotation {cid!r}: missing key 'img_shape' (and 'original_shape')")
            store.add(cid, ann["keypoint"], ann["width"], ann["height"])
            rows.append({"clip_id": cid, "label": ann["label"], "split": split_of.get(cid, UNASSIGNED),
                         "num_frames": int(ann["keypoint"].shape[1]), "width": ann["width"],
                         "height": ann["height"]})
    return pd.DataFrame(rows, columns=["clip_id", "label", "split", "num_frames", "width", "height"])


def read_pickle_dataset(path, layout) -> tuple[dict, dict, dict]:
    """A skeleton pickle read as a whole dataset (dataset.kind pyskl): (splits {name: [frame_dir]},
    annotations {frame_dir: checked annotation, as check_annotations gives}, index {frame_dir:
    position in the pickle's annotation list}). Keypoints are checked against `layout` here,
    so a wrong pose.pickle_layout stops the clip stage, before anything else runs."""
    path = Path(path)
    splits, annotations = _dataset_pickle(path)
    checked = check_annotations(annotations, path, get_layout(layout))
    index = {cid: i for i, cid in enumerate(checked)}
    return splits, checked, index


def load_pickle_annotations(path, layout) -> dict:
    """{frame_dir: {keypoint [M, T, V, 3], label, width, height}} of a skeleton pickle (the pose
    stage's `pickle` backend reads clips out of it)."""
    path = Path(path)
    data = _load_pickle(path)
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), (list, tuple)):
        raise InputError(f"{path}: skeleton pickle needs a dict with an 'annotations' list")
    return check_annotations(data["annotations"], path, get_layout(layout))


def export_pickle(keypoints_h5, manifest: pd.DataFrame, out_path) -> dict:
    """Our keypoint store + clip manifest -> a pyskl/MMAction2 skeleton pickle (written atomically).

    One annotation per manifest row, in manifest order: frame_dir = clip_id, label from the
    manifest, image size from the store's clip attrs (the manifest's width/height when a clip has
    none). split = {name: [clip ids]} from manifest.split; rows without a split (empty, NaN or
    'unassigned') are in no split. Returns the written object.
    """
    keypoints_h5, out_path = Path(keypoints_h5), Path(out_path)
    missing = [c for c in ("clip_id", "label") if c not in manifest.columns]
    if missing:
        raise ValueError(f"manifest lacks column(s) {', '.join(missing)}")
    split: dict[str, list[str]] = {}
    annotations = []
    store = keypoint_store.Reader(keypoints_h5)
    store.layout  # opens the store: a missing, foreign or old store is one line here
    try:
        # every manifest clip there, no longer than the manifest says, only its own data
        # (metadata only, before anything is read)
        store.check_manifest(manifest)
        for row in manifest.to_dict("records"):
            cid = str(row["clip_id"])
            kp, w, h = store.clip(cid)
            shape = (int(h), int(w))
            annotations.append({
                "frame_dir": cid, "label": int(row["label"]), "img_shape": shape,
                "original_shape": shape, "total_frames": int(kp.shape[1]),
                "keypoint": np.ascontiguousarray(kp[..., :2]),
                "keypoint_score": np.ascontiguousarray(kp[..., 2]),
            })
            name = row.get("split")
            if isinstance(name, str) and name and name != UNASSIGNED:
                split.setdefault(name, []).append(cid)
            elif name is not None and not isinstance(name, str) and not pd.isna(name):
                split.setdefault(str(name), []).append(cid)
    finally:
        store.close()
    data = {"split": split, "annotations": annotations}
    with atomic_path(out_path) as tmp:
        with open(tmp, "wb") as f:
            pickle.dump(data, f, protocol=PICKLE_PROTOCOL)
    return data


# OpenPose writes one JSON file per frame: <folder>/<video_id>/<video_id>_<frame:012d>_keypoints.json
OPENPOSE_SUFFIX = "_keypoints.json"
# A real frame file is ~3.4 KB (one person, BODY_25 + hands + face); 100 people are ~0.5 MB.
OPENPOSE_MAX_BYTES = 16 * 2**20


def read_openpose_json(path):
    """The parsed JSON of one OpenPose frame file, read within bounds: a regular file of at most
    OPENPOSE_MAX_BYTES (a link to /dev/zero would be read without end), nesting and numbers
    JSON's parser can hold. InputError naming the file otherwise; FileNotFoundError passes
    through (a missing frame is counted, not an error)."""
    data = read_regular_file(path, "OpenPose keypoint file", OPENPOSE_MAX_BYTES)
    try:
        return json.loads(data.decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as e:   # ValueError: JSONDecodeError,
        # and integers beyond Python's digit limit
        raise InputError(f"{path}: not an OpenPose keypoint file ({type(e).__name__}: "
                         f"{_error_text(e)})") from None


def openpose_frame_path(skeletons_dir, video_id: str, frame: int) -> Path:
    return Path(skeletons_dir) / video_id / f"{video_id}_{frame:012d}{OPENPOSE_SUFFIX}"


def openpose_frame_numbers(skeletons_dir, video_id: str) -> list[int]:
    """Frame numbers of a video's OpenPose files, sorted (files of other names are ignored)."""
    pattern = re.compile(re.escape(video_id) + r"_(\d{12})" + re.escape(OPENPOSE_SUFFIX) + "$")
    folder = Path(skeletons_dir) / video_id
    found = (pattern.match(p.name) for p in folder.glob(f"{video_id}_*{OPENPOSE_SUFFIX}"))
    return sorted(int(m.group(1)) for m in found if m)


def openpose_person(person: dict, *, source="OpenPose person") -> np.ndarray:
    """One entry of an OpenPose JSON frame's `people` as BODY25_HANDS_FACE [137, 3] (x, y, score).

    Parts the file lacks (no hand_*_keypoints_2d or face_keypoints_2d, or empty lists) are zeros,
    i.e. missing. `source` names the file in error messages.
    """
    parts = (("pose_keypoints_2d", 25), ("hand_left_keypoints_2d", 21),
             ("hand_right_keypoints_2d", 21), ("face_keypoints_2d", 70))
    out = []
    for key, n in parts:
        flat = person.get(key) or []
        if flat and len(flat) != 3 * n:
            raise InputError(f"{source}: {key} has {len(flat)} values, expected {3 * n}")
        out.append(np.asarray(flat, np.float32).reshape(n, 3) if flat else np.zeros((n, 3), np.float32))
    kp = np.concatenate(out)
    assert kp.shape[0] == BODY25_HANDS_FACE.num_joints
    return kp
