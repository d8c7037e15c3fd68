"""Stage 8: multi-view test scores of one trained model, one row per clip, one column per class.

Columns: clip_id, split, label, then `<stream>:<k>` probabilities for every stream of the model
(rgb / joint / limb for single models; rgb and pose for the fused network). Scores are written
for the val split too, so that ensemble weights can be searched there and applied to test.
"""

from __future__ import annotations

import logging

import pandas as pd
import torch

from . import zoo
from .data import ClipDataset
from .io import InputError, atomic_path
from .runtime import pick_device, seed_everything, set_threads
from .train import make_loader, predict, top1

log = logging.getLogger(__name__)


def score_model(checkpoint, config: dict, *, manifest_csv, frames_h5, keypoints_h5, out_csv,
                splits=("val", "test"), threads=1, progress=True) -> dict:
    set_threads(threads)
    seed_everything(config["seed"])
    device = pick_device(config["train"]["device"])
    model, ckpt = zoo.load_checkpoint(checkpoint)
    name = ckpt["name"]
    model.to(device)
    manifest = pd.read_csv(manifest_csv, dtype={"video_id": str, "clip_id": str})
    tcfg = config["test"]
    frames = []
    summary = {}
    # A dataset without a validation split is scored on test alone.
    present = [s for s in splits if (manifest.split == s).any()]
    if not present:
        raise InputError(f"{manifest_csv}: no clips in split(s) {', '.join(splits)}")
    for split in present:
        data = ClipDataset(manifest, split, zoo.modalities(config, name, False), frames_h5=frames_h5,
                           keypoints_h5=keypoints_h5, train=False, seed=config["seed"],
                           views=tcfg["views"], flip=tcfg["flip"], mean=config["rgb"]["mean"],
                           std=config["rgb"]["std"], sigma=config["heatmaps"]["sigma"],
                           padding=config["heatmaps"]["padding"])
        loader = make_loader(data, tcfg["batch_size"], workers=config["train"]["workers"])
        probs = predict(model, name, loader, device, progress=progress, desc=f"{name} {split}")
        table = data.clips[["clip_id", "split", "label"]].copy()
        for stream, p in probs.items():
            cols = pd.DataFrame(p.numpy(), columns=[f"{stream}:{k}" for k in range(p.shape[1])])
            table = pd.concat([table, cols], axis=1)
            summary[f"{split}_top1_{stream}"] = round(top1(p, data.labels), 4)
        frames.append(table)
    with atomic_path(out_csv) as tmp:
        pd.concat(frames, ignore_index=True).to_csv(tmp, index=False, float_format="%.6f")
    log.info("%s: %s", name, summary)
    return summary


def read_scores(path) -> pd.DataFrame:
    return pd.read_csv(path, dtype={"clip_id": str})


def stream_probs(scores: pd.DataFrame, stream: str) -> torch.Tensor:
    cols = [c for c in scores.columns if c.startswith(f"{stream}:")]
    cols.sort(key=lambda c: int(c.split(":")[1]))
    return torch.tensor(scores[cols].to_numpy(), dtype=torch.float64)


def streams_of(scores: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(c.split(":")[0] for c in scores.columns if ":" in c))
