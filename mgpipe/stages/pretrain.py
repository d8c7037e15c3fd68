"""Self-supervised pretraining of a pose model (joint or limb), top to bottom: the clips, the
network, the epoch loop, the weights it hands on.

The model's own pose pathway learns masked heatmap modelling (models/masked.py) on the clips of
pretrain.splits, their labels never read: each sample is the heatmap volume the classifier
would be trained on (the model's input size, augmentation and heatmap settings), blocks of it are
hidden, and the pathway with a small decoder fills them in. The output is the pathway alone as a
pyskl / MMAction2 backbone checkpoint (weights.pth: {"meta", "state_dict"}), which the model's
training then starts from (init_source.SELF_SUPERVISED) and which pyskl or MMAction2 can load
as a pretrained backbone. Resumable state lives in state_dir like a training's.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from mgpipe import config as mgconfig
from mgpipe.formats import checkpoints
from mgpipe.formats import keypoints as keypoint_store
from mgpipe.io import InputError
from mgpipe.learning import specs
from mgpipe.learning.epochs import (
    LONG_EPOCH_SECONDS,
    TrainingDiverged,
    lr_at,
    plot_history,
    remove_state,
    set_aside,
    state_lock,
    write_history,
)
from mgpipe.learning.fingerprint import training_fingerprint
from mgpipe.learning.samples import check_stores, keypoint_channels, make_loader, model_samples
from mgpipe.learning.weights import mmaction
from mgpipe.learning.weights.init_source import InitSource
from mgpipe.learning.weights.initialise import initialise, layout_record, log_report
from mgpipe.models.masked import MaskedHeatmapModel, encoder_state, hidden_blocks
from mgpipe.runtime import pick_device, seed_everything, set_threads, step_precision
from mgpipe.runtime import progress as progress_bar
from mgpipe.stages.clips import read_manifest

log = logging.getLogger(__name__)

OBJECTIVE = "masked heatmap modelling"
SPLIT = "pretrain"   # the name the chosen clips go by inside the stage (labels unused)


def run(name: str, config: dict, *, manifest_csv, keypoints_h5, out_dir, state_dir, init: InitSource | None = None,
        threads: int = 1, progress: bool = True) -> dict:
    """Pretrain model `name`'s pose pathway into out_dir (weights.pth, log.csv, curve.png),
    starting from `init` (None: from scratch). Holds the state folder's lock; a finished run's
    state goes unless train.keep_state."""
    state_dir = Path(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    with state_lock(state_dir):
        result = _pretrain(name, config, manifest_csv=manifest_csv, keypoints_h5=keypoints_h5,
                           out_dir=Path(out_dir), state_dir=state_dir, init=init, threads=threads, progress=progress)
        if not config["train"]["keep_state"]:
            remove_state(state_dir)
        return result


@dataclass
class _Pretraining:
    """What the setup gives the loop."""
    name: str
    spec: specs.ModelSpec
    optim: dict
    mask: dict
    seed: int
    device: torch.device
    amp: bool
    channels_last: bool
    workers: int
    chosen: object                 # the manifest rows pretrained on (split renamed, labels unused)
    samples: object
    layout: object                 # the keypoint store's
    arch: dict
    model: MaskedHeatmapModel
    optimizer: torch.optim.Optimizer
    init_report: dict | None
    fingerprint: str


def _pretrain(name, config, *, manifest_csv, keypoints_h5, out_dir: Path, state_dir: Path, init, threads,
              progress) -> dict:
    job = _setup(name, config, manifest_csv=manifest_csv, keypoints_h5=keypoints_h5, init=init, threads=threads)
    history, start = _resume(job.model, job.optimizer, state_dir, job.fingerprint, job.optim["epochs"], name)
    for epoch in range(start, job.optim["epochs"]):
        history.append(_epoch(job, epoch, first=epoch == start, progress=progress))
        log.info("%s", "  ".join(f"{k}={v}" for k, v in history[-1].items()))
        checkpoints.save({"model": job.model.state_dict(), "optimizer": job.optimizer.state_dict(),
                          "torch_rng": torch.get_rng_state(), "epoch": epoch, "history": history,
                          "fingerprint": job.fingerprint}, state_dir / "last.pt")

    out_dir.mkdir(parents=True, exist_ok=True)
    record = {"objective": OBJECTIVE, "mask": job.mask, "splits": config["pretrain"]["splits"],
              "clips": len(job.chosen), "epochs": job.optim["epochs"], "final_loss": history[-1]["train_loss"],
              "final_explained": history[-1]["train_explained"], "init": job.init_report, "seed": job.seed}
    checkpoints.save(backbone_checkpoint(job.model, job.arch, name, job.layout, record), out_dir / "weights.pth")
    write_history(history, out_dir / "log.csv")
    plot_history(history, out_dir / "curve.png", f"pretrain {name} ({OBJECTIVE})")
    log.info("%s: pretrained weights %s (reconstruction: %.1f %% of the hidden heatmap energy explained)",
             name, out_dir / "weights.pth", 100 * history[-1]["train_explained"])
    return record


def _setup(name, config, *, manifest_csv, keypoints_h5, init, threads) -> _Pretraining:
    """The process, the clips of pretrain.splits, the network from its start (a start that does
    not fit stops here, before any work), its optimiser, and the fingerprint of what the result
    depends on (which state may be resumed)."""
    spec = specs.get(name)
    if spec.inputs[0] not in specs.POSE_INPUTS or spec.is_fused:
        raise InputError(f"model {name}: only the pose models (joint, limb) are pretrained without labels")
    pcfg, tcfg = config["pretrain"], config["train"]
    set_threads(threads)
    device = pick_device(tcfg["device"])
    seed_everything(config["seed"])
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
    amp, channels_last = step_precision(tcfg, device, log)
    manifest = read_manifest(manifest_csv)
    if "split" not in manifest.columns:
        raise InputError(f"{manifest_csv}: not a clip manifest (no split column)")
    check_stores(spec, manifest, keypoints_h5=keypoints_h5)
    chosen = manifest[manifest.split.isin(pcfg["splits"])].copy()
    if chosen.empty:
        raise InputError(f"{manifest_csv}: no clips in the splits {', '.join(pcfg['splits'])} (pretrain.splits)")
    chosen["split"], chosen["label"] = SPLIT, 0   # (the labels are never read: the loader wants a value)

    layout = keypoint_store.Reader(keypoints_h5).layout
    arch = spec.network(config, keypoint_channels(keypoints_h5))
    model = MaskedHeatmapModel(arch["in_channels"], arch["cfg"])
    init_report = _start(model, arch, spec, layout, init, name)
    samples = model_samples(spec, config, chosen, SPLIT, train=True, keypoints_h5=keypoints_h5)
    optim, mask = pcfg["optim"], pcfg["mask"]
    log.info("%s: self-supervised pretraining (%s) on %d clips of %s, %d epochs", name, OBJECTIVE, len(chosen),
             "/".join(pcfg["splits"]), optim["epochs"])
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last_3d)
    optimizer = torch.optim.SGD(model.parameters(), lr=optim["lr"], momentum=optim["momentum"],
                                weight_decay=optim["weight_decay"])
    result_settings = {k: v for k, v in mgconfig.without_output_options({"train": tcfg})["train"].items()
                       if k not in ("threads", "workers")}
    fingerprint = training_fingerprint(
        {"objective": OBJECTIVE, "arch": arch, "pretrain": pcfg, "train": result_settings, "seed": config["seed"],
         "name": name, "augment": spec.augment(config), "heatmaps": config["heatmaps"],
         "inputs": spec.input_settings(config), **({"init_layout": init.layout} if init and init.layout else {})},
        rows=chosen, files={"keypoints": keypoints_h5, "init": None if init is None else init.file}, stage="pretrain")
    return _Pretraining(name, spec, optim, mask, config["seed"], device, amp, channels_last, tcfg["workers"],
                        chosen, samples, layout, arch, model, optimizer, init_report, fingerprint)


def _epoch(job: _Pretraining, epoch: int, *, first: bool, progress: bool) -> dict:
    """One epoch over the clips, each volume with its own hidden blocks; its row of log.csv."""
    optim, mask, model, device = job.optim, job.mask, job.model, job.device
    t0 = time.time()
    model.train()
    job.samples.set_epoch(epoch)
    steps = max(1, len(job.samples) // optim["batch_size"])
    loader = make_loader(job.samples, optim["batch_size"], device=device, shuffle_seed=job.seed * 1000 + epoch,
                         workers=job.workers, drop_last=len(job.samples) > optim["batch_size"],
                         pose_dtype=torch.bfloat16 if job.amp else torch.float32)
    masks = torch.Generator().manual_seed(job.seed * 1000 + epoch)   # which blocks hide: seeded per epoch
    sums, seen = torch.zeros(2, device=device), 0
    bar = progress_bar(loader, desc=f"pretrain {job.name} epoch {epoch + 1}/{optim['epochs']}", unit="batch",
                       enabled=progress, quiet_seconds=LONG_EPOCH_SECONDS, leave=False)
    for it, batch in enumerate(bar):
        for group in job.optimizer.param_groups:
            group["lr"] = lr_at(epoch + it / steps, optim)
        x = batch[job.spec.inputs[0]].to(device, non_blocking=True)
        hidden = hidden_blocks(tuple(x.shape), model.cell, mask["frames"], mask["ratio"], masks).to(device)
        if first and it == 0:   # whole blocks of a coarse grid: the share can differ from the ratio
            log.info("pretrain %s: %.0f %% of each volume hidden (pretrain.mask.ratio %g, blocks of %d frames "
                     "x %d x %d heatmap pixels)", job.name, 100 * float(hidden.float().mean()), mask["ratio"],
                     max(mask["frames"], model.cell[0]), model.cell[1], model.cell[1])
        if job.channels_last:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=job.amp):
            parts = model.loss(model(x, hidden), x, hidden)
        job.optimizer.zero_grad(set_to_none=True)
        parts["loss"].backward()
        if optim["clip_grad"]:
            torch.nn.utils.clip_grad_norm_(model.parameters(), optim["clip_grad"])
        job.optimizer.step()
        seen += len(x)
        sums += torch.stack([parts["loss"].detach(), parts["explained"]]).float() * len(x)
    loss, explained = (float(v) / max(seen, 1) for v in sums.double().tolist())
    if not math.isfinite(loss):
        raise TrainingDiverged(f"pretrain {job.name}: the reconstruction loss became {loss} in epoch "
                               f"{epoch + 1}; lower pretrain.optim.lr ({optim['lr']})")
    return {"epoch": epoch + 1, "lr": round(lr_at(epoch, optim), 8), "train_loss": round(loss, 8),
            "train_explained": round(explained, 6), "seconds": round(time.time() - t0, 1)}


def _start(model: MaskedHeatmapModel, arch: dict, spec, layout, init: InitSource | None, name: str) -> dict | None:
    """Load the pretraining's start into the encoder: the model's init file read as for its
    training (names mapped, layouts mapped by joint name, shapes checked, the report logged),
    through a classifier of the same architecture whose pathway is then copied."""
    if init is None:
        return None
    classifier = specs.build(arch, 1)   # (its head is not used: the pathway is what is copied)
    report = initialise(classifier, arch, init.file, channels=spec.inputs[-1], target_layout=layout,
                        source_layout=init.layout)
    log_report(report, f"pretrain {name}", log)
    model.backbone.load_state_dict(classifier.backbone.state_dict())
    return report


def backbone_checkpoint(model: MaskedHeatmapModel, arch: dict, name: str, layout, record: dict) -> dict:
    """The encoder as a pyskl / MMAction2 checkpoint of a ResNet3dSlowOnly backbone (no head):
    MMAction2's tensor names, and meta.mgpipe with what initialise reads (the model name, so a
    limb pathway is not taken for a joint one, and the keypoint layout) and the pretraining's
    record."""
    state = {mmaction.mmaction_name(k, "single", "single", "pose"): v for k, v in encoder_state(model).items()}
    backbone = mmaction.mmaction_config(arch, 1)["backbone"]
    return {"meta": {"exported_by": f"mgpipe pretrain ({OBJECTIVE}, self-supervised)",
                     "time": time.strftime("%Y-%m-%d %H:%M:%S"), "mmaction_backbone": backbone,
                     "mgpipe": {"name": name, "arch": arch, "layout": layout_record(layout), "pretrain": record}},
            "state_dict": state}


def _resume(model, optimizer, state_dir: Path, fingerprint: str, epochs: int, name: str) -> tuple[list, int]:
    """(history, first epoch to run): this same pretraining's unfinished state where there is
    one, else epoch 1 with any other state set aside (never resumed)."""
    state_file = state_dir / "last.pt"
    state = None
    if state_file.exists():
        try:
            state = checkpoints.load_file(state_file, "pretraining state")
        except InputError as e:
            log.warning("%s", e)
            state = {}
    if state and state.get("fingerprint") == fingerprint and state.get("epoch", -1) + 1 < epochs:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        log.info("pretrain %s: resuming after epoch %d from %s", name, state["epoch"] + 1, state_file)
        return state["history"], state["epoch"] + 1
    if state_file.exists():
        set_aside(state_dir, (state_file,), "another pretraining job (other settings, code or inputs) or a finished one")
    log.info("pretrain %s: from epoch 1 (state %s)", name, fingerprint)
    return [], 0
