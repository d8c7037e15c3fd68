"""Content fingerprints: what a training job's resumable state was computed from.

Training state lives outside the workflow's declared outputs (so a killed job can resume), which
means Snakemake cannot vouch for it. A state file is resumed only if it was written by the same
job: the same settings, the same code, and inputs with the same *content* (the manifest rows the
job uses, every store it reads, the initial weights). File sizes or timestamps are not enough:
two different weight files of one architecture have exactly the same size, and a re-rendered
heatmap store can too.
"""

from __future__ import annotations

import hashlib

import pandas as pd

from mgpipe.config import canonical, code_digest

_CHUNK = 8 << 20


def file_digest(path) -> str:
    """sha256 of a file's bytes (streamed: stores can be many GB; this reads at disk speed).

    For a store this covers exactly the bytes training reads: the store readers refuse every
    way HDF5 has of reading another file's bytes (external storage, virtual datasets, external
    and soft links; formats.LazyStore.node), and train checks its stores against the manifest
    (samples.check_stores) before the fingerprint is taken, so a store's data is all in its own
    file and a changed byte anywhere it could come from changes this digest."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def rows_digest(frame: pd.DataFrame) -> str:
    """Digest of a table's rows and columns as CSV text (order matters: it sets sample order)."""
    return hashlib.sha256(frame.to_csv(index=False).encode()).hexdigest()


def training_fingerprint(settings: dict, *, rows: pd.DataFrame, files: dict, stage: str = "train") -> str:
    """The resume key of one training (or pretraining) job.

    settings: every setting the job uses (architecture, optimiser, train section, seed, name);
    rows: the manifest rows it trains and validates on; files: {role: path or None} of every file
    it reads (stores, class table, initial weights); stage: whose code (config.code_digest).
    """
    return hashlib.sha256(canonical({
        "settings": settings,
        "code": code_digest(stage),
        "rows": rows_digest(rows),
        "files": {role: None if path is None else file_digest(path) for role, path in sorted(files.items())},
    }).encode()).hexdigest()[:32]
