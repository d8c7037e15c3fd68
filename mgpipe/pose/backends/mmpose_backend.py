"""mmpose top-down pose backend: a person box per frame -> one mmpose model per box.

Runs inside the side environment made by scripts/install_mmpose.sh (the pose worker is started
under that interpreter), so it imports only the standard library, numpy, torch and the
OpenMMLab packages, plus `mgpipe.pose.backends.*` and `mgpipe.formats.numpy_pickles`.

Options:
  config                an mmpose top-down model config (.py): a path, or a path inside mmpose's
                        bundled configs (body_2d_keypoint/topdown_heatmap/coco/...). Required.
  checkpoint            its trained weights (.pth); must cover every weight of the model.
  allow_random_weights  false; true lets checkpoint be null (random, seeded weights: tests only).
  device                "cpu" (default), "cuda" or "cuda:N".
  detector              null: the whole frame is one person box. Or an mmdet person detector
                        {config, checkpoint, score_thr: 0.5, allow_random_weights: false}, whose
                        config may also name one of mmpose's demo detector configs
                        (rtmdet_m_640-8xb32_coco-person.py) or mmdet's bundled ones; needs
                        install_mmpose.sh --full.
  max_people            5: the most confident person boxes kept per frame (detector only).
Relative paths are taken from the working directory, then from the bundled config folders.

Two parts of mmpose do not import in the default ("lite") install, and are replaced here on
purpose, before `mmpose.apis` is imported (import_mmpose_apis):

- mmcv.ops. mmcv-lite is mmcv without its compiled extension (building it takes ~15 min), but
  mmpose imports `mmcv.ops` at module level in its ED-Pose head, and RTMPose's CSPNeXt backbone
  lives in mmdet, whose model package imports ops (NMS, RoIAlign, ...) at module level too. When
  the compiled ops cannot be imported, `mmcv.ops` and its submodules are served by a stand-in
  whose every name is a placeholder class; building or calling one raises
  MissingCompiledOpsError, which names `install_mmpose.sh --full`. Models built only from plain
  torch layers (HRNet, ResNet, MobileNetV2, CSPNeXt + SimCC, ...) never touch a placeholder, so
  they run; a model that needs an op fails with that error when it is built (or, for an op
  function, first run), never with wrong numbers. The stand-in is not installed when the real
  ops import.
- torchvision. mmpose imports `torchvision.transforms.ToPILImage` in
  mmpose/visualization/simcc_vis.py, reached from mmpose.apis through its visualiser, and uses it
  only to draw SimCC heatmaps. torchvision wheels from PyPI are built against one exact torch and
  may not load beside the side environment's torch (it is shared with mgpipe's main
  environment). When torchvision does not import, that one visualisation module is replaced by a
  stand-in whose SimCCVisualizer raises if used; this backend never draws. No fake `torchvision`
  module is registered, so code that probes for torchvision still sees that it is missing.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import pickle
import re
import sys
import types
from pathlib import Path

import numpy as np

from mgpipe.formats.numpy_pickles import numpy_globals

FULL_INSTALL = "scripts/install_mmpose.sh --full"

OPTIONS = ("config", "checkpoint", "allow_random_weights", "device", "detector", "max_people")
DETECTOR_OPTIONS = ("config", "checkpoint", "score_thr", "allow_random_weights")

# mmpose's COCO keypoint names, in order: a 17-point model is reported as mgpipe's "coco17" only
# if its dataset uses exactly these (OCHuman does; PoseTrack18 and animal sets have 17 other points).
COCO17_NAMES = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
    "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle",
)


class MmposeBackendError(ValueError):
    """A configuration or installation problem, reported to the user without a traceback."""


class MissingCompiledOpsError(MmposeBackendError):
    """A model needs one of mmcv's compiled ops and only mmcv-lite is installed."""


# What import_mmpose_apis had to replace, and why (for describe_install and error messages).
_STAND_INS: dict[str, str] = {}


# --------------------------------------------------------------------------------------------
# Import shims
# --------------------------------------------------------------------------------------------

def _missing_op(name: str, reason: str) -> type:
    message = (f"this mmpose/mmdet model needs mmcv's compiled op `{name}` (mmcv.ops), which "
               f"this environment does not have ({reason}); install with {FULL_INSTALL}")

    def fail(*_args, **_kwargs):
        raise MissingCompiledOpsError(message)

    # A class rather than a function: mmpose and mmdet subclass ops, register them in registries
    # and test isinstance(m, Op); all of that must keep working until something is built or run.
    return type(name, (), {"__init__": fail, "__doc__": message, "__module__": "mmcv.ops"})


class _OpsStandIn(types.ModuleType):
    def __init__(self, name: str, reason: str):
        super().__init__(name, f"stand-in for {name}: compiled mmcv ops are not installed")
        self.__path__ = []  # a package, so `from mmcv.ops.nms import batched_nms` resolves
        self._reason = reason

    def __getattr__(self, attr: str):
        if attr.startswith("__"):
            raise AttributeError(attr)
        value = _missing_op(attr, self._reason)
        setattr(self, attr, value)
        return value

    def __setattr__(self, attr: str, value):
        # Importing the submodule mmcv.ops.nms binds it as the attribute `nms` of mmcv.ops. In
        # the real mmcv the package then rebinds the name to the function of that name; here the
        # binding is skipped, so `from mmcv.ops import nms` still gives the failing op, not a
        # module that would raise "TypeError: 'module' object is not callable".
        if isinstance(value, _OpsStandIn):
            return
        super().__setattr__(attr, value)


class _OpsStandInFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def __init__(self, reason: str):
        self.reason = reason

    def find_spec(self, fullname, path=None, target=None):
        if fullname == "mmcv.ops" or fullname.startswith("mmcv.ops."):
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        return _OpsStandIn(spec.name, self.reason)

    def exec_module(self, module):
        pass


def _shim_mmcv_ops() -> None:
    if any(isinstance(f, _OpsStandInFinder) for f in sys.meta_path):
        return
    try:
        import mmcv.ops  # noqa: F401
        return
    except (ImportError, OSError) as e:
        # mmcv-lite: "No module named 'mmcv._ext'". Anything else (a compiled mmcv built for
        # another torch) is kept in the message, so a broken --full install is not misreported.
        reason = f"import mmcv.ops failed: {type(e).__name__}: {e}"
    for name in [n for n in sys.modules if n == "mmcv.ops" or n.startswith("mmcv.ops.")]:
        del sys.modules[name]
    sys.meta_path.insert(0, _OpsStandInFinder(reason))
    _STAND_INS["mmcv.ops"] = reason


def _shim_torchvision() -> None:
    if "mmpose.visualization" in sys.modules or "mmpose.visualization.simcc_vis" in sys.modules:
        return
    try:
        import torchvision.transforms  # noqa: F401
        return
    except Exception as e:  # noqa: BLE001  a torchvision built for another torch raises RuntimeError
        reason = f"import torchvision failed: {type(e).__name__}: {e}"
    stand_in = types.ModuleType("mmpose.visualization.simcc_vis",
                                f"stand-in: torchvision is not usable here ({reason})")

    class SimCCVisualizer:
        def __init__(self, *_args, **_kwargs):
            raise MmposeBackendError(f"mmpose's SimCC visualisation needs torchvision ({reason}); "
                                     "mgpipe's mmpose backend does not draw")

    SimCCVisualizer.__module__ = stand_in.__name__
    stand_in.SimCCVisualizer = SimCCVisualizer
    sys.modules[stand_in.__name__] = stand_in
    _STAND_INS["torchvision"] = reason


def _route_mmengine_logs_to_stderr() -> None:
    # The pose worker speaks JSON lines on stdout; mmengine's logger writes to stdout by default.
    from mmengine.logging import MMLogger

    with contextlib.redirect_stdout(sys.stderr):
        MMLogger.get_current_instance()  # created now, its stream handler binds to stderr
    for logger in list(MMLogger._instance_dict.values()):
        for handler in logger.handlers:
            if getattr(handler, "stream", None) in (sys.stdout, sys.__stdout__):
                handler.setStream(sys.stderr)


def import_mmpose_apis():
    """Import and return `mmpose.apis`, with the stand-ins above where they are needed."""
    _shim_mmcv_ops()
    _shim_torchvision()
    with contextlib.redirect_stdout(sys.stderr):
        apis = importlib.import_module("mmpose.apis")
    _route_mmengine_logs_to_stderr()
    return apis


def describe_install() -> dict:
    """Versions and stand-ins of this environment (printed by install_mmpose.sh)."""
    import_mmpose_apis()  # decides the stand-ins
    import mmcv
    import mmengine
    import mmpose
    import torch

    info = {"mmpose": mmpose.__version__, "mmcv": mmcv.__version__,
            "mmengine": mmengine.__version__, "torch": torch.__version__}
    info["compiled mmcv ops"] = "no" if "mmcv.ops" in _STAND_INS else "yes"
    info["detector (mmdet)"] = "yes" if _detector_available() else f"no (needs {FULL_INSTALL})"
    if "torchvision" in _STAND_INS:
        info["torchvision"] = "not importable (visualisation stand-in)"
    return info


def _detector_available() -> bool:
    return "mmcv.ops" not in _STAND_INS and importlib.util.find_spec("mmdet") is not None


# --------------------------------------------------------------------------------------------
# Options
# --------------------------------------------------------------------------------------------

def _bundled(package: str, folder: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / folder


# Where a relative config path is also looked for: the configs that ship inside the packages.
# mmpose's demo folder holds the person-detector configs its documentation pairs with RTMPose
# (e.g. rtmdet_m_640-8xb32_coco-person.py, a one-class RTMDet).
POSE_CONFIGS = (("mmpose", ".mim/configs"),)
DETECTOR_CONFIGS = (("mmpose", ".mim/demo/mmdetection_cfg"), ("mmdet", ".mim/configs"))


def resolve_config(value, option: str, bundled=POSE_CONFIGS) -> str:
    """A config path as given, or relative to one of the `bundled` (package, folder) places."""
    if not isinstance(value, (str, os.PathLike)) or not str(value):
        raise MmposeBackendError(f"option {option!r} must be the path of a config file (.py), "
                                 f"got {value!r}")
    path = Path(value).expanduser()
    if path.is_file():
        return str(path)
    tried = [str(path.resolve())]
    if not path.is_absolute():
        rel = Path(*path.parts[1:]) if path.parts[:1] == ("configs",) else path
        for package, folder in bundled:
            root = _bundled(package, folder)
            if root is not None:
                if (root / rel).is_file():
                    return str(root / rel)
                tried.append(str(root / rel))
    raise FileNotFoundError(f"option {option!r}: config file {str(value)!r} not found "
                            f"(looked at {', '.join(tried)})")


def _resolve_checkpoint(value, allow_random: bool, option: str, what: str) -> str | None:
    if value is None:
        if not allow_random:
            raise MmposeBackendError(
                f"option {option!r} is null: give the path of a trained {what} checkpoint "
                f"(.pth). Random weights are for tests only and need "
                f"{option.rsplit('checkpoint', 1)[0]}allow_random_weights: true")
        return None
    path = Path(str(value)).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"option {option!r}: checkpoint file {str(value)!r} not found "
                                f"(looked at {path.resolve()})")
    return str(path)


def _warn_random(what: str, config: str) -> None:
    bar = "!" * 78
    print(f"{bar}\nWARNING: the mmpose backend runs the {what} with RANDOM WEIGHTS "
          f"(allow_random_weights: true).\n{config}\nIts keypoints are meaningless: this is for "
          f"tests only.\n{bar}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def _seeded(random_weights: bool):
    # Random weights are drawn from a fixed seed, so a test run repeats exactly; the caller's
    # random state is left as it was.
    if not random_weights:
        yield
        return
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        yield


@contextlib.contextmanager
def _numpy_in_checkpoints():
    # torch >= 2.6 unpickles checkpoints with weights_only=True, and mmengine (0.10.7) does not
    # say otherwise. mmpose 1.x checkpoints keep their dataset_meta (numpy arrays: sigmas,
    # colours) under "meta", so that default refuses them. The numpy array and dtype
    # constructors are allowed for the duration of the load, nothing else: arbitrary pickled
    # objects stay refused, and the error names them.
    # torch < 2.6 defaults to weights_only=False, and mmengine passes nothing: force the
    # restricted unpickler whatever the torch version, so a checkpoint can never run code.
    import torch

    real_load = torch.load

    def restricted_load(*args, **kwargs):
        kwargs["weights_only"] = True
        return real_load(*args, **kwargs)

    allow = getattr(torch.serialization, "safe_globals", None)  # torch >= 2.5
    torch.load = restricted_load
    try:
        if allow is None:
            torch.serialization.add_safe_globals(numpy_globals())  # torch 2.4
            yield
        else:
            with allow(numpy_globals()):
                yield
    finally:
        torch.load = real_load


def _unpickling_refused(e: Exception) -> str:
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(e))
    what = found.group(1) if found else f"{type(e).__name__}: {str(e).strip()[:300]}"
    return (f"it holds {what}, which torch only unpickles with weights_only=False, i.e. running "
            "whatever code the file names. Keep just its weights: "
            "torch.save({'state_dict': ckpt['state_dict']}, 'weights.pth')")


def _check_checkpoint_fits(model, checkpoint: str, config: str) -> None:
    """Refuse a checkpoint that leaves part of the model random (mmengine only logs that)."""
    from mmengine.runner import CheckpointLoader

    with _numpy_in_checkpoints(), contextlib.redirect_stdout(sys.stderr):
        ckpt = CheckpointLoader.load_checkpoint(checkpoint, map_location="cpu")
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else {}
    have = {k.removeprefix("module.") for k in state}
    wanted = [k for k in model.state_dict() if not k.endswith("num_batches_tracked")]
    missing = [k for k in wanted if k not in have]
    if missing:
        raise MmposeBackendError(
            f"checkpoint {checkpoint} does not fit {config}: {len(missing)} of the model's "
            f"{len(wanted)} weights are not in it (e.g. {', '.join(missing[:3])}); is it the "
            "checkpoint of this config?")


def _device(value) -> str:
    import torch

    device = str(value or "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise MmposeBackendError(f"option 'device' is {device!r} but torch "
                                 f"{torch.__version__} sees no CUDA device")
    if device.split(":")[0] not in ("cpu", "cuda"):
        raise MmposeBackendError(f"option 'device' must be 'cpu' or 'cuda[:N]', got {device!r}")
    return device


def _layout(model, config: str) -> str:
    meta = getattr(model, "dataset_meta", None) or {}
    count = int(meta.get("num_keypoints", 0))
    id2name = meta.get("keypoint_id2name") or {}
    names = tuple(id2name[i] for i in range(count)) if len(id2name) == count else ()
    dataset = meta.get("dataset_name", "unknown dataset")
    if count == 17 and names == COCO17_NAMES:
        return "coco17"
    if count == 133:
        raise MmposeBackendError(
            f"{config}: a COCO-WholeBody model (133 keypoints); mgpipe has no coco_wholebody133 "
            "layout yet, so use a 17-keypoint COCO body model")
    raise MmposeBackendError(
        f"{config}: the model predicts {count} keypoints ({dataset}); the mmpose backend "
        "supports 17-keypoint COCO body models (layout coco17)")


# --------------------------------------------------------------------------------------------
# Estimator
# --------------------------------------------------------------------------------------------

class Estimator:
    """Top-down mmpose: boxes (whole frame, or an mmdet person detector) -> keypoints per box.

    Returns float32 [P, 17, 3] in pixels of the given image. Scores are mmpose's
    keypoint_scores clipped to [0, 1]: heatmap heads report the heatmap peak, which can exceed 1,
    and SimCC heads an unnormalised peak. Top-down models look at a box enlarged by 25 % and can
    place a joint beyond the frame (legs below an interview shot); such a joint is moved onto
    the image border and its score set to 0, since the frame does not show where it is.
    """

    def __init__(self, model, inference_topdown, layout: str, device: str, max_people: int,
                 detector=None, detect=None, score_thr: float = 0.5, person_label: int = 0):
        self.model = model
        self.layout = layout
        self.device = device
        self.max_people = max_people
        self.num_joints = int(model.dataset_meta["num_keypoints"])
        self._inference_topdown = inference_topdown
        self._detector = detector
        self._detect = detect
        self._score_thr = score_thr
        self._person_label = person_label
        # Each model builds its test pipeline from the registry of its own default scope; when
        # a detector and a pose model alternate in one process, mmengine's single "current
        # scope" would otherwise build mmdet's pipeline from mmpose's registry (falling back to
        # same-named transforms of mmcv, e.g. a different Resize) and warn on every switch.
        from mmengine.registry import DefaultScope

        self._scope = DefaultScope.overwrite_default_scope
        self._pose_scope = model.cfg.get("default_scope", "mmpose")
        self._det_scope = detector.cfg.get("default_scope", "mmdet") if detector else None

    def reset(self) -> None:
        pass  # frames are independent: no tracking state

    def _boxes(self, bgr: np.ndarray) -> np.ndarray:
        h, w = bgr.shape[:2]
        if self._detector is None:
            return np.array([[0, 0, w, h]], np.float32)
        with contextlib.redirect_stdout(sys.stderr), self._scope(self._det_scope):
            pred = self._detect(self._detector, bgr).pred_instances.cpu().numpy()
        keep = (pred.labels == self._person_label) & (pred.scores >= self._score_thr)
        boxes, scores = pred.bboxes[keep], pred.scores[keep]
        order = np.argsort(-scores, kind="stable")[: self.max_people]
        boxes = boxes[order].astype(np.float32).reshape(-1, 4)
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
        return boxes[(boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])]

    def __call__(self, image: np.ndarray) -> np.ndarray:
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an H x W x 3 uint8 RGB image, got {image.dtype} "
                             f"{image.shape}")
        h, w = image.shape[:2]
        # OpenMMLab models take images as their loaders produce them, i.e. BGR (cv2 order); a
        # config's data_preprocessor (bgr_to_rgb) converts from there to what the model was
        # trained on, so BGR is the right input whatever that flag says.
        bgr = np.ascontiguousarray(image[..., ::-1])
        boxes = self._boxes(bgr)
        if len(boxes) == 0:  # inference_topdown would fall back to the whole frame
            return np.zeros((0, self.num_joints, 3), np.float32)
        with contextlib.redirect_stdout(sys.stderr), self._scope(self._pose_scope):
            samples = self._inference_topdown(self.model, bgr, boxes, bbox_format="xyxy")
        out = np.zeros((len(samples), self.num_joints, 3), np.float32)
        for i, sample in enumerate(samples):
            inst = sample.pred_instances
            out[i, :, :2] = np.asarray(inst.keypoints, np.float32)[0]
            out[i, :, 2] = np.asarray(inst.keypoint_scores, np.float32)[0]
        out = np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)
        # mmpose's coordinates are continuous, the frame spanning [0, w) x [0, h); a point in the
        # last pixel column/row is in the frame and is clipped onto its centre line only.
        outside = ((out[..., 0] < 0) | (out[..., 0] >= w) | (out[..., 1] < 0) | (out[..., 1] >= h))
        out[..., 0] = out[..., 0].clip(0, w - 1)
        out[..., 1] = out[..., 1].clip(0, h - 1)
        out[..., 2] = np.where(outside, 0.0, out[..., 2].clip(0.0, 1.0))
        return out

    def close(self) -> None:
        self.model = self._detector = None
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.empty_cache()


def _make_detector(spec, device: str):
    if not isinstance(spec, dict):
        raise MmposeBackendError("option 'detector' must be null (the whole frame is one person) "
                                 f"or a mapping with keys {', '.join(DETECTOR_OPTIONS)}; got {spec!r}")
    unknown = sorted(set(spec) - set(DETECTOR_OPTIONS))
    if unknown:
        raise MmposeBackendError(f"option 'detector': unknown keys {unknown}; known: "
                                 f"{', '.join(DETECTOR_OPTIONS)}")
    if not _detector_available():
        why = _STAND_INS.get("mmcv.ops") or "mmdet is not installed"
        raise MmposeBackendError(f"option 'detector' needs mmdet and mmcv's compiled ops ({why}); "
                                 f"install with {FULL_INSTALL}, or set detector: null")
    config = resolve_config(spec.get("config"), "detector.config", DETECTOR_CONFIGS)
    allow_random = bool(spec.get("allow_random_weights", False))
    checkpoint = _resolve_checkpoint(spec.get("checkpoint"), allow_random,
                                     "detector.checkpoint", "mmdet detector")
    score_thr = float(spec.get("score_thr", 0.5))
    with contextlib.redirect_stdout(sys.stderr):
        from mmdet.apis import inference_detector, init_detector

        if checkpoint is None:
            _warn_random("person detector", config)
        try:
            with _seeded(checkpoint is None), _numpy_in_checkpoints():
                detector = init_detector(config, checkpoint, device=device)
        except pickle.UnpicklingError as e:
            raise MmposeBackendError(f"option 'detector.checkpoint': torch cannot load "
                                     f"{checkpoint}: {_unpickling_refused(e)}") from None
    _route_mmengine_logs_to_stderr()
    if checkpoint is not None:
        _check_checkpoint_fits(detector, checkpoint, config)
    classes = [str(c).lower() for c in (detector.dataset_meta or {}).get("classes", ())]
    if "person" in classes:
        person = classes.index("person")
    elif len(classes) == 1:
        person = 0
    else:
        raise MmposeBackendError(f"{config}: the detector has no 'person' class "
                                 f"(classes: {classes[:10]}...)")
    return detector, inference_detector, score_thr, person


def make_estimator(options: dict) -> Estimator:
    options = dict(options or {})
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise MmposeBackendError(f"unknown mmpose backend options {unknown}; known: "
                                 f"{', '.join(OPTIONS)}")
    if options.get("config") is None:
        raise MmposeBackendError("option 'config' is required: the path of an mmpose top-down "
                                 "model config (.py), or one bundled with mmpose, e.g. "
                                 "body_2d_keypoint/topdown_heatmap/coco/"
                                 "td-hm_hrnet-w32_8xb64-210e_coco-256x192.py")
    max_people = options.get("max_people", 5)
    if not isinstance(max_people, int) or isinstance(max_people, bool) or max_people < 1:
        raise MmposeBackendError(f"option 'max_people' must be a positive integer, got {max_people!r}")

    apis = import_mmpose_apis()
    config = resolve_config(options["config"], "config")
    allow_random = bool(options.get("allow_random_weights", False))
    checkpoint = _resolve_checkpoint(options.get("checkpoint"), allow_random, "checkpoint",
                                     "mmpose")
    device = _device(options.get("device"))

    from mmengine.config import Config

    try:
        cfg = Config.fromfile(config)
    except Exception as e:  # noqa: BLE001  syntax errors, missing _base_ files, ...
        raise MmposeBackendError(f"option 'config': cannot read {config}: "
                                 f"{type(e).__name__}: {e}") from None
    if "test_dataloader" not in cfg or "model" not in cfg:
        raise MmposeBackendError(f"{config} is not an mmpose model config "
                                 "(no model / test_dataloader)")
    if cfg.model.get("type") != "TopdownPoseEstimator":
        raise MmposeBackendError(f"{config}: model type {cfg.model.get('type')!r}; the mmpose "
                                 "backend runs top-down models (TopdownPoseEstimator)")

    if checkpoint is None:
        _warn_random("pose model", config)
    try:
        with contextlib.redirect_stdout(sys.stderr), _seeded(checkpoint is None), \
                _numpy_in_checkpoints():
            model = apis.init_model(cfg, checkpoint, device=device)
    except MissingCompiledOpsError:
        raise
    except pickle.UnpicklingError as e:
        raise MmposeBackendError(f"option 'checkpoint': torch cannot load {checkpoint}: "
                                 f"{_unpickling_refused(e)}") from None
    except ImportError as e:
        # Guarded imports in mmpose (DEKR, PoseWarper) fail with their own "install mmcv-full".
        if "mmcv.ops" in _STAND_INS and "mmcv" in str(e):
            raise MissingCompiledOpsError(f"{config}: {e} (mmcv's compiled ops are missing; "
                                          f"install with {FULL_INSTALL})") from None
        raise MmposeBackendError(f"{config}: building the model failed on an import under "
                                 f"{sys.executable}: {type(e).__name__}: {e}") from None
    _route_mmengine_logs_to_stderr()
    if checkpoint is not None:
        _check_checkpoint_fits(model, checkpoint, config)
    layout = _layout(model, config)

    detector = detect = None
    score_thr, person = 0.5, 0
    if options.get("detector") is not None:
        detector, detect, score_thr, person = _make_detector(options["detector"], device)
    return Estimator(model, apis.inference_topdown, layout, device, max_people if detector else 1,
                     detector=detector, detect=detect, score_thr=score_thr, person_label=person)
