"""The MMAction2 side of the transfer tests (tests/test_transfer_mmaction.py) and of the MMAction2
installer's smoke test; a script, not part of the package. Runs under the MMAction2 side
environment's interpreter (scripts/install_mmaction2.sh): builds
MMAction2's own models with PoseConv3D's joint and limb configs and RGBPoseConv3D's, saves them in
MMAction2's checkpoint format with their logits on fixed inputs, and loads checkpoints mgpipe
exported. The transfer tests compare both sides. Imports numpy, torch, mmengine and mmaction only
(never mgpipe).

    python tests/mmaction_side.py build OUT_DIR     checkpoints, inputs and logits -> OUT_DIR
    python tests/mmaction_side.py load FILE.json    [{"model", "checkpoint", "inputs"}] -> report on stdout
    python tests/mmaction_side.py smoke             the models build (the installer's check)
"""

from __future__ import annotations

import json
import sys
import types
import warnings

import torch

# PoseConv3D's configs (MMAction2 1.2.0 configs/skeleton/posec3d/slowonly_r50_8xb16-u48-240e_
# ntu60-xsub-keypoint.py and -limb.py: both take 17 channels) and RGBPoseConv3D's
# (configs/skeleton/posec3d/rgbpose_conv3d/rgbpose_conv3d.py), as model dicts.
SLOWONLY_R50 = dict(type="ResNet3dSlowOnly", depth=50, pretrained=None, in_channels=17,
                    base_channels=32, num_stages=3, out_indices=(2,), stage_blocks=(4, 6, 3),
                    conv1_stride_s=1, pool1_stride_s=1, inflate=(0, 1, 1),
                    spatial_strides=(2, 2, 2), temporal_strides=(1, 1, 2), dilations=(1, 1, 1))
POSEC3D = dict(type="Recognizer3D", backbone=SLOWONLY_R50,
               cls_head=dict(type="I3DHead", in_channels=512, num_classes=60, dropout_ratio=0.5,
                             average_clips="prob"))
RGBPOSE = dict(
    type="MMRecognizer3D",
    backbone=dict(
        type="RGBPoseConv3D", speed_ratio=4, channel_ratio=4,
        rgb_pathway=dict(num_stages=4, lateral=True, lateral_infl=1, lateral_activate=[0, 0, 1, 1],
                         fusion_kernel=7, base_channels=64, conv1_kernel=(1, 7, 7),
                         inflate=(0, 0, 1, 1), with_pool2=False),
        pose_pathway=dict(num_stages=3, stage_blocks=(4, 6, 3), lateral=True, lateral_inv=True,
                          lateral_infl=16, lateral_activate=(0, 1, 1), fusion_kernel=7,
                          in_channels=17, base_channels=32, out_indices=(2,),
                          conv1_kernel=(1, 7, 7), conv1_stride_s=1, conv1_stride_t=1,
                          pool1_stride_s=1, pool1_stride_t=1, inflate=(0, 1, 1),
                          spatial_strides=(2, 2, 2), temporal_strides=(1, 1, 1),
                          dilations=(1, 1, 1), with_pool2=False)),
    cls_head=dict(type="RGBPoseHead", num_classes=60, in_channels=[2048, 512],
                  loss_components=["rgb", "pose"], loss_weights=[1.0, 1.0], average_clips="prob"))
MODELS_BUILT = {"joint": POSEC3D, "limb": POSEC3D, "rgbpose": RGBPOSE}
# Small inputs keep the test cheap; the pose frames are 4x the RGB frames (speed ratio).
INPUTS = {"joint": {"pose": (2, 17, 8, 24, 24)}, "limb": {"pose": (2, 17, 8, 24, 24)},
          "rgbpose": {"rgb": (2, 3, 4, 64, 64), "pose": (2, 17, 16, 16, 16)}}


def import_mmaction():
    """mmaction's model registry, all modules registered. PyPI's mmaction2 1.2.0 wheel lacks the
    package mmaction/models/localizers/drn that mmaction.models imports (a packaging slip; DRN is
    a temporal grounding model): an empty stand-in module lets the import go through."""
    for name in ("mmaction.models.localizers.drn", "mmaction.models.localizers.drn.drn"):
        if name not in sys.modules:
            stand_in = types.ModuleType(name)
            stand_in.__path__ = []
            stand_in.DRN = None
            sys.modules[name] = stand_in
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from mmaction.registry import MODELS
        from mmaction.utils import register_all_modules

        register_all_modules()
    return MODELS


def build(which: str):
    import copy

    model = import_mmaction().build(copy.deepcopy(MODELS_BUILT[which]))
    model.init_weights()
    return model.eval()


def randomise(model, seed: int) -> None:
    """Random weights everywhere and random BatchNorm statistics, so that no tensor could be
    swapped with another one unnoticed (zero-initialised residual BNs and unit variances would
    hide a mix-up)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.weight.copy_(0.8 + 0.4 * torch.rand(m.weight.shape, generator=g))
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
                m.num_batches_tracked.fill_(int(torch.randint(1, 1000, (1,), generator=g)))
            elif isinstance(m, (torch.nn.Conv3d, torch.nn.ConvTranspose3d, torch.nn.Linear)):
                fan_in = m.weight[0].numel() if not isinstance(m, torch.nn.ConvTranspose3d) \
                    else m.weight.shape[0] * m.weight[0, 0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (1.0 / fan_in) ** 0.5)
                if m.bias is not None:
                    m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))


@torch.no_grad()
def logits(model, which: str, inputs: dict) -> dict:
    if which == "rgbpose":
        scores = model.cls_head(model.backbone(inputs["rgb"], inputs["pose"]))
        return {"rgb": scores["rgb"], "pose": scores["pose"]}
    return {"logits": model.cls_head(model.backbone(inputs["pose"] if "pose" in inputs else inputs["rgb"]))}


def make_inputs(which: str, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {k: torch.rand(shape, generator=g) for k, shape in INPUTS[which].items()}


def cmd_build(out_dir: str) -> None:
    import mmaction
    import numpy as np
    from mmengine.runner.checkpoint import save_checkpoint, weights_to_cpu

    for seed, which in enumerate(MODELS_BUILT):
        model = build(which)
        randomise(model, seed)
        inputs = make_inputs(which, 100 + seed)
        # MMAction2's checkpoint format: meta (here with numpy values, as trained checkpoints
        # carry) and the recognizer's state dict.
        meta = {"mmaction2_version": mmaction.__version__, "config": json.dumps(MODELS_BUILT[which]),
                "epoch": 240, "best_score": np.float64(0.937), "dataset_meta": {"classes": np.arange(60)}}
        save_checkpoint({"meta": meta, "state_dict": weights_to_cpu(model.state_dict())},
                        f"{out_dir}/{which}.pth")
        torch.save({"inputs": inputs, "logits": logits(model, which, inputs)}, f"{out_dir}/{which}_io.pt")
    print(json.dumps({"mmaction2": mmaction.__version__}))


def cmd_load(spec_file: str) -> None:
    """Load mgpipe exports into MMAction2's models the way MMAction2 loads checkpoints, report the
    keys it misses or does not expect, and the logits on the given inputs."""
    from mmengine.runner.checkpoint import _load_checkpoint, load_state_dict

    report = {}
    for job in json.load(open(spec_file)):
        model_cfg = json.load(open(job["config"]))
        import copy

        model = import_mmaction().build(copy.deepcopy(model_cfg)).eval()
        ckpt = _load_checkpoint(job["checkpoint"], map_location="cpu")
        state = ckpt["state_dict"]
        missing = sorted(set(model.state_dict()) - set(state))
        unexpected = sorted(set(state) - set(model.state_dict()))
        load_state_dict(model, state, strict=True)
        which = "rgbpose" if "RGBPose" in model_cfg["backbone"]["type"] else "single"
        inputs = torch.load(job["inputs"], weights_only=True)
        out = logits(model, which, inputs)
        torch.save(out, job["out"])
        report[job["name"]] = {"missing": missing, "unexpected": unexpected}
    print(json.dumps(report))


def main(argv) -> None:
    if argv[0] == "build":
        cmd_build(argv[1])
    elif argv[0] == "load":
        cmd_load(argv[1])
    elif argv[0] == "smoke":
        for which in ("joint", "rgbpose"):
            build(which)
        import mmaction

        print(f"[install_mmaction2] ok: mmaction2 {mmaction.__version__}", file=sys.stderr)
    else:
        raise SystemExit(f"unknown command {argv[0]!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
