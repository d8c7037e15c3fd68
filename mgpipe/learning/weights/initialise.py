"""Starting a model from an init file: an mgpipe model, a pyskl / MMAction2 checkpoint (single
pathway or RGBPoseConv3D), or an mgpipe model exported in MMAction2's format.

Every tensor of the model is looked up under its name in the source (mmaction.mmaction_name maps
the names), and its shape is checked: same shape -> loaded; the pose pathway's first convolution
on another keypoint layout -> channels mapped by joint name (layouts.py); a classification head
for another class count, or a tensor the source does not have (a lateral, the fusion and
prototype modules) -> fresh; the lateral-widened first block of a fused network's stage taken for
a single pathway -> its own input channels. Any other shape difference is another architecture:
an error. So is a pathway left untrained, or a source that matches nothing. The report of what
was loaded, initialised fresh and ignored goes to the training log and into the checkpoint.
"""

from __future__ import annotations

import logging
import re

import torch

from mgpipe.io import InputError
from mgpipe.layouts import Layout, get_layout
from mgpipe.learning.weights import mmaction
from mgpipe.learning.weights.layout_map import PYSKL_COCO17, channel_names, map_channels

log = logging.getLogger(__name__)

def layout_record(layout: Layout) -> dict:
    """A layout as plain values (what a checkpoint stores)."""
    return {"name": layout.name, "joints": list(layout.joints), "limbs": [list(e) for e in layout.limbs]}


def _recorded_layout(value, path) -> Layout | None:
    if value is None:
        return None
    from mgpipe.formats.checkpoints import layout_problem

    problem = layout_problem(value) if isinstance(value, dict) else "is not a {name, joints, limbs} record"
    if problem is None and not isinstance(value.get("name"), str):
        problem = "has no name"
    if problem:
        raise InputError(f"{path}: its recorded keypoint layout {problem}")
    return Layout(value["name"], tuple(value["joints"]), tuple((a, b) for a, b in value["limbs"]))


def _source(path) -> dict:
    """The source as MMAction2-named tensors: {format, structure, state, extra, layout, channels}."""
    src = mmaction.read(path)
    if src["format"] == "mgpipe":
        ckpt = src["ckpt"]
        arch = ckpt["arch"]
        kind = "single" if arch.get("type") == "single" else "fused"
        structure = "single" if kind == "single" else "rgbpose"
        state, extra = {}, {}
        for name, tensor in src["state"].items():
            mma = mmaction.mmaction_name(name, kind, structure, arch.get("kind"))
            if mma is None:  # fusion and prototype modules: looked up under mgpipe's name
                extra[name] = tensor
            else:
                state[mma] = tensor
        return {"format": f"mgpipe {ckpt['name']} model", "structure": structure, "state": state,
                "extra": extra, "layout": _recorded_layout(ckpt.get("layout"), path),
                "channels": "limb" if ckpt["name"] == "limb" else "joint"}
    meta = src["ckpt"].get("meta") if isinstance(src["ckpt"].get("meta"), dict) else {}
    ours = meta.get("mgpipe") if isinstance(meta.get("mgpipe"), dict) else {}
    extra = ours.get("extra") if isinstance(ours.get("extra"), dict) else {}
    what = "RGBPoseConv3D" if src["structure"] == "rgbpose" else "ResNet3dSlowOnly"
    return {"format": f"pyskl / MMAction2 {what} checkpoint", "structure": src["structure"],
            "state": src["state"], "extra": {k: v for k, v in extra.items() if isinstance(v, torch.Tensor)},
            "layout": _recorded_layout(ours.get("layout"), path), "foreign": not ours,
            "channels": "limb" if ours.get("name") == "limb" else None}


def _source_layout(src, explicit, target: Layout, which: str, n_src: int, path) -> tuple[Layout, str]:
    if explicit is not None:
        return get_layout(explicit), "from the config"
    if src["layout"] is not None:
        return src["layout"], "recorded in the checkpoint"
    if src.get("foreign") and n_src == 17:
        return (PYSKL_COCO17 if which == "limb" else get_layout("coco17")), "pyskl's COCO-17 (17 channels)"
    if n_src == len(channel_names(target, which)):
        return target, "assumed: the model's own layout (same channel count)"
    raise InputError(f"{path}: its pose pathway takes {n_src} channels and the model's layout "
                     f"{target.name} has {len(channel_names(target, which))}; name the checkpoint's "
                     "layout (init.<model>: {path: ..., layout: ...})")


_WIDENED = re.compile(r"layers\.\d+\.0\.(conv1|downsample\.0)\.weight$")


def initialise(model: torch.nn.Module, arch: dict, path, *, channels: str = "joint",
               target_layout: Layout | None = None, source_layout=None, dry: bool = False) -> dict:
    """Initialise `model` (architecture `arch`) in place from the file `path`; returns the report.
    channels: what the pose pathway's input channels are ("joint" or "limb"); target_layout: the
    model's keypoint layout (None: no layout mapping, the first convolution must fit as it is);
    source_layout: the checkpoint's layout as the config names it (None: recorded or inferred).
    Raises InputError (one line) and leaves the model untouched if the file does not fit.
    dry: check only, copy nothing (the model may live on the meta device: the plan-time check).
    A Video Swin member takes a torchvision state dict file or weight name (models/swin.py)."""
    from mgpipe.formats.checkpoints import fit_problem

    if arch["type"] == "swin":
        from mgpipe.models.swin import load_weights

        return load_weights(model, path, dry=dry)
    src = _source(path)
    if src["channels"] is not None and src["channels"] != channels and arch.get("kind") != "rgb":
        raise InputError(f"{path}: a {src['channels']} model cannot initialise a model on {channels} heatmaps")
    if channels == "limb" and src["structure"] == "rgbpose" and src.get("foreign"):
        raise InputError(f"{path}: an RGBPoseConv3D's pose pathway takes joint heatmaps; a limb "
                         "model starts from a limb checkpoint")
    target = "single" if arch["type"] == "single" else "fused"
    kind = arch.get("kind")
    stem = "backbone.stem.0.weight" if kind == "pose" else "pose_path.stem.0.weight" if target == "fused" else None
    plan, fresh, partly, used, mapping = [], {}, {}, set(), None
    for name, dst in model.state_dict().items():
        key = mmaction.mmaction_name(name, target, src["structure"], kind)
        if key is not None and key in src["state"]:
            tensor = src["state"][key]
        elif target == "fused" and name in src["extra"]:
            key, tensor = f"(mgpipe) {name}", src["extra"][name]
        else:
            fresh[name] = "not in the source"
            continue
        problem = fit_problem(tensor, dst)
        if problem:
            raise InputError(f"{path}: {key} holds {problem}; the model's {name} is {str(dst.dtype).removeprefix('torch.')}")
        if name == stem and target_layout is not None:
            layout, why = _source_layout(src, source_layout, target_layout, channels, tensor.shape[1], path)
            if channel_names(layout, channels) != channel_names(target_layout, channels):
                weight, mapping = _mapped_stem(tensor, dst, key, layout, target_layout, channels, path, dry)
                mapping["source_layout_from"] = why
                plan.append((name, weight))
                partly[name] = (f"{len(mapping['copied'])} of {dst.shape[1]} {channels} channels "
                                f"copied by name ({layout.name} -> {target_layout.name})")
                used.add(key)
                continue
        weight, note = _fitted(name, key, tensor, dst, path, dry)
        if weight is None:
            fresh[name] = note
            continue
        plan.append((name, weight))
        used.add(key)
        if note:
            partly[name] = note
    _check_coverage(model, target, plan, fresh, src, path)
    with torch.no_grad():
        state = model.state_dict()
        for name, tensor in ([] if dry else plan):
            state[name].copy_(tensor)
    ignored = sorted(set(src["state"]) - used) + sorted(f"(mgpipe) {n}" for n in src["extra"]
                                                         if f"(mgpipe) {n}" not in used)
    return {"source": str(path), "format": src["format"], "loaded": sorted(n for n, _ in plan),
            "partly": partly, "fresh": fresh, "ignored": ignored, "channels": mapping}


def _mapped_stem(tensor, dst, key, layout: Layout, target_layout: Layout, channels: str, path, dry: bool):
    """(weight, mapping) of the pose pathway's first convolution from a source on another
    keypoint layout: its input channels copied by joint (limb) name."""
    if tensor.shape[0] != dst.shape[0] or tensor.shape[2:] != dst.shape[2:] \
            or tensor.shape[1] != len(channel_names(layout, channels)):
        raise InputError(f"{path}: {key} has shape {tuple(tensor.shape)}, which does not "
                         f"fit layout {layout.name} and this model's {tuple(dst.shape)}")
    if dry:
        return tensor, {"copied": [], "fresh": []}
    return map_channels(dst, tensor, layout, target_layout, channels)


def _fitted(name: str, key: str, tensor, dst, path, dry: bool) -> tuple:
    """(the weight to load, None or a note of what was loaded partly), or (None, why it stays
    fresh): the same shape loads; a classification head for another class count stays fresh;
    the lateral-widened first block of a stage keeps its own input channels. Any other shape:
    another architecture, one line."""
    if tensor.shape == dst.shape:
        return tensor, None
    if name.endswith(("head.fc.weight", "head.fc.bias")) and tensor.shape[1:] == dst.shape[1:]:
        return None, f"{tensor.shape[0]} classes in the source, {dst.shape[0]} here"
    if _WIDENED.search(name) and tensor.dim() == 5 and tensor.shape[0] == dst.shape[0] \
            and tensor.shape[2:] == dst.shape[2:]:
        n = min(dst.shape[1], tensor.shape[1])
        weight = tensor
        if not dry:
            weight = torch.zeros_like(dst)
            weight[:, :n] = tensor[:, :n]
        return weight, (f"own {n} input channels of {tensor.shape[1]} (lateral channels dropped)"
                        if dst.shape[1] < tensor.shape[1] else
                        f"{n} input channels copied, {dst.shape[1] - n} lateral channels zero")
    raise InputError(f"{path}: {key} has shape {tuple(tensor.shape)}, the model's {name} "
                     f"{tuple(dst.shape)}: another architecture (set the model's network "
                     "settings to the checkpoint's)")


def _check_coverage(model, target, plan, fresh, src, path) -> None:
    hint = ("; a fused model starts from an RGBPoseConv3D or an mgpipe fused checkpoint, "
            "single pathways reach it through the merge (init.fused: null)"
            if target == "fused" and src["structure"] == "single" else "")
    if not plan:
        raise InputError(f"{path}: no tensor of the {src['format']} matches the model "
                         f"({'RGBPoseConv3D' if target == 'fused' else 'single-pathway'} names){hint}")
    pathways = ("backbone",) if target == "single" else ("rgb_path", "pose_path")
    names = list(model.state_dict())
    for pathway in pathways:
        own = [n for n in names if n.startswith(pathway + ".") and not n.endswith("num_batches_tracked")]
        missing = [n for n in own if n in fresh]
        if missing:
            raise InputError(f"{path}: would leave pathway {pathway} untrained: {len(missing)} of its "
                             f"{len(own)} tensors are not in the {src['format']} (first: {missing[0]}){hint}")


def _names(items, limit: int = 12) -> str:
    items = list(items)
    more = f" ... and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def log_report(report: dict, model: str, logger=log) -> None:
    """The report in the training log: counts, then every fresh and partly loaded tensor, what was
    ignored, and the channel mapping across layouts."""
    logger.info("%s: init from %s (%s): %d tensors loaded, %d partly, %d fresh, %d source tensors ignored",
                model, report["source"], report["format"], len(report["loaded"]) - len(report["partly"]),
                len(report["partly"]), len(report["fresh"]), len(report["ignored"]))
    by_reason: dict = {}
    for name, reason in report["fresh"].items():
        by_reason.setdefault(reason, []).append(name)
    for reason, names in by_reason.items():
        logger.info("%s: init fresh (%s): %s", model, reason, _names(names))
    for name, note in report["partly"].items():
        logger.info("%s: init partly: %s: %s", model, name, note)
    if report["ignored"]:
        logger.info("%s: init ignored: %s", model, _names(report["ignored"]))
    mapping = report["channels"]
    if mapping:
        logger.info("%s: init %s channels %s -> %s (source layout %s): copied by name: %s; fresh: %s",
                    model, mapping["channels"], mapping["source_layout"], mapping["target_layout"],
                    mapping["source_layout_from"], _names(mapping["copied"], 40) or "none",
                    _names(mapping["fresh"], 40) or "none")


def check_source(config: dict, model: str, source) -> None:
    """Everything about a model's init source (init_source.InitSource) that can be known before
    any job runs (nothing is downloaded): the file is there and safe to read (a torchvision weight: its file in torch's cache, with the
    published hash), and its tensors fit the model the config describes: the model is built on
    the meta device (no memory, no time) and initialised dry, so another architecture, another
    Swin3D variant or a single-pathway source for the fused network stops the plan, not the
    training job after the data stages."""
    from mgpipe.learning import specs

    spec = specs.get(model)
    target = get_layout(config["pose"]["layout"])
    arch = spec.network(config, (target.num_joints, target.num_limbs))
    with torch.device("meta"):
        net = specs.build(arch, 2)   # (the head is replaced for any other class count anyway)
    initialise(net, arch, source.weights or source.file, channels=spec.inputs[-1], target_layout=target,
               source_layout=source.layout, dry=True)
