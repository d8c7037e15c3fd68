"""Which network, inputs and optimiser settings each named model of the workflow uses.

Model names: "rgb" (RGB pathway alone), "joint" / "limb" (pose pathway on joint or limb
heatmaps), "fused_<variant>" (two-pathway network; variants switch the cross-modal fusion and
the prototype loss for the ablation).
"""

from __future__ import annotations

import copy

import h5py
import torch

VARIANTS = {  # variant: (cross-modal fusion, prototype loss)
    "full": (True, True),
    "nofusion": (False, True),
    "noproto": (True, False),
    "plain": (False, False),
}


def is_fused(name: str) -> bool:
    return name.startswith("fused_")


def architecture(config: dict, name: str, heatmaps_h5=None, *, channels=None) -> dict:
    """Everything needed to rebuild the network; stored in every checkpoint.

    The pose input widths come from the heatmap store, or from channels=(joints, limbs).
    """
    if channels is None:
        with h5py.File(heatmaps_h5, "r") as h5:
            channels = int(h5.attrs["num_joints"]), int(h5.attrs["num_limbs"])
    joints, limbs = channels
    pose_net = config["pose_model"]["network"]
    if name == "rgb":
        return {"type": "single", "kind": "rgb", "in_channels": 3, "cfg": config["rgb"]["network"]}
    if name in ("joint", "limb"):
        return {"type": "single", "kind": "pose", "in_channels": joints if name == "joint" else limbs,
                "cfg": pose_net}
    if is_fused(name):
        variant = name.split("_", 1)[1]
        if variant not in VARIANTS:
            raise ValueError(f"unknown fused variant {variant!r}; known: {sorted(VARIANTS)}")
        fusion, proto = VARIANTS[variant]
        fused = config["fused"]
        return {"type": "fused", "pose_in_channels": joints, "cfg": {
            "rgb": config["rgb"]["network"], "pose": pose_net,
            "fusion": {"enabled": fusion, **fused["fusion"]},
            "prototype": {"enabled": proto, **fused["prototype"]},
        }}
    raise ValueError(f"unknown model name {name!r}")


def build(arch: dict, num_classes: int) -> torch.nn.Module:
    from .models import build_fused, build_single

    arch = copy.deepcopy(arch)
    if arch["type"] == "single":
        return build_single(arch["kind"], arch["in_channels"], num_classes, arch["cfg"])
    return build_fused(num_classes, arch["pose_in_channels"], arch["cfg"])


def modalities(config: dict, name: str, train: bool) -> dict:
    """{modality: (frames, size)} fed to the model, in the order of its forward arguments."""
    pose_in = config["pose_model"]["input"]
    # The fused network's laterals need the pose grid at exactly a quarter of the RGB size, so it
    # is tested at the training size; a pose-only model is tested at test_size.
    test_size = pose_in["size"] if is_fused(name) else pose_in["test_size"]
    pose = (pose_in["frames"], pose_in["size"] if train else test_size)
    rgb = (config["rgb"]["frames"], config["rgb"]["size"])
    if name == "rgb":
        return {"rgb": rgb}
    if name in ("joint", "limb"):
        return {name: pose}
    return {"rgb": rgb, "joint": pose}


def optim_settings(config: dict, name: str) -> dict:
    if name == "rgb":
        return config["rgb"]["optim"]
    if name == "joint":
        return config["pose_model"]["optim"]
    if name == "limb":
        return config["limb"].get("optim") or config["pose_model"]["optim"]
    return config["fused"]["optim"]


def streams(name: str) -> list[str]:
    return ["rgb", "pose"] if is_fused(name) else [name]


def combine_streams(probs: dict, weights: dict | None = None):
    """A model's class probabilities from its streams' {stream: [N, K]}: the weighted mean
    (1:1 unless weights say otherwise); a single-stream model's one stream as it is. The one
    place where stream probabilities are combined (training's selection, scores, prediction)."""
    weights = weights or {k: 1.0 for k in probs}
    total = sum(weights[k] for k in probs)
    return sum(probs[k] * weights[k] for k in probs) / total


def forward(model, name: str, batch: dict, device, channels_last=False) -> dict:
    """Run the model on a batch; return {stream: logits} plus the raw output."""
    def move(x):
        x = x.to(device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last_3d) if channels_last else x

    if is_fused(name):
        out = model(move(batch["rgb"]), move(batch["joint"]))
        return {"rgb": out["rgb"], "pose": out["pose"]}, out
    out = model(move(batch[name]))
    return {name: out["logits"]}, out


def load_checkpoint(path):
    """(model, checkpoint dict) of a model file; a hostile or foreign file is refused (InputError)."""
    from . import checkpoints
    from .io import InputError

    ckpt = checkpoints.load(path)
    try:
        model = build(ckpt["arch"], ckpt["num_classes"])
        model.load_state_dict(ckpt["model"])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputError(f"{path}: checkpoint does not fit its own architecture ({first[:200]})") from None
    return model, ckpt
