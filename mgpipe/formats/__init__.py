"""The files that pass between stages, one module per format: its layout, its writer, its reader
and its version check. Production code and tests read and write them only through these.

- `frames`: frames.h5, JPEG frames per clip (written by decode, read by RGB samples)
- `keypoints`: keypoints.h5, keypoints per clip, their layout and each clip's compact box
  (written by pose, read by every sample)
- `heatmaps`: heatmaps.h5, rendered joint and limb volumes (an export)
- `scores`: scores/<model>.csv, per-clip class probabilities per stream (written by test,
  read by the ensemble)
- `checkpoints`: model checkpoints and training state (torch's restricted unpickler);
  `numpy_pickles`: the numpy constructors third-party checkpoints may use (pyskl, MMAction2, mmpose)

Stores are untrusted input (they are passed around between people): every HDF5 node a reader
touches goes through `LazyStore.node`, which refuses links other than plain hard links (soft
links, soft-link loops, external links: data in or through another file), external storage
and virtual datasets (bytes of other files, /etc/passwd included), dtypes and ranks the format
does not have, and any dataset or chunk that would allocate more than MAX_READ_BYTES, all from
the metadata, before a byte of data is read. `check_manifest` bounds every clip's declared
length by the manifest's num_frames and refuses a store missing a manifest clip (or, for a
stage's whole manifest, holding clips the manifest does not list).
"""
