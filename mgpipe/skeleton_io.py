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
globals that plain dicts/lists of numpy arrays need, and refuses anything else.
"""

from __future__ import annotations

import io
import pickle
import re
from pathlib import Path

import numpy as np
import pandas as pd

from .formats import keypoints as keypoint_store
from .io import InputError, atomic_path
from .label_tables import id_problem
from .layouts import BODY25_HANDS_FACE, get_layout


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
    *(("numpy.dtypes", name) for name in _NUMPY_DTYPE_CLASSES),
})


class _Refused(pickle.UnpicklingError):
    pass


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if "." not in name and (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise _Refused(f"refused: it references {module}.{name}, which a skeleton pickle "
                       "never holds (loading it could run code)")


def _load_pickle(path: Path):
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: skeleton pickle not found") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read skeleton pickle ({e})") from None
    try:
        return _SafeUnpickler(io.BytesIO(data)).load()
    except _Refused as e:
        raise InputError(f"{path}: {e}") from None
    except Exception as e:  # any unpickling failure is bad input, whatever its type
        raise InputError(f"{path}: not a readable skeleton pickle ({type(e).__name__}: {str(e)[:200]})") from None


def _dataset_pickle(path: Path) -> tuple[dict, list]:
    """(split map, annotation list) of a pyskl / MMAction2 pickle, checked for their types."""
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
    if not isinstance(annotations, (list, tuple)):
        raise InputError(f"{path}: 'annotations' is a {type(annotations).__name__}, expected a list")
    return splits, annotations


def _shape_hw(ann: dict, path: Path, where: str) -> tuple[int | None, int | None]:
    """(height, width) of an annotation's frames; (None, None) when the pickle does not say (the
    pose stage then estimates the frame from the keypoints)."""
    for key in ("img_shape", "original_shape"):
        if key in ann:
            try:
                h, w = (int(v) for v in ann[key])
            except (TypeError, ValueError):
                raise InputError(f"{path}: {where}: {key} {ann[key]!r} is not (height, width)") from None
            if h <= 0 or w <= 0:
                raise InputError(f"{path}: {where}: {key} {ann[key]!r} is not a positive size")
            return h, w
    return None, None


def _annotation_keypoints(ann: dict, path: Path, where: str) -> np.ndarray:
    """[M, T, V, 3] float32 x, y, score of one annotation."""
    try:
        kp = np.asarray(ann["keypoint"])
    except KeyError:
        raise InputError(f"{path}: {where}: missing key 'keypoint'") from None
    if kp.ndim != 4 or kp.shape[-1] not in (2, 3) or not np.issubdtype(kp.dtype, np.number):
        raise InputError(f"{path}: {where}: keypoint has shape {kp.shape} ({kp.dtype}), "
                         "expected numbers [M, T, V, 2]")
    if "keypoint_score" in ann:
        score = np.asarray(ann["keypoint_score"])
        if score.shape != kp.shape[:3] or not np.issubdtype(score.dtype, np.number):
            raise InputError(f"{path}: {where}: keypoint_score has shape {score.shape}, keypoint "
                             f"{kp.shape} needs [M, T, V] = {list(kp.shape[:3])}")
        return np.concatenate([kp[..., :2], score[..., None]], axis=-1).astype(np.float32)
    if kp.shape[-1] == 3:  # some pickles keep the score as a third coordinate
        return kp.astype(np.float32)
    raise InputError(f"{path}: {where}: missing key 'keypoint_score'")


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
            cid = str(cid)
            if cid in split_of and split_of[cid] != name:
                raise InputError(f"{path}: clip {cid!r} is in splits {split_of[cid]!r} and "
                                 f"{name!r}; choose one protocol's splits (splits=...)")
            split_of[cid] = str(name)

    rows = []
    with keypoint_store.writer(out_h5, lay, source=f"pickle:{path.name}") as store:
        for cid, ann in iter_annotations(annotations, path, lay):
            if ann["width"] is None:
                raise InputError(f"{path}: annotation {cid!r}: missing key 'img_shape' (and 'original_shape')")
            store.add(cid, ann["keypoint"], ann["width"], ann["height"])
            rows.append({"clip_id": cid, "label": ann["label"], "split": split_of.get(cid, UNASSIGNED),
                         "num_frames": int(ann["keypoint"].shape[1]), "width": ann["width"],
                         "height": ann["height"]})
    return pd.DataFrame(rows, columns=["clip_id", "label", "split", "num_frames", "width", "height"])


def iter_annotations(annotations, path: Path, lay):
    """Check each pickle annotation; yield (frame_dir, {keypoint [M, T, V, 3], label, width,
    height})."""
    seen = set()
    for i, ann in enumerate(annotations):
        where = f"annotation {i}"
        if not isinstance(ann, dict):
            raise InputError(f"{path}: {where} is a {type(ann).__name__}, expected a dict")
        for key in ("frame_dir", "label"):
            if key not in ann:
                raise InputError(f"{path}: {where}: missing key {key!r}")
        cid = str(ann["frame_dir"])
        where = f"annotation {i} ({cid!r})"
        if id_problem(cid):
            raise InputError(f"{path}: {where}: frame_dir cannot be used as a clip id "
                             f"({id_problem(cid)})")
        if cid in seen:
            raise InputError(f"{path}: {where}: frame_dir appears twice")
        seen.add(cid)
        try:
            label = int(ann["label"])
        except (TypeError, ValueError):
            raise InputError(f"{path}: {where}: label {ann['label']!r} is not an integer") from None
        kp = _annotation_keypoints(ann, path, where)
        if kp.shape[2] != lay.num_joints:
            raise InputError(f"{path}: {where}: keypoints have {kp.shape[2]} joints, layout "
                             f"{lay.name!r} has {lay.num_joints}")
        if "total_frames" in ann and int(ann["total_frames"]) != kp.shape[1]:
            raise InputError(f"{path}: {where}: total_frames {ann['total_frames']} does not "
                             f"match keypoint's {kp.shape[1]} frames")
        h, w = _shape_hw(ann, path, where)
        yield cid, {"keypoint": kp, "label": label, "width": w, "height": h}


def read_pickle_dataset(path, layout) -> tuple[dict, dict, dict]:
    """A skeleton pickle read as a whole dataset (dataset.kind pyskl): (splits {name: [frame_dir]},
    annotations {frame_dir: checked annotation, as iter_annotations yields}, index {frame_dir:
    position in the pickle's annotation list}). Keypoints are checked against `layout` here,
    so a wrong pose.pickle_layout stops the clip stage, before anything else runs."""
    path = Path(path)
    splits, annotations = _dataset_pickle(path)
    checked = dict(iter_annotations(annotations, path, get_layout(layout)))
    index = {cid: i for i, cid in enumerate(checked)}
    return {str(k): [str(c) for c in v] for k, v in splits.items()}, checked, index


def load_pickle_annotations(path, layout) -> dict:
    """{frame_dir: {keypoint [M, T, V, 3], label, width, height}} of a skeleton pickle (the pose
    stage's `pickle` backend reads clips out of it)."""
    path = Path(path)
    data = _load_pickle(path)
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), (list, tuple)):
        raise InputError(f"{path}: skeleton pickle needs a dict with an 'annotations' list")
    return dict(iter_annotations(data["annotations"], path, get_layout(layout)))


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
