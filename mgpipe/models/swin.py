"""Video Swin Transformer member: torchvision's swin3d_t / swin3d_s / swin3d_b with its head
replaced for the run's classes, started from a torchvision-format state dict (a local file) or
from a torchvision weight name: the file torchvision publishes for it, found in torch's hub cache
($TORCH_HOME/hub/checkpoints) and checked against the hash in its published name. mgpipe never
downloads it (a job may run offline, after hours of data stages); a name that is not cached
stops the plan with the one command that fetches it. Every file, cached or not, is read with
mgpipe's restricted loader (checkpoints.load_file), never with torchvision's full unpickler.

The network is torchvision's own (pure PyTorch); this module only wraps it in the interface
every mgpipe network has (forward -> {"logits", "features"}, loss) and loads its weights with
the report style of mgpipe.learning.weights.initialise (loaded / fresh / ignored; kept in the checkpoint).
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from mgpipe.compat import import_torchvision
from mgpipe.io import InputError

VARIANTS = {"t": ("swin3d_t", "Swin3D_T_Weights"), "s": ("swin3d_s", "Swin3D_S_Weights"),
            "b": ("swin3d_b", "Swin3D_B_Weights")}
# swin.weights: a value of capitals, digits and underscores only (KINETICS400_V1, DEFAULT) is a
# torchvision weight name, always (a file of that name is never looked at: write ./DEFAULT for
# it); anything else (a '/', a '.', a small letter) is a file
WEIGHT_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")
# torch.hub's convention: the published file name carries the first digits of its sha256
_HASH_IN_NAME = re.compile(r"-([a-f0-9]{6,})\.")

class VideoSwin(nn.Module):
    """torchvision's SwinTransformer3d as `net`; forward(x [N, 3, T, H, W]) ->
    {"logits": [N, K], "features": [N, C]} (features: the pooled, normalised tokens the head reads)."""

    def __init__(self, variant: str, num_classes: int, cfg: dict) -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"unknown Video Swin variant {variant!r}; use one of {', '.join(VARIANTS)}")
        video = import_torchvision().models.video
        self.variant, self.num_classes = variant, int(num_classes)
        builder = getattr(video, VARIANTS[variant][0])
        # (the variant's own stochastic depth: torchvision's builders fix it)
        self.net = builder(weights=None, num_classes=self.num_classes)
        self.dropout = nn.Dropout(float(cfg["dropout"])) if cfg["dropout"] else nn.Identity()

    def forward(self, x: torch.Tensor) -> dict:
        net = self.net
        x = net.pos_drop(net.patch_embed(x))    # torchvision's forward, the head split off
        x = net.norm(net.features(x)).permute(0, 4, 1, 2, 3)
        feats = torch.flatten(net.avgpool(x), 1)
        return {"logits": net.head(self.dropout(feats)), "features": feats}

    def loss(self, out: dict, labels: torch.Tensor, class_weights: torch.Tensor | None = None) -> dict:
        """Cross-entropy in float32, class-weighted for the class-balanced loss (as SingleStream's)."""
        return {"loss": F.cross_entropy(out["logits"].float(), labels, weight=class_weights)}


def build_swin(variant: str, num_classes: int, cfg: dict) -> VideoSwin:
    return VideoSwin(variant, num_classes, cfg)


def weights_enum(variant: str):
    return getattr(import_torchvision().models.video, VARIANTS[variant][1])


def check_weights(value, variant: str) -> None:
    """Refuse (one line) a weight name the variant does not have or that is not in torch's cache
    (with its hash), or a weights file that is missing, hostile or not a state dict of tensors;
    reads the file, downloads nothing."""
    if value is None:
        return
    _read_file(cached_file(value, variant) if WEIGHT_NAME.match(str(value)) else value)


def cache_path(name: str, variant: str) -> Path | None:
    """Where torch's hub cache keeps the file torchvision publishes for weight `name` (None: the
    variant has no such name)."""
    enum = weights_enum(variant)
    if name not in enum.__members__:
        return None
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(published_url(name, variant))


def published_url(name: str, variant: str) -> str:
    """The URL torchvision publishes weight `name` of `variant` at (its file name carries the
    first digits of the file's sha256)."""
    return weights_enum(variant)[name].url


def cached_file(name: str, variant: str) -> Path:
    """The cached file of weight `name`, its sha256 checked against the prefix its published name
    carries; one line that says how to fetch it where it is not there."""
    named_weights(name, variant)
    path, url = cache_path(name, variant), published_url(name, variant)
    if not path.is_file():
        raise InputError(
            f"torchvision weight {name}: {path.name} is not in torch's cache ({path.parent}); mgpipe does not "
            f"download in a job: fetch it once with python -c \"import torch; torch.hub."
            f"download_url_to_file('{url}', '{path}')\" (or set swin.weights to the file)")
    found = _HASH_IN_NAME.search(path.name)
    if found:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(2**22), b""):
                digest.update(block)
        if not digest.hexdigest().startswith(found.group(1)):
            raise InputError(f"{path}: torchvision weight {name}: the file's sha256 {digest.hexdigest()[:12]}... does "
                             f"not begin with {found.group(1)}, the hash torchvision publishes for it "
                             f"(another or a damaged file): delete it and fetch {url} again")
    return path


def named_weights(name: str, variant: str):
    """The variant's torchvision weights of that name; one line for a name it does not have."""
    enum = weights_enum(variant)
    if name not in enum.__members__:
        raise InputError(f"{name!r} is not a torchvision weight name of {VARIANTS[variant][0]} "
                         f"(known: {', '.join(enum.__members__)})")
    return enum[name]


def _read_file(path) -> dict:
    """A torchvision-format state dict ({name: tensor}; also {"state_dict": ...} or {"model": ...},
    an mgpipe checkpoint)
    read with the checkpoints' restricted unpickler: a hostile file runs no code."""
    from mgpipe.formats.checkpoints import load_file

    obj = load_file(path, "Video Swin weights file")
    for key in ("state_dict", "model"):
        if isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not obj or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        raise InputError(f"{path}: not a state dict of tensors (a torchvision Swin3D weights file)")
    # (DataParallel's prefix; net.: an mgpipe swin model's own state dict, e.g. another run's)
    return {k.removeprefix("module.").removeprefix("net."): v for k, v in obj.items()}


def load_weights(model: VideoSwin, source, dry: bool = False) -> dict:
    """Initialise `model` in place from a weights file or a torchvision weight name (its file in
    torch's cache, hash checked; never downloaded); returns the report (transfer.init's form:
    loaded, partly, fresh, ignored). The head is fresh when the source has another class count;
    any other missing or misshapen tensor is another variant: an error, and the model is left
    untouched. dry: check only, copy nothing (a model on the meta device)."""
    from mgpipe.formats.checkpoints import fit_problem

    if isinstance(source, str) and WEIGHT_NAME.match(source):
        weights = named_weights(source, model.variant)
        label = f"torchvision {type(weights).__name__}.{weights.name}"
        source = cached_file(source, model.variant)
        state = _read_file(source)
    else:
        label, state = "torchvision Swin3D state dict", _read_file(source)
    plan, fresh = [], {}
    for name, dst in model.state_dict().items():
        key = name.removeprefix("net.")
        tensor = state.get(key)
        problem = None if tensor is None else fit_problem(tensor, dst)
        if problem:
            raise InputError(f"{source}: {key} holds {problem}; the model's is "
                             f"{str(dst.dtype).removeprefix('torch.')}")
        if tensor is None:
            fresh[name] = "not in the source"
        elif tensor.shape == dst.shape:
            plan.append((name, tensor))
        elif key in ("head.weight", "head.bias") and tensor.shape[1:] == dst.shape[1:]:
            fresh[name] = f"head replaced: {tensor.shape[0]} classes in the source, {dst.shape[0]} here"
        else:
            raise InputError(f"{source}: {key} has shape {tuple(tensor.shape)}, the model's "
                             f"{tuple(dst.shape)}: weights of another Swin3D variant (swin.variant "
                             f"is {model.variant!r})")
    missing = [n for n, why in fresh.items() if why == "not in the source"
               and not n.endswith("relative_position_index")]
    if missing:
        raise InputError(f"{source}: {len(missing)} of the model's tensors are not in it (first: "
                         f"{missing[0]}): not Swin3D weights, or another variant")
    with torch.no_grad():
        current = model.state_dict()
        for name, tensor in ([] if dry else plan):
            current[name].copy_(tensor)
    used = {n.removeprefix("net.") for n, _ in plan}
    return {"source": str(source), "format": label, "loaded": sorted(n for n, _ in plan), "partly": {},
            "fresh": fresh, "ignored": sorted(set(state) - used), "channels": None}
