"""The side environments' installers (scripts/install_*.sh) run from inside a virtualenv (issue 18,
case 9): the usual way to install a Python project.

The virtualenv is made faithful and cheap: its base interpreter is a second Python of this
version that has no torch (Debian's /usr/bin/python3 here), and torch, numpy and the rest reach
the virtualenv only through its own site-packages (a .pth that adds this interpreter's package
folder, as an editable or conda-style install would). A side environment made with
--system-site-packages from it links the base's packages, so it has no torch: the bug. The
installers download from PyPI (about a minute each).
"""

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
VERSION = f"{sys.version_info.major}.{sys.version_info.minor}"


def _imports(python: str, module: str) -> bool:
    return subprocess.run([python, "-c", f"import {module}"], capture_output=True).returncode == 0


def _base_without_torch() -> str:
    """Another interpreter of this Python version, with venv and without torch."""
    candidates = [shutil.which(f"python{VERSION}"), f"/usr/bin/python{VERSION}", f"/usr/local/bin/python{VERSION}"]
    for python in dict.fromkeys(filter(None, candidates)):
        if (Path(python).is_file() and _imports(python, "venv") and _imports(python, "ensurepip")
                and not _imports(python, "torch")):
            return python
    pytest.skip(f"no Python {VERSION} without torch to base a virtualenv on (tried {candidates})")


@pytest.fixture(scope="module")
def user_venv(tmp_path_factory) -> Path:
    """A virtualenv whose torch comes only from its own site-packages."""
    venv = tmp_path_factory.mktemp("user") / "my venv"
    subprocess.run([_base_without_torch(), "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                          capture_output=True, text=True, check=True).stdout.strip()
    here = sysconfig.get_path("purelib")
    Path(site, "user-packages.pth").write_text(f"import site; site.addsitedir({here!r})\n")
    assert _imports(str(python), "torch") and _imports(str(python), "numpy")
    return venv


def install(script: str, python: Path, side: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(PYTHON=str(python), PATH=f"{python.parent}{os.pathsep}{env['PATH']}")
    return subprocess.run(["bash", str(ROOT / "scripts" / script), str(side)], capture_output=True,
                          text=True, env=env, timeout=900)


@pytest.mark.parametrize("script", ["install_mmpose.sh", "install_mmaction2.sh"])
def test_side_environment_shares_the_torch_of_a_virtualenv(user_venv, tmp_path, script):
    """Both side environments that reuse torch (scripts/side_env.sh) work from a virtualenv:
    each passes its own smoke test (mmpose: one frame; MMAction2: its PoseConv3D and
    RGBPoseConv3D built) on the virtualenv's torch."""
    python = user_venv / "bin" / "python"
    side = tmp_path / "side env" / script
    proc = install(script, python, side)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.splitlines()[-1] == f"{side}/bin/python"
    assert f"creating {side} on the packages of {python}" in proc.stderr
    if script == "install_mmpose.sh":
        assert "[install_mmpose] ok: mmpose" in proc.stderr        # its smoke test ran one frame
    torch_file = [sys.executable, "-c", "import os, torch; print(os.path.realpath(torch.__file__))"]
    here = subprocess.run(torch_file, capture_output=True, text=True, check=True).stdout
    torch_file[0] = str(side / "bin" / "python")
    assert subprocess.run(torch_file, capture_output=True, text=True, check=True).stdout == here


def test_mmpose_installer_names_an_interpreter_without_torch(tmp_path):
    base = _base_without_torch()
    proc = install("install_mmpose.sh", Path(base), tmp_path / "side")
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        f"install_mmpose.sh: {base} cannot import torch and numpy; run it with PYTHON set to the "
        "interpreter mgpipe is installed in"]
    assert not (tmp_path / "side").exists()


def test_mediapipe_side_environment_from_a_virtualenv(user_venv, tmp_path):
    """mediapipe shares no package (it needs numpy < 2): from a virtualenv it builds on that
    virtualenv's base interpreter, and says so."""
    python = user_venv / "bin" / "python"
    side = tmp_path / "side env" / "mediapipe"
    proc = install("install_mediapipe.sh", python, side)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.splitlines()[-1] == f"{side}/bin/python"
    base = subprocess.run([python, "-c", "import sys; print(sys._base_executable)"], capture_output=True,
                          text=True, check=True).stdout.strip()
    assert f"creating {side} with Python {VERSION} at {base} (the base of {python})" in proc.stderr
    assert "[install_mediapipe] ok: mediapipe 0.10.21, numpy 1." in proc.stderr
    assert not _imports(str(side / "bin" / "python"), "torch")
