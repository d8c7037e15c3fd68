# Helpers shared by the rules: config validation, paths, per-stage params.

import os
import sys
from pathlib import Path

from mgpipe import config as mgconfig

try:
    mgconfig.validate(config, "config")
except mgconfig.ConfigError as e:
    # One line naming the key, not a traceback.
    sys.exit(f"mgpipe: {e}")

R = config["results"]
DS = config["dataset"]
DEMO = DS["kind"] == "demo"

if DEMO:
    DATA = {
        "labels": f"{R}/demo_data/labels.csv",
        "split": f"{R}/demo_data/split.csv",
        "videos": f"{R}/demo_data/videos",
        "skeletons": f"{R}/demo_data/skeletons",
    }
else:
    DATA = {k: DS[k if k != "labels" else "label_table"] for k in ("labels", "split", "videos", "skeletons")}
    for key, value in DATA.items():
        name = "dataset.label_table" if key == "labels" else f"dataset.{key}"
        if not value:
            sys.exit(f"mgpipe: config key {name} must be set when dataset.kind is {DS['kind']}")
        if not Path(value).exists():
            sys.exit(f"mgpipe: config key {name}: {value} does not exist")

VARIANTS = config["fused"]["variants"]
SINGLE = ["rgb", "joint"] + (["limb"] if config["limb"]["enabled"] else [])
MODELS = SINGLE + [f"fused_{v}" for v in VARIANTS]
TRAIN_RULE = {"rgb": "pretrain_rgb", "joint": "pretrain_pose", "limb": "pretrain_limb"}

FINAL_OUTPUTS = [
    f"{R}/ensemble/metrics.json",
    f"{R}/ensemble/summary.html",
    *[f"{R}/models/{m}/curve.png" for m in MODELS],
]


def stage_config(*keys):
    """The config sections a stage reads, as sorted JSON: the rule's params (so a change
    elsewhere does not rerun it) and the --config-json the command receives."""
    return mgconfig.canonical({k: config[k] for k in keys})


def model_sections(model):
    if model == "rgb":
        return ("seed", "train", "rgb")
    if model == "joint":
        return ("seed", "train", "pose_model")
    if model == "limb":
        return ("seed", "train", "pose_model", "limb")
    return ("seed", "train", "rgb", "pose_model", "fused")


def code(stage):
    return mgconfig.code_digest(stage)


def gpu_count():
    return config["train"]["gpus"] if config["train"]["device"] != "cpu" else 0


# More than one GPU per training job: data-parallel processes launched by torchrun.
LAUNCHER = f"torchrun --standalone --nproc_per_node {gpu_count()} -m" if gpu_count() > 1 else ""


TRAIN_DATA = dict(
    manifest=f"{R}/clips.csv",
    classes=f"{R}/classes.csv",
    frames=f"{R}/frames.h5",
    heatmaps=f"{R}/heatmaps.h5",
)


def train_outputs(model):
    return dict(
        model=f"{R}/models/{model}/model.pt",
        log=report(f"{R}/models/{model}/log.csv", caption="../report/training.rst", category="Training"),
        curve=report(f"{R}/models/{model}/curve.png", caption="../report/training.rst", category="Training"),
    )
