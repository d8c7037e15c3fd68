"""Which install needs mgpipe/compat.py's fake torchvision operators, shown on the running one:
torch's CPU build beside a torchvision whose compiled extension links libtorch_cuda.so (PyPI's
CUDA build) cannot `import torchvision` plainly and needs them; a matching pair (both from
PyTorch's CPU index, or both CUDA builds from PyPI) imports plainly and gets none. Either way
compat.import_torchvision gives a torchvision that builds the Video Swin member."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def fresh(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=str(REPO)))


def test_which_install_needs_the_fake_operators():
    from mgpipe import compat

    ext = compat.torchvision_extension()   # (a plain import here would fail on the mismatched pair)
    if ext is None:
        pytest.skip("torchvision is not installed")
    info = json.loads(fresh(
        "import json, torch, importlib.metadata as m\n"
        "print(json.dumps({'torch': torch.__version__, 'torch_cuda': torch.version.cuda,"
        " 'torchvision': m.version('torchvision')}))").stdout)
    links_cuda = ext is not None and os.path.exists(ext) and b"libtorch_cuda.so" in Path(ext).read_bytes()
    mismatched = info["torch_cuda"] is None and links_cuda   # CPU torch, torchvision built for CUDA
    plain = fresh("import torchvision")
    print(f"install: torch {info['torch']} (CUDA {info['torch_cuda']}), torchvision {info['torchvision']} "
          f"(extension links libtorch_cuda: {links_cuda}); plain import: "
          f"{'ok' if plain.returncode == 0 else plain.stderr.strip().splitlines()[-1]}")
    needs = fresh("from mgpipe import compat; print(compat.needs_fake_operators())").stdout.strip() == "True"
    assert needs == mismatched
    assert (plain.returncode != 0) == needs, plain.stderr[-1000:]
    if needs:
        assert "operator torchvision::nms does not exist" in plain.stderr
    # through compat every install builds the member
    built = fresh("from mgpipe.models.swin import VideoSwin; from mgpipe import compat; import torch\n"
                  "net = VideoSwin('t', 3, {'dropout': 0.0})\n"
                  "print(net(torch.zeros(1, 3, 4, 32, 32))['logits'].shape[-1], compat._FAKE_OPS is not None)")
    assert built.returncode == 0, built.stderr[-2000:]
    assert built.stdout.split() == ["3", str(needs)]


def test_the_tested_constraints_lie_in_pyprojects_ranges():
    """constraints.txt (what CI installs) pins a version of every dependency pyproject.toml names,
    each inside its range, and torch/torchvision as the pair torchvision's release requires."""
    import tomllib
    from packaging.requirements import Requirement
    from packaging.version import Version

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pins[name.strip().lower()] = Version(version.strip())
    reqs = [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["test"]
            + project["optional-dependencies"]["slurm"] if not r.startswith("mgpipe")]
    for req in reqs:
        name = req.name.lower()
        assert name in pins, f"constraints.txt pins no {name}"
        assert req.specifier.contains(pins[name], prereleases=True), (name, str(req.specifier), pins[name])
    # torchvision 0.N pairs with torch 2.(N - 15)
    assert pins["torch"].release[:2] == (2, pins["torchvision"].release[1] - 15)
