"""Inference helpers shared by validation, the test stage, prediction and the benchmark: loading
a trained model from its checkpoint and the multi-view class probabilities of a loader."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from mgpipe.formats import checkpoints
from mgpipe.io import InputError
from mgpipe.learning import specs
from mgpipe.runtime import progress as progress_bar


def load_model(path):
    """(model, checkpoint dict, spec) of a model file; a hostile or foreign file is refused
    (InputError, one line)."""
    ckpt = checkpoints.load(path)
    try:
        spec = specs.get(ckpt["name"])
        model = specs.build(ckpt["arch"], ckpt["num_classes"])
        own = model.state_dict()
        for name, tensor in ckpt["model"].items():   # load_state_dict would cast silently
            problem = checkpoints.fit_problem(tensor, own[name]) if name in own else None
            if problem:
                raise InputError(f"{path}: checkpoint tensor {name} holds {problem}; the model's is "
                                 f"{str(own[name].dtype).removeprefix('torch.')}")
        model.load_state_dict(ckpt["model"])
    except (KeyError, TypeError, ValueError, RuntimeError, OverflowError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputError(f"{path}: checkpoint does not fit its own architecture ({first[:200]})") from None
    return model, ckpt, spec


@torch.no_grad()
def predict(model, spec, loader, device, *, amp=False, channels_last=False, progress=False,
            desc="eval", logit_offset=None, source="the model") -> dict:
    """Per-view softmax probabilities averaged over the views of each clip: {stream: [N, K]}.
    logit_offset [K] (test-time logit adjustment, mgpipe/learning/imbalance.py) is subtracted from every
    stream's logits before the softmax.
    A batch holds views of several clips (the dataset enumerates clip x view); the sums stay on
    the device and are read once at the end, so no batch waits for the host.
    No NaN or infinite value leaves a model: non-finite logits or probabilities end in one
    InputError line naming `source` (the model file), never in empty or NaN score cells."""
    model.eval()
    sums, counts = {}, None
    finite = torch.ones((), dtype=torch.bool, device=device)
    if logit_offset is not None:
        logit_offset = logit_offset.to(device)
    for batch in progress_bar(loader, desc=desc, unit="batch", enabled=progress, leave=False):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            logits, _ = spec.forward(model, batch, device, channels_last)
        idx = batch["index"].to(device, non_blocking=True)
        for stream, z in logits.items():
            finite &= torch.isfinite(z).all()
            z = z.float() if logit_offset is None else z.float() - logit_offset
            p = F.softmax(z, dim=1).double()
            if stream not in sums:
                n = len(loader.dataset.clips)
                sums[stream] = torch.zeros(n, p.shape[1], dtype=torch.float64, device=device)
                counts = torch.zeros(n, dtype=torch.float64, device=device)
            sums[stream].index_add_(0, idx, p)
        counts.index_add_(0, idx, torch.ones(len(idx), dtype=torch.float64, device=device))
    if not bool(finite):
        raise InputError(f"{source}: the model's logits are NaN or infinite on {desc} (its weights "
                         "or its input overflow float32): no scores are written")
    out = {k: (v / counts[:, None]).float().cpu() for k, v in sums.items()}
    for stream, p in out.items():
        if not bool(torch.isfinite(p).all()):
            raise InputError(f"{source}: the model's {stream} probabilities are NaN or infinite on "
                             f"{desc} (the logit adjustment overflows): no scores are written")
    return out


def top1(probs: torch.Tensor, labels) -> float:
    return float((probs.argmax(1).numpy() == np.asarray(labels)).mean())
