"""Training, top to bottom: data, model, optimiser, the epoch loop, checkpoints.

The same loop trains the single-modality models (rgb, joint, limb) and the fused network.
Resumable state lives in `state_dir` (not a Snakemake output, so a killed job keeps it);
the declared outputs (best checkpoint, per-epoch CSV, curve PNG) are written at the end.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm import tqdm

from . import zoo
from .config import digest
from .data import ClipDataset
from .io import atomic_path
from .runtime import pick_device, seed_everything, set_threads

log = logging.getLogger(__name__)


def lr_at(epoch: float, optim: dict) -> float:
    """Linear warm-up, then step decay at optim['lr_steps'] (epochs)."""
    lr = optim["lr"] * optim["lr_gamma"] ** sum(epoch >= s for s in optim["lr_steps"])
    if epoch < optim["warmup_epochs"]:
        lr *= (epoch + 1e-3) / optim["warmup_epochs"]
    return lr


def make_loader(dataset, batch_size, *, shuffle_seed=None, workers=0, drop_last=False,
                rank=0, world=1):
    """A loader over a seeded permutation; under data parallelism each process takes every
    world-th index of the same permutation (an equal share, so all processes step together)."""
    sampler = None
    if shuffle_seed is not None:
        g = torch.Generator().manual_seed(shuffle_seed)
        order = torch.randperm(len(dataset), generator=g).tolist()
        sampler = order[: len(order) // world * world][rank::world]
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
        drop_last=drop_last, pin_memory=torch.cuda.is_available(),
        persistent_workers=False)


def save_atomic(obj, path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def combine(probs: dict, weights: dict | None = None) -> torch.Tensor:
    """Weighted average of per-stream probabilities (1:1 unless weights say otherwise)."""
    weights = weights or {k: 1.0 for k in probs}
    total = sum(weights[k] for k in probs)
    return sum(probs[k] * weights[k] for k in probs) / total


@torch.no_grad()
def predict(model, name, loader, device, *, amp=False, channels_last=False, progress=False,
            desc="eval") -> dict:
    """Per-view softmax probabilities averaged over the views of each clip: {stream: [N, K]}."""
    model.eval()
    sums, counts = {}, None
    for batch in tqdm(loader, desc=desc, disable=not progress, leave=False):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            logits, _ = zoo.forward(model, name, batch, device, channels_last)
        idx = batch["index"]
        for stream, z in logits.items():
            p = F.softmax(z.float(), dim=1).cpu().double()
            if stream not in sums:
                n = len(loader.dataset.clips)
                sums[stream] = torch.zeros(n, p.shape[1], dtype=torch.float64)
                counts = torch.zeros(n, dtype=torch.float64)
            sums[stream].index_add_(0, idx, p)
        counts.index_add_(0, idx, torch.ones(len(idx), dtype=torch.float64))
    return {k: (v / counts[:, None]).float() for k, v in sums.items()}


def top1(probs: torch.Tensor, labels) -> float:
    return float((probs.argmax(1).numpy() == np.asarray(labels)).mean())


def run(name: str, config: dict, *, manifest_csv, classes_csv, frames_h5, heatmaps_h5,
        out_dir, state_dir, init=None, threads=1, progress=True) -> dict:
    # ---- setup -------------------------------------------------------------------------
    out_dir, state_dir = Path(out_dir), Path(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    tcfg, optim = config["train"], zoo.optim_settings(config, name)
    set_threads(threads)
    device = pick_device(tcfg["device"])
    rank, world = _init_distributed(device)
    main = rank == 0
    seed = config["seed"]
    seed_everything(seed)
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
    amp = tcfg["amp"] == "bf16" and device.type == "cuda"
    channels_last = tcfg["channels_last"] and device.type == "cuda"

    manifest = pd.read_csv(manifest_csv, dtype={"video_id": str, "clip_id": str})
    num_classes = len(pd.read_csv(classes_csv))
    arch = zoo.architecture(config, name, heatmaps_h5)
    data_kw = dict(frames_h5=frames_h5, heatmaps_h5=heatmaps_h5, seed=seed,
                   mean=config["rgb"]["mean"], std=config["rgb"]["std"])
    train_set = ClipDataset(manifest, "train", zoo.modalities(config, name, True), train=True,
                            flip=tcfg["flip"], crop_area=tcfg["crop_area"], **data_kw)
    val_set = ClipDataset(manifest, "val", zoo.modalities(config, name, False), train=False,
                          views=tcfg["val_views"], flip=False, **data_kw)
    val_loader = make_loader(val_set, optim["batch_size"], workers=tcfg["workers"])

    model = zoo.build(arch, num_classes)
    if init is not None:
        model.load_state_dict(torch.load(init, map_location="cpu", weights_only=False)["model"])
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last_3d)
    step_model = model
    if world > 1:
        step_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    if tcfg["compile"] and device.type == "cuda":
        step_model = torch.compile(step_model)
    optimizer = torch.optim.SGD(model.parameters(), lr=optim["lr"], momentum=optim["momentum"],
                                weight_decay=optim["weight_decay"])

    # A changed setting (or initial weights) must not resume from state trained under the old one.
    fingerprint = digest({"arch": arch, "optim": optim, "train": tcfg, "seed": seed, "name": name,
                          "data": [len(train_set), len(val_set)],
                          "init": None if init is None else Path(init).stat().st_size})
    history, best, start = [], -1.0, 0
    state_file = state_dir / "last.pt"
    if state_file.exists():
        state = torch.load(state_file, map_location="cpu", weights_only=False)
        if state.get("fingerprint") == fingerprint:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            torch.set_rng_state(state["torch_rng"])
            history, best, start = state["history"], state["best"], state["epoch"] + 1
            log.info("%s: resuming after epoch %d from %s", name, start, state_file)
        else:
            log.info("%s: %s was written under other settings; starting afresh", name, state_file)

    # ---- the loop ----------------------------------------------------------------------
    steps = max(1, len(train_set) // (optim["batch_size"] * world))
    for epoch in range(start, optim["epochs"]):
        t0 = time.time()
        model.train()
        train_set.set_epoch(epoch)
        loader = make_loader(train_set, optim["batch_size"], shuffle_seed=seed * 1000 + epoch,
                             workers=tcfg["workers"], rank=rank, world=world,
                             drop_last=len(train_set) > optim["batch_size"] * world)
        sums = {"loss": 0.0}
        correct = {s: 0 for s in zoo.streams(name)}
        seen = 0
        bar = tqdm(loader, desc=f"{name} epoch {epoch + 1}/{optim['epochs']}", disable=not (progress and main),
                   leave=False)
        for it, batch in enumerate(bar):
            for group in optimizer.param_groups:
                group["lr"] = lr_at(epoch + it / steps, optim)
            labels = batch["label"].to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                logits, out = zoo.forward(step_model, name, batch, device, channels_last)
                if zoo.is_fused(name):
                    parts = model.loss(out, labels)
                else:
                    parts = {"loss": F.cross_entropy(logits[name].float(), labels)}
            loss = parts["loss"]
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{name}: loss is {loss.item()} at epoch {epoch + 1}, "
                                         f"step {it}; lower the learning rate")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if optim["clip_grad"]:
                torch.nn.utils.clip_grad_norm_(model.parameters(), optim["clip_grad"])
            optimizer.step()
            n = len(labels)
            seen += n
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach()) * n
            for s, z in logits.items():
                correct[s] += int((z.argmax(1) == labels).sum())
            bar.set_postfix(loss=f"{float(loss.detach()):.3f}", refresh=False)

        sums, correct, seen = _reduce(sums, correct, seen, world, device)
        # Every process validates the whole split (no collectives inside), so all agree on "best".
        probs = predict(model, name, val_loader, device, amp=amp, channels_last=channels_last)
        row = {"epoch": epoch + 1, "lr": round(lr_at(epoch, optim), 8),
               **{f"train_{k}": round(v / max(seen, 1), 6) for k, v in sums.items()},
               **{f"train_top1_{s}": round(c / max(seen, 1), 6) for s, c in correct.items()},
               **{f"val_top1_{s}": round(top1(p, val_set.labels), 6) for s, p in probs.items()}}
        score = top1(combine(probs), val_set.labels)
        row["val_top1"] = round(score, 6)
        row["seconds"] = round(time.time() - t0, 1)
        history.append(row)
        if main:
            log.info("%s", "  ".join(f"{k}={v}" for k, v in row.items()))
        if score > best:
            best = score
            if main:
                save_atomic({"model": model.state_dict(), "arch": arch, "num_classes": num_classes,
                             "name": name, "epoch": epoch + 1, "val_top1": score}, state_dir / "best.pt")
        if main:
            save_atomic({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                         "torch_rng": torch.get_rng_state(), "epoch": epoch, "best": best,
                         "history": history, "fingerprint": fingerprint}, state_file)
        if world > 1:
            torch.distributed.barrier()

    # ---- outputs -----------------------------------------------------------------------
    if world > 1:
        torch.distributed.destroy_process_group()
    if not main:
        return {}
    out_dir.mkdir(parents=True, exist_ok=True)
    best_ckpt = torch.load(state_dir / "best.pt", map_location="cpu", weights_only=False)
    save_atomic(best_ckpt, out_dir / "model.pt")
    write_history(history, out_dir / "log.csv")
    plot_history(history, out_dir / "curve.png", name)
    log.info("%s: best val top-1 %.4f at epoch %d", name, best_ckpt["val_top1"], best_ckpt["epoch"])
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


def _reduce(sums: dict, correct: dict, seen: int, world: int, device):
    """Epoch totals over all processes (each saw its own share of the training set)."""
    if world <= 1:
        return sums, correct, seen
    keys_s, keys_c = sorted(sums), sorted(correct)
    t = torch.tensor([sums[k] for k in keys_s] + [correct[k] for k in keys_c] + [seen],
                     dtype=torch.float64, device=device)
    torch.distributed.all_reduce(t)
    v = t.tolist()
    return (dict(zip(keys_s, v[:len(keys_s)])),
            {k: int(x) for k, x in zip(keys_c, v[len(keys_s):-1])}, int(v[-1]))


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

    epochs = [r["epoch"] for r in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    for key in [k for k in history[0] if k.startswith("train_") and not k.startswith("train_top1")]:
        ax1.plot(epochs, [r.get(key, math.nan) for r in history], label=key[6:])
    ax1.set_xlabel("epoch"), ax1.set_ylabel("loss"), ax1.legend(fontsize=8)
    for key in [k for k in history[0] if "top1" in k]:
        ax2.plot(epochs, [r.get(key, math.nan) for r in history], label=key,
                 linewidth=2 if key == "val_top1" else 1)
    ax2.set_xlabel("epoch"), ax2.set_ylabel("top-1"), ax2.set_ylim(0, 1.02), ax2.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
