"""Stage 8: multi-view test scores of one trained model on the val and test splits, written
as a score file (formats/scores.py)."""

from __future__ import annotations

import logging

import torch

from mgpipe.formats import checkpoints, scores
from mgpipe.formats.keypoints import Reader as KeypointReader
from mgpipe.io import InputError
from mgpipe.learning import imbalance
from mgpipe.learning.inference import load_model, predict, top1
from mgpipe.learning.samples import check_stores, make_loader, model_samples
from mgpipe.runtime import pick_device, seed_everything, set_threads, step_precision
from mgpipe.stages.clips import read_manifest

log = logging.getLogger(__name__)


def score_model(checkpoint, config: dict, *, manifest_csv, frames_h5, keypoints_h5, out_csv,
                splits=("val", "test"), threads=1, progress=True, classes_csv=None, given=None) -> dict:
    """Scores of a checkpoint on the manifest's val and test clips. The model's record (classes,
    keypoint layout, input settings) must agree with the manifest, the keypoint store, the
    class table (if given) and the config; `given`: the dotted keys the user's config sets
    itself (None: every key; a key it leaves out takes the model's value)."""
    set_threads(threads)
    seed_everything(config["seed"])
    device = pick_device(config["train"]["device"])
    model, ckpt, spec = load_model(checkpoint)
    name = spec.name
    config = checkpoints.fit_config(ckpt, checkpoint, config, given)
    manifest = read_manifest(manifest_csv)
    check_stores(spec, manifest, frames_h5=frames_h5, keypoints_h5=keypoints_h5)
    checkpoints.check_manifest_classes(ckpt, checkpoint, manifest, manifest_csv)
    if classes_csv is not None:
        checkpoints.check_classes(ckpt, checkpoint, checkpoints.class_table(classes_csv), classes_csv)
    checkpoints.check_layout(ckpt, checkpoint, spec, KeypointReader(keypoints_h5).layout, keypoints_h5)
    model.to(device)
    # The layout the model trained in (a speed choice); test scores stay in fp32.
    _, channels_last = step_precision(config["train"], device)
    if channels_last:
        model.to(memory_format=torch.channels_last_3d)
    tcfg = config["test"]
    # logit adjustment by the training prior the checkpoint records (val and test alike)
    offset = imbalance.logit_offset(ckpt, checkpoint, tcfg["logit_adjust"])
    if offset is not None:
        log.info("%s: logit adjustment, tau %s", name, tcfg["logit_adjust"])
    tables, summary = [], {}
    # A dataset without a validation split is scored on test alone.
    present = [s for s in splits if (manifest.split == s).any()]
    if not present:
        raise InputError(f"{manifest_csv}: no clips in split(s) {', '.join(splits)}")
    for split in present:
        data = model_samples(spec, config, manifest, split, train=False, frames_h5=frames_h5,
                             keypoints_h5=keypoints_h5, views=tcfg["views"], flip=tcfg["flip"])
        loader = make_loader(data, tcfg["batch_size"], device=device, workers=config["train"]["workers"])
        probs = predict(model, spec, loader, device, channels_last=channels_last, progress=progress,
                        desc=f"{name} {split}", logit_offset=offset, source=checkpoint)
        tables.append(scores.table(data.clips, {k: p.numpy() for k, p in probs.items()}, ckpt["classes"]))
        summary.update({f"{split}_top1_{k}": round(top1(p, data.labels), 4) for k, p in probs.items()})
    scores.write(out_csv, tables)
    log.info("%s: %s", name, summary)
    return summary
