"""Initialise the fused RGB+pose network from two pretrained single-stream networks.

As in the method's merge step, backbone and head weights are copied into ``rgb_path``/``rgb_head``
and ``pose_path``/``pose_head``. The first-block conv1 and downsample conv of a stage that
receives lateral features are wider on the input side: they get the pretrained weights in the
original input channels (which come first in the concatenation) and zeros in the lateral
channels, so right after the merge the laterals contribute nothing. Laterals, fusion and
prototype modules keep their fresh initialisation.
"""

from __future__ import annotations

import torch
from torch import nn

from mgpipe.io import InputError
from mgpipe.models.resnet3d import ARCH_KEYS, ResNet3dSlowOnly
from mgpipe.models.rgbpose import RGBPoseConv3D
from mgpipe.models.single import SingleStream


class IncompatibleModels(InputError):
    """The pretrained models do not fit the fused network (the message names the tensor or the
    architecture key); merge_checkpoints adds the two files to it."""


def _widened_keys(path: ResNet3dSlowOnly) -> set:
    keys = set()
    for idx, extra in path.lateral_in.items():
        if extra > 0:
            keys.add(f"layers.{idx}.0.conv1.weight")
            keys.add(f"layers.{idx}.0.downsample.0.weight")
    return keys


def _plan(prefix: str, dst: nn.Module, src: nn.Module, widened: set
          ) -> list[tuple[str, torch.Tensor, torch.Tensor, bool]]:
    """Check every tensor of ``dst`` against ``src``; return (name, dst, src, is_widened)."""
    dst_sd = dst.state_dict(keep_vars=True)
    src_sd = src.state_dict(keep_vars=True)
    plan = []
    for name, d in dst_sd.items():
        full = f"{prefix}.{name}"
        if name not in src_sd:
            raise IncompatibleModels(f"{full}: no matching tensor in the pretrained model")
        s = src_sd[name]
        if d.shape == s.shape:
            plan.append((full, d, s, False))
            continue
        if (name in widened and d.dim() == s.dim() == 5 and d.shape[0] == s.shape[0]
                and d.shape[2:] == s.shape[2:] and d.shape[1] > s.shape[1]):
            plan.append((full, d, s, True))
            continue
        raise IncompatibleModels(
            f"{full}: fused shape {tuple(d.shape)} is incompatible with pretrained shape "
            f"{tuple(s.shape)}"
        )
    extra = sorted(set(src_sd) - set(dst_sd))
    if extra:
        raise IncompatibleModels(f"{prefix}: pretrained tensors with no place in the fused model: "
                         f"{extra[:5]}")
    return plan


def merge_into(fused: RGBPoseConv3D, rgb: SingleStream, pose: SingleStream) -> dict[str, int]:
    """Copy pretrained single-stream weights into ``fused`` in place.

    Raises IncompatibleModels (naming the parameter or config key) if the models are incompatible;
    nothing is modified in that case. Returns {'copied', 'widened', 'fresh'} tensor counts
    (over the fused model's state_dict: parameters and buffers).
    """
    pairs = [
        ("rgb_path", fused.rgb_path, rgb.backbone),
        ("rgb_head", fused.rgb_head, rgb.head),
        ("pose_path", fused.pose_path, pose.backbone),
        ("pose_head", fused.pose_head, pose.head),
    ]
    for name, dst, src in (pairs[0], pairs[2]):
        if src.kind != dst.kind:
            raise IncompatibleModels(f"{name}: pretrained pathway is {src.kind!r}, expected {dst.kind!r}")
        for key in ARCH_KEYS:
            if dst.arch[key] != src.arch[key]:
                raise IncompatibleModels(f"{name}: config '{key}' differs: fused {dst.arch[key]} vs "
                                 f"pretrained {src.arch[key]}")

    plan = []
    for name, dst, src in pairs:
        widened = _widened_keys(dst) if isinstance(dst, ResNet3dSlowOnly) else set()
        plan.extend(_plan(name, dst, src, widened))

    n_copied = n_widened = 0
    touched = set()
    with torch.no_grad():
        for full, d, s, wide in plan:
            if wide:
                d.zero_()
                d[:, : s.shape[1]].copy_(s)
                n_widened += 1
            else:
                d.copy_(s)
                n_copied += 1
            touched.add(full)
    n_total = len(fused.state_dict())
    return {"copied": n_copied, "widened": n_widened, "fresh": n_total - len(touched)}


def merge_checkpoints(rgb_ckpt, pose_ckpt, config: dict, model: str, out) -> dict:
    """The merge stage: two pretrained checkpoint files -> the initial weights of `model`, a
    registered model that starts from merged weights (fused_<variant>)."""
    import logging

    from mgpipe.formats import checkpoints
    from mgpipe.formats.checkpoints import save as save_checkpoint
    from mgpipe.learning import specs
    from mgpipe.learning.inference import load_model
    from mgpipe.runtime import seed_everything

    rgb, rgb_meta, _ = load_model(rgb_ckpt)
    pose, pose_meta, _ = load_model(pose_ckpt)
    rgb_record, pose_record = checkpoints.record(rgb_meta, rgb_ckpt), checkpoints.record(pose_meta, pose_ckpt)
    differ = checkpoints.describe_class_difference(checkpoints.class_pairs(rgb_record["classes"]),
                                                   checkpoints.class_pairs(pose_record["classes"]))
    if differ:
        raise InputError(f"{rgb_ckpt} + {pose_ckpt}: the models were trained on different class "
                         f"tables ({differ})")
    if pose_meta["arch"].get("kind") != "pose" or rgb_meta["arch"].get("kind") != "rgb":
        raise InputError(f"{rgb_ckpt} + {pose_ckpt}: merge takes an RGB and a joint checkpoint, got "
                         f"{rgb_meta['name']} and {pose_meta['name']}")
    spec = specs.REGISTRY.get(model)
    if spec is None or not spec.merged_start:
        known = [n for n, s in specs.REGISTRY.items() if s.merged_start]
        raise InputError(f"{model}: not a model that starts from merged weights; known: {', '.join(known)}")
    name = spec.name
    # The pose pathway's input width is the pretrained joint model's (its checkpoint says it).
    arch = spec.network(config, (pose_meta["arch"]["in_channels"], 0))
    seed_everything(config["seed"])  # laterals and fusion keep a fresh init: make it reproducible
    fused = specs.build(arch, rgb_meta["num_classes"])
    try:
        report = merge_into(fused, rgb, pose)
    except IncompatibleModels as e:
        raise InputError(f"{rgb_ckpt} + {pose_ckpt}: cannot merge ({e})") from None
    # What the merged network was trained on: the two models' classes, the joint model's layout;
    # its input settings are the config's pathways (the fused training's) with the joint model's
    # heatmap settings (the merge stage's config carries no heatmaps section).
    inputs = spec.input_settings({**config, "heatmaps": {
        k.split(".", 1)[1]: v for k, v in pose_record["inputs"].items() if k.startswith("heatmaps.")}})
    save_checkpoint({"model": fused.state_dict(), "arch": arch, "num_classes": rgb_meta["num_classes"],
                 "name": name, "epoch": 0, "val_top1": None,
                 "merged_from": [str(rgb_ckpt), str(pose_ckpt)], "classes": rgb_record["classes"],
                 "layout": pose_record["layout"], "inputs": inputs}, out)
    logging.getLogger(__name__).info("merged %s + %s -> %s: %s", rgb_ckpt, pose_ckpt, out, report)
    return report
