"""`mgpipe bench`: training throughput of the networks alone and of the full training step, and
the cost of the data path beside it.

(a) each network on random tensors already on the device, (b) the same training step fed by the
real DataLoader reading the HDF5 stores, in fp32, bf16 autocast, bf16 + channels_last_3d and
(optionally) torch.compile, all in one run so the ratios compare like with like; (c) with stores,
the milliseconds one training sample costs on one thread (joint, limb and RGB samples as the
loader builds them) and the heatmap build rate, so a user sees which side limits.
"""

from __future__ import annotations

import itertools
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from mgpipe.learning import specs
from mgpipe.learning.samples import make_loader, model_samples

PAPER = {
    "rgb": {"frames": 8, "size": 224, "network": {"base_channels": 64, "stage_blocks": [3, 4, 6, 3],
            "inflate": [0, 0, 1, 1], "spatial_strides": [1, 2, 2, 2], "temporal_strides": [1, 1, 1, 1], "dropout": 0.5}},
    "pose": {"frames": 32, "size": 56, "network": {"base_channels": 32, "stage_blocks": [4, 6, 3],
             "inflate": [0, 1, 1], "spatial_strides": [2, 2, 2], "temporal_strides": [1, 1, 1], "dropout": 0.5}},
}
MODES = {  # name: (autocast bf16, channels_last_3d, compile)
    "fp32": (False, False, False),
    "bf16": (True, False, False),
    "bf16+cl": (True, True, False),
    "bf16+cl+compile": (True, True, True),
}


def _config(size: str, base: dict | None) -> dict:
    """The config the specs and samples read: the paper's pathways on the schema's other
    settings, or a given (demo) config as it is."""
    import copy

    from mgpipe.config import defaults

    if size != "paper" and base is not None:
        return copy.deepcopy(base)
    cfg = copy.deepcopy(base) if base is not None else defaults()
    cfg["rgb"].update(network=PAPER["rgb"]["network"], frames=PAPER["rgb"]["frames"], size=PAPER["rgb"]["size"])
    cfg["pose_model"].update(network=PAPER["pose"]["network"], input={
        "frames": PAPER["pose"]["frames"], "size": PAPER["pose"]["size"], "test_size": PAPER["pose"]["size"]})
    cfg["fused"]["fusion"]["hidden"] = 256
    cfg["fused"]["prototype"]["dim"] = 256
    return cfg


def _step(model, spec, batch, device, amp, cl, optimizer, step_model):
    labels = batch["label"].to(device, non_blocking=True)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
        _, out = spec.forward(step_model, batch, device, cl)
        loss = model.loss(out, labels)["loss"]
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def _time(fn, steps, warmup, device) -> float:
    for _ in range(warmup):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def network_rates(*, models=("joint", "rgb", "fused_full"), modes=("fp32", "bf16", "bf16+cl"), size="paper",
        batch: dict | None = None, steps=10, warmup=3, device="auto", base_config=None,
        manifest=None, frames_h5=None, keypoints_h5=None, workers=4, joints=17) -> pd.DataFrame:
    from mgpipe.runtime import pick_device

    device = pick_device(device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    cfg = _config(size, base_config)
    batch = batch or {"joint": 32, "rgb": 16, "fused_full": 16}
    rows = []
    for name, mode in itertools.product(models, modes):
        amp, cl, compiled = MODES[mode]
        torch.manual_seed(0)
        spec = specs.get(name)
        model = specs.build(spec.network(cfg, (joints, joints)), 32).to(device)
        if cl:
            model.to(memory_format=torch.channels_last_3d)
        step_model = torch.compile(model) if compiled else model
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
        model.train()
        B = batch[name] if name in batch else batch.get("fused", 8)
        mods = spec.modalities(cfg, True)
        fake = {"label": torch.randint(0, 32, (B,))}
        for m, (T, S) in mods.items():
            C = 3 if m in specs.FRAME_INPUTS else joints   # rgb, motion, swin: 3 colour channels
            fake[m] = torch.randn(B, C, T, S, S).to(device)
        secs = _time(lambda: _step(model, spec, fake, device, amp, cl, optimizer, step_model), steps, warmup, device)
        row = {"model": name, "mode": mode, "batch": B, "network clips/s": round(B * steps / secs, 1)}
        if manifest is not None:
            data = model_samples(spec, cfg, manifest, "train", train=True, frames_h5=frames_h5,
                                 keypoints_h5=keypoints_h5)
            loader = make_loader(data, B, device=device, shuffle_seed=0, workers=workers, drop_last=True,
                                 pose_dtype=torch.bfloat16 if amp else torch.float32)  # as train.py does
            batches = itertools.cycle(loader) if len(loader) else None
            if batches is not None:
                secs = _time(lambda: _step(model, spec, next(batches), device, amp, cl, optimizer, step_model),
                             steps, warmup, device)
                row["full step clips/s"] = round(B * steps / secs, 1)
                row["full/network"] = round(row["full step clips/s"] / row["network clips/s"], 2)
        rows.append(row)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    table = pd.DataFrame(rows)
    base = table[table["mode"] == "fp32"].set_index("model")["network clips/s"]
    table["vs fp32"] = [round(r["network clips/s"] / base.get(r["model"], float("nan")), 2)
                        for _, r in table.iterrows()]
    return table


def jpeg_floor_ms(data, frames: int, repeat: int = 1) -> float:
    """Milliseconds per sample of decoding `frames` evenly spaced JPEG frames of each clip and
    nothing else, at full size: the floor of an RGB sample path (one that decodes large views at
    reduced size, as ours does, can go below it)."""
    from mgpipe.formats.frames import decode_jpeg

    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        for cid in data.clip_ids:
            ds, _ = data.frames.clip(cid)
            for jpeg in data.frames.jpegs(cid, np.unique(np.linspace(0, len(ds) - 1, frames).round())):
                decode_jpeg(jpeg)
        best = min(best, (time.perf_counter() - t0) * 1e3 / max(len(data.clip_ids), 1))
    return best


def finish_ms(data, batch: int = 16, pose_dtype=torch.float32) -> float:
    """Milliseconds per sample of the batched part of the data path (samples.ClipDataset
    .to_device: RGB views resampled, mirrored and normalised, heatmaps scattered into volumes
    in pose_dtype) on the CPU, where it runs when no GPU is present; on a GPU it is part of the
    step."""
    from mgpipe.learning.samples import collate

    batches = [collate([data[i] for i in range(k, min(k + batch, len(data)))])
               for k in range(0, len(data), batch)]
    t0 = time.perf_counter()
    for b in batches:
        data.to_device(b, "cpu", pose_dtype)
    return (time.perf_counter() - t0) * 1e3 / max(len(data), 1)


def sample_ms(data, repeat: int = 1) -> float:
    """Milliseconds per sample of a dataset over whole passes (one per epoch, the best of
    `repeat`), in this process: what one loader worker spends on a sample."""
    best = float("inf")
    for epoch in range(repeat):
        data.set_epoch(epoch)
        t0 = time.perf_counter()
        for i in range(len(data)):
            data[i]
        best = min(best, time.perf_counter() - t0)
    return 1e3 * best / len(data)


def data_path(manifest, *, frames_h5, keypoints_h5, size: str = "paper", base_config=None,
              samples: int = 64) -> pd.DataFrame:
    """ms per training sample on one thread (store read, frame draw, augmentation, rendering or
    JPEG decoding, as the loader workers do) for joint, limb and RGB samples at the pathways'
    training sizes, and the heatmap store build rate (joints + limbs, compression included)."""
    from mgpipe.pose.heatmap_render import build_heatmap_store

    cfg = _config(size, base_config)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    rows = []
    try:
        train = manifest[manifest.split == "train"].head(samples)
        pose = cfg["pose_model"]["input"]
        kinds = {"joint": (pose["frames"], pose["size"]), "limb": (pose["frames"], pose["size"]),
                 "rgb": (cfg["rgb"]["frames"], cfg["rgb"]["size"])}
        for kind, (frames, side) in kinds.items():
            if kind == "rgb" and frames_h5 is None:
                continue
            data = model_samples(specs.get(kind), cfg, train, "train", train=True, frames_h5=frames_h5,
                                 keypoints_h5=keypoints_h5)
            data[0]  # open the stores
            ms = sample_ms(data, repeat=3)   # best of 3 passes: this machine is shared
            rows.append({"data path": f"{kind} sample ({frames} x {side} px)", "ms/sample": round(ms, 3),
                         "per second, one thread": round(1e3 / ms, 1)})
            if kind == "rgb":  # the floor: only reading and decoding the JPEG frames such a sample reads
                floor = jpeg_floor_ms(data, frames, repeat=3)
                rows.append({"data path": f"rgb floor: bare JPEG decoding of {frames} frames",
                             "ms/sample": round(floor, 3), "per second, one thread": round(1e3 / floor, 1),
                             "sample/floor": round(ms / floor, 2)})
            batched = min(finish_ms(data, batch=16) for _ in range(2))
            what = "resample, mirror, normalise" if kind == "rgb" else "scatter into volumes"
            rows.append({"data path": f"{kind} batch step on the CPU ({what}; on the device when training on one)",
                         "ms/sample": round(batched, 3), "per second, one thread": round(1e3 / batched, 1)})
        with tempfile.TemporaryDirectory() as tmp:
            stats = build_heatmap_store(keypoints_h5, Path(tmp) / "heatmaps.h5", size=pose["size"],
                                        sigma=cfg["heatmaps"]["sigma"], padding=cfg["heatmaps"]["padding"],
                                        threads=1, progress=False, log=lambda *a: None)
        rows.append({"data path": f"heatmap store build ({pose['size']} px, joints + limbs)",
                     "ms/sample": round(1e3 * stats["seconds"] / max(stats["clips"], 1), 3),
                     "per second, one thread": round(stats["clips"] / max(stats["seconds"], 1e-9), 1)})
    finally:
        torch.set_num_threads(threads)
    return pd.DataFrame(rows)
