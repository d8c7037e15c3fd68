"""Training, top to bottom: data, model, optimiser, the epoch loop, checkpoints.

The same loop trains the single-modality models (rgb, joint, limb) and the fused network.
Resumable state lives in `state_dir` (not a Snakemake output, so a killed job keeps it);
the declared outputs (best checkpoint, per-epoch CSV, curve PNG) are written at the end.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from mgpipe import config as mgconfig
from mgpipe.formats import checkpoints
from mgpipe.formats import frames as frame_store
from mgpipe.formats import keypoints as keypoint_store
from mgpipe.io import InputError
from mgpipe.layouts import Layout
from mgpipe.learning import imbalance, specs
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
from mgpipe.learning.inference import predict, top1
from mgpipe.learning.samples import check_frame_gap, check_stores, keypoint_channels, make_loader, model_samples
from mgpipe.learning.weights.init_source import InitSource
from mgpipe.learning.weights.initialise import initialise, log_report
from mgpipe.models.sync_bn import synchronise_batchnorm
from mgpipe.runtime import pick_device, seed_everything, set_threads, step_precision
from mgpipe.runtime import progress as progress_bar
from mgpipe.stages.clips import read_manifest

log = logging.getLogger(__name__)

LOG_INTERVAL = 50  # steps between progress-bar updates (each one reads a value from the device)


def check_labels(manifest, classes: list[dict], manifest_csv, classes_csv) -> None:
    """Every clip's label is an output of the class table (an integer 0..K-1): a label outside it
    would end training in an index error deep in the loss (or train on a class that has no
    output, on the GPU, as a device-side assert)."""
    import numpy as np
    import pandas as pd

    if "label" not in manifest.columns:
        raise InputError(f"{manifest_csv}: not a clip manifest (no label column)")
    if "split" not in manifest.columns or not (manifest.split == "train").any():
        raise InputError(f"{manifest_csv}: no clips in the train split: nothing to train on")
    values = pd.to_numeric(manifest.label, errors="coerce").to_numpy(dtype=np.float64)
    bad = ~(np.isfinite(values) & (values == np.round(values)) & (values >= 0) & (values < len(classes)))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        clip = manifest.clip_id.iloc[i] if "clip_id" in manifest.columns else f"row {i + 1}"
        raise InputError(f"{manifest_csv}: clip {clip!r} has label {str(manifest.label.iloc[i])!r}, outside the "
                         f"{len(classes)} classes of {classes_csv} (labels 0..{len(classes) - 1}; "
                         f"{int(bad.sum())} clip(s) in all): the manifest and class table are not of one run")


def run(name: str, config: dict, *, state_dir, **job) -> dict:
    """Train model `name`; see _train for the arguments. Holds the state folder's lock."""
    state_dir = Path(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    # Only the first process of a data-parallel job owns the state folder.
    if int(os.environ.get("RANK", "0")) != 0:
        return _train(name, config, state_dir=state_dir, **job)
    with state_lock(state_dir):
        result = _train(name, config, state_dir=state_dir, **job)
        # model.pt, log.csv and curve.png are written: the state can only restart this training
        # from scratch now (a finished state is never resumed), so it goes unless kept
        if not config["train"]["keep_state"]:
            remove_state(state_dir)
        return result


@dataclass
class _Job:
    """What the setup gives the loop: the process, the data, the model and its optimiser."""
    name: str
    spec: specs.ModelSpec
    tcfg: dict
    optim: dict
    seed: int
    device: torch.device
    rank: int
    world: int
    amp: bool
    channels_last: bool
    pose_dtype: torch.dtype       # the heatmap volumes' dtype: the step's compute dtype
    arch: dict
    classes: list
    layout: Layout                # the keypoint store's
    trained_on: dict
    train_set: object
    train_counts: object          # the training split's clips per class (kept in the checkpoint)
    draw_weights: object          # each training sample's sampling weight (train.sampling)
    class_weights: torch.Tensor | None   # the loss's class weights, on the device (None: plain)
    val_set: object               # None without a validation split
    val_loader: object
    model: torch.nn.Module | None = None
    step_model: torch.nn.Module | None = None   # the model as a step calls it (DDP, compiled)
    optimizer: torch.optim.Optimizer | None = None
    init_report: dict | None = None
    fingerprint: str = ""          # what the result depends on: which state may be resumed

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def has_val(self) -> bool:
        return self.val_set is not None


def _train(name: str, config: dict, *, manifest_csv, classes_csv, frames_h5, keypoints_h5,
           out_dir, state_dir: Path, init: InitSource | None = None, threads=1, progress=True) -> dict:
    """Train model `name` from `init` (where it starts: init_source.InitSource, None: from
    scratch; the config's init section is not read here) into out_dir; resumable state in
    state_dir."""
    job = _setup(name, config, manifest_csv=manifest_csv, classes_csv=classes_csv, frames_h5=frames_h5,
                 keypoints_h5=keypoints_h5, init=init, threads=threads)
    history, best, start = _resume(job, state_dir)
    spec, optim, tcfg, device, world, main = job.spec, job.optim, job.tcfg, job.device, job.world, job.main
    model, optimizer, train_set = job.model, job.optimizer, job.train_set
    state_file, best_file = state_dir / "last.pt", state_dir / "best.pt"

    # ---- the loop ----------------------------------------------------------------------
    steps = max(1, len(train_set) // (optim["batch_size"] * world))
    stream_names = spec.streams
    # TensorBoard events (train.tensorboard) go beside the model's outputs, flushed every epoch
    board = open_tensorboard(Path(out_dir) / "tensorboard", start) if tcfg["tensorboard"] and main else None
    for epoch in range(start, optim["epochs"]):
        t0 = time.time()
        model.train()
        train_set.set_epoch(epoch)
        loader = make_loader(train_set, optim["batch_size"], device=device, shuffle_seed=job.seed * 1000 + epoch,
                             workers=tcfg["workers"], rank=job.rank, world=world, sample_weights=job.draw_weights,
                             drop_last=len(train_set) > optim["batch_size"] * world, pose_dtype=job.pose_dtype)
        # Running sums stay on the device; the host reads them once per log interval, so the
        # GPU never waits for the CPU inside a step.
        sums = torch.zeros(0, device=device)
        correct = torch.zeros(len(stream_names), device=device)
        part_names, seen = None, 0
        # a bar on a terminal; in a log file the epoch line below, and lines per 10 % of an epoch
        # that has run a minute (a Video Swin epoch on a CPU: minutes in a few dozen steps)
        bar = progress_bar(loader, desc=f"{name} epoch {epoch + 1}/{optim['epochs']}", unit="batch",
                           enabled=progress and main, quiet_seconds=LONG_EPOCH_SECONDS, leave=False)
        # train.finetune.freeze_epochs: the loaded tensors sit out the first epochs (no step at all)
        frozen = [p for group in optimizer.param_groups if group["loaded"] for p in group["params"]] \
            if epoch < tcfg["finetune"]["freeze_epochs"] else []
        for it, batch in enumerate(bar):
            for group in optimizer.param_groups:
                group["lr"] = lr_at(epoch + it / steps, optim) * group["lr_scale"]
            labels = batch["label"].to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=job.amp):
                logits, out = spec.forward(job.step_model, batch, device, job.channels_last)
                parts = model.loss(out, labels, class_weights=job.class_weights)
            optimizer.zero_grad(set_to_none=True)
            parts["loss"].backward()
            for p in frozen:
                p.grad = None    # (SGD skips a tensor without a gradient: no momentum, no decay)
            if optim["clip_grad"]:
                torch.nn.utils.clip_grad_norm_(model.parameters(), optim["clip_grad"])
            optimizer.step()
            n = len(labels)
            seen += n
            if part_names is None:
                part_names = list(parts)
                sums = torch.zeros(len(part_names), device=device)
            sums += torch.stack([parts[k].detach().float() for k in part_names]) * n
            correct += torch.stack([(logits[s].argmax(1) == labels).sum() for s in stream_names]).float()
            if (it + 1) % LOG_INTERVAL == 0 and progress and main:
                bar.set_postfix(loss=f"{float(sums[0]) / seen:.3f}", refresh=False)

        totals = _reduce(torch.cat([sums, correct, torch.tensor([float(seen)], device=device)]), world)
        loss_sums, correct_sums, seen = totals[:len(sums)], totals[len(sums):-1], int(totals[-1])
        if not all(math.isfinite(v) for v in loss_sums):
            raise TrainingDiverged(f"{name}: the training loss became {loss_sums[0] / max(seen, 1)} in "
                                   f"epoch {epoch + 1}; lower the learning rate ({optim['lr']})")
        # (the init file was checked finite: what became non-finite here, training made so)
        broken = next((k for k, t in model.state_dict().items()
                       if t.is_floating_point() and not bool(torch.isfinite(t).all())), None)
        if broken is not None:
            raise TrainingDiverged(f"{name}: the model's {broken} became NaN or infinite in epoch "
                                   f"{epoch + 1}; lower the learning rate ({optim['lr']})")
        row = {"epoch": epoch + 1, "lr": round(lr_at(epoch, optim), 8),
               **{f"train_{k}": round(v / max(seen, 1), 6) for k, v in zip(part_names or [], loss_sums)},
               **{f"train_top1_{s}": round(c / max(seen, 1), 6) for s, c in zip(stream_names, correct_sums)}}
        if job.has_val:
            # Every process validates the whole split (no collectives inside), so all agree on "best".
            probs = predict(model, spec, job.val_loader, device, amp=job.amp, channels_last=job.channels_last,
                            source=name)
            row.update({f"val_top1_{s}": round(top1(p, job.val_set.labels), 6) for s, p in probs.items()})
            score = top1(specs.combine_streams(probs), job.val_set.labels)
            row["val_top1"] = round(score, 6)
        else:
            score = float(epoch)  # the last epoch is the best one
        row["seconds"] = round(time.time() - t0, 1)
        history.append(row)
        if main:
            log.info("%s", "  ".join(f"{k}={v}" for k, v in row.items()))
        if board is not None:
            write_tensorboard(board, row)
        if score > best:
            best = score
            if main:
                checkpoints.save({"model": model.state_dict(), "arch": job.arch, "num_classes": len(job.classes),
                                  "name": name, "epoch": epoch + 1, "val_top1": score if job.has_val else None,
                                  "selected": "best validation top-1" if job.has_val else "last epoch (no validation split)",
                                  "fingerprint": job.fingerprint, **job.trained_on, "init": job.init_report,
                                  "train_class_counts": job.train_counts}, best_file)
        if main:
            checkpoints.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                              "torch_rng": torch.get_rng_state(), "epoch": epoch, "best": best,
                              "history": history, "fingerprint": job.fingerprint}, state_file)
        if world > 1:
            torch.distributed.barrier()

    if board is not None:
        board.close()
    if world > 1:
        torch.distributed.destroy_process_group()
    return _outputs(job, history, state_dir, Path(out_dir)) if main else {}


# ---- setup -----------------------------------------------------------------------------------

def _setup(name: str, config: dict, *, manifest_csv, classes_csv, frames_h5, keypoints_h5, init,
           threads) -> _Job:
    """The process (threads, device, data-parallel group, seed, precision), the data, the model
    started from `init`, its optimiser, and the fingerprint that says which state may be resumed."""
    spec = specs.get(name)
    tcfg = config["train"]
    set_threads(threads)
    device = pick_device(tcfg["device"])
    rank, world = _init_distributed(device)
    if world > 1 and rank == 0:
        local = int(os.environ.get("LOCAL_WORLD_SIZE", world))
        log.info("%s: data-parallel over world size %d (%d node(s) x %d process(es)), %s batch "
                 "statistics", name, world, world // local, local, "synchronised" if tcfg["sync_bn"] else "per-process")
    seed_everything(config["seed"])
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
    amp, channels_last = step_precision(tcfg, device, log)
    # heatmap volumes are written in the dtype the step computes in (autocast would convert them)
    pose_dtype = torch.bfloat16 if amp else torch.float32
    if tcfg["tensorboard"] and rank == 0:
        require_tensorboard()
    manifest = read_manifest(manifest_csv)
    job = _Job(name=name, spec=spec, tcfg=tcfg, optim=spec.optim(config), seed=config["seed"], device=device,
               rank=rank, world=world, amp=amp, channels_last=channels_last, pose_dtype=pose_dtype,
               **_data(spec, config, manifest, manifest_csv, classes_csv, frames_h5, keypoints_h5, device,
                       pose_dtype))
    _build_model(job, init)
    if rank == 0:  # (after the init file is checked: a refused init is the run's one line)
        log.info("%s: %s", name, imbalance.describe(config, job.train_counts))
    job.fingerprint = _fingerprint(job, config, manifest, init,
                                   files={"classes": classes_csv, "frames": frames_h5, "keypoints": keypoints_h5})
    return job


def _data(spec, config, manifest, manifest_csv, classes_csv, frames_h5, keypoints_h5, device, pose_dtype) -> dict:
    """The checked inputs as _Job's data fields: the class table, the network for the store's
    channels, what the model is trained on, the training samples with their class-imbalance
    weights, and the validation samples (none without a validation split)."""
    tcfg, optim = config["train"], spec.optim(config)
    classes = checkpoints.class_table(classes_csv)
    check_stores(spec, manifest, frames_h5=frames_h5, keypoints_h5=keypoints_h5)
    check_labels(manifest, classes, manifest_csv, classes_csv)
    gap = config[spec.frame_input]["gap"] if spec.frame_input and "gap" in config[spec.frame_input] else 0
    if gap:   # every split's clips, the test split's too: not only once the test stage runs
        with contextlib.closing(frame_store.Reader(frames_h5)) as store:
            check_frame_gap(gap, {c: store.clip_length(c) for c in manifest.clip_id.astype(str)}, frames_h5,
                            f"{spec.frame_input}.gap")
    # what the model is trained on, kept in every checkpoint (predict and test hold data to it)
    layout = keypoint_store.Reader(keypoints_h5).layout
    train_set = model_samples(spec, config, manifest, "train", train=True, frames_h5=frames_h5,
                              keypoints_h5=keypoints_h5)
    # class imbalance (mgpipe/learning/imbalance.py): the training split's class counts give the sampling
    # weights, the loss weights and the prior the checkpoint keeps for test-time logit adjustment
    train_counts = imbalance.class_counts(train_set.labels, len(classes))
    class_weights = imbalance.loss_weights(config, train_counts)
    # Without a validation split the fixed schedule runs to its end and the last epoch is kept:
    # selecting on the test split would report an optimistic score.
    val_set = val_loader = None
    if (manifest.split == "val").any():
        val_set = model_samples(spec, config, manifest, "val", train=False, frames_h5=frames_h5,
                                keypoints_h5=keypoints_h5, views=tcfg["val_views"])
        val_loader = make_loader(val_set, optim["batch_size"], device=device, workers=tcfg["workers"],
                                 pose_dtype=pose_dtype)
    else:
        log.info("%s: no validation split: training %d epochs and keeping the last", spec.name, optim["epochs"])
    return {"arch": spec.network(config, keypoint_channels(keypoints_h5)), "classes": classes, "layout": layout,
            "trained_on": checkpoints.model_record(spec, config, classes, layout),
            "train_set": train_set, "train_counts": train_counts,
            "draw_weights": imbalance.sample_weights(train_set.labels, len(classes), tcfg["sampling"]),
            "class_weights": None if class_weights is None else class_weights.to(device),
            "val_set": val_set, "val_loader": val_loader}


def _build_model(job: _Job, init: InitSource | None) -> None:
    """The network, started from `init` (merged weights, another run's model, a pyskl / MMAction2
    checkpoint, torchvision weights: names mapped, shapes checked, what is loaded / fresh /
    ignored logged and kept in the checkpoint), on the device, wrapped for the step
    (synchronised batch norm, DistributedDataParallel, compile), and its optimiser."""
    model = specs.build(job.arch, len(job.classes))
    if init is not None:
        job.init_report = initialise(model, job.arch, init.weights or init.file, channels=job.spec.inputs[-1],
                                     target_layout=job.layout, source_layout=init.layout)
        if job.main:
            log_report(job.init_report, job.name, log)
    model.to(job.device)
    if job.world > 1 and job.tcfg["sync_bn"]:
        model = synchronise_batchnorm(model, job.device)
    if job.channels_last:
        model.to(memory_format=torch.channels_last_3d)
    step_model = model
    if job.world > 1:
        step_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[job.device.index] if job.device.type == "cuda" else None)
    if job.tcfg["compile"] and job.device.type == "cuda":
        step_model = torch.compile(step_model)
    optim = job.optim
    job.model, job.step_model = model, step_model
    job.optimizer = torch.optim.SGD(_param_groups(job, model), lr=optim["lr"], momentum=optim["momentum"],
                                    weight_decay=optim["weight_decay"])


def _param_groups(job: _Job, model: torch.nn.Module) -> list[dict]:
    """The optimiser's parameter groups, each with its share of the schedule's learning rate
    (lr_scale) and whether the initial weights loaded it (loaded: frozen for the first
    train.finetune.freeze_epochs). Trained from scratch: one group at the schedule's rate."""
    params = list(model.named_parameters())
    loaded = set(job.init_report["loaded"]) if job.init_report else set()
    old = [p for n, p in params if n in loaded]
    new = [p for n, p in params if n not in loaded]
    if not old:
        return [{"params": new, "lr_scale": 1.0, "loaded": False}]
    finetune = job.tcfg["finetune"]
    if job.main:
        log.info("%s: fine-tuning: %d loaded tensors at %g x the learning rate%s, %d not loaded at the rate",
                 job.name, len(old), finetune["lr_scale"],
                 f" (frozen for the first {finetune['freeze_epochs']} epoch(s))" if finetune["freeze_epochs"] else "",
                 len(new))
    return [{"params": old, "lr_scale": finetune["lr_scale"], "loaded": True},
            *([{"params": new, "lr_scale": 1.0, "loaded": False}] if new else [])]


def _fingerprint(job: _Job, config: dict, manifest, init: InitSource | None, files: dict) -> str:
    """What the training's result depends on. State written by any other job (other settings,
    code, manifest rows, store contents or initial weights) must never be resumed: it would hand
    back the old model. (threads and loader workers change the speed, not the samples or the
    result; nor do the output options: TensorBoard events, keeping the state; config.OUTPUT_OPTIONS)"""
    result_settings = {k: v for k, v in mgconfig.without_output_options({"train": job.tcfg})["train"].items()
                       if k not in ("threads", "workers")}
    return training_fingerprint(
        {"arch": job.arch, "optim": job.optim, "train": result_settings, "seed": job.seed, "name": job.name,
         "augment": job.spec.augment(config), "heatmaps": config["heatmaps"], "inputs": job.trained_on["inputs"],
         **({"init_layout": init.layout} if init is not None and init.layout is not None else {}),
         **({"init_weights": init.weights} if init is not None and init.weights else {})},
        rows=manifest[manifest.split.isin(["train", "val"])],
        files={**files, "init": None if init is None else init.file})


# ---- resume and outputs ----------------------------------------------------------------------

def _resume(job: _Job, state_dir: Path) -> tuple[list, float, int]:
    """(history, best score, first epoch to run): the state of this same training where there is
    one (model, optimiser and random state loaded into the job), else a start from epoch 1 with
    any other state set aside."""
    state_file, best_file = state_dir / "last.pt", state_dir / "best.pt"
    state = None
    if state_file.exists():
        try:
            state = checkpoints.load_file(state_file, "training state")
        except InputError as e:  # unreadable or refused: never resumed, kept aside for a look
            log.warning("%s", e)
            state = {}
    # A finished state is never resumed either: its job already wrote its outputs, so being run
    # again means the outputs were removed or a rerun was forced (snakemake -R / -f).
    finished = bool(state) and state.get("epoch", -1) + 1 >= job.optim["epochs"]
    if state and state.get("fingerprint") == job.fingerprint and not finished:
        job.model.load_state_dict(state["model"])
        job.optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        log.info("%s: resuming after epoch %d from %s", job.name, state["epoch"] + 1, state_file)
        return state["history"], state["best"], state["epoch"] + 1
    if state_file.exists() or best_file.exists():
        set_aside(state_dir, (state_file, best_file),
                   "a finished job" if finished and state.get("fingerprint") == job.fingerprint
                   else "another training job (other settings, code or inputs)")
    log.info("%s: training from epoch 1 (state %s)", job.name, job.fingerprint)
    return [], -1.0, 0


def _outputs(job: _Job, history: list, state_dir: Path, out_dir: Path) -> dict:
    """The declared outputs: the best epoch's checkpoint as model.pt, log.csv and curve.png."""
    best_file = state_dir / "best.pt"
    best_ckpt = checkpoints.load(best_file)
    if best_ckpt.get("fingerprint") != job.fingerprint:  # cannot happen unless someone copied files in
        raise InputError(f"{best_file}: was written by another training job; delete {state_dir} and rerun")
    out_dir.mkdir(parents=True, exist_ok=True)
    checkpoints.save(best_ckpt, out_dir / "model.pt")
    write_history(history, out_dir / "log.csv")
    plot_history(history, out_dir / "curve.png", job.name)
    log.info("%s: kept epoch %d (%s), val top-1 %s", job.name, best_ckpt["epoch"], best_ckpt["selected"],
             best_ckpt["val_top1"])
    return {"best_val_top1": best_ckpt["val_top1"], "best_epoch": best_ckpt["epoch"]}


def _init_distributed(device) -> tuple[int, int]:
    """(rank, world size); joins the process group when launched by torchrun with >1 process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    import torch.distributed as dist

    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size()


def _reduce(totals: torch.Tensor, world: int) -> list[float]:
    """Epoch totals summed over all processes (each saw its own share), read to the host once."""
    totals = totals.double()
    if world > 1:
        torch.distributed.all_reduce(totals)
    return totals.tolist()


def require_tensorboard() -> None:
    """train.tensorboard needs the `tensorboard` package (the extra mgpipe[tensorboard]): one line
    before any epoch runs, not a traceback after the first."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError:
        raise InputError("train.tensorboard is true but the tensorboard package is not installed: "
                         "pip install 'mgpipe[tensorboard]' (or tensorboard>=2.14), or set "
                         "train.tensorboard: false") from None


def open_tensorboard(folder: Path, start: int):
    """A SummaryWriter on `folder`. A training from epoch 1 starts the folder afresh; a resumed
    one purges the events of the epochs it runs again (the state was saved before them)."""
    import shutil

    from torch.utils.tensorboard import SummaryWriter

    if start == 0 and folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return SummaryWriter(str(folder), purge_step=start + 1 if start else None)


def tensorboard_tag(key: str) -> str:
    """log.csv column -> TensorBoard tag: train_loss -> train/loss, val_top1_joint ->
    val/top1_joint, lr -> lr, seconds -> time/epoch_seconds."""
    if key == "seconds":
        return "time/epoch_seconds"
    for split in ("train", "val"):
        if key.startswith(split + "_"):
            return f"{split}/{key[len(split) + 1:]}"
    return key


def write_tensorboard(board, row: dict) -> None:
    """One epoch's row of log.csv as scalars at step = epoch (losses, learning rate, metrics)."""
    for key, value in row.items():
        if key != "epoch":
            board.add_scalar(tensorboard_tag(key), value, row["epoch"])
    board.flush()


