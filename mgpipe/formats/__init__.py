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


def check_version(path, attrs, kind: str, version: int) -> None:
    """Refuse a store of another kind or format version with one line naming the file: a store
    written by another mgpipe version could hold other units or another layout."""
    got_kind = attrs.get("kind")
    if got_kind is not None and str(got_kind) != kind:
        raise InputError(f"{path}: a {got_kind} store, not a {kind} store")
    got = attrs.get("format_version")
    if got is None:
        raise InputError(f"{path}: not a {kind} store of mgpipe (no format_version)")
    if int(got) != version:
        raise InputError(f"{path}: {kind} store format {int(got)}, this mgpipe reads format "
                         f"{version}; rebuild it (rerun its stage)")
