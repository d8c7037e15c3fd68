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
# - --system-site-packages and a constraints file pinning torch and numpy, as for mmpose: the base
#   torch is reused, never a second one downloaded.
# - mmcv-lite 2.1.0 (no compiled ops): MMAction2 1.2.0 wants mmcv >= 2.0.0rc4, < 2.2.0; the models
#   tested here (ResNet3dSlowOnly, RGBPoseConv3D, their heads) use ConvModule and no compiled op.
# - mmaction2, mmengine and mmcv-lite go in with --no-deps: they ask for opencv-python (needs libGL
#   at import time) or opencv-contrib-python; opencv-python-headless is the same cv2 without GUI.
#   mmaction2 also asks for decord (video reading; its data pipeline imports it lazily, the models
#   never), which is left out.
# - PyPI's mmaction2 1.2.0 wheel lacks mmaction/models/localizers/drn, which mmaction.models
#   imports; mgpipe/transfer/side.py puts an empty stand-in module in its place before importing.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
case "${1:-}" in
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    -*) echo "install_mmaction2.sh: unknown option $1" >&2; exit 2 ;;
esac
VENV="${1:-$REPO/.venvs/mmaction2}"

MMACTION2_VERSION=1.2.0
MMCV_VERSION=2.1.0
MMENGINE_VERSION=0.10.7

log() { echo "[install_mmaction2] $*" >&2; }
t_start=$(date +%s)

if ! "$PYTHON" -c 'import torch, numpy' 2>/dev/null; then
    echo "install_mmaction2.sh: $PYTHON cannot import torch and numpy; run it with PYTHON set to" \
         "the interpreter mgpipe is installed in" >&2
    exit 1
fi

if [[ ! -x "$VENV/bin/python" ]]; then
    log "creating $VENV (system site packages of $("$PYTHON" -c 'import sys; print(sys.executable)'))"
    "$PYTHON" -m venv --system-site-packages "$VENV"
fi
[[ -e "$VENV/.gitignore" ]] || echo '*' > "$VENV/.gitignore"
PY="$VENV/bin/python"

CONSTRAINTS="$VENV/mgpipe-constraints.txt"
"$PY" - > "$CONSTRAINTS" <<'PYEOF'
import numpy, torch
print(f"torch=={torch.__version__.split('+')[0]}")
print(f"numpy=={numpy.__version__}")
PYEOF
pipi() { PIP_DISABLE_PIP_VERSION_CHECK=1 "$PY" -m pip install --quiet -c "$CONSTRAINTS" "$@"; }
have() { "$PY" -c "import importlib.metadata as m, sys; sys.exit(m.version('$1') != '$2')" 2>/dev/null; }

installed() {
    have mmaction2 "$MMACTION2_VERSION" && have mmengine "$MMENGINE_VERSION" && have mmcv-lite "$MMCV_VERSION"
}

install() {
    # Light runtime dependencies of mmengine, mmcv and mmaction2's model code. setuptools < 82:
    # mmengine imports pkg_resources (gone from setuptools 82).
    # importlib_metadata: mmaction.utils.dependency imports the backport on every Python.
    pipi addict packaging pyyaml yapf rich termcolor matplotlib scipy einops importlib_metadata \
         "opencv-python-headless>=4.5,<5" "setuptools<82"
    pipi --no-deps "mmengine==$MMENGINE_VERSION" "mmcv-lite==$MMCV_VERSION" "mmaction2==$MMACTION2_VERSION"
}

# Smoke test through mgpipe's side module (with its stand-in for the module PyPI's wheel lacks):
# MMAction2 builds PoseConv3D's SlowOnly and RGBPoseConv3D.
smoke_test() {
    PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" "$PY" -m mgpipe.transfer.side smoke > /dev/null
}

if installed && out=$(smoke_test 2>&1); then
    log "$VENV already had the pinned packages and passed the smoke test"
else
    install
    smoke_test
fi

log "done in $(( $(date +%s) - t_start )) s"
echo "$VENV/bin/python"
