#!/usr/bin/env bash
# Side environment with MMAction2 for the checkpoint-transfer tests (tests/test_transfer_mmaction.py):
# MMAction2's own ResNet3dSlowOnly / RGBPoseConv3D build, save and load checkpoints there, and the
# tests check that mgpipe imports and exports them exactly.
#
#   scripts/install_mmaction2.sh [VENV]
#
# VENV defaults to <repo>/.venvs/mmaction2; PYTHON picks the base interpreter (default python3),
# which should be the interpreter mgpipe itself runs under. The last line printed is the side
# interpreter (the tests look for <repo>/.venvs/mmaction2/bin/python, or MGPIPE_MMACTION2_PYTHON).
#
# Why the environment looks like this (Python 3.11, torch 2.13 CPU):
# - The venv reuses the calling interpreter's torch and numpy (scripts/side_env.sh says how, from
#   the system Python, a venv or conda alike), never downloading a second torch.
# - mmcv-lite 2.1.0 (no compiled ops): MMAction2 1.2.0 wants mmcv >= 2.0.0rc4, < 2.2.0; the models
#   tested here (ResNet3dSlowOnly, RGBPoseConv3D, their heads) use ConvModule and no compiled op.
# - mmaction2, mmengine and mmcv-lite go in with --no-deps: they ask for opencv-python (needs libGL
#   at import time) or opencv-contrib-python; opencv-python-headless is the same cv2 without GUI.
#   mmaction2 also asks for decord (video reading; its data pipeline imports it lazily, the models
#   never), which is left out.
# - PyPI's mmaction2 1.2.0 wheel lacks mmaction/models/localizers/drn, which mmaction.models
#   imports; tests/mmaction_side.py puts an empty stand-in module in its place before importing.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
SIDE_NAME=install_mmaction2
source "$REPO/scripts/side_env.sh"
side_env_venv_arg mmaction2 2,20 "$@"

MMACTION2_VERSION=1.2.0
MMCV_VERSION=2.1.0
MMENGINE_VERSION=0.10.7

side_env_create install_mmaction2.sh "$VENV"

installed() {
    have mmaction2 "$MMACTION2_VERSION" && have mmengine "$MMENGINE_VERSION" && have mmcv-lite "$MMCV_VERSION"
}

install() {
    # OpenMMLab's light runtime dependencies (side_env.sh), and mmaction2's model code's:
    # importlib_metadata: mmaction.utils.dependency imports the backport on every Python.
    pipi "${OPENMMLAB_DEPS[@]}" einops importlib_metadata
    pipi --no-deps "mmengine==$MMENGINE_VERSION" "mmcv-lite==$MMCV_VERSION" "mmaction2==$MMACTION2_VERSION"
}

# Smoke test through the transfer tests' side script (with its stand-in for the module PyPI's
# wheel lacks): MMAction2 builds PoseConv3D's SlowOnly and RGBPoseConv3D.
smoke_test() {
    "$PY" "$REPO/tests/mmaction_side.py" smoke > /dev/null
}

side_env_ensure
