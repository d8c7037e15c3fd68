"""Class imbalance: class-aware sampling, class-balanced loss weights and test-time logit
adjustment (docs/architecture.md, "Class imbalance"). Each is a config setting:

    train.sampling      none | sqrt | inverse   draw training clips with probability
                        proportional to n_c^-0.5 (sqrt) or n_c^-1 (inverse) of their class
    train.loss          ce | class_balanced      cross-entropy weighted per class by
                        Cui et al. (2019)'s effective number, beta = train.cb_beta
    test.logit_adjust   tau >= 0                 Menon et al. (2021): logits - tau * log prior,
                        prior = the training split's class frequencies (from the checkpoint)

n_c is the number of training clips of class c. A class without training clips counts as one
clip everywhere here: its sampling weight, loss weight and prior stay finite (it is never drawn
and never a label in training; at test time it gets the boost of the rarest possible class).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from mgpipe.io import InputError

MAX_CLIPS = 10**12   # clips of one class a recorded count may claim (float64 holds it exactly)
SAMPLING_POWERS = {"none": 0.0, "sqrt": -0.5, "inverse": -1.0}


def class_counts(labels, num_classes: int) -> list[int]:
    """Clips per class (labels 0..num_classes-1) as plain ints (a checkpoint entry)."""
    return np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes)[:num_classes].tolist()


def sample_weights(labels, num_classes: int, mode: str) -> torch.Tensor | None:
    """Per-clip drawing weights of a sampling mode (n_c ** power of the clip's class); None for
    'none' (the plain seeded permutation)."""
    power = SAMPLING_POWERS[mode]
    if power == 0.0:
        return None
    counts = np.maximum(np.asarray(class_counts(labels, num_classes), dtype=np.float64), 1.0)
    return torch.tensor((counts ** power)[np.asarray(labels, dtype=np.int64)], dtype=torch.float64)


def class_balanced_weights(counts, beta: float) -> torch.Tensor:
    """Cui et al. (2019): w_c = (1 - beta) / (1 - beta ** n_c), normalised to mean 1 over the
    classes (float32 [K]). beta -> 0 gives equal weights, beta -> 1 inverse frequency."""
    n = np.maximum(np.asarray(counts, dtype=np.float64), 1.0)
    w = (1.0 - beta) / (1.0 - np.power(beta, n))
    return torch.tensor(w / w.mean(), dtype=torch.float32)


def loss_weights(config: dict, counts) -> torch.Tensor | None:
    """The class weights of train.loss (None for plain cross-entropy)."""
    tcfg = config["train"]
    if tcfg["loss"] == "ce":
        return None
    return class_balanced_weights(counts, tcfg["cb_beta"])


def logit_offset(ckpt: dict, path, tau: float) -> torch.Tensor | None:
    """tau * log(prior) [K] to subtract from a model's logits (None when tau is 0). The prior is
    the training split's class frequencies the checkpoint records."""
    if not tau:
        return None
    counts = ckpt.get("train_class_counts")
    if not (isinstance(counts, list) and len(counts) == ckpt["num_classes"]
            and all(isinstance(c, int) and not isinstance(c, bool) for c in counts) and sum(counts) > 0):
        raise InputError(f"{path}: test.logit_adjust is {tau} but the checkpoint records no training "
                         "class counts (written by an older mgpipe, or merged weights): retrain it, "
                         "or set test.logit_adjust: 0")
    odd = next((c for c in counts if not 0 <= c <= MAX_CLIPS), None)
    if odd is not None:
        shown = f"{str(odd)[:12]}... ({len(str(odd))} digits)" if len(str(odd)) > 15 else str(odd)
        raise InputError(f"{path}: its recorded training class counts hold {shown}, not a clip count "
                         f"(0..{MAX_CLIPS}): the record is damaged; retrain it, or set test.logit_adjust: 0")
    prior = np.maximum(np.asarray(counts, dtype=np.float64), 1.0)
    prior /= prior.sum()
    return torch.tensor(tau * np.log(prior), dtype=torch.float32)


def describe(config: dict, counts) -> str:
    """One log line: the split's imbalance and what training does about it."""
    present = [c for c in counts if c > 0]
    ratio = max(present) / min(present) if present else math.nan
    tcfg = config["train"]
    loss = "cross-entropy" if tcfg["loss"] == "ce" else f"class-balanced loss (beta {tcfg['cb_beta']})"
    return (f"training split: {sum(counts)} clips, {len(present)}/{len(counts)} classes, "
            f"largest/smallest class {ratio:.1f}; sampling {tcfg['sampling']}, {loss}")
