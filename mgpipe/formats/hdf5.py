"""What every HDF5 store reader shares: the node check (LazyStore.node), attribute and
dataset checks, the version check. Stores are untrusted input (see formats/__init__.py)."""

import math
import os

from mgpipe.io import InputError

# The most one dataset read (or one of its chunks) may allocate: 1 GiB holds an hour of 60 fps
# keypoints of two persons in a 133-joint layout (0.7 GB) and a heatmap clip of 10^4 frames x
# 17 joints x 64 x 64 (0.7 GB); a store declaring more is refused before anything is read.
MAX_READ_BYTES = 1 << 30


def _number(value):
    """A finite real number out of an HDF5 attribute value, else None (strings, arrays of
    several values, NaN and infinities, booleans are no numbers of a store's header)."""
    import numpy as np

    try:
        arr = np.asarray(value)
        if arr.size != 1 or arr.dtype.kind not in "iuf":
            return None
        number = arr.reshape(()).item()
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def read_attr(attrs, name: str, path, where: str = ""):
    """An attribute's value (None when absent); one that cannot be read is one line."""
    try:
        return attrs.get(name)
    except Exception as e:  # h5py: OSError, TypeError or ValueError for types it cannot map
        raise InputError(f"{path}: {where}attribute {name!r} cannot be read ({type(e).__name__})") from None


def attr_number(attrs, name: str, path, where: str = "", *, integer: bool = False,
                low: float = 0, high: float = math.inf, open_low: bool = True):
    """A numeric attribute, checked: present, one finite number (integral if asked), in
    (low, high] (or [low, high] when open_low is False). Anything else is one line."""
    value = read_attr(attrs, name, path, where)
    if value is None:
        raise InputError(f"{path}: {where}missing attribute {name!r}")
    number = _number(value)
    ok = number is not None and (number > low if open_low else number >= low) and number <= high
    if ok and integer:
        ok = float(number).is_integer()
    if not ok:
        if hasattr(value, "tolist"):  # numpy scalars and arrays as plain values
            value = value.tolist()
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        want = "an integer" if integer else "a number"
        bounds = "" if math.isinf(low) and math.isinf(high) else \
            f" in {'(' if open_low else '['}{low:g}, {high:g}]"
        raise InputError(f"{path}: {where}attribute {name}={repr(value)[:60]} is not {want}{bounds}")
    return int(number) if integer else float(number)


def check_version(path, attrs, kind: str, version: int, noun: str) -> None:
    """Refuse a store of another kind or format version with one line naming the file: a store
    written by another mgpipe version could hold other units or another layout. (Stores from
    before the kind attribute carry only format_version.)"""
    got_kind = read_attr(attrs, "kind", path)
    if isinstance(got_kind, bytes):
        got_kind = got_kind.decode("utf-8", "replace")
    if got_kind is not None and str(got_kind) != kind:
        raise InputError(f"{path}: a {str(got_kind)[:60]} store, not a {noun} store")
    if read_attr(attrs, "format_version", path) is None:
        raise InputError(f"{path}: not a {noun} store of mgpipe (no format_version)")
    got = attr_number(attrs, "format_version", path, integer=True, low=-math.inf)
    if got != version:
        raise InputError(f"{path}: {noun} store format {got}, this mgpipe reads format "
                         f"{version}; rebuild it (rerun its stage)")


def child_node(parent, name: str, path, noun: str, where: str):
    """The node `name` of group `parent`, reached through a hard link only: a soft link (a
    loop included), an external link or a user-defined link is refused before it is followed.
    Missing: KeyError."""
    import h5py

    if not isinstance(parent, h5py.Group):
        raise KeyError(where)
    try:
        link = parent.id.links.get_info(name.encode())
    except (KeyError, RuntimeError, ValueError):  # no such name
        raise KeyError(where) from None
    if link.type != h5py.h5l.TYPE_HARD:
        what = {h5py.h5l.TYPE_SOFT: "a soft link", h5py.h5l.TYPE_EXTERNAL: "an external link"}
        raise InputError(f"{path}: {where} is {what.get(link.type, 'a user-defined link')}; a {noun} "
                         "store holds only its own data (links are refused)")
    try:
        return parent[name]
    except Exception as e:  # a damaged object header
        raise InputError(f"{path}: {where} cannot be opened ({type(e).__name__})") from None


def check_dataset(ds, path, where: str, *, kinds: str, ranks, itemsizes=None, vlen_of=None) -> tuple:
    """Refuse a dataset whose bytes live elsewhere (external storage, a virtual dataset), whose
    dtype or rank the format does not have, or whose declared size or chunk would allocate
    more than MAX_READ_BYTES; return its shape. Only metadata is read."""
    import h5py
    import numpy as np

    if not isinstance(ds, h5py.Dataset):
        raise InputError(f"{path}: {where} is a {type(ds).__name__}, expected a dataset")
    try:
        virtual = ds.is_virtual
        dcpl = ds.id.get_create_plist()
        external = dcpl.get_external_count()
        dtype, shape, chunks = ds.dtype, ds.shape, ds.chunks
    except Exception as e:
        raise InputError(f"{path}: {where} cannot be read ({type(e).__name__}: {str(e)[:80]})") from None
    if virtual:
        raise InputError(f"{path}: {where} is a virtual dataset (its data lives in other files); refused")
    if external:
        name = dcpl.get_external(0)[0].decode("utf-8", "replace")
        raise InputError(f"{path}: {where} keeps its data in another file ({name[:100]}): "
                         "external storage is refused")
    if vlen_of is not None:
        base = h5py.check_vlen_dtype(dtype)
        ok = base is not None and np.dtype(base) == np.dtype(vlen_of)
        expected = f"variable-length {np.dtype(vlen_of)}"
    else:
        ok = dtype.kind in kinds and dtype.fields is None and dtype.subdtype is None
        ok = ok and (itemsizes is None or dtype.itemsize in itemsizes)
        expected = {"f": "floating point", "u": "unsigned integer"}.get(kinds, kinds)
    if not ok:
        raise InputError(f"{path}: {where} has dtype {str(dtype)[:60]}, expected {expected}")
    if shape is None or len(shape) not in ranks:
        rank = "no shape" if shape is None else f"rank {len(shape)}"
        raise InputError(f"{path}: {where} has {rank}, expected rank {' or '.join(map(str, ranks))}")
    itemsize = max(dtype.itemsize, 16 if vlen_of is not None else 0)
    for what, dims in (("data", shape), ("chunk", chunks)):
        if dims is not None and math.prod(int(d) for d in dims) * itemsize > MAX_READ_BYTES:
            raise InputError(f"{path}: {where} declares {what} shape {tuple(int(d) for d in dims)} "
                             f"({math.prod(dims) * itemsize / 2**30:.1f} GiB), over the "
                             f"{MAX_READ_BYTES / 2**30:g} GiB a read may take; refused before reading")
    return tuple(int(d) for d in shape)


# store file (path, inode, size, mtime) -> {clip id: length} already checked in this process
_checked: dict = {}


MAX_CACHED_NODES = 1024   # per store and process; a clip's lookups cost less than its read


class LazyStore:
    """Read access to one HDF5 store, opened lazily once per process (forked DataLoader
    workers must not share an h5py handle), with a per-process cache of looked-up nodes (h5py's
    path lookups cost more than reading a clip). Pickles as its path alone.

    Every node is checked when first looked up (`node` -> `check_node`); a subclass says what
    its clips' nodes may be (`check_node`), where a clip's data is (`clip_key`) and how long a
    clip is (`clip_length`)."""

    KIND = ""     # the store's kind attribute
    NOUN = ""     # what messages call it ("keypoint store")
    VERSION = 0
    CLIPS = "clips"   # the group holding one node per clip

    def __init__(self, path):
        self.path = path
        self._pid, self._h5, self._nodes = None, None, {}

    @property
    def h5(self):
        import h5py

        if self._pid != os.getpid() or self._h5 is None:
            try:
                h5 = h5py.File(self.path, "r")
            except FileNotFoundError:
                raise InputError(f"{self.path}: {self.NOUN} store not found") from None
            except Exception as e:  # OSError, and what h5py raises on a damaged superblock
                raise InputError(f"{self.path}: not a readable {self.NOUN} store "
                                 f"({str(e).splitlines()[0][:200] if str(e) else type(e).__name__})") from None
            try:
                check_version(self.path, h5.attrs, self.KIND, self.VERSION, self.NOUN)
            except InputError:
                h5.close()
                raise
            self._pid, self._h5, self._nodes = os.getpid(), h5, {}
        return self._h5

    def node(self, key: str):
        """The checked node at `key` (KeyError when absent), its parents checked on the way.
        The most recently used nodes stay cached: an open h5py object holds ~40 KB, so caching
        every clip's would grow a loader by 1 GB over an epoch of iMiGUE (docs/scale.md)."""
        h5 = self.h5
        node = self._nodes.get(key)
        if node is None:
            parent_key, _, name = key.rpartition("/")
            parent = self.node(parent_key) if parent_key else h5
            node = self.check_node(key, child_node(parent, name, self.path, self.NOUN, key))
            if len(self._nodes) >= MAX_CACHED_NODES:
                del self._nodes[next(iter(self._nodes))]   # the least recently used
        else:
            del self._nodes[key]
        self._nodes[key] = node   # (re)inserted last: dicts keep insertion order
        return node

    def check_node(self, key: str, node):
        """Refuse a node the format does not have (subclasses); return it."""
        return node

    def read(self, key: str, selection=()):
        """A checked dataset's data (or `selection` of it); unreadable bytes (a damaged chunk,
        a filter this HDF5 lacks) are one line."""
        ds = self.node(key)
        try:
            return ds[selection]
        except (OSError, ValueError, RuntimeError, TypeError) as e:
            raise InputError(f"{self.path}: {key} cannot be read "
                             f"({str(e).splitlines()[0][:120] if str(e) else type(e).__name__})") from None

    def clip_ids(self) -> list[str]:
        """The ids of the store's clips (names only: no link is followed)."""
        import h5py

        if self.CLIPS not in self.h5:
            return []
        group = self.node(self.CLIPS)
        if not isinstance(group, h5py.Group):
            raise InputError(f"{self.path}: {self.CLIPS} is not a group")
        return sorted(group.keys())

    def clip_length(self, clip_id: str) -> int:
        """The frames a clip declares (metadata only; KeyError when the clip is absent)."""
        raise NotImplementedError

    def check_manifest(self, manifest, *, whole: bool = False) -> None:
        """Refuse a store that does not fit the manifest's clips, from attributes and shapes
        only: a manifest clip it lacks, a clip longer than the manifest's num_frames (a video
        may end early, so fewer frames are allowed), and with whole=True (the stage's whole
        manifest) clips the manifest does not list: a store built from another manifest."""
        import pandas as pd

        self.h5  # noqa: B018 (opens and checks the header)
        st = os.stat(self.path)
        done = _checked.setdefault((os.path.realpath(self.path), st.st_ino, st.st_size, st.st_mtime_ns), {})
        ids = manifest["clip_id"].astype(str).tolist()
        frames = (pd.to_numeric(manifest["num_frames"], errors="coerce").tolist()
                  if "num_frames" in manifest.columns else [math.nan] * len(ids))
        for cid, expected in zip(ids, frames):
            if cid not in done:
                try:
                    done[cid] = self.clip_length(cid)
                except KeyError:
                    raise InputError(f"{self.path}: no {self.NOUN}s for clip {cid!r} of the manifest "
                                     f"(rebuild the store from this manifest)") from None
            if done[cid] < 1:
                raise InputError(f"{self.path}: clip {cid!r} has no frames")
            if done[cid] > expected:  # NaN: no bound from the manifest
                raise InputError(f"{self.path}: clip {cid!r} has {done[cid]} frames, the manifest says "
                                 f"{expected:g}: the store was built from another manifest")
        if whole:
            extra = sorted(set(self.clip_ids()) - set(ids))
            if extra:
                raise InputError(f"{self.path}: holds {len(extra)} clip(s) the manifest does not list "
                                 f"(first {extra[0]!r}): the store was built from another manifest")

    def __getstate__(self):
        return {"path": self.path, "_pid": None, "_h5": None, "_nodes": {}}

    def close(self) -> None:
        if self._h5 is not None:
            self._h5.close()
        self._pid, self._h5, self._nodes = None, None, {}
