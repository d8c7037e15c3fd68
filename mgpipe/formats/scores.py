"""scores/<model>.csv: a model's multi-view class probabilities, one row per clip.

Format 2. Columns: clip_id, split, label, then `<stream>:<k>:<label_id>:<name>` for every
stream of the model (its spec's streams: rgb / joint / limb for single models, rgb and pose for
the fused network) and every output k = 0..K-1, in stream order: label_id and name are the
model's class table (its checkpoint's record), so a score file says which class each column is
and the ensemble can refuse files of different class tables. (Format 1 had `<stream>:<k>` and
is refused with a line saying to rerun the test stage.) Scores are written for the val split
too, so that ensemble weights can be searched there and applied to test. The header is the
format: the reader checks it, and that the probabilities are finite and in [0, 1].
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from mgpipe.io import InputError, atomic_path, read_csv_table

VERSION = 2
KEYS = ("clip_id", "split", "label")
SUM_TOLERANCE = 1e-3   # how far a row's probabilities may sum from 1 (beyond the written rounding)


def table(rows: pd.DataFrame, probs: dict, classes: list[dict]) -> pd.DataFrame:
    """Score rows of some clips: rows holds clip_id, split, label; probs {stream: [N, K]} in
    the same row order; classes the model's class table ({label_id, name} per output)."""
    out = rows[list(KEYS)].reset_index(drop=True)
    cols = []
    for stream, p in probs.items():
        if p.shape[1] != len(classes):
            raise ValueError(f"{stream}: {p.shape[1]} outputs for a table of {len(classes)} classes")
        cols.append(pd.DataFrame(np.asarray(p), columns=[f"{stream}:{k}:{int(c['label_id'])}:{c['name']}"
                                                         for k, c in enumerate(classes)]))
    return pd.concat([out, *cols], axis=1)


def write(path, tables: list[pd.DataFrame]) -> None:
    """One score file from the tables of its splits."""
    with atomic_path(path) as tmp:
        pd.concat(tables, ignore_index=True).to_csv(tmp, index=False, float_format="%.6f")


def _class_columns(path, frame: pd.DataFrame) -> dict:
    """{stream: [(k, label_id, name, column)]} of a score file's probability columns."""
    out: dict = {}
    for c in frame.columns:
        if c in KEYS:
            continue
        parts = c.split(":", 3)
        if len(parts) == 2:
            raise InputError(f"{path}: score file format 1 (columns without class ids and names); this "
                             f"mgpipe reads format {VERSION}: rerun its test stage")
        if len(parts) != 4 or not parts[1].isdigit() or not parts[2].lstrip("-").isdigit():
            raise InputError(f"{path}: column {c[:60]!r} is not <stream>:<output>:<label_id>:<name>")
        out.setdefault(parts[0], []).append((int(parts[1]), int(parts[2]), parts[3], c))
    if not out:
        raise InputError(f"{path}: no <stream>:<output>:<label_id>:<name> probability columns")
    return out


def read(path) -> pd.DataFrame:
    try:
        # ids as written: a clip of a video called NA is not NaN
        frame = read_csv_table(path, ("clip_id", "split"), "score file")
    except OSError as e:
        raise InputError(f"{path}: not a readable score file ({str(e).splitlines()[0][:120]})") from None
    missing = [k for k in KEYS if k not in frame.columns]
    if missing:
        raise InputError(f"{path}: not a score file (no column {missing[0]!r})")
    tables = set()
    for s, cols in _class_columns(path, frame).items():
        ks = [k for k, *_ in cols]
        if ks != list(range(len(ks))):
            raise InputError(f"{path}: stream {s!r} has output columns {ks[:5]}..., expected 0..K-1 in order")
        tables.add(tuple((i, n) for _, i, n, _ in cols))
    if len(tables) > 1:
        raise InputError(f"{path}: streams have different class tables")
    values = frame[[c for c in frame.columns if c not in KEYS]]
    if not all(pd.api.types.is_numeric_dtype(t) for t in values.dtypes):
        raise InputError(f"{path}: probability columns hold non-numeric values")
    v = values.to_numpy(dtype=np.float64)
    if not np.isfinite(v).all() or (v < 0).any() or (v > 1 + 1e-6).any():
        raise InputError(f"{path}: probabilities must be finite and within [0, 1]")
    twice = frame.clip_id[frame.clip_id.duplicated()]
    if len(twice):
        raise InputError(f"{path}: clip {twice.iloc[0]!r} has more than one row (a score file holds one row per clip)")
    for s in streams_of(frame):
        cols = [c for c in frame.columns if c not in KEYS and c.split(":", 1)[0] == s]
        sums = frame[cols].to_numpy(dtype=np.float64).sum(1)
        # (written with 6 decimals: K rounded values are off by at most K * 5e-7)
        tolerance = max(SUM_TOLERANCE, len(cols) * 1e-6)
        off = np.flatnonzero(np.abs(sums - 1) > tolerance)
        if len(off):
            i = off[0]
            raise InputError(f"{path}: clip {frame.clip_id.iloc[i]!r}: the {s} probabilities sum to "
                             f"{sums[i]:.4g}, not 1 (a score row is a probability distribution)")
    return frame


def streams_of(frame: pd.DataFrame) -> list[str]:
    """Stream names in column order."""
    return list(dict.fromkeys(c.split(":")[0] for c in frame.columns if c not in KEYS))


def class_table(frame: pd.DataFrame) -> list[tuple[int, str]]:
    """The class table of a score file read by `read`: (label_id, name) per output, in order."""
    stream = streams_of(frame)[0]
    cols = [c.split(":", 3) for c in frame.columns if c not in KEYS and c.split(":", 1)[0] == stream]
    return [(int(p[2]), p[3]) for p in sorted(cols, key=lambda p: int(p[1]))]


def stream_probs(frame: pd.DataFrame, stream: str) -> torch.Tensor:
    cols = [c for c in frame.columns if c not in KEYS and c.split(":", 1)[0] == stream]
    cols.sort(key=lambda c: int(c.split(":")[1]))
    return torch.tensor(frame[cols].to_numpy(), dtype=torch.float64)
