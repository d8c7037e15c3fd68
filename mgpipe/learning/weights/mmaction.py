"""MMAction2 / pyskl checkpoints: the name map to and from mgpipe's networks, safe reading, export.

MMAction2 (0.x and 1.x) and pyskl build their 3D ResNets from ConvModules, so a convolution and
its batch norm are `conv1.conv` / `conv1.bn`, a block's are `layer{i}.{b}.conv{k}.conv|bn`, a
shortcut's `downsample.conv|bn`; mgpipe's are `stem.0` / `stem.1`, `layers.{i-1}.{b}.conv{k}` /
`bn{k}`, `downsample.0|1`. A recognizer's state dict holds `backbone.*` and `cls_head.*`:

    single model (ResNet3dSlowOnly + I3DHead)   backbone.<pathway>, cls_head.fc_cls
    RGBPoseConv3D (+ RGBPoseHead)               backbone.rgb_path.<pathway>, backbone.pose_path.<pathway>,
                                                backbone.rgb_path.layer{2,3}_lateral.conv (pose -> rgb),
                                                backbone.pose_path.layer{1,2}_lateral.conv|bn (rgb -> pose),
                                                cls_head.fc_rgb, cls_head.fc_pose

mgpipe's fused network has the same tensors plus its cross-modal fusion and prototype modules,
which MMAction2 does not have (`mmaction_name` gives None for them).
"""

from __future__ import annotations

import contextlib
import re
import time

import torch

from mgpipe.formats import checkpoints
from mgpipe.formats.numpy_pickles import numpy_globals
from mgpipe.io import InputError

# One pathway, mgpipe name -> MMAction2 name (the part after the pathway prefix).
_PATHWAY_RULES = (
    (re.compile(r"^stem\.0\.(weight)$"), r"conv1.conv.\1"),
    (re.compile(r"^stem\.1\.(\w+)$"), r"conv1.bn.\1"),
    (re.compile(r"^layers\.(\d+)\.(\d+)\.conv(\d)\.(weight)$"), lambda m: f"layer{int(m[1]) + 1}.{m[2]}.conv{m[3]}.conv.{m[4]}"),
    (re.compile(r"^layers\.(\d+)\.(\d+)\.bn(\d)\.(\w+)$"), lambda m: f"layer{int(m[1]) + 1}.{m[2]}.conv{m[3]}.bn.{m[4]}"),
    (re.compile(r"^layers\.(\d+)\.(\d+)\.downsample\.0\.(weight)$"), lambda m: f"layer{int(m[1]) + 1}.{m[2]}.downsample.conv.{m[3]}"),
    (re.compile(r"^layers\.(\d+)\.(\d+)\.downsample\.1\.(\w+)$"), lambda m: f"layer{int(m[1]) + 1}.{m[2]}.downsample.bn.{m[3]}"),
)


def pathway_name(name: str) -> str | None:
    """A pathway tensor's MMAction2 name (within the pathway), or None."""
    for pattern, repl in _PATHWAY_RULES:
        m = pattern.match(name)
        if m:
            return repl(m) if callable(repl) else m.expand(repl)
    return None


def mmaction_name(name: str, target: str, source: str, kind: str | None = None) -> str | None:
    """The MMAction2 name that holds mgpipe tensor `name`.

    target: the mgpipe network ("single" or "fused"); source: the MMAction2 structure the name is
    looked up in ("single": ResNet3dSlowOnly + I3DHead, "rgbpose": RGBPoseConv3D + RGBPoseHead);
    kind: a single network's pathway ("rgb" or "pose"), which picks the RGBPoseConv3D pathway it
    takes. None where MMAction2 has no such tensor (fusion, prototypes) or the structures differ.
    """
    if target == "single":
        prefix = {"single": "backbone.", "rgbpose": f"backbone.{kind}_path."}[source]
        head = {"single": "cls_head.fc_cls.", "rgbpose": f"cls_head.fc_{kind}."}[source]
        if name.startswith("backbone."):
            inner = pathway_name(name[len("backbone."):])
            return None if inner is None else prefix + inner
        if name.startswith("head.fc."):
            return head + name[len("head.fc."):]
        return None
    if source != "rgbpose":
        return None
    for path in ("rgb_path", "pose_path"):
        if name.startswith(path + "."):
            inner = pathway_name(name[len(path) + 1:])
            return None if inner is None else f"backbone.{path}.{inner}"
    m = re.match(r"^pose_to_rgb\.(\d)\.(weight)$", name)
    if m:
        return f"backbone.rgb_path.layer{int(m[1]) + 2}_lateral.conv.{m[2]}"
    m = re.match(r"^rgb_to_pose\.(\d)\.(conv|bn)\.(\w+)$", name)
    if m:
        return f"backbone.pose_path.layer{int(m[1]) + 1}_lateral.{m[2]}.{m[3]}"
    m = re.match(r"^(rgb|pose)_head\.fc\.(\w+)$", name)
    if m:
        return f"cls_head.fc_{m[1]}.{m[2]}"
    return None


def structure(state: dict) -> str | None:
    """'rgbpose', 'single' or None: which MMAction2 recognizer a state dict comes from."""
    if any(k.startswith(("backbone.rgb_path.", "backbone.pose_path.")) for k in state):
        return "rgbpose"
    if "backbone.conv1.conv.weight" in state:
        return "single"
    return None


@contextlib.contextmanager
def _numpy_allowed():
    """pyskl / MMAction2 checkpoints keep numpy values in their meta (scores, dataset meta): the
    numpy array, scalar and dtype constructors are allowed while loading, nothing else."""
    with torch.serialization.safe_globals(numpy_globals()):
        yield


def read(path, what: str = "init checkpoint") -> dict:
    """A checkpoint file of any supported form, loaded without running code:
    {"format": "mgpipe" | "mmaction", "structure": "single" | "rgbpose" | None, "state": the
    state dict (MMAction2 names for MMAction2 files; mgpipe names for mgpipe files), "ckpt": the
    whole dict}. Anything else is an InputError of one line."""
    with _numpy_allowed():
        try:
            obj = checkpoints.load_file(path, what)
        except InputError as e:
            # the advice only where the file is a real torch checkpoint that pickles an object
            # (an old training state, a custom class): never for a file that is no checkpoint
            if "it references" not in str(e):
                raise
            raise InputError(f"{e}; if you trust the file and its source, keep just its weights: "
                             "torch.save({'state_dict': torch.load(f, weights_only=False)['state_dict']}, "
                             "'weights.pth')") from None
    if {"model", "arch", "num_classes", "name"} <= set(obj):
        checkpoints.check_model_entries(obj, path, what)
        return {"format": "mgpipe", "structure": None, "state": obj["model"], "ckpt": obj}
    state = obj.get("state_dict", obj)
    if not isinstance(state, dict) or not state:
        raise InputError(f"{path}: {what} holds no state_dict (expected an mgpipe model or a "
                         "pyskl / MMAction2 checkpoint)")
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if len(tensors) != len(state):
        raise InputError(f"{path}: {what}: its state_dict holds values that are not tensors")
    if all(k.startswith("module.") for k in tensors):  # saved from a DataParallel wrapper
        tensors = {k[len("module."):]: v for k, v in tensors.items()}
    kind = structure(tensors)
    if kind is None:
        raise InputError(f"{path}: {what}: no backbone.conv1.conv or backbone.rgb_path / "
                         "pose_path tensors; not a pyskl / MMAction2 ResNet3dSlowOnly or "
                         "RGBPoseConv3D checkpoint, nor an mgpipe model")
    return {"format": "mmaction", "structure": kind, "state": tensors, "ckpt": obj}


# ---- export ------------------------------------------------------------------------------

def export_state(model: torch.nn.Module, arch: dict) -> tuple[dict, dict]:
    """(MMAction2 state dict, mgpipe tensors with no MMAction2 counterpart) of an mgpipe model."""
    target = "single" if arch["type"] == "single" else "fused"
    source = "single" if target == "single" else "rgbpose"
    out, extra = {}, {}
    for name, tensor in model.state_dict().items():
        mma = mmaction_name(name, target, source)
        if mma is None:
            extra[name] = tensor.clone()
        else:
            out[mma] = tensor.clone()
    return out, extra


def mmaction_config(arch: dict, num_classes: int) -> dict:
    """The MMAction2 model config (a plain dict for `MODELS.build`) of an mgpipe architecture."""
    def pathway(cfg: dict) -> dict:
        return {"base_channels": cfg["base_channels"], "num_stages": len(cfg["stage_blocks"]),
                "stage_blocks": list(cfg["stage_blocks"]), "inflate": list(cfg["inflate"]),
                "spatial_strides": list(cfg["spatial_strides"]),
                "temporal_strides": list(cfg["temporal_strides"]),
                "dilations": [1] * len(cfg["stage_blocks"]),
                "out_indices": [len(cfg["stage_blocks"]) - 1], "conv1_kernel": [1, 7, 7]}

    if arch["type"] == "single":
        cfg = arch["cfg"]
        stride = 2 if arch["kind"] == "rgb" else 1
        backbone = {"type": "ResNet3dSlowOnly", "depth": 50, "pretrained": None,
                    "in_channels": arch["in_channels"], **pathway(cfg),
                    "conv1_stride_s": stride, "pool1_stride_s": stride}
        width = cfg["base_channels"] * 2 ** (len(cfg["stage_blocks"]) - 1) * 4
        head = {"type": "I3DHead", "in_channels": width, "num_classes": num_classes,
                "dropout_ratio": cfg["dropout"]}
        return {"type": "Recognizer3D", "backbone": backbone, "cls_head": head}
    cfg = arch["cfg"]
    rgb, pose = cfg["rgb"], cfg["pose"]
    backbone = {"type": "RGBPoseConv3D", "speed_ratio": cfg.get("speed_ratio", 4),
                "channel_ratio": cfg.get("channel_ratio", 4),
                "rgb_pathway": {**pathway(rgb), "lateral": True, "lateral_infl": 1,
                                "lateral_activate": [0, 0, 1, 1], "fusion_kernel": 7,
                                "with_pool2": False},
                "pose_pathway": {**pathway(pose), "lateral": True, "lateral_inv": True,
                                 "lateral_infl": 16, "lateral_activate": [0, 1, 1],
                                 "fusion_kernel": 7, "in_channels": arch["pose_in_channels"],
                                 "conv1_stride_s": 1, "conv1_stride_t": 1, "pool1_stride_s": 1,
                                 "pool1_stride_t": 1, "with_pool2": False}}
    widths = [rgb["base_channels"] * 8 * 4, pose["base_channels"] * 4 * 4]
    head = {"type": "RGBPoseHead", "num_classes": num_classes, "in_channels": widths,
            "loss_components": ["rgb", "pose"], "loss_weights": [1.0, 1.0],
            "dropout": {"rgb": rgb["dropout"], "pose": pose["dropout"]}}
    return {"type": "MMRecognizer3D", "backbone": backbone, "cls_head": head}


def export(ckpt_path, out) -> dict:
    """Write the mgpipe model `ckpt_path` in MMAction2's checkpoint format to `out`:
    {"meta": {...}, "state_dict": {...}}. The meta holds the MMAction2 model config, the mgpipe
    architecture, the layout and the tensors MMAction2's model does not have (fusion,
    prototypes), so the importer gets the model back exactly. Returns a summary."""
    from mgpipe.learning.inference import load_model

    model, ckpt, _ = load_model(ckpt_path)
    if ckpt["arch"]["type"] not in ("single", "fused"):  # the Video Swin member: torchvision's names
        raise InputError(f"{ckpt_path}: a {ckpt['name']} model has no MMAction2 form here; its "
                         "state dict (net.*) is torchvision's Swin3D")
    state, extra = export_state(model, ckpt["arch"])
    meta = {"exported_by": "mgpipe export-checkpoint", "time": time.strftime("%Y-%m-%d %H:%M:%S"),
            "mmaction_model": mmaction_config(ckpt["arch"], ckpt["num_classes"]),
            "mgpipe": {"name": ckpt["name"], "arch": ckpt["arch"], "num_classes": ckpt["num_classes"],
                       "layout": ckpt.get("layout"), "extra": extra}}
    checkpoints.save({"meta": meta, "state_dict": state}, out)
    return {"tensors": len(state), "not_in_mmaction": sorted(extra)}
