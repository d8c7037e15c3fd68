#!/usr/bin/env bash
# Side environment for the offline real-weights pose backend
# (mgpipe/pose/backends/mediapipe_backend.py, mediapipe 0.10.21's legacy `solutions` API).
#
#   scripts/install_mediapipe.sh [VENV]
#
# VENV defaults to <repo>/.venvs/mediapipe; PYTHON picks the base interpreter (default python3,
# 3.9 to 3.12: mediapipe 0.10.21 has no wheels for other versions). Re-running on a working
# environment only re-checks it (a few seconds). The last line printed is the side interpreter:
# put it in the config as pose.python.
#
# Why the environment looks like this:
# - mediapipe 0.10.21 is the last release whose wheel carries the legacy solutions' models
#   (pose_landmark_full, holistic, hands, face); later ones ship none and weights cannot be
#   fetched at run time here. It needs numpy < 2 and protobuf < 5, hence its own venv (no
#   --system-site-packages: the main environment has numpy 2).
# - mediapipe goes in with --no-deps. Its declared dependencies add jax, jaxlib, scipy,
#   sentencepiece and sounddevice (Tasks / GenAI / audio APIs that `import mediapipe` and the
#   solutions never load) and opencv-contrib-python, whose cv2 needs libGL at import time (absent
#   on many servers). Measured from an empty pip cache on 2 cores: 61 s and 1.0 GB with them,
#   25-30 s and 0.43 GB with the list below. `import mediapipe` itself needs cv2 and matplotlib
#   (its drawing_utils imports both).
# - opencv-python-headless < 4.12: 4.12 requires numpy >= 2.
# - h5py and Pillow: the pose worker (mgpipe/pose/backends/worker.py) reads the frame store.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
# (log, t_start and the argument; this venv shares no package with the calling interpreter: no
# side_env_create)
SIDE_NAME=install_mediapipe
source "$REPO/scripts/side_env.sh"
side_env_venv_arg mediapipe 2,11 "$@"

MEDIAPIPE_VERSION=0.10.21
REQUIREMENTS=("numpy<2" "protobuf>=4.25.3,<5" "absl-py" "attrs>=19.1.0" "flatbuffers>=2.0"
              "opencv-python-headless<4.12" "matplotlib" "h5py" "pillow")


# Loads the models from the wheel and runs one frame through the backend, so a broken or
# half-finished environment is never reported as ready.
smoke_test() {
    PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" "$VENV/bin/python" - "$MEDIAPIPE_VERSION" <<'EOF'
import sys
import mediapipe
import numpy as np
if mediapipe.__version__ != sys.argv[1]:
    sys.exit(f"mediapipe {mediapipe.__version__} installed, {sys.argv[1]} expected")
from mgpipe.pose.backends.mediapipe_backend import make_estimator
est = make_estimator({})
out = est(np.full((96, 128, 3), 128, np.uint8))
est.close()
assert out.shape == (0, 75, 3), out.shape
print(f"[install_mediapipe] ok: mediapipe {mediapipe.__version__}, numpy {np.__version__}",
      file=sys.stderr)
EOF
}

if [[ -x "$VENV/bin/python" ]]; then
    if smoke_test 2>/dev/null; then
        log "$VENV is ready (checked in $(( $(date +%s) - t_start )) s)"
        echo "$(cd "$VENV" && pwd)/bin/python"
        exit 0
    fi
    log "$VENV exists but fails its check: installing into it again"
fi

if ! base_version="$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)"; then
    echo "install_mediapipe.sh: cannot run the base interpreter '$PYTHON'; set PYTHON" >&2
    exit 1
fi
case "$base_version" in
    3.9|3.10|3.11|3.12) ;;
    *) echo "install_mediapipe.sh: $PYTHON is Python $base_version; mediapipe $MEDIAPIPE_VERSION" \
            "has wheels for 3.9 to 3.12 only: set PYTHON to one of those" >&2
       exit 1 ;;
esac

if [[ ! -x "$VENV/bin/python" ]]; then
    # From inside a venv or conda environment, venv builds on the interpreter that one was made
    # from: name both. No package of either is shared (see above), so the caller's kind does not matter.
    log "creating $VENV with Python $base_version at $("$PYTHON" -c 'import sys
base = getattr(sys, "_base_executable", sys.executable)
print(base if base == sys.executable else f"{base} (the base of {sys.executable})")')"
    mkdir -p "$(dirname "$VENV")"
    "$PYTHON" -m venv "$VENV"
fi
# Keep the environment out of git wherever it is created (Python < 3.13's venv does not do this).
[[ -e "$VENV/.gitignore" ]] || echo '*' > "$VENV/.gitignore"

pipi() { PIP_DISABLE_PIP_VERSION_CHECK=1 "$VENV/bin/python" -m pip install --quiet "$@"; }
log "installing mediapipe $MEDIAPIPE_VERSION and ${REQUIREMENTS[*]}"
# mediapipe last: installed before them, pip would report the left-out dependencies as conflicts.
if ! pipi "${REQUIREMENTS[@]}" || ! pipi --no-deps "mediapipe==$MEDIAPIPE_VERSION"; then
    echo "install_mediapipe.sh: pip could not install into $VENV (see above)" >&2
    exit 1
fi

# MediaPipe logs a screenful of TFLite notices on stderr: show them only when the test fails.
smoke_log="$(mktemp)"
trap 'rm -f "$smoke_log"' EXIT
if ! smoke_test >"$smoke_log" 2>&1; then
    cat "$smoke_log" >&2
    echo "install_mediapipe.sh: the environment at $VENV was installed but its smoke test failed" \
         "(see above)" >&2
    exit 1
fi
grep '^\[install_mediapipe\]' "$smoke_log" >&2 || true
log "done in $(( $(date +%s) - t_start )) s"
echo "$(cd "$VENV" && pwd)/bin/python"
