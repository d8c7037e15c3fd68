"""What the epoch loops share (training, stages/train.py; self-supervised pretraining,
stages/pretrain.py): the learning-rate schedule, the resumable state's folder (its lock, state
set aside, removal once finished), and the per-epoch history as log.csv and curve.png.
"""

from __future__ import annotations

import contextlib
import csv
import logging
import math
import os
from pathlib import Path

from mgpipe.io import ComputationError, InputError, atomic_path

log = logging.getLogger(__name__)

LONG_EPOCH_SECONDS = 60  # an epoch running this long gets progress lines in the log file too


def lr_at(epoch: float, optim: dict) -> float:
    """Linear warm-up, then step decay at optim['lr_steps'] (epochs), or with schedule 'cosine'
    a half cosine from lr after the warm-up down to 0 at the last epoch (lr_steps unused)."""
    if optim.get("schedule", "step") == "cosine":
        warm, total = optim["warmup_epochs"], optim["epochs"]
        done = min(max((epoch - warm) / max(total - warm, 1e-9), 0.0), 1.0)
        lr = optim["lr"] * 0.5 * (1.0 + math.cos(math.pi * done))
    else:
        lr = optim["lr"] * optim["lr_gamma"] ** sum(epoch >= s for s in optim["lr_steps"])
    if epoch < optim["warmup_epochs"]:
        lr *= (epoch + 1e-3) / optim["warmup_epochs"]
    return lr


def remove_state(state_dir: Path) -> None:
    """Remove a finished training's state folder (and its parent when that is left empty)."""
    import shutil

    size = sum(f.stat().st_size for f in state_dir.rglob("*") if f.is_file())
    shutil.rmtree(state_dir)
    with contextlib.suppress(OSError):  # the parent holds other models' state
        state_dir.parent.rmdir()
    log.info("removed the finished training's state %s (%.1f MB; train.keep_state: true keeps it)",
             state_dir, size / 1e6)


class TrainingDiverged(ComputationError):
    """The loss became NaN or infinite: a setting (usually the learning rate) is too high."""


@contextlib.contextmanager
def state_lock(state_dir: Path):
    """An exclusive lock on the state folder: two jobs writing one state would corrupt it. The OS
    releases it when the process ends, even when the process is killed."""
    import fcntl

    with open(state_dir / "lock", "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise InputError(f"{state_dir}: another training job is using this state folder") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def set_aside(state_dir: Path, files, whose: str) -> None:
    """Move state that must not be resumed into state_dir/stale/ (kept for a look, never resumed)."""
    stale = state_dir / "stale"
    stale.mkdir(exist_ok=True)
    for f in files:
        if f.exists():
            os.replace(f, stale / f.name)
    log.info("set aside the state of %s in %s", whose, stale)


def write_history(history: list[dict], path) -> None:
    keys = list(dict.fromkeys(k for row in history for k in row))
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(history)


def plot_history(history: list[dict], path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    epochs = [r["epoch"] for r in history]
    # markers on every point: a line needs two, and a one-epoch training has one point per curve
    marker = "o" if len(epochs) <= 30 else None
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    # right: the shares (top-1; a pretraining's share of the hidden heatmaps explained), left: losses
    def share(key):
        return "top1" in key or key.endswith("explained")

    for key in [k for k in history[0] if k.startswith("train_") and not share(k)]:
        ax1.plot(epochs, [r.get(key, math.nan) for r in history], label=key[6:], marker=marker)
    ax1.set_xlabel("epoch"), ax1.set_ylabel("loss"), ax1.legend(fontsize=8)
    for key in [k for k in history[0] if share(k)]:
        ax2.plot(epochs, [r.get(key, math.nan) for r in history], label=key, marker=marker,
                 linewidth=2 if key == "val_top1" else 1)
    ax2.set_xlabel("epoch"), ax2.set_ylabel("explained" if not any("top1" in k for k in history[0]) else "top-1")
    lowest = [r[k] for r in history for k in r if share(k) and math.isfinite(r[k])]
    ax2.set_ylim(min([0.0, *lowest]), 1.02)   # (a pretraining starts below 0: worse than empty heatmaps)
    ax2.legend(fontsize=7)
    for ax in (ax1, ax2):  # whole epochs on the axis
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    if len(epochs) == 1:  # a single point: an axis around it, not matplotlib's +-0.05 epoch
        for ax in (ax1, ax2):
            ax.set_xlim(epochs[0] - 1, epochs[0] + 1)
            ax.set_xticks([epochs[0]])
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
