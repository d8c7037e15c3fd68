"""Several skeleton pickles as one dataset: `dataset.skeletons` as a list of sources.

Each source is a pyskl / MMAction2 pickle with its own joint layout, label ids and split names:

    dataset:
      kind: pyskl
      skeletons:
        - {path: data/kard2d.pkl, layout: openni15, name: kard, split_map: {xsub_train: train, xsub_val: test}}
        - {path: data/florence3d.pkl, layout: kinect_v1, name: florence, split_map: {...}}
    pose: {backend: pickle, layout: kinect_v1}

The `combine-skeletons` stage writes one pickle from them, the layout the run's (`pose.layout`:
every joint moved by name, a joint a source lacks scores 0), clip names prefixed with the source's
name (`kard__a01_s01_e01`), labels side by side (a source's ids after the previous source's
largest, or `label_offset`; `class_map` maps a source's ids onto shared ones instead) and splits
mapped to train / val / test by each source's `split_map` (clips in no mapped split are left
out). The later stages read it as they read one pickle. What pretraining on several datasets
needs (NTU, Kinetics-skeleton, MA-52 and the like), without code.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import numpy as np

from mgpipe.io import InputError, atomic_path
from mgpipe.layouts import convert, get_layout, joint_mapping
from mgpipe.sources.skeleton_io import _dataset_pickle, check_annotations

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
SEPARATOR = "__"   # between a source's name and its clip's name (a clip id holds no "/")


def sources(entries) -> list[dict]:
    """The list form of dataset.skeletons checked without reading the pickles (plan time): each
    entry's file exists, its layout is known, names are unique. InputError naming the entry."""
    out, names = [], set()
    for i, entry in enumerate(entries):
        path = Path(entry["path"])
        name = entry.get("name") or path.stem
        where = f"source {i + 1} ({name})"
        if not path.is_file():
            raise InputError(f"{where}: {path} does not exist")
        if name in names:
            raise InputError(f"{where}: the name {name!r} is used twice (it prefixes the clips of its source)")
        if "/" in name or "__" in name or not name:
            raise InputError(f"{where}: a name holds no '/' or '__' (it prefixes clip names as name__...)")
        names.add(name)
        try:
            get_layout(entry["layout"])
        except Exception as e:   # LayoutError
            raise InputError(f"{where}: {e}") from None
        out.append({"path": str(path), "name": name, "layout": entry["layout"],
                    "split_map": entry.get("split_map"), "label_offset": entry.get("label_offset"),
                    "class_map": entry.get("class_map"), "class_names": entry.get("class_names")})
    return out


def class_names(entries) -> list[str] | None:
    """The combined class names where every source names its classes and takes the default
    offsets (names side by side, as the labels are); else None (the clips stage names classes by
    id, or by dataset.class_names)."""
    if not entries or any(not e.get("class_names") or e.get("label_offset") is not None or e.get("class_map")
                          for e in entries):
        return None
    return [f"{e['name']}: {n}" for e in entries for n in e["class_names"]]


def combine(entries, layout, out) -> dict:
    """Write one pyskl pickle at `out` from the sources (see the module's text); returns {source
    name: {split: clips}} and logs one line per source."""
    import pickle

    dst = get_layout(layout)
    annotations, split_lists = [], {s: [] for s in SPLITS}
    counts, offset = {}, 0
    for source in sources(entries):
        path, src = Path(source["path"]), get_layout(source["layout"])
        split_map, raw = _dataset_pickle(path)
        checked = check_annotations(raw, path, src)
        mapping = source["split_map"] or {s: s for s in SPLITS}
        unknown = sorted(set(mapping) - set(split_map))
        if unknown:
            raise InputError(f"{path}: split_map names split(s) {unknown}, which the pickle lacks "
                             f"(it has {sorted(split_map)})")
        split_of = {}
        for theirs, ours in mapping.items():
            for cid in split_map[theirs]:
                if split_of.get(cid, ours) != ours:
                    raise InputError(f"{path}: clip {cid!r} is in two mapped splits ({split_of[cid]} and {ours})")
                split_of[cid] = ours
        labels = sorted({int(a["label"]) for a in checked.values()})
        names = source["class_names"]
        if names is not None and labels and labels[-1] >= len(names):
            raise InputError(f"{path}: label {labels[-1]} has no name: class_names lists {len(names)}")
        start = source["label_offset"] if source["label_offset"] is not None else offset
        class_map = {int(k): int(v) for k, v in (source["class_map"] or {}).items()}
        missing = [lab for lab in labels if class_map and lab not in class_map]
        if missing:
            raise InputError(f"{path}: class_map does not map label(s) {missing[:5]}")
        shared = [j for j, _ in joint_mapping(src, dst)]
        kept = Counter()
        for cid, ann in checked.items():
            split = split_of.get(cid)
            if split is None:
                continue
            if ann["width"] is None:
                raise InputError(f"{path}: annotation {cid!r}: missing key 'img_shape' (and 'original_shape')")
            kp = convert(ann["keypoint"], src, dst)
            new_id = f"{source['name']}{SEPARATOR}{cid}"
            label = class_map[int(ann["label"])] if class_map else start + int(ann["label"])
            annotations.append({"frame_dir": new_id, "label": label, "total_frames": int(kp.shape[1]),
                                "img_shape": (int(ann["height"]), int(ann["width"])),
                                "original_shape": (int(ann["height"]), int(ann["width"])),
                                "keypoint": np.ascontiguousarray(kp[..., :2], dtype=np.float32),
                                "keypoint_score": np.ascontiguousarray(kp[..., 2], dtype=np.float32)})
            split_lists[split].append(new_id)
            kept[split] += 1
        if not class_map:
            offset = max(offset, start + (len(names) if names is not None else (labels[-1] + 1 if labels else 0)))
        else:
            offset = max(offset, max(class_map.values()) + 1)
        counts[source["name"]] = dict(kept)
        lo = min(class_map.values()) if class_map else start
        log.info("skeletons %s: %d of %d clips (%s), labels %s -> %s, layout %s -> %s: %d of %d joints by name",
                 source["name"], sum(kept.values()), len(checked),
                 ", ".join(f"{n} {s}" for s, n in sorted(kept.items())) or "none in a mapped split",
                 f"{labels[0]}-{labels[-1]}" if labels else "none", f"from {lo}", src.name, dst.name,
                 len(shared), dst.num_joints)
    if not annotations:
        raise InputError("dataset.skeletons: no clip of any source is in a mapped split")
    labels = Counter(a["label"] for a in annotations)
    with atomic_path(out) as tmp, open(tmp, "wb") as f:
        pickle.dump({"split": {s: ids for s, ids in split_lists.items() if ids}, "annotations": annotations}, f,
                    protocol=4)
    log.info("combined %d clips of %d sources into %s: %d classes", len(annotations), len(counts), out, len(labels))
    return counts
