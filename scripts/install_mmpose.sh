#!/usr/bin/env bash
# Side environment for the mmpose pose backend (mgpipe/pose/backends/mmpose_backend.py).
#
#   scripts/install_mmpose.sh [VENV] [--full]
#
# VENV defaults to <repo>/.venvs/mmpose; PYTHON picks the base interpreter (default python3),
# which should be the interpreter mgpipe itself runs under. The last line printed is the side
# interpreter: put it in the config as pose.python.
#
# Default ("lite"; about 50 s on 2 cores from an empty pip cache, 10 s to re-check): top-down
#   heatmap / SimCC models (HRNet, ResNet, MobileNetV2, RTMPose, ...) on a full-frame box.
#   mmcv-lite has no compiled ops; a model that needs one fails with an error naming --full,
#   and there is no person detector.
# --full (15-25 min on 2 cores the first time, compiling; pip caches the built wheel): mmcv
#   2.1.0 compiled against the base interpreter's torch, for mmdet's person detectors and the
#   ops-based models. On a CUDA machine mmcv compiles CUDA ops too, which needs the CUDA
#   toolkit (nvcc) matching torch's CUDA version.
#
# Why the environment looks like this (versions measured on Python 3.11, torch 2.13 CPU):
# - The venv reuses the calling interpreter's torch, numpy and Pillow (scripts/side_env.sh says
#   how, from the system Python, a venv or conda alike).
# - mmcv 2.1.0 (lite or full): mmdet 3.3.0 requires mmcv < 2.2.0, and 2.1.0 is the last such one.
# - mmcv-lite, mmengine and mmpose go in with --no-deps: all three ask for opencv-python, which
#   needs libGL at import time (absent on servers); opencv-python-headless is the same cv2
#   without GUI. mmpose also asks for torchvision (its PyPI builds may not load beside the base
#   torch, and mmpose uses it only to draw SimCC visualisations; the backend handles that) and
#   chumpy (SMPL only; does not import on Python >= 3.11).
# - xtcocotools is imported at module level by mmpose's datasets; its published wheels do not
#   work with numpy 2 (measured), so it is compiled here against the base numpy (a few seconds).
# - mmdet 3.3.0 (pure Python) in both recipes: mmpose imports mmdet.utils at module level and
#   RTMPose's CSPNeXt backbone is an mmdet module; only mmdet's detectors need compiled ops.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
FULL=0
VENV=""
for arg in "$@"; do
    case "$arg" in
        --full) FULL=1 ;;
        -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
        -*) echo "install_mmpose.sh: unknown option $arg" >&2; exit 2 ;;
        *) [[ -z "$VENV" ]] || { echo "install_mmpose.sh: one VENV path only" >&2; exit 2; }
           VENV="$arg" ;;
    esac
done
VENV="${VENV:-$REPO/.venvs/mmpose}"

MMPOSE_VERSION=1.3.2
MMCV_VERSION=2.1.0
MMENGINE_VERSION=0.10.7
MMDET_VERSION=3.3.0
XTCOCOTOOLS_VERSION=1.14.3

SIDE_NAME=install_mmpose
source "$REPO/scripts/side_env.sh"
side_env_create install_mmpose.sh "$VENV"

installed() {
    have mmpose "$MMPOSE_VERSION" && have mmengine "$MMENGINE_VERSION" && have mmdet "$MMDET_VERSION" \
        && have xtcocotools "$XTCOCOTOOLS_VERSION" \
        && { have mmcv "$MMCV_VERSION" || { [[ "$FULL" == 0 ]] && have mmcv-lite "$MMCV_VERSION"; }; }
}

install() {
    # OpenMMLab's light runtime dependencies (side_env.sh; see above for what is left out), and
    # mmpose's own (json-tricks, munkres); wheel and cython build xtcocotools. setuptools < 82 is
    # needed on the way to `import mmpose.apis`: Python < 3.12 puts an old setuptools into every
    # venv, newer Pythons put none there.
    pipi "${OPENMMLAB_DEPS[@]}" json-tricks munkres wheel cython

    if ! have xtcocotools "$XTCOCOTOOLS_VERSION"; then
        log "building xtcocotools $XTCOCOTOOLS_VERSION against numpy $("$PY" -c 'import numpy; print(numpy.__version__)')"
        pipi --no-binary xtcocotools --no-build-isolation "xtcocotools==$XTCOCOTOOLS_VERSION"
    fi

    pipi --no-deps "mmengine==$MMENGINE_VERSION" "mmpose==$MMPOSE_VERSION"

    if [[ "$FULL" == 1 ]]; then
        if have mmcv-lite "$MMCV_VERSION"; then
            # Both distributions install the same `mmcv` package; the compiled one replaces it.
            "$PY" -m pip uninstall --quiet -y mmcv-lite
        fi
        if ! have mmcv "$MMCV_VERSION"; then
            log "compiling mmcv $MMCV_VERSION against torch $("$PY" -c 'import torch; print(torch.__version__)')" \
                "(about 15 minutes on 2 cores; MAX_JOBS=${MAX_JOBS:-all cores})"
            # No build isolation: mmcv's setup.py imports torch to compile its ops against it.
            pipi --no-build-isolation --no-deps "mmcv==$MMCV_VERSION"
        fi
    elif ! have mmcv "$MMCV_VERSION"; then
        pipi --no-deps "mmcv-lite==$MMCV_VERSION"
    fi
    # mmdet is pure Python and wanted by the lite install too: mmpose imports mmdet.utils at module
    # level (RTMO head), and RTMPose's CSPNeXt backbone is registered by mmdet's model package. Its
    # person detectors need the compiled ops (--full). Its dependencies (pycocotools, shapely,
    # terminaltables, ...) have numpy-2 wheels.
    pipi "mmdet==$MMDET_VERSION"
}

# Smoke test through the backend itself (its stand-ins for missing ops / torchvision included),
# so a broken or half-finished environment is never reported as ready.
smoke_test() {
    PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" "$PY" - "$FULL" <<'EOF'
import contextlib
import io
import sys

import numpy as np
from mgpipe.pose.backends.mmpose_backend import describe_install, make_estimator

# One frame through a bundled RTMPose-t (its CSPNeXt backbone comes from mmdet) with random
# weights, whose loud warning is kept out of the installer's output.
with contextlib.redirect_stderr(io.StringIO()):
    est = make_estimator({"allow_random_weights": True, "config":
                          "body_2d_keypoint/rtmpose/coco/rtmpose-t_8xb256-420e_coco-256x192.py"})
    out = est(np.full((48, 64, 3), 128, np.uint8))
assert out.shape == (1, 17, 3), out.shape
if sys.argv[1] == "1":
    import mmcv.ops  # noqa: F401  the compiled ops must load in a --full install
    import mmdet.apis  # noqa: F401
info = describe_install()
print("[install_mmpose] ok: " + ", ".join(f"{k} {v}" for k, v in info.items()), file=sys.stderr)
EOF
}

side_env_ensure
