"""Process-wide settings for a stage: logging to the rule's log, threads, seeds, device."""

from __future__ import annotations

import logging
import os
import random
import sys

import numpy as np


def setup_logging(log_file=None, level=logging.INFO) -> None:
    handlers = [logging.StreamHandler(sys.stderr)]
    if log_file:
        os.makedirs(os.path.dirname(os.path.abspath(log_file)), exist_ok=True)
        handlers.append(logging.FileHandler(log_file, mode="a"))
    logging.basicConfig(level=level, handlers=handlers, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def pick_device(choice: str = "auto"):
    import torch

    if choice == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device is cuda but no CUDA device is visible")
    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cuda" and "LOCAL_RANK" in os.environ:
        return torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return torch.device(choice)


def set_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(max(1, threads))
    # inter-op pools add nondeterministic scheduling and nothing at these sizes
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass  # already set in this process


def visible_gpu_count() -> int:
    """GPUs this process may use, without importing torch (used by the Snakemake profile)."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return len([d for d in env.split(",") if d.strip() and d.strip() != "-1"])
    try:
        return len(os.listdir("/proc/driver/nvidia/gpus"))
    except OSError:
        return 0
