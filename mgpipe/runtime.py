"""Process-wide settings for a stage: logging to the rule's log, threads, seeds, device."""

from __future__ import annotations

import logging
import os
import random
import sys
import time

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


def cpu_has_bf16() -> bool:
    import torch

    native = (getattr(torch.cpu, name, lambda: False) for name in
              ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))
    return any(f() for f in native)


def step_precision(tcfg: dict, device, log=None) -> tuple[bool, bool]:
    """(bf16 autocast, channels_last_3d) for one job from train.amp and train.channels_last.

    Both apply on the CPU too: oneDNN's 3D convolutions run about 1.4x faster in channels_last_3d
    and, on CPUs with native bf16 (AVX512-BF16 / AMX), about 2x faster again under bf16 autocast.
    A CPU without native bf16 would emulate it at a fraction of fp32's speed, so it stays in fp32
    and says so."""

    amp = tcfg["amp"] == "bf16"
    if amp and device.type == "cpu" and not cpu_has_bf16():
        if log is not None:
            log.warning("train.amp is bf16 but this CPU has no native bf16: running in fp32")
        amp = False
    return amp, bool(tcfg["channels_last"])


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


# ---- progress --------------------------------------------------------------------------------
# A terminal gets tqdm's bar; anything else (a rule's log file, a pipe) gets plain lines through
# logging, one per tenth of the work, so `logs/*.log` stay readable line by line.

PROGRESS_STEPS = 10  # lines per loop when stderr is not a terminal (one per 10 %)


def stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stream
        return False


def progress(iterable=None, *, total=None, desc: str, unit: str = "it", enabled: bool = True,
             lines: bool = True, quiet_seconds: float = 0.0, leave: bool = True):
    """A progress view of a loop for every long stage (decode, pose, heatmaps, test scoring,
    training epochs): tqdm's bar when stderr is a terminal; otherwise a log line per ~10 % of
    `total` (or of len(iterable)) and one at the end. lines=False: nothing off a terminal.
    quiet_seconds: no line until the loop has run that long (a training epoch, whose epoch line
    is its progress when it is short, gets lines once it has run a minute). Supports iteration,
    update(), set_postfix() and close(), and is a context manager, like tqdm."""
    if enabled and stderr_is_terminal():
        from tqdm import tqdm

        return tqdm(iterable, total=total, desc=desc, unit=unit, leave=leave, file=sys.stderr)
    return ProgressLines(iterable, total=total, desc=desc, unit=unit, enabled=enabled and lines,
                         quiet_seconds=quiet_seconds)


class ProgressLines:
    """Progress as log lines: `desc: 30% (12/40 video) in 5.1 s, 2.35 video/s`."""

    def __init__(self, iterable=None, *, total=None, desc: str, unit: str = "it", enabled: bool = True,
                 quiet_seconds: float = 0.0):
        if total is None and iterable is not None:
            try:
                total = len(iterable)
            except TypeError:
                total = None
        self.iterable, self.total, self.desc, self.unit = iterable, total, desc, unit
        self.enabled, self.n, self.postfix, self.quiet_seconds = enabled, 0, "", quiet_seconds
        self._t0 = time.monotonic()
        self._next = 1  # the next tenth to report
        self._closed = False
        self._log = logging.getLogger("mgpipe.progress")

    def __iter__(self):
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def set_postfix(self, refresh=False, **values) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def update(self, n: int = 1) -> None:
        self.n += n
        if not self.enabled or not self.total:
            return
        tenth = self.n * PROGRESS_STEPS // self.total
        if tenth >= self._next and self.n < self.total and not self._quiet():
            self._next = tenth + 1
            self._write()

    def _quiet(self) -> bool:
        return time.monotonic() - self._t0 < self.quiet_seconds

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.enabled and self.n and not self._quiet():
            self._write()

    def _write(self) -> None:
        seconds = time.monotonic() - self._t0
        share = f"{100 * self.n // self.total}% ({self.n}/{self.total} {self.unit})" if self.total \
            else f"{self.n} {self.unit}"
        rate = f", {self.n / seconds:.3g} {self.unit}/s" if seconds > 0 else ""
        extra = f", {self.postfix}" if self.postfix else ""
        self._log.info("%s: %s in %.1f s%s%s", self.desc, share, seconds, rate, extra)
