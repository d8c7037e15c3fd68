# Sourced by the side-environment installers (install_mediapipe.sh, install_mmpose.sh,
# install_mmaction2.sh), which set REPO and SIDE_NAME (their name, without .sh) first. All three
# get log (a line on stderr tagged [SIDE_NAME]) and t_start; side_env_venv_arg reads the VENV
# argument of the two without options; the OpenMMLab ones (mmpose, mmaction2) also get
# side_env_create, OPENMMLAB_DEPS and side_env_ensure below.
#
# side_env_create: a venv that reuses the calling interpreter's torch, numpy and Pillow, so that
# a second (possibly CUDA, multi-GB) torch is never downloaded.
#
# A .pth file in the venv's site-packages adds the folders the calling interpreter takes its
# packages from (site.getsitepackages(), the user site, purelib and platlib, with their own .pth
# files). Not --system-site-packages: from inside a virtualenv that links the packages of the
# Python the virtualenv was made from, not the virtualenv's own (no torch there). Works from the
# system Python, a venv and conda alike. A constraints file pins torch and numpy to the calling
# interpreter's versions so that no dependency can shadow them in the venv.
#
#   side_env_create SCRIPT_NAME VENV    (PYTHON: the calling interpreter; log: the caller's)
# sets BASE (the calling interpreter's file) and PY (the venv's), and defines pipi (pip install
# under the constraints) and have (whether a distribution is installed at a version).

log() { echo "[$SIDE_NAME] $*" >&2; }
t_start=$(date +%s)

# side_env_venv_arg NAME HELP_LINES "$@": the one optional argument of install_NAME.sh, the venv
# (default <repo>/.venvs/NAME) -> VENV; -h prints lines HELP_LINES (sed's M,N) of its header.
side_env_venv_arg() {
    local name="$1" help="$2"
    shift 2
    case "${1:-}" in
        -h|--help) sed -n "${help}p" "$0"; exit 0 ;;
        -*) echo "install_$name.sh: unknown option $1" >&2; exit 2 ;;
    esac
    [[ $# -le 1 ]] || { echo "install_$name.sh: one VENV path only" >&2; exit 2; }
    VENV="${1:-$REPO/.venvs/$name}"
}

side_env_create() {
    local name="$1" venv="$2"
    if ! BASE="$("$PYTHON" -c 'import sys, torch, numpy; print(sys.executable)' 2>/dev/null)"; then
        local who="$PYTHON"   # a bare name (the default python3): say which file it is
        [[ "$PYTHON" == */* ]] || who="$PYTHON ($(command -v "$PYTHON" || echo not found))"
        echo "$name: $who cannot import torch and numpy; run it with PYTHON set to the" \
             "interpreter mgpipe is installed in" >&2
        exit 1
    fi
    if [[ ! -x "$venv/bin/python" ]]; then
        log "creating $venv on the packages of $BASE"
        "$PYTHON" -m venv "$venv"
    fi
    # Keep the environment out of git wherever it is created (Python 3.11's venv does not do this).
    [[ -e "$venv/.gitignore" ]] || echo '*' > "$venv/.gitignore"
    PY="$venv/bin/python"

    # The link to the calling interpreter's packages, rewritten on every run (it may have moved).
    # Each folder goes through site.addsitedir, which also reads the .pth files inside it
    # (editable installs, conda's and Debian's extra paths); the venv's own packages stay first.
    local link
    link="$("$PY" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')/mgpipe-base-packages.pth"
    "$PYTHON" - "$name" > "$link.tmp" <<'PYEOF'
import os, site, sys, sysconfig
dirs = [*site.getsitepackages(), sysconfig.get_path("purelib"), sysconfig.get_path("platlib")]
if site.ENABLE_USER_SITE:
    dirs.append(site.getusersitepackages())
dirs = [d for d in dict.fromkeys(dirs) if os.path.isdir(d)]
print(f"# written by scripts/{sys.argv[1]}: the package folders of {sys.executable}")
for d in dirs:   # (a .pth runs a line that starts with "import"; a folder already there is skipped)
    print(f"import site, sys; {d!r} in sys.path or site.addsitedir({d!r})")
PYEOF
    mv "$link.tmp" "$link"
    local side
    if ! side="$(_side_env_torch "$PY")" || [[ "$side" != "$(_side_env_torch "$PYTHON")" ]]; then
        echo "$name: $PY does not import the torch of $BASE through $link: $side" >&2
        exit 1
    fi

    CONSTRAINTS="$venv/mgpipe-constraints.txt"
    "$PY" - > "$CONSTRAINTS" <<'PYEOF'
import numpy, torch
# Local version labels (+cpu) are dropped: "torch==2.13.0" matches the installed 2.13.0+cpu.
print(f"torch=={torch.__version__.split('+')[0]}")
print(f"numpy=={numpy.__version__}")
PYEOF
}

_side_env_torch() { "$1" -c 'import os, torch; print(os.path.realpath(torch.__file__))' 2>&1; }

pipi() { PIP_DISABLE_PIP_VERSION_CHECK=1 "$PY" -m pip install --quiet -c "$CONSTRAINTS" "$@"; }

have() { "$PY" -c "import importlib.metadata as m, sys; sys.exit(m.version('$1') != '$2')" 2>/dev/null; }

# The light runtime dependencies of mmengine, mmcv(-lite) and OpenMMLab's model packages (their
# declared ones, less opencv-python: it needs libGL at import time; the headless build is the
# same cv2). opencv < 5: OpenMMLab 2.x code was written against the 4.x API. setuptools < 82:
# mmengine imports pkg_resources (gone from setuptools 82).
OPENMMLAB_DEPS=(addict packaging pyyaml yapf rich termcolor matplotlib scipy "opencv-python-headless>=4.5,<5"
                "setuptools<82")

# side_env_ensure: with the caller's installed (the pinned packages are there), install and
# smoke_test (the environment works; set -e ends the script where it does not): an environment
# that has the pins and passes the smoke test is left alone, anything else is installed into and
# tested again. Prints the side interpreter last (the installers' contract).
side_env_ensure() {
    local out
    if installed && out=$(smoke_test 2>&1); then
        log "$VENV already had the pinned packages and passed the smoke test"
        grep "^\[$SIDE_NAME\] ok" <<< "$out" >&2 || true
    else
        install
        smoke_test
    fi
    log "done in $(( $(date +%s) - t_start )) s"
    echo "$VENV/bin/python"
}
