"""scores/<model>.csv: a model's multi-view class probabilities, one row per clip.

Columns: clip_id, split, label, then `<stream>:<k>` for every stream of the model (its spec's
streams: rgb / joint / limb for single models, rgb and pose for the fused network) and every
class k = 0..K-1, in stream order. Scores are written for the val split too, so that ensemble
weights can be searched there and applied to test. The header is the format: the reader checks
it, and that the probabilities are finite and in [0, 1].
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from ..io import InputError, atomic_path, read_csv_table

KEYS = ("clip_id", "split", "label")


def table(rows: pd.DataFrame, probs: dict) -> pd.DataFrame:
    """Score rows of some clips: rows holds clip_id, split, label; probs {stream: [N, K]} in
    the same row order."""
    out = rows[list(KEYS)].reset_index(drop=True)
    cols = [pd.DataFrame(np.asarray(p), columns=[f"{stream}:{k}" for k in range(p.shape[1])])
            for stream, p in probs.items()]
    return pd.concat([out, *cols], axis=1)


def write(path, tables: list[pd.DataFrame]) -> None:
    """One score file from the tables of its splits."""
    with atomic_path(path) as tmp:
        pd.concat(tables, ignore_index=True).to_csv(tmp, index=False, float_format="%.6f")


def read(path) -> pd.DataFrame:
    try:
        # ids as written: a clip of a video called NA is not NaN
        frame = read_csv_table(path, ("clip_id", "split"), "score file")
    except OSError as e:
        raise InputError(f"{path}: not a readable score file ({str(e).splitlines()[0][:120]})") from None
    missing = [k for k in KEYS if k not in frame.columns]
    if missing:
        raise InputError(f"{path}: not a score file (no column {missing[0]!r})")
    streams = streams_of(frame)
    if not streams:
        raise InputError(f"{path}: no <stream>:<class> probability columns")
    widths = set()
    for s in streams:
        ks = sorted(int(c.split(":", 1)[1]) for c in frame.columns if c.startswith(f"{s}:"))
        if ks != list(range(len(ks))):
            raise InputError(f"{path}: stream {s!r} has class columns {ks[:5]}..., expected 0..K-1")
        widths.add(len(ks))
    if len(widths) > 1:
        raise InputError(f"{path}: streams have different class counts {sorted(widths)}")
    values = frame[[c for c in frame.columns if ":" in c]]
    if not all(pd.api.types.is_numeric_dtype(t) for t in values.dtypes):
        raise InputError(f"{path}: probability columns hold non-numeric values")
    v = values.to_numpy(dtype=np.float64)
    if not np.isfinite(v).all() or (v < 0).any() or (v > 1 + 1e-6).any():
        raise InputError(f"{path}: probabilities must be finite and within [0, 1]")
    return frame


def streams_of(frame: pd.DataFrame) -> list[str]:
    """Stream names in column order."""
    return list(dict.fromkeys(c.split(":")[0] for c in frame.columns if ":" in c))


def stream_probs(frame: pd.DataFrame, stream: str) -> torch.Tensor:
    cols = [c for c in frame.columns if c.startswith(f"{stream}:")]
    cols.sort(key=lambda c: int(c.split(":")[1]))
    return torch.tensor(frame[cols].to_numpy(), dtype=torch.float64)
