"""The checkpoint format: what a model file holds, and the only code that reads or writes one.

A checkpoint is a dict of tensors and plain Python values (str, int, float, bool, None, lists,
tuples, dicts), nothing else:

    model        the state dict (tensors only)
    arch         the network's architecture settings (plain dict; see specs.ModelSpec.network)
    num_classes  int
    name         the model's name in the workflow (rgb, joint, limb, fused_<variant>)
    epoch        the epoch it comes from (0 for merged weights)
    val_top1     its validation top-1, or None (merged weights, or no validation split)
    ...          optional plain extras (selected, merged_from, fingerprint)

Training state files (state/<model>/last.pt) follow the same rule: the optimiser state and the
RNG state are tensors and plain values too.

torch checkpoints are pickles, and a pickle can run any code while it loads. Every load here
therefore uses torch's restricted unpickler (`weights_only=True`), which builds tensors and
plain containers only and refuses any other global: a hostile file is refused with one line
that names it, before any of its code can run.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import torch

from .io import InputError, atomic_path

REQUIRED_KEYS = ("model", "arch", "num_classes", "name")


def save(obj: dict, path) -> None:
    """Write a checkpoint atomically (a killed job never leaves a truncated file)."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def _refusal(error: Exception, what: str) -> str:
    """One line out of torch's multi-paragraph errors (their wording differs between versions)."""
    text = str(error)
    found = re.search(r"GLOBAL ([\w.]+)", text)
    if found:
        return (f"{what} refused: it references {found.group(1)}, which no checkpoint holds "
                "(loading it could run code)")
    if "Weights only load failed" in text or "weights_only" in text:
        found = re.search(r"Unsupported operand (\d+)", text)
        held = f"pickle operation {found.group(1)}" if found else "objects other than tensors and plain values"
        return f"{what} refused: it holds {held}, which no checkpoint holds (loading it could run code)"
    return f"not a readable {what} ({type(error).__name__}; expected a file written by torch.save)"


def load_file(path, what: str = "checkpoint") -> dict:
    """Any mgpipe .pt file (checkpoint or training state) as a dict, loaded without running code."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: {what} not found")
    try:
        with warnings.catch_warnings():  # torch warns about old pickle protocols before refusing
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # whatever the unpickler or the zip reader raises, it is bad input
        raise InputError(f"{path}: {_refusal(e, what)}") from None
    if not isinstance(obj, dict):
        raise InputError(f"{path}: {what} holds a {type(obj).__name__}, expected a dict")
    return obj


def load(path) -> dict:
    """A model checkpoint, checked for the keys every stage relies on."""
    ckpt = load_file(path)
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    if missing:
        raise InputError(f"{path}: not an mgpipe model checkpoint (missing {', '.join(missing)})")
    if not isinstance(ckpt["model"], dict) or not all(isinstance(v, torch.Tensor) for v in ckpt["model"].values()):
        raise InputError(f"{path}: checkpoint 'model' is not a state dict of tensors")
    if not isinstance(ckpt["arch"], dict) or not isinstance(ckpt["num_classes"], int):
        raise InputError(f"{path}: checkpoint 'arch' or 'num_classes' has the wrong type")
    return ckpt
