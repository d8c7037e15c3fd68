"""The mmpose pose backend, run in its side environment (scripts/install_mmpose.sh).

The side interpreter is MGPIPE_MMPOSE_PYTHON, else <repo>/.venvs/mmpose/bin/python. Without it
these tests skip, unless MGPIPE_REQUIRE_BACKENDS=1 (CI), where they fail. Models get random
weights (no checkpoints can be downloaded here): the tests check shapes, the contract and the
error messages, not accuracy. All single-frame checks run in one side process, so mmpose is
imported once (about 5 s); the detector checks need a --full install (compiled mmcv ops + mmdet),
found at MGPIPE_MMPOSE_FULL_PYTHON or in the side interpreter itself.
"""

import json
import os
import subprocess
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import side_environment
from matplotlib import cbook

ROOT = Path(__file__).resolve().parents[1]
HEATMAP = "body_2d_keypoint/topdown_heatmap/coco/td-hm_mobilenetv2_8xb64-210e_coco-256x192.py"
SIMCC = "body_2d_keypoint/rtmpose/coco/rtmpose-t_8xb256-420e_coco-256x192.py"  # CSPNeXt from mmdet
HAND = "hand_2d_keypoint/topdown_heatmap/onehand10k/td-hm_mobilenetv2_8xb64-210e_onehand10k-256x256.py"
DETECTOR = "rtmdet_nano_320-8xb32_coco-person.py"  # a one-class person RTMDet shipped with mmpose


@pytest.fixture(scope="module")
def side_python() -> str:
    return side_environment("mmpose", "MGPIPE_MMPOSE_PYTHON")


def run_side(python: str, script: str, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([python, "-c", textwrap.dedent(script), *args], capture_output=True,
                          text=True, env=env, timeout=600, cwd=ROOT, check=False)
    assert proc.returncode == 0, f"side process failed:\n{proc.stderr[-4000:]}"
    return proc


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    """A real photograph of a person (Grace Hopper, 512 x 600) that ships with matplotlib."""
    with cbook.get_sample_data("grace_hopper.jpg") as f:
        path = tmp_path_factory.mktemp("mmpose") / "grace_hopper.jpg"
        path.write_bytes(f.read())
    return path


# Runs every case in one process and writes {case: result} as JSON. A result is the estimator's
# output summary, or the error it raised (type and message).
PROBE = r'''
import json, sys
import numpy as np
from PIL import Image
from mgpipe.pose.backends import mmpose_backend as mb

photo = np.asarray(Image.open(sys.argv[2]).convert("RGB"))
small = np.full((48, 64, 3), 90, np.uint8)
cases = json.loads(sys.argv[3])
report = {"install": mb.describe_install()}

def summary(est, image):
    out = est(image)
    again = est(image)
    return {"layout": est.layout, "shape": list(out.shape), "dtype": str(out.dtype),
            "finite": bool(np.isfinite(out).all()), "image": list(image.shape[:2]),
            "x": [float(out[..., 0].min()), float(out[..., 0].max())] if out.size else None,
            "y": [float(out[..., 1].min()), float(out[..., 1].max())] if out.size else None,
            "score": [float(out[..., 2].min()), float(out[..., 2].max())] if out.size else None,
            "repeatable": bool(np.array_equal(out, again)), "out": out.tolist()}

for name, options, image in cases:
    try:
        est = mb.make_estimator(options)
        est.reset()
        result = summary(est, photo if image == "photo" else small)
        if name in ("heatmap", "simcc"):
            # The same frame through the real API, as BGR (what mmpose's image loaders produce,
            # so what the estimator must feed) and as RGB.
            from mmpose.apis import inference_topdown
            h, w = photo.shape[:2]
            box = np.array([[0, 0, w, h]], np.float32)
            for order, img in (("bgr", photo[..., ::-1].copy()), ("rgb", photo)):
                inst = inference_topdown(est.model, img, box)[0].pred_instances
                result["api_" + order] = np.concatenate(
                    [np.asarray(inst.keypoints)[0], np.asarray(inst.keypoint_scores)[0][:, None]],
                    axis=1).tolist()
        est.close()
        report[name] = result
    except Exception as e:
        report[name] = {"error": type(e).__name__, "message": str(e),
                        "backend_error": isinstance(e, mb.MmposeBackendError)}

extra = json.loads(sys.argv[4])
if "checkpoint_config" in extra:
    # Trained weights stand-in: the seeded random model saved the way mmpose saves checkpoints
    # (numpy arrays in meta.dataset_meta), then loaded back; a truncated copy, and one holding an
    # arbitrary Python object, must be refused.
    import argparse, os, torch
    cfg, folder = extra["checkpoint_config"], extra["folder"]
    est = mb.make_estimator({"config": cfg, "allow_random_weights": True})
    state = est.model.state_dict()
    meta = {"dataset_meta": est.model.dataset_meta}
    files = {"good": {"state_dict": state, "meta": meta},
             "truncated": {"state_dict": dict(list(state.items())[:10]), "meta": meta},
             "pickled": {"state_dict": state, "meta": {"args": argparse.Namespace(a=1)}}}
    expected = est(photo)
    for name, ckpt in files.items():
        path = os.path.join(folder, name + ".pth")
        torch.save(ckpt, path)
        try:
            out = mb.make_estimator({"config": cfg, "checkpoint": path})(photo)
            report["ckpt_" + name] = {"same": bool(np.array_equal(out, expected))}
        except Exception as e:
            report["ckpt_" + name] = {"error": type(e).__name__, "message": str(e),
                                      "backend_error": isinstance(e, mb.MmposeBackendError)}

if "ops" in extra:
    # The stand-in for mmcv's compiled ops: importable (mmdet's model package needs that for
    # RTMPose), failing with the install hint only when an op is used.
    try:
        import mmcv.ops.nms  # noqa: F401  submodules resolve too (mmdet imports some)
        from mmcv.ops import nms
        nms(np.zeros((1, 4), np.float32), np.ones(1, np.float32), 0.5)
        report["ops"] = {"error": None}
    except Exception as e:
        report["ops"] = {"error": type(e).__name__, "message": str(e)}

with open(sys.argv[1], "w") as f:
    json.dump(report, f)
'''


def probe(python, tmp_path, photo, cases, extra=None):
    out = tmp_path / "report.json"
    proc = run_side(python, PROBE, str(out), str(photo), json.dumps(cases), json.dumps(extra or {}))
    # The pose worker talks JSON lines on stdout: nothing from mmpose/mmengine may land there.
    assert proc.stdout == "", proc.stdout[:2000]
    return json.loads(out.read_text()), proc.stderr


@pytest.fixture(scope="module")
def report(side_python, photo, tmp_path_factory):
    random = {"allow_random_weights": True}
    cases = [
        ("heatmap", {"config": HEATMAP, **random}, "photo"),
        ("simcc", {"config": SIMCC, **random}, "photo"),
        ("small", {"config": HEATMAP, **random, "max_people": 3}, "small"),
        ("no_checkpoint", {"config": HEATMAP}, "photo"),
        ("missing_config", {"config": "no/such/config.py", **random}, "photo"),
        ("missing_checkpoint", {"config": HEATMAP, "checkpoint": "no/such/weights.pth"}, "photo"),
        ("hand", {"config": HAND, **random}, "photo"),
        ("unknown_option", {"config": HEATMAP, **random, "confg": 1}, "photo"),
        ("lite_detector", {"config": HEATMAP, **random,
                           "detector": {"config": DETECTOR, "allow_random_weights": True}}, "photo"),
    ]
    folder = tmp_path_factory.mktemp("probe")
    rep, stderr = probe(side_python, folder, photo, cases,
                        extra={"ops": True, "checkpoint_config": HEATMAP, "folder": str(folder)})
    rep["stderr"] = stderr
    return rep


def _ok(result):
    assert "error" not in result, f"{result['error']}: {result['message']}"
    return result


@pytest.mark.parametrize("case", ["heatmap", "simcc"])
def test_full_frame_box_gives_one_coco_person_on_a_photo(report, case):
    r = _ok(report[case])
    h, w = r["image"]
    assert r["layout"] == "coco17"
    assert r["shape"] == [1, 17, 3] and r["dtype"] == "float32" and r["finite"]
    assert 0 <= r["x"][0] <= r["x"][1] <= w - 1 and 0 <= r["y"][0] <= r["y"][1] <= h - 1
    assert 0.0 <= r["score"][0] <= r["score"][1] <= 1.0
    assert r["repeatable"]


@pytest.mark.parametrize("case", ["heatmap", "simcc"])
def test_estimator_is_mmpose_on_the_bgr_frame(report, case):
    """Points and scores are inference_topdown's on the BGR frame, except that scores are
    clipped to [0, 1] and a point beyond the frame goes onto its border with score 0."""
    r = _ok(report[case])
    h, w = r["image"]
    out = np.array(r["out"])[0]
    bgr, rgb = np.array(r["api_bgr"]), np.array(r["api_rgb"])
    inside = (bgr[:, 0] >= 0) & (bgr[:, 0] < w) & (bgr[:, 1] >= 0) & (bgr[:, 1] < h)
    np.testing.assert_allclose(out[inside, 0], bgr[inside, 0].clip(0, w - 1), atol=1e-3)
    np.testing.assert_allclose(out[inside, 1], bgr[inside, 1].clip(0, h - 1), atol=1e-3)
    np.testing.assert_allclose(out[inside, 2], bgr[inside, 2].clip(0, 1), atol=1e-6)
    np.testing.assert_allclose(out[~inside, 0], bgr[~inside, 0].clip(0, w - 1), atol=1e-3)
    np.testing.assert_allclose(out[~inside, 1], bgr[~inside, 1].clip(0, h - 1), atol=1e-3)
    assert (out[~inside, 2] == 0).all()
    if case == "simcc":
        # Random (seeded) RTMPose puts points inside this photo, so this case pins the channel
        # order; the random heatmap model puts all of its points beyond the top-left corner.
        assert inside.any() and not np.allclose(bgr, rgb)


def test_small_frame_and_random_weights_warning(report):
    r = _ok(report["small"])
    assert r["shape"] == [1, 17, 3]  # no detector: the whole frame is one person, max_people aside
    assert 0 <= r["x"][0] and r["x"][1] <= 63 and 0 <= r["y"][0] and r["y"][1] <= 47
    assert "RANDOM WEIGHTS" in report["stderr"]


def test_configuration_errors_are_clear(report):
    r = report["no_checkpoint"]
    assert r["backend_error"] and "'checkpoint' is null" in r["message"]
    assert "allow_random_weights" in r["message"]
    r = report["missing_config"]
    assert r["error"] == "FileNotFoundError" and "option 'config'" in r["message"]
    assert "no/such/config.py" in r["message"]
    r = report["missing_checkpoint"]
    assert r["error"] == "FileNotFoundError" and "no/such/weights.pth" in r["message"]
    r = report["hand"]
    assert r["backend_error"] and "21 keypoints" in r["message"] and "onehand10k" in r["message"]
    r = report["unknown_option"]
    assert r["backend_error"] and "confg" in r["message"]


def test_checkpoints_load_and_must_fit_the_config(report):
    # mmpose checkpoints carry numpy arrays in their metadata, which torch >= 2.6 refuses to
    # unpickle by default; the backend allows exactly those.
    assert _ok(report["ckpt_good"])["same"]
    r = report["ckpt_truncated"]
    assert r["backend_error"] and "does not fit" in r["message"] and "weights are not in it" in r["message"]
    import torch

    if tuple(int(p) for p in torch.__version__.split(".")[:2]) >= (2, 6):
        r = report["ckpt_pickled"]
        assert r["backend_error"] and "cannot load" in r["message"] and "Namespace" in r["message"]


def test_lite_install_has_no_detector_and_says_how_to_get_one(report):
    if report["install"]["compiled mmcv ops"] == "yes":
        pytest.skip("this side environment is a --full install (see the detector test)")
    r = report["lite_detector"]
    assert r["backend_error"] and "install_mmpose.sh --full" in r["message"]
    r = report["ops"]
    assert r["error"] == "MissingCompiledOpsError" and "`nms`" in r["message"]
    assert "install_mmpose.sh --full" in r["message"]


def test_worker_runs_the_backend_over_a_clip(side_python, small_dataset, tmp_path):
    """End to end through mgpipe's pose stage: frame store -> side worker -> keypoint store."""
    import h5py
    from conftest import build_manifest, decode_settings, pose_settings

    from mgpipe.stages.decode import build_frame_store
    from mgpipe.stages.pose import build_keypoint_store

    manifest, _ = build_manifest(small_dataset / "labels.csv", small_dataset / "split.csv",
                                 small_dataset / "videos")
    manifest = manifest.iloc[:1]
    build_frame_store(manifest, tmp_path / "frames.h5", **decode_settings(max_side=64), progress=False)
    build_keypoint_store(manifest, None, tmp_path / "kp.h5", **pose_settings(
        backend="mmpose", python=side_python, options={"config": HEATMAP, "allow_random_weights": True}),
        frames_h5=tmp_path / "frames.h5", progress=False)
    row = manifest.iloc[0]
    with h5py.File(tmp_path / "kp.h5") as h5:
        assert h5.attrs["layout"] == "coco17"
        kp = h5[f"clips/{row.clip_id}/keypoints"][()]
    assert kp.shape == (1, row.num_frames, 17, 3) and np.isfinite(kp).all()


def _full_python(side_python: str) -> str:
    script = ("from mgpipe.pose.backends.mmpose_backend import describe_install, import_mmpose_apis\n"
              "import_mmpose_apis(); print(describe_install()['compiled mmcv ops'])")
    for candidate in (os.environ.get("MGPIPE_MMPOSE_FULL_PYTHON"), side_python):
        if (candidate and Path(candidate).is_file()
                and run_side(candidate, script).stdout.strip().endswith("yes")):
            return candidate
    pytest.skip("no --full mmpose install (compiled mmcv ops + mmdet): the detector path is not "
                "tested; make one with scripts/install_mmpose.sh --full and point "
                "MGPIPE_MMPOSE_FULL_PYTHON at it")


def test_person_detector_path(side_python, photo, tmp_path):
    python = _full_python(side_python)
    random = {"allow_random_weights": True}

    def det(thr):
        return {"config": HEATMAP, **random, "max_people": 3,
                "detector": {"config": DETECTOR, "score_thr": thr, **random}}

    rep, _ = probe(python, tmp_path, photo, [("any", det(0.0), "photo"), ("none", det(1.01), "photo")])
    r = _ok(rep["any"])
    assert 1 <= r["shape"][0] <= 3 and r["shape"][1:] == [17, 3] and r["finite"]
    assert _ok(rep["none"])["shape"] == [0, 17, 3]  # nobody: no full-frame fallback
