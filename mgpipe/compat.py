"""Compatibility with one install that mgpipe still supports: the CPU build of torch beside
PyPI's torchvision (a CUDA build), the pair `pip install torch==<cpu wheel> torchvision` gives
where a CPU torch wheel is at hand (a local wheel, as on the machine of .ci/run) but
torchvision comes from PyPI. The README's installs (torch and torchvision from one index: PyTorch's
CPU index, or PyPI with its CUDA builds) never need it; tests/test_compat.py shows which install
the running one is.

Why: torchvision's compiled extension (_C.so) of a CUDA build needs libtorch_cuda.so, which the
CPU torch lacks, so it does not load, and torchvision/_meta_registrations.py then registers fake
kernels for torchvision::nms and torchvision::qnms unguarded: `import torchvision` fails with
"operator torchvision::nms does not exist". import_torchvision loads the extension itself where
it loads (find_spec does not run torchvision/__init__); only where it cannot does it define the
two schemas (nothing in mgpipe calls them; swin3d is pure PyTorch). Defining them where _C
loads would clash with it."""

from __future__ import annotations

import importlib.util
import os
import sys

from mgpipe.io import InputError

_FAKE_OPS = None  # the library object must live as long as the process: it owns the definitions


def torchvision_extension():
    """The path of torchvision's compiled extension, without importing torchvision; None where
    torchvision is not installed."""
    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None:
        return None
    return os.path.join(os.path.dirname(spec.origin), "_C.so")


def needs_fake_operators() -> bool:
    """Whether this install is the mismatched pair: torchvision's extension does not load with
    this torch (it is loaded here to tell; loading it is what import_torchvision does first)."""
    import torch

    path = torchvision_extension()
    if path is None or not os.path.exists(path):
        return False
    try:
        torch.ops.load_library(path)
    except OSError:
        return True
    return False


def import_torchvision():
    """torchvision, importable on every supported install (see the module's docstring)."""
    global _FAKE_OPS
    import torch

    if "torchvision" in sys.modules or _FAKE_OPS is not None:
        import torchvision
        return torchvision
    if torchvision_extension() is None:
        raise InputError("the Video Swin member needs torchvision (see the README's install)")
    if needs_fake_operators():
        _FAKE_OPS = torch.library.Library("torchvision", "DEF")
        _FAKE_OPS.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        _FAKE_OPS.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    import torchvision
    return torchvision
