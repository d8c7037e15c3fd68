"""The model registry: one spec per model the workflow can train, and the only place a model's
name is decoded.

A spec says which inputs the network takes (in the order of its forward arguments), which
stores those inputs come from, which streams of logits it outputs, which config sections define
it (the training rule's params and the resume fingerprint), its network, optimiser and
augmentation settings, whether it starts from merged pretrained weights, and whether a config
trains it. The package (training, testing, merging, prediction, the benchmark, the ensemble) and
the workflow (which jobs exist, what each reads, what reruns it) both read it, so a new model is
one `register(ModelSpec(...))` call and no change to the rules.

Each network owns its loss: `model.loss(out, labels)` (cross-entropy for a single stream; the
per-stream cross-entropies plus the prototype loss for the fused network).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:   # torch is imported where a network is built or run: planning needs none
    import torch

POSE_INPUTS = ("joint", "limb")   # heatmap inputs, rendered from the keypoint store
# Frame inputs, read from the frame store; each is shaped by the config section of its name
# (frames, size, mean, std; swin also stride: frames taken that far apart from one window;
# motion also gap: the frames of each difference that far apart). A model has at most one.
FRAME_INPUTS = ("rgb", "motion", "swin")

VARIANTS = {  # fused variant: (cross-modal fusion, prototype loss), for the ablation
    "full": (True, True),
    "nofusion": (False, True),
    "noproto": (True, False),
    "plain": (False, False),
}


@dataclass(frozen=True)
class ModelSpec:
    name: str
    inputs: tuple[str, ...]               # modalities fed to forward(), in argument order
    outputs: dict[str, str]               # stream name -> key of the network's output dict
    sections: tuple[str, ...]             # config sections (or "section.key") defining the model
    network: Callable[[dict, tuple[int, int]], dict]  # (config, (joints, limbs)) -> architecture
    optim: Callable[[dict], dict]         # config -> optimiser and schedule settings
    augment: Callable[[dict], dict]       # config -> training augmentation (sample arguments)
    enabled: Callable[[dict], bool]       # does this config train the model?
    merged_start: bool = False            # starts from the merge stage's weights (unless init.<model> names a file)
    ablation: dict | None = None  # fused variants: {"variant", "fusion", "prototype"}
    weights: str | None = None    # dotted config key naming its initial weights (None: init.<model>;
    #                               read by learning/weights/init_source.py only)

    @property
    def streams(self) -> list[str]:
        return list(self.outputs)

    @property
    def stores(self) -> tuple[str, ...]:
        """Stores the model reads: the keypoint store always (pose heatmaps are rendered from it
        and every view is cut from its compact box), the frame store where frames are an input."""
        return ("frames", "keypoints") if self.frame_input else ("keypoints",)

    @property
    def frame_input(self) -> str | None:
        """The input read from the frame store (its config section has the same name), or None."""
        return next((m for m in self.inputs if m in FRAME_INPUTS), None)

    @property
    def is_fused(self) -> bool:
        return len(self.inputs) > 1

    def settings(self, config: dict, *extra: str) -> dict:
        """The config sections that define this model (plus `extra` ones), "a.b" taking one key."""
        out: dict = {}
        for key in self.sections + extra:
            section, _, sub = key.partition(".")
            if sub:
                out.setdefault(section, {})[sub] = config[section][sub]
            else:
                out[section] = config[section]
        return out

    def input_settings(self, config: dict) -> dict:
        """{dotted config key: value} of the settings that shape the model's test-time input
        (what modalities() and the samples read): its checkpoint records them, and predict and
        test hold a config to them. heatmaps.size is not one (the heatmap store is an export;
        samples render at the model's input size)."""
        keys = ["heatmaps.padding"]  # every view is cut from the padded compact box
        frame = self.frame_input
        if frame:
            keys += [f"{frame}.{k}" for k in ("frames", "size", "mean", "std", "stride", "gap")
                     if k in config[frame]]
        if set(self.inputs) & set(POSE_INPUTS):
            keys += ["pose_model.input.frames", "heatmaps.sigma",
                     "pose_model.input.size" if self.is_fused else "pose_model.input.test_size"]
        out = {}
        for key in keys:
            value = config
            for part in key.split("."):
                value = value[part]
            out[key] = copy.deepcopy(value)
        return out

    def modalities(self, config: dict, train: bool) -> dict:
        """{input: (frames, size)} in forward-argument order. The fused network's laterals need
        the pose grid at exactly a quarter of the RGB size, so it is tested at the training
        size; a pose-only model is tested at pose_model.input.test_size."""
        pose_in = config["pose_model"]["input"]
        test_size = pose_in["size"] if self.is_fused else pose_in["test_size"]
        pose = (pose_in["frames"], pose_in["size"] if train else test_size)
        return {m: (config[m]["frames"], config[m]["size"]) if m in FRAME_INPUTS else pose
                for m in self.inputs}

    def forward(self, model, batch: dict, device, channels_last: bool = False):
        """({stream: logits}, the network's raw output) for a batch of samples."""
        import torch

        def move(x):
            x = x.to(device, non_blocking=True)
            return x.contiguous(memory_format=torch.channels_last_3d) if channels_last else x

        out = model(*(move(batch[m]) for m in self.inputs))
        return {s: out[key] for s, key in self.outputs.items()}, out


REGISTRY: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    if spec.name in REGISTRY:
        raise ValueError(f"model {spec.name!r} is registered twice")
    unknown = set(spec.inputs) - {*FRAME_INPUTS, *POSE_INPUTS}
    if unknown:
        raise ValueError(f"model {spec.name!r}: unknown inputs {sorted(unknown)}")
    if sum(m in FRAME_INPUTS for m in spec.inputs) > 1:
        raise ValueError(f"model {spec.name!r}: more than one frame input {spec.inputs}")
    REGISTRY[spec.name] = spec
    return spec


def get(name: str) -> ModelSpec:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(REGISTRY)}") from None


def trained_models(config: dict) -> list[str]:
    """The models a config trains: single-input ones in registry order, then the fused
    variants in the order of fused.variants (the summary's ablation order)."""
    names = [n for n, s in REGISTRY.items() if s.enabled(config)]
    variants = config["fused"]["variants"]

    def rank(n):
        spec = REGISTRY[n]
        return (1, variants.index(spec.ablation["variant"])) if spec.ablation else (0, list(REGISTRY).index(n))

    return sorted(names, key=rank)


def build(arch: dict, num_classes: int) -> torch.nn.Module:
    """The network of an architecture dict (what every checkpoint stores)."""
    from mgpipe.models.rgbpose import build_fused
    from mgpipe.models.single import build_single

    arch = copy.deepcopy(arch)
    if arch["type"] == "single":
        return build_single(arch["kind"], arch["in_channels"], num_classes, arch["cfg"])
    if arch["type"] == "swin":
        from mgpipe.models.swin import build_swin

        return build_swin(arch["variant"], num_classes, arch["cfg"])
    return build_fused(num_classes, arch["pose_in_channels"], arch["cfg"])


def combine_streams(probs: dict, weights: dict | None = None):
    """A model's class probabilities from its streams' {stream: [N, K]}: the weighted mean
    (1:1 unless weights say otherwise); a single-stream model's one stream as it is. The one
    place where stream probabilities are combined (training's selection, scores, prediction)."""
    weights = weights or {k: 1.0 for k in probs}
    total = sum(weights[k] for k in probs)
    return sum(probs[k] * weights[k] for k in probs) / total


# ---- the models of the method --------------------------------------------------------------

def _rgb_only(config):
    return config["mode"] != "pose"


def _frames_member(section):
    """enabled() of an optional frame-store member: its section's `enabled`, outside pose-only mode."""
    return lambda config: _rgb_only(config) and config[section]["enabled"]


def _rgb_augment(config):
    # The RGB and fused networks crop and mirror but do not zoom or shift, so that the fused
    # network's two pathways see the same region.
    return {"flip": config["train"]["flip"], "crop_area": tuple(config["train"]["crop_area"]),
            "zoom": (1.0, 1.0), "shift": 0.0}


def _pose_augment(config):
    aug = config["pose_model"]["augment"]
    return {"flip": aug["flip"], "crop_area": tuple(aug["crop_area"]),
            "zoom": tuple(aug["scale"]), "shift": float(aug["shift"])}


def _pose_network(which):
    def network(config, channels):
        joints, limbs = channels
        return {"type": "single", "kind": "pose", "in_channels": joints if which == "joint" else limbs,
                "cfg": config["pose_model"]["network"]}
    return network


def _fused_network(variant):
    fusion, proto = VARIANTS[variant]

    def network(config, channels):
        fused = config["fused"]
        return {"type": "fused", "pose_in_channels": channels[0], "cfg": {
            "rgb": config["rgb"]["network"], "pose": config["pose_model"]["network"],
            "fusion": {"enabled": fusion, **fused["fusion"]},
            "prototype": {"enabled": proto, **fused["prototype"]},
        }}
    return network


register(ModelSpec(
    # The RGB model reads only the box padding of the heatmap settings (its frames are cut
    # from the clip's compact box), so the Gaussian width does not retrain it.
    name="rgb", inputs=("rgb",), outputs={"rgb": "logits"},
    sections=("seed", "train", "rgb", "heatmaps.padding", "init.rgb"),
    network=lambda config, channels: {"type": "single", "kind": "rgb", "in_channels": 3,
                                      "cfg": config["rgb"]["network"]},
    optim=lambda config: config["rgb"]["optim"], augment=_rgb_augment, enabled=_rgb_only))

register(ModelSpec(
    name="joint", inputs=("joint",), outputs={"joint": "logits"},
    sections=("seed", "train", "pose_model", "heatmaps", "init.joint"), network=_pose_network("joint"),
    optim=lambda config: config["pose_model"]["optim"], augment=_pose_augment,
    enabled=lambda config: True))

register(ModelSpec(
    name="limb", inputs=("limb",), outputs={"limb": "logits"},
    sections=("seed", "train", "pose_model", "limb", "heatmaps", "init.limb"), network=_pose_network("limb"),
    optim=lambda config: config["limb"].get("optim") or config["pose_model"]["optim"],  # absent: the joint model's
    augment=_pose_augment, enabled=lambda config: config["limb"]["enabled"]))

register(ModelSpec(
    # The motion stream: the RGB model's network on temporal differences of its frames (TSN's
    # RGB-diff), cut from the same frame store with the same views; its own settings (motion).
    name="motion", inputs=("motion",), outputs={"motion": "logits"},
    sections=("seed", "train", "motion", "heatmaps.padding", "init.motion"),
    network=lambda config, channels: {"type": "single", "kind": "rgb", "in_channels": 3,
                                      "cfg": config["motion"]["network"]},
    optim=lambda config: config["motion"]["optim"], augment=_rgb_augment,
    enabled=_frames_member("motion")))

register(ModelSpec(
    # Video Swin (torchvision's swin3d_t/s/b) on RGB frames with its own sampling and
    # normalisation (swin); its initial weights are swin.weights (a file or a weight name).
    name="swin", inputs=("swin",), outputs={"swin": "logits"},
    sections=("seed", "train", "swin", "heatmaps.padding"),
    network=lambda config, channels: {"type": "swin", "variant": config["swin"]["variant"],
                                      "cfg": {"dropout": config["swin"]["dropout"]}},
    optim=lambda config: config["swin"]["optim"], augment=_rgb_augment,
    enabled=_frames_member("swin"), weights="swin.weights"))

for _variant, (_fusion, _proto) in VARIANTS.items():
    register(ModelSpec(
        name=f"fused_{_variant}", inputs=("rgb", "joint"), outputs={"rgb": "rgb", "pose": "pose"},
        sections=("seed", "train", "rgb", "pose_model", "fused", "heatmaps", "init.fused"),
        network=_fused_network(_variant), optim=lambda config: config["fused"]["optim"],
        augment=_rgb_augment, merged_start=True, ablation={"variant": _variant, "fusion": _fusion, "prototype": _proto},
        enabled=lambda config, v=_variant: _rgb_only(config) and v in config["fused"]["variants"]))
