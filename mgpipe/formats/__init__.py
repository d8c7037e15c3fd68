"""The files that pass between stages, one module per format: its layout, its writer, its reader
and its version check. Production code and tests read and write them only through these.

- `frames`: frames.h5, JPEG frames per clip (written by decode, read by RGB samples)
- `keypoints`: keypoints.h5, keypoints per clip, their layout and each clip's compact box
  (written by pose, read by every sample)
- `heatmaps`: heatmaps.h5, rendered joint and limb volumes (an export)
- `scores`: scores/<model>.csv, per-clip class probabilities per stream (written by test,
  read by the ensemble)
"""

from ..io import InputError


def check_version(path, attrs, kind: str, version: int, noun: str) -> None:
    """Refuse a store of another kind or format version with one line naming the file: a store
    written by another mgpipe version could hold other units or another layout. (Stores from
    before the kind attribute carry only format_version.)"""
    got_kind = attrs.get("kind")
    if got_kind is not None and str(got_kind) != kind:
        raise InputError(f"{path}: a {got_kind} store, not a {noun} store")
    got = attrs.get("format_version")
    if got is None:
        raise InputError(f"{path}: not a {noun} store of mgpipe (no format_version)")
    if int(got) != version:
        raise InputError(f"{path}: {noun} store format {int(got)}, this mgpipe reads format "
                         f"{version}; rebuild it (rerun its stage)")


class LazyStore:
    """Read access to one HDF5 store, opened lazily once per process (forked DataLoader
    workers must not share an h5py handle), with a per-process cache of looked-up nodes (h5py's
    path lookups cost more than reading a clip). Pickles as its path alone."""

    KIND = ""     # the store's kind attribute
    NOUN = ""     # what messages call it ("keypoint store")
    VERSION = 0

    def __init__(self, path):
        self.path = path
        self._pid, self._h5, self._nodes = None, None, {}

    @property
    def h5(self):
        import os

        import h5py

        if self._pid != os.getpid() or self._h5 is None:
            try:
                h5 = h5py.File(self.path, "r")
            except FileNotFoundError:
                raise InputError(f"{self.path}: {self.NOUN} store not found") from None
            except OSError as e:
                raise InputError(f"{self.path}: not a readable {self.NOUN} store ({e})") from None
            try:
                check_version(self.path, h5.attrs, self.KIND, self.VERSION, self.NOUN)
            except InputError:
                h5.close()
                raise
            self._pid, self._h5, self._nodes = os.getpid(), h5, {}
        return self._h5

    def node(self, key: str):
        h5 = self.h5
        if key not in self._nodes:
            self._nodes[key] = h5[key]
        return self._nodes[key]

    def __getstate__(self):
        return {"path": self.path, "_pid": None, "_h5": None, "_nodes": {}}

    def close(self) -> None:
        if self._h5 is not None:
            self._h5.close()
        self._pid, self._h5, self._nodes = None, None, {}
