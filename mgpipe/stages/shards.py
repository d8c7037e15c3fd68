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

from mgpipe.formats.hdf5 import child_node
from mgpipe.io import InputError, atomic_h5, atomic_path

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


# The slice folder is the shard command's own: it rewrites and removes numbered CSVs there, so
# it writes only into a folder it made (marked by this file) or an empty one, never into a
# folder of someone else's numbered CSVs. (Snakemake dates a directory output with its own
# timestamp file inside it.)
MARKER = ".mgpipe-shard-slices"
_FOREIGN_OK = {MARKER, ".snakemake_timestamp"}


def claim_folder(out_dir) -> None:
    """Make `out_dir` the shard command's own (create it and its marker), or InputError: it
    holds files and no marker (not a folder this command wrote), or is no folder at all."""
    import os
    import stat

    from mgpipe.io import check_replaceable, write_text

    out_dir = Path(out_dir)
    if out_dir.is_symlink() or (out_dir.exists() and not out_dir.is_dir()):
        raise InputError(f"{out_dir}: --out-dir is not a folder (or is a symbolic link); give a "
                         "folder the shard command may own")
    marker = out_dir / MARKER
    if out_dir.is_dir():
        if os.path.lexists(marker):
            if not stat.S_ISREG(os.lstat(marker).st_mode):
                raise InputError(f"{marker}: the shard folder's marker is not a regular file")
            return
        foreign = sorted(set(os.listdir(out_dir)) - _FOREIGN_OK)
        if foreign:
            raise InputError(f"{out_dir}: refusing to write shard slices into a folder this command "
                             f"did not make (it holds {foreign[0]!r}{' and more' if len(foreign) > 1 else ''}, "
                             f"and no {MARKER}): give an empty or new --out-dir")
    out_dir.mkdir(parents=True, exist_ok=True)
    check_replaceable(marker)
    write_text(marker, "This folder holds the clip manifest's slices written by `mgpipe shard`,\n"
                       "which rewrites and removes the numbered CSVs in it.\n")


def write_slices(manifest: pd.DataFrame, shards: int, out_dir, source="manifest") -> dict:
    """One manifest slice per shard in out_dir (`<shard>.csv`); a slice whose bytes are already
    there is left untouched (its modification time too), and slices of shards beyond `shards`
    (an earlier, larger data.shards) are removed. out_dir must be new, empty, or written by this
    function before (claim_folder). Returns counts per shard and what changed."""
    parts = slices(manifest, shards, source)   # (checked before anything is written)
    out_dir = Path(out_dir)
    claim_folder(out_dir)
    written, kept, rows, videos = [], [], [], []
    for i, part in enumerate(parts):
        text = part.to_csv(index=False).encode()
        path = slice_path(out_dir, i)
        rows.append(len(part))
        videos.append(int(part.video_id.nunique()))
        if path.is_file() and not path.is_symlink() and path.read_bytes() == text:
            kept.append(i)
            continue
        with atomic_path(path) as tmp:
            tmp.write_bytes(text)
        written.append(i)
    removed = []
    for path in out_dir.iterdir():
        m = SLICE_NAME.match(path.name)
        if m and int(m.group(1)) >= shards and path.is_file() and not path.is_symlink():
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
    from mgpipe.formats import frames, keypoints

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


def _check_own_data(parent, name: str, path, noun: str, where: str) -> None:
    """Refuse a link other than a hard link anywhere under parent[name] (soft, external,
    user-defined), and a dataset whose bytes live in another file (external storage, virtual)."""
    import h5py

    node = child_node(parent, name, path, noun, where)
    if isinstance(node, h5py.Group):
        for child in node.keys():
            _check_own_data(node, child, path, noun, f"{where}/{child}")
    elif isinstance(node, h5py.Dataset):
        if node.is_virtual:
            raise InputError(f"{path}: {where} is a virtual dataset (its data lives in other files); refused")
        if node.id.get_create_plist().get_external_count():
            raise InputError(f"{path}: {where} keeps its data in another file: external storage is refused")


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
                group = child_node(src, "clips", path, module.Reader.NOUN, "clips")
                names = list(group.keys())
                for name in names:
                    if name in out_clips:
                        raise InputError(f"{path}: clip {name!r} is also in another shard store")
                    # H5Ocopy would follow a link and copy another file's (or object's) data
                    # into the gathered store: every object of the clip is reached by a hard
                    # link and keeps its data in this file
                    _check_own_data(group, name, path, module.Reader.NOUN, f"clips/{name}")
                    h5py.h5o.copy(src.id, f"clips/{name}".encode(), out.id, f"clips/{name}".encode())
                clips += len(names)
            finally:
                reader.close()
    stats = {"kind": kind, "shards": len(shard_stores), "clips": clips,
             "seconds": round(time.time() - t0, 2)}
    log.info("gather: %s", stats)
    return stats
