"""Sharded data stages: the clip manifest cut into N slices of whole videos, and the per-shard
stores gathered back into the one store the later stages read (`data.shards`).

A video belongs to shard `shard_of(video_id, N)`: a hash of its id, so the assignment needs no
other video, never changes when another video's rows change, and is the same on every machine
and Python (unlike `hash()`). A video never spans two shards, so decode and OpenPose, which
work video by video, see in a shard exactly the rows they see in an unsharded run.

`write_slices` rewrites a shard's slice file only when its bytes change: Snakemake compares
modification times, so a changed label row reruns only the shard of its video (the workflow's
slicing rule is a checkpoint; see workflow/rules/shards.smk).

`gather` builds frames.h5 / keypoints.h5 from the shard stores by copying each clip's HDF5
objects as they are (H5Ocopy: the stored bytes, dtype, shape, filters and attributes, nothing
decoded), so every clip is byte for byte what an unsharded run writes, and the readers keep
reading one file.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from pathlib import Path

import numpy as np
import pandas as pd

from .io import InputError, atomic_h5, atomic_path

log = logging.getLogger(__name__)

SLICE_NAME = re.compile(r"^(\d+)\.csv$")


def shard_of(video_id, shards: int) -> int:
    """The shard (0..shards-1) of a video: the first 8 bytes of sha256(video id), modulo."""
    digest = hashlib.sha256(str(video_id).encode()).digest()
    return int.from_bytes(digest[:8], "big") % shards


def slice_path(out_dir, shard: int) -> Path:
    return Path(out_dir) / f"{shard}.csv"


def slices(manifest: pd.DataFrame, shards: int, source="manifest") -> list[pd.DataFrame]:
    """The manifest's rows of each shard, in manifest order (an empty shard has no rows)."""
    if shards < 1:
        raise InputError(f"data.shards is {shards}; use 1 or more")
    if "video_id" not in manifest.columns:
        raise InputError(f"{source}: not a clip manifest (no video_id column)")
    of = manifest.video_id.astype(str).map(lambda v: shard_of(v, shards))
    return [manifest[of == i] for i in range(shards)]


def write_slices(manifest: pd.DataFrame, shards: int, out_dir, source="manifest") -> dict:
    """One manifest slice per shard in out_dir (`<shard>.csv`); a slice whose bytes are already
    there is left untouched (its modification time too), and slices of shards beyond `shards`
    (an earlier, larger data.shards) are removed. Returns counts per shard and what changed."""
    parts = slices(manifest, shards, source)   # (checked before anything is written)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written, kept, rows, videos = [], [], [], []
    for i, part in enumerate(parts):
        text = part.to_csv(index=False).encode()
        path = slice_path(out_dir, i)
        rows.append(len(part))
        videos.append(int(part.video_id.nunique()))
        if path.is_file() and path.read_bytes() == text:
            kept.append(i)
            continue
        with atomic_path(path) as tmp:
            tmp.write_bytes(text)
        written.append(i)
    removed = []
    for path in out_dir.iterdir():
        m = SLICE_NAME.match(path.name)
        if m and int(m.group(1)) >= shards:
            path.unlink()
            removed.append(path.name)
    stats = {"shards": shards, "clips": rows, "videos": videos, "rewritten": written,
             "unchanged": len(kept), "removed": sorted(removed)}
    log.info("shards: %s", stats)
    if any(n == 0 for n in rows):
        log.info("shards: %d of %d shards hold no video (more shards than videos, or an uneven "
                 "hash): their stores are empty", sum(n == 0 for n in rows), shards)
    return stats


def _store_module(kind: str):
    from .formats import frames, keypoints

    modules = {"frames": frames, "keypoints": keypoints}
    if kind not in modules:
        raise InputError(f"gather: unknown store kind {kind!r}; use frames or keypoints")
    return modules[kind]


def _same_attr(a, b) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and a.dtype.kind == b.dtype.kind and bool(np.all(a == b))


def _shown(attrs: dict, name: str) -> str:
    return repr(np.asarray(attrs[name]).tolist()) if name in attrs else "absent"


def _copy_root_attrs(src, dst) -> None:
    """The root attributes with their stored types (a string stays the same kind of string)."""
    for name in src.attrs:
        dst.attrs.create(name, src.attrs[name], dtype=src.attrs.get_id(name).dtype)


def gather(kind: str, shard_stores, out_h5) -> dict:
    """Shard stores of one kind ("frames" or "keypoints") -> one store at out_h5 (atomically).

    Each clip's objects are copied as stored (H5Ocopy). The shard stores must agree on their
    root attributes (format, settings, keypoint layout) and never hold the same clip; either
    fault is one line naming the store."""
    import h5py

    module = _store_module(kind)
    t0, clips, first = time.time(), 0, None
    with atomic_h5(out_h5) as out:
        out_clips = out.create_group("clips")
        for path in shard_stores:
            reader = module.Reader(path)
            try:
                src = reader.h5   # refuses a store of another kind or format version
                if first is None:
                    first = (path, dict(src.attrs))
                    _copy_root_attrs(src, out)
                else:
                    attrs = dict(src.attrs)
                    for name in sorted(set(attrs) | set(first[1])):
                        if name not in attrs or name not in first[1] or not _same_attr(attrs[name], first[1][name]):
                            raise InputError(
                                f"{path}: attribute {name!r} is {_shown(attrs, name)}, but "
                                f"{_shown(first[1], name)} in {first[0]}: the shard stores were "
                                "written with other settings; rerun their stage")
                if "clips" not in src:
                    continue
                names = list(src["clips"].keys())
                for name in names:
                    if name in out_clips:
                        raise InputError(f"{path}: clip {name!r} is also in another shard store")
                    h5py.h5o.copy(src.id, f"clips/{name}".encode(), out.id, f"clips/{name}".encode())
                clips += len(names)
            finally:
                reader.close()
    stats = {"kind": kind, "shards": len(shard_stores), "clips": clips,
             "seconds": round(time.time() - t0, 2)}
    log.info("gather: %s", stats)
    return stats
