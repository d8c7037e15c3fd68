"""Stores are untrusted input (issue 18): HDF5 stores and the JPEG frames inside them are passed
around between people, so every reader refuses what could read another file, run an outside
program, exhaust memory or give a quiet wrong answer, with one line naming the store.

Hostile stores are made from real ones: KARD skeletons (../shared/data/kard2d.pkl) imported
into a keypoint store, and the demo's frame store (conftest.demo_stores). The CLI cases run the
real `mgpipe` command in a subprocess (memory cases under RLIMIT_DATA, their peak RSS read back),
and a seeded fuzz mutates real stores a few hundred times.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from mgpipe.formats import frames as frame_store
from mgpipe.formats import heatmaps as heatmap_store
from mgpipe.formats import keypoints as keypoint_store
from mgpipe.io import InputError

ROOT = Path(__file__).resolve().parents[1]
KARD = ROOT.parent / "shared" / "data" / "kard2d.pkl"
needs_kard = pytest.mark.skipif(not KARD.is_file(), reason="../shared/data/kard2d.pkl is absent")
PASSWD = Path("/etc/passwd")
MEMORY_LIMIT = 2 << 30       # RLIMIT_DATA of the CLI runs: the unchecked reads went past it
PEAK_BOUND_MB = 600          # what a refused store may cost the process at most


# --------------------------------------------------------------------------- helpers
def kard_store(folder: Path, clips: int | None = None) -> tuple[Path, pd.DataFrame]:
    """A keypoint store of real KARD skeletons (the first `clips` annotations, all by default)
    and its manifest (clip_id, label, split train/test, num_frames, width, height)."""
    from mgpipe.sources.skeleton_io import import_pickle

    folder.mkdir(parents=True, exist_ok=True)
    source = KARD
    if clips is not None:
        with open(KARD, "rb") as f:
            data = pickle.load(f)
        keep = data["annotations"][:clips]
        ids = {a["frame_dir"] for a in keep}
        data = {"split": {k: [c for c in v if c in ids] for k, v in data["split"].items()}, "annotations": keep}
        source = folder / "kard_part.pkl"
        with open(source, "wb") as f:
            pickle.dump(data, f)
    manifest = import_pickle(source, folder / "keypoints.h5", layout="openni15")
    manifest["split"] = manifest.split.map({"xsub_train": "train", "xsub_val": "test"})
    manifest.to_csv(folder / "clips.csv", index=False)
    pd.DataFrame({"label": range(18), "label_id": range(1, 19), "name": [f"a{k}" for k in range(18)]}).to_csv(
        folder / "classes.csv", index=False)
    return folder / "keypoints.h5", manifest


@pytest.fixture(scope="module")
def kard(tmp_path_factory):
    if not KARD.is_file():
        pytest.skip("../shared/data/kard2d.pkl is absent")
    return kard_store(tmp_path_factory.mktemp("kard"))


def copy_of(src: Path, dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(Path(src).read_bytes())
    return dst


def replace_dataset(path: Path, key: str, **create) -> None:
    """Put a dataset made with `create` where `key` was (attributes of the group kept)."""
    with h5py.File(path, "a") as h5:
        del h5[key]
        h5.create_dataset(key, **create)


def snapshot(folder: Path) -> dict:
    """Every file under folder: its size and sha256 (to show nothing was changed)."""
    return {str(p.relative_to(folder)): (p.stat().st_size, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(folder.rglob("*")) if p.is_file()}


_LIMITED = """
import json, resource, subprocess, sys
limit = int(sys.argv[1])
def cap():
    resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
done = subprocess.run(sys.argv[2:], capture_output=True, text=True, preexec_fn=cap)
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print(json.dumps({"rc": done.returncode, "stdout": done.stdout, "stderr": done.stderr, "peak_mb": peak}))
"""


def mgpipe(*args, cwd: Path) -> dict:
    """The real CLI in a fresh process under RLIMIT_DATA (torch's address-space reservations
    rule out RLIMIT_AS); rc, stderr and the peak RSS of that process (MB)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", _LIMITED, str(MEMORY_LIMIT), sys.executable, "-m", "mgpipe",
                          "--quiet", *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env,
                         timeout=300)
    return json.loads(out.stdout)


def assert_one_line(result: dict, *needles: str) -> str:
    """rc 2 and one error line naming the store and the problem, no traceback."""
    err = [line for line in result["stderr"].splitlines() if line.strip() and " INFO " not in line]
    assert result["rc"] == 2, result
    assert len(err) == 1 and "Traceback" not in result["stderr"], result["stderr"]
    for needle in needles:
        assert needle in err[0], (needle, err[0])
    return err[0]


def refusal(fn) -> str:
    """The one-line InputError `fn()` ends in."""
    with pytest.raises(InputError) as e:
        fn()
    assert "\n" not in str(e.value)
    return str(e.value)


def read_keypoint_store(path, manifest) -> None:
    """What train, test and export read of a keypoint store, checked against the manifest."""
    store = keypoint_store.Reader(path)
    try:
        store.layout  # noqa: B018
        store.check_manifest(manifest, whole=True)
        for cid in manifest.clip_id:
            kp, w, h = store.clip(cid)
            store.box(cid, 0.25, (kp, w, h))
    finally:
        store.close()


# --------------------------------------------------------------------------- case 2: other files
@needs_kard
def test_external_storage_to_the_password_file_is_refused_by_the_cli(kard, tmp_path):
    """Issue case 2: a clip's keypoints with HDF5 external storage on /etc/passwd (the byte size
    of the real data) used to train, test and be exported byte for byte by export-pickle."""
    store, manifest = kard
    hostile = copy_of(store, tmp_path / "data" / "keypoints.h5")
    for name in ("clips.csv", "classes.csv"):
        copy_of(store.parent / name, tmp_path / "data" / name)
    cid = manifest.clip_id[0]
    with h5py.File(hostile, "r") as h5:
        real = h5[f"clips/{cid}/keypoints"]
        shape, nbytes = real.shape, real.size * real.dtype.itemsize
    replace_dataset(hostile, f"clips/{cid}/keypoints", shape=shape, dtype="f4",
                    external=[(str(PASSWD), 0, nbytes)])
    before = snapshot(tmp_path)
    data = tmp_path / "data"
    export = mgpipe("export-pickle", "--keypoints", data / "keypoints.h5", "--manifest", data / "clips.csv",
                    "--out", tmp_path / "results" / "export.pkl", cwd=tmp_path)
    line = assert_one_line(export, str(data / "keypoints.h5"), cid, "/etc/passwd", "external storage is refused")
    assert line.startswith("mgpipe export-pickle: error: ")
    train = mgpipe("train", "joint", "--config-json", "{}", "--manifest", data / "clips.csv",
                   "--keypoints", data / "keypoints.h5", "--classes", data / "classes.csv",
                   "--out-dir", tmp_path / "results" / "joint", cwd=tmp_path)
    assert_one_line(train, str(data / "keypoints.h5"), "external storage is refused")
    # nothing outside the results folder changed, and nothing was exported or trained in it:
    # no resumable state either, so no fingerprint ever covered bytes of another file
    after = snapshot(tmp_path)
    assert {k: v for k, v in after.items() if not k.startswith("results")} == before
    assert not [k for k in after if k.startswith("results") and k.endswith((".pkl", ".pt"))]


@needs_kard
@pytest.mark.parametrize("hostile", ["external_link", "soft_link", "virtual", "external_storage_file"])
def test_data_of_other_files_is_refused(kard, tmp_path, hostile):
    store, manifest = kard
    path = copy_of(store, tmp_path / "keypoints.h5")
    other = copy_of(store, tmp_path / "other.h5")
    cid, neighbour = manifest.clip_id[0], manifest.clip_id[1]
    key = f"clips/{cid}/keypoints"
    with h5py.File(path, "a") as h5:
        shape = h5[key].shape
        del h5[key]
        if hostile == "external_link":
            h5[key] = h5py.ExternalLink(str(other), key)
        elif hostile == "soft_link":
            h5[key] = h5py.SoftLink(f"/clips/{neighbour}/keypoints")
        elif hostile == "virtual":
            layout = h5py.VirtualLayout(shape=shape, dtype="f4")
            layout[:] = h5py.VirtualSource(str(other), key, shape=shape)
            h5.create_virtual_dataset(key, layout)
        else:
            h5.create_dataset(key, shape=shape, dtype="f4", external=[(str(other), 4096, 4 * int(np.prod(shape)))])
    line = refusal(lambda: read_keypoint_store(path, manifest))
    assert line.startswith(f"{path}: ") and cid in line
    assert {"external_link": "is an external link", "soft_link": "is a soft link",
            "virtual": "virtual dataset", "external_storage_file": "external storage"}[hostile] in line


def test_fingerprint_digests_the_store_file_alone(tmp_path):
    """With external storage, links and virtual datasets refused, a store's data is all in its
    own file: the resume fingerprint's digest of that file covers every byte training reads."""
    from mgpipe.learning.fingerprint import file_digest

    path = tmp_path / "s.h5"
    path.write_bytes(os.urandom(3 * (8 << 20) + 17))  # over several read chunks
    assert file_digest(path) == hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------- case 3: memory
@needs_kard
def test_a_declared_16_million_frame_clip_is_refused_before_allocating(kard, tmp_path):
    """Issue case 3 (stores): a 12 MB store whose clip declares 1.6e7 frames (unwritten chunks
    of a compressed dataset: the fill value) made readers allocate 2.7 GB and more."""
    store, manifest = kard
    path = copy_of(store, tmp_path / "data" / "keypoints.h5")
    copy_of(store.parent / "clips.csv", tmp_path / "data" / "clips.csv")
    cid = manifest.clip_id[0]
    replace_dataset(path, f"clips/{cid}/keypoints", shape=(1, 16_000_000, 15, 3), dtype="f4",
                    chunks=(1, 65536, 15, 3), compression="gzip", fillvalue=0.5)
    assert path.stat().st_size < 20e6
    export = mgpipe("export-pickle", "--keypoints", path, "--manifest", tmp_path / "data" / "clips.csv",
                    "--out", tmp_path / "results" / "x.pkl", cwd=tmp_path)
    assert_one_line(export, str(path), cid, "(1, 16000000, 15, 3)", "refused before reading")
    assert export["peak_mb"] < PEAK_BOUND_MB, export
    # the heatmap export reads every clip of the store without a manifest: the budget alone
    heat = mgpipe("heatmaps", "--keypoints", path, "--config-json", "{}", "--out",
                  tmp_path / "results" / "heatmaps.h5", cwd=tmp_path)
    assert_one_line(heat, str(path), "GiB a read may take")
    assert heat["peak_mb"] < PEAK_BOUND_MB, heat
    assert not (tmp_path / "results" / "heatmaps.h5").exists()
    # under the budget, the manifest bounds a clip's frames
    replace_dataset(path, f"clips/{cid}/keypoints", shape=(1, 2_000_000, 15, 3), dtype="f4",
                    chunks=(1, 65536, 15, 3), compression="gzip", fillvalue=0.5)
    line = refusal(lambda: read_keypoint_store(path, manifest))
    assert f"clip {cid!r} has 2000000 frames, the manifest says {manifest.num_frames[0]}" in line


def test_chunks_and_persons_are_bounded(tmp_path):
    """A chunk larger than the data (extendible datasets allow it) or more persons than a clip
    can hold are refused from the metadata."""
    from mgpipe.layouts import COCO17

    kp = np.zeros((1, 4, 17, 3), np.float32)
    with keypoint_store.writer(tmp_path / "k.h5", COCO17, source="test") as w:
        w.add("c0", kp, 64, 48)
    manifest = pd.DataFrame({"clip_id": ["c0"], "num_frames": [4]})
    path = tmp_path / "k.h5"
    replace_dataset(path, "clips/c0/keypoints", shape=(1, 4, 17, 3), maxshape=(None, None, 17, 3),
                    chunks=(4096, 4096, 17, 3), dtype="f4")
    assert "declares chunk shape (4096, 4096, 17, 3)" in refusal(lambda: read_keypoint_store(path, manifest))
    replace_dataset(path, "clips/c0/keypoints", data=np.zeros((65, 4, 17, 3), np.float32))
    assert "keypoints have shape (65, 4, 17, 3), expected [M <= 64" in refusal(
        lambda: read_keypoint_store(path, manifest))


# --------------------------------------------------------------------------- case 4: images
def _jpeg(width=160, height=120) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (90, 140, 30)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _declaring(width: int, height: int) -> bytes:
    """A real small JPEG whose frame header (SOF0) is rewritten to declare width x height."""
    data = bytearray(_jpeg())
    at = data.index(b"\xff\xc0")
    data[at + 5:at + 7] = height.to_bytes(2, "big")
    data[at + 7:at + 9] = width.to_bytes(2, "big")
    return bytes(data)


def _png(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height (PIL's format detection would read it)."""
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    data[16:24] = width.to_bytes(4, "big") + height.to_bytes(4, "big")
    return bytes(data)


EPS = (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 160 120\n%%EndComments\n"
       b"0 0 moveto (mgpipe runs no Ghostscript) show\nshowpage\n%%EOF\n")
HOSTILE_FRAMES = {"eps": EPS, "png_12000": _png(12000, 12000), "jpeg_12000": _declaring(12000, 12000),
                  "jpeg_60000": _declaring(60000, 60000), "jpeg_other_size": _declaring(320, 240)}


def frame_store_with(path: Path, frame: bytes, clip="c0", width=160, height=120) -> Path:
    good = np.frombuffer(_jpeg(width, height), np.uint8)
    with frame_store.writer(path, max_side=max(width, height), jpeg_quality=90) as w:
        w.add(clip, [good, np.frombuffer(frame, np.uint8), good], width, height, 1.0)
    return path


@pytest.fixture
def no_outside_decoders(monkeypatch):
    """Ghostscript, or any PIL decoding of a refused frame, fails the test loudly."""
    from PIL import EpsImagePlugin

    def forbidden(*args, **kwargs):
        raise AssertionError("a refused frame reached a decoder")

    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", forbidden)
    monkeypatch.setattr(EpsImagePlugin, "has_ghostscript", lambda: True)
    opened = []
    real_open = frame_store.Image.open
    monkeypatch.setattr(frame_store.Image, "open",
                        lambda fp, *a, **k: opened.append(fp.getvalue()) or real_open(fp, *a, **k))
    return opened  # the bytes of every frame PIL opened


@pytest.mark.parametrize("name", sorted(HOSTILE_FRAMES))
def test_frames_are_jpeg_of_their_declared_size_before_any_decoding(tmp_path, no_outside_decoders, name):
    """Issue case 4: EPS bytes in frames.h5 made PIL try Ghostscript; frames declaring
    12000x12000 were decoded (1 GB) and 60000x60000 ended in a DecompressionBombError."""
    from mgpipe.config import defaults
    from mgpipe.learning.samples import ClipDataset

    path = frame_store_with(tmp_path / "frames.h5", HOSTILE_FRAMES[name])
    reader = frame_store.Reader(path)
    line = refusal(lambda: reader.frames("c0", [1]))
    assert line.startswith(f"{path}: clip 'c0' frame 1 ")
    assert ("is not a JPEG" in line) if name in ("eps", "png_12000") else ("refused before decoding" in line)
    assert HOSTILE_FRAMES[name] not in no_outside_decoders  # PIL never opened the refused frame
    # the training / test / predict loader (every frame of a view decoded)
    cfg = defaults()
    data = ClipDataset(pd.DataFrame({"clip_id": ["c0"], "label": [0], "split": ["test"], "num_frames": [3]}),
                       "test", {"rgb": (3, 32)}, frames_h5=path, train=False, sigma=1.0, padding=0.25,
                       mean=cfg["rgb"]["mean"], std=cfg["rgb"]["std"], seed=0)
    assert refusal(lambda: data[0]).startswith(f"{path}: clip 'c0' frame 1 ")
    # without a declared size, the pixel bound alone
    if name.endswith(("12000", "60000")) and name.startswith("jpeg"):
        with pytest.raises(frame_store.FrameError, match="pixels in its JPEG header"):
            frame_store.decode_jpeg(HOSTILE_FRAMES[name])


@pytest.mark.parametrize("name", ["eps", "jpeg_60000"])
def test_the_pose_worker_refuses_such_frames_in_one_line(tmp_path, monkeypatch, capsys, no_outside_decoders, name):
    from mgpipe.pose.backends import worker

    plugin = tmp_path / "plugin"
    plugin.mkdir()
    (plugin / "nobody_backend_for_test.py").write_text(
        "import numpy as np\n"
        "class Nobody:\n"
        "    layout = 'coco17'\n"
        "    def reset(self): pass\n"
        "    def __call__(self, image): return np.zeros((0, 17, 3), np.float32)\n"
        "    def close(self): pass\n"
        "def make_estimator(options): return Nobody()\n")
    monkeypatch.syspath_prepend(str(plugin))
    path = frame_store_with(tmp_path / "frames.h5", HOSTILE_FRAMES[name])
    job = tmp_path / "job.json"
    job.write_text(json.dumps({"backend": "nobody_backend_for_test.x", "frames": str(path), "clips": ["c0"],
                               "out": str(tmp_path / "out.h5")}))
    monkeypatch.setattr(worker, "load_estimator", lambda backend, options: __import__(
        "nobody_backend_for_test").make_estimator(options))
    assert worker.main([str(job)]) == worker.EXIT_ERROR
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {path}: clip 'c0' frame 1 "), err
    assert not (tmp_path / "out.h5").exists() and HOSTILE_FRAMES[name] not in no_outside_decoders


def test_declared_frame_sizes_are_bounded(tmp_path):
    path = frame_store_with(tmp_path / "frames.h5", _jpeg())
    with h5py.File(path, "a") as h5:
        h5["clips/c0"].attrs.update(width=60000, height=60000)
    assert "attribute width=" in refusal(lambda: frame_store.Reader(path).clip("c0"))
    path = frame_store_with(tmp_path / "frames2.h5", _jpeg())
    with h5py.File(path, "a") as h5:
        h5["clips/c0"].attrs.update(width=16000, height=16000)
    assert "frame size 16000x16000 is over" in refusal(lambda: frame_store.Reader(path).clip("c0"))


# --------------------------------------------------------------------------- case 7: manifests
@needs_kard
def test_stores_that_disagree_with_the_manifest_are_refused(kard, tmp_path):
    """Issue case 7: a store whose clip lengths or ids disagree with the manifest tested with rc
    0. train and test check their stores against the whole manifest (samples.check_stores)."""
    from mgpipe.learning import specs
    from mgpipe.learning.samples import check_stores

    store, manifest = kard
    joint = specs.get("joint")
    check_stores(joint, manifest, keypoints_h5=store)  # the real pair agrees
    shorter = manifest.assign(num_frames=manifest.num_frames - 10)  # another segmentation
    line = refusal(lambda: check_stores(joint, shorter, keypoints_h5=store))
    assert f"has {manifest.num_frames[0]} frames, the manifest says {manifest.num_frames[0] - 10}" in line
    line = refusal(lambda: check_stores(joint, manifest.iloc[1:], keypoints_h5=store))
    assert "holds 1 clip(s) the manifest does not list" in line and manifest.clip_id[0] in line
    renamed = manifest.assign(clip_id=manifest.clip_id.where(manifest.index != 3, "a99_s99_e99"))
    assert "no keypoints for clip 'a99_s99_e99' of the manifest" in refusal(
        lambda: check_stores(joint, renamed, keypoints_h5=store))
    # the real command: a manifest of other segments
    shorter.to_csv(tmp_path / "clips.csv", index=False)
    result = mgpipe("train", "joint", "--config-json", "{}", "--manifest", tmp_path / "clips.csv",
                    "--keypoints", store, "--classes", store.parent / "classes.csv",
                    "--out-dir", tmp_path / "results" / "joint", cwd=tmp_path)
    assert_one_line(result, str(store), "the store was built from another manifest")


def test_frame_stores_are_checked_against_the_manifest_too(tmp_path):
    path = frame_store_with(tmp_path / "frames.h5", _jpeg())
    manifest = pd.DataFrame({"clip_id": ["c0"], "num_frames": [2]})
    assert "clip 'c0' has 3 frames, the manifest says 2" in refusal(
        lambda: frame_store.Reader(path).check_manifest(manifest))
    frame_store.Reader(path).check_manifest(manifest.assign(num_frames=5))  # a video ending early


# --------------------------------------------------------------------------- case 8: HDF5 oddities
def _small_keypoint_store(path: Path) -> Path:
    from mgpipe.layouts import COCO17

    kp = np.ones((1, 4, 17, 3), np.float32)
    with keypoint_store.writer(path, COCO17, source="test") as w:
        w.add("c0", kp, 64, 48)
        w.add("c1", kp, 64, 48)
    return path


def _soft_link_loop(h5):
    del h5["clips/c0"]
    h5["clips/c0"] = h5py.SoftLink("/clips/c0")


def _compound(h5):
    del h5["clips/c0/keypoints"]
    h5["clips/c0/keypoints"] = np.zeros((1, 4, 17, 3), dtype=[("x", "f4"), ("y", "i4")])


ODDITIES = {
    "soft_link_loop": (_soft_link_loop, "clips/c0 is a soft link"),
    "compound_dtype": (_compound, "has dtype"),
    "string_dtype": (lambda h5: (h5.__delitem__("clips/c0/keypoints"),
                                 h5.create_dataset("clips/c0/keypoints", data=np.full((1, 4, 17, 3), b"ab"))),
                     "has dtype |S2, expected floating point"),
    "complex_dtype": (lambda h5: (h5.__delitem__("clips/c0/keypoints"),
                                  h5.create_dataset("clips/c0/keypoints", data=np.zeros((1, 4, 17, 3), np.complex64))),
                      "has dtype complex64"),
    "rank_2": (lambda h5: (h5.__delitem__("clips/c0/keypoints"),
                           h5.create_dataset("clips/c0/keypoints", data=np.zeros((4, 51), np.float32))),
               "has rank 2, expected rank 4"),
    "format_version_text": (lambda h5: h5.attrs.__setitem__("format_version", "one"),
                            "attribute format_version='one' is not an integer"),
    "format_version_nan": (lambda h5: h5.attrs.__setitem__("format_version", np.nan),
                           "attribute format_version=nan is not an integer"),
    "width_nan": (lambda h5: h5["clips/c0"].attrs.__setitem__("width", np.nan),
                  "clip 'c0': attribute width=nan is not an integer"),
    "height_text": (lambda h5: h5["clips/c0"].attrs.__setitem__("height", "tall"),
                    "clip 'c0': attribute height='tall' is not an integer"),
}


@pytest.mark.parametrize("name", sorted(ODDITIES))
def test_hdf5_oddities_are_one_line(tmp_path, name):
    """Issue case 8 (HDF5 parts): soft-link loops, compound dtypes, a non-numeric format_version
    or a NaN width ended in tracebacks."""
    path = _small_keypoint_store(tmp_path / "keypoints.h5")
    mutate, expected = ODDITIES[name]
    with h5py.File(path, "a") as h5:
        mutate(h5)
    manifest = pd.DataFrame({"clip_id": ["c0", "c1"], "num_frames": [4, 4]})
    line = refusal(lambda: read_keypoint_store(path, manifest))
    assert line.startswith(f"{path}: ") and expected in line, line


def test_heatmap_store_nodes_are_checked(tmp_path):
    from mgpipe.layouts import COCO17

    path = tmp_path / "h.h5"
    with heatmap_store.writer(path, layout=COCO17, size=(4, 4), sigma=0.6, padding=0.25, limbs=False) as w:
        w.add("c0", [0, 0, 10, 10], np.zeros((2, 17, 4, 4), np.uint8), None)
    replace_dataset(path, "joint/c0", data=np.zeros((2, 17, 4, 5), np.uint8))
    reader = heatmap_store.Reader(path)
    assert "has shape (2, 17, 4, 5), expected [T > 0, 17, 4, 4]" in refusal(lambda: reader.volume("c0"))
    reader.close()
    with h5py.File(path, "a") as h5:
        del h5["box/c0"]
        h5["box/c0"] = h5py.SoftLink("/box/c0")
    assert "box/c0 is a soft link" in refusal(lambda: heatmap_store.Reader(path).box("c0"))


# --------------------------------------------------------------------------- fuzz
FUZZ_MUTATIONS = {"keypoints": 160, "frames": 140}
_VALUES = ["abc", b"\xff\xfe", float("nan"), float("inf"), -1, 0, 1e30, 2 ** 40, [1, 2], True, 1.5,
           np.complex64(1 + 1j), np.array([(1, 2.0)], dtype=[("a", "i4"), ("b", "f4")])]
_DTYPES = ["f2", "f4", "f8", "i1", "u1", "i8", "c8", "?", "S5", "vlen_str", "compound", "vlen_u1", "vlen_f4"]
_DIMS = [0, 1, 2, 3, 15, 17, 40, 86, 310, 10_000, 16_000_000]


def _dtype(name):
    if name == "vlen_str":
        return h5py.string_dtype()
    if name == "compound":
        return np.dtype([("a", "f4"), ("b", "i2")])
    if name.startswith("vlen_"):
        return h5py.vlen_dtype(np.dtype(name[5:]))
    return np.dtype(name)


def _new_dataset(group, name, rng, other_bytes):
    dtype = _dtype(str(rng.choice(_DTYPES)))
    shape = tuple(int(rng.choice(_DIMS)) for _ in range(int(rng.integers(0, 6))))
    size = int(np.prod(shape)) if shape else 1
    if size > 200_000 or h5py.check_vlen_dtype(dtype) is not None and size > 2000:  # declared, unwritten
        chunks = tuple(max(1, min(d, 64)) for d in shape) or None
        group.create_dataset(name, shape=shape, dtype=dtype, chunks=chunks if shape and size else None,
                             compression="gzip" if chunks and size else None)
        return
    if h5py.check_vlen_dtype(dtype) is not None:
        data = np.empty(size, dtype=object)
        for i in range(size):
            base = np.dtype(h5py.check_vlen_dtype(dtype))
            data[i] = (other_bytes[rng.integers(len(other_bytes))] if base == np.uint8
                       else ("x" * int(rng.integers(5)) if base == str else rng.random(3).astype(base)))
        group.create_dataset(name, data=data.reshape(shape) if shape else data[0], dtype=dtype)
    elif dtype.fields:
        group.create_dataset(name, shape=shape, dtype=dtype)
    elif dtype.kind == "S":
        group.create_dataset(name, data=np.full(shape, b"abcde", dtype=dtype))
    else:
        group.create_dataset(name, data=np.asarray(rng.normal(0, 300, shape)).astype(dtype))


def _data_spans(path: Path, h5) -> list[tuple[int, int]]:
    """Byte ranges of the stored data (contiguous datasets, and the JPEGs of frame stores)."""
    spans = []

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset) and obj.id.get_offset() is not None:
            spans.append((obj.id.get_offset(), obj.id.get_storage_size()))
    h5.visititems(visit)
    raw = path.read_bytes()
    at = raw.find(b"\xff\xd8\xff")
    while at >= 0 and len(spans) < 200:
        spans.append((at, 700))
        at = raw.find(b"\xff\xd8\xff", at + 1)
    return [s for s in spans if s[1] > 0]


def mutate(path: Path, kind: str, rng: np.random.Generator, other: Path, jpegs: list[bytes]) -> str:
    """One seeded mutation of a store file in place; returns what it did."""
    what = str(rng.choice(["attr", "dataset", "bytes", "link", "structure"], p=[0.25, 0.25, 0.2, 0.15, 0.15]))
    if what == "bytes":
        with h5py.File(path, "r") as h5:
            spans = _data_spans(path, h5)
        raw = bytearray(path.read_bytes())
        if spans and rng.random() < 0.8:
            start, length = spans[int(rng.integers(len(spans)))]
        else:  # anywhere past the superblock: object headers, B-trees, heaps
            start, length = 96, len(raw) - 96
        for _ in range(int(rng.integers(1, 9))):
            at = start + int(rng.integers(max(1, length)))
            if at < len(raw):
                raw[at] = int(rng.integers(256))
        path.write_bytes(bytes(raw))
        return f"bytes in [{start}, {start + length})"
    with h5py.File(path, "a") as h5:
        clips = sorted(h5["clips"].keys())
        cid = clips[int(rng.integers(len(clips)))]
        node = f"clips/{cid}/keypoints" if kind == "keypoints" else f"clips/{cid}"
        if what == "attr":
            target = h5[[".", f"clips/{cid}", node][int(rng.integers(3))]]
            names = ["format_version", "kind", "width", "height", "scale", "layout", "layout_joints", *target.attrs]
            name = str(rng.choice(names))
            if rng.random() < 0.2:
                if name in target.attrs:
                    del target.attrs[name]
                return f"del attr {name}"
            value = _VALUES[int(rng.integers(len(_VALUES)))]
            target.attrs[name] = value
            return f"attr {name}={value!r}"
        if what == "dataset":
            parent, _, name = node.rpartition("/")
            del h5[node]
            _new_dataset(h5[parent], name, rng, jpegs)
            return f"dataset {node}"
        if what == "link":
            choice = int(rng.integers(7))
            shape = h5[node].shape
            del h5[node]
            if choice == 0:
                h5[node] = h5py.SoftLink("/" + node)
            elif choice == 1:
                h5[node] = h5py.SoftLink(f"/clips/{clips[0]}" + ("/keypoints" if kind == "keypoints" else ""))
            elif choice == 2:
                h5[node] = h5py.ExternalLink(str(other), node)
            elif choice == 3:
                h5[node] = h5py.ExternalLink(str(PASSWD), "/")
            elif choice == 4:
                h5[node] = h5["clips"]  # a hard link to a group
            elif choice == 5:
                h5.create_dataset(node, shape=shape, dtype="f4", external=[(str(PASSWD), 0, 4 * int(np.prod(shape)))])
            else:
                layout = h5py.VirtualLayout(shape=(4,), dtype="f4")
                layout[:] = h5py.VirtualSource(str(other), "x", shape=(4,))
                h5.create_virtual_dataset(node, layout)
            return f"link {choice} at {node}"
        choice = int(rng.integers(4))
        if choice == 0:
            del h5[f"clips/{cid}"]
        elif choice == 1:
            h5.copy(h5[f"clips/{cid}"], f"clips/{cid}_extra")
        elif choice == 2:
            h5.move(f"clips/{cid}", f"clips/{cid}x")
        else:
            del h5["clips"]
            h5["clips"] = np.arange(3)
        return f"structure {choice} at {cid}"


def exercise(kind: str, path: Path, manifest: pd.DataFrame) -> None:
    """Everything the pipeline reads of a store of this kind."""
    if kind == "keypoints":
        read_keypoint_store(path, manifest)
        return
    store = frame_store.Reader(path)
    try:
        store.check_manifest(manifest, whole=True)
        for cid in manifest.clip_id:
            store.frames(cid, range(store.clip_length(cid)))
    finally:
        store.close()


def fuzz_main(spec_json: str) -> None:
    """Runs in its own process (under RLIMIT_DATA): every mutation of every base store,
    printed as one JSON summary line."""
    import warnings

    spec = json.loads(spec_json)
    rng = np.random.default_rng(spec["seed"])
    work = Path(spec["work"])
    summary = {"ran": 0, "worked": 0, "refused": 0, "bad": [], "by_kind": {}}
    for kind, count in spec["counts"].items():
        base, manifest = Path(spec[kind]["store"]), pd.read_csv(spec[kind]["manifest"], dtype={"clip_id": str})
        with h5py.File(base, "r") as h5:
            jpegs = [bytes(h5[f"clips/{c}"][0]) for c in list(h5["clips"])[:3]] if kind == "frames" else []
        jpegs = [np.frombuffer(b, np.uint8) for b in jpegs + [EPS, _declaring(60000, 60000), b"\xff\xd8\xff"]]
        tally = summary["by_kind"].setdefault(kind, {"worked": 0, "refused": 0})
        for i in range(count):
            path = copy_of(base, work / f"{kind}_{i}.h5")
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    what = mutate(path, kind, rng, base, jpegs)
            except Exception as e:  # a mutation h5py cannot write: not one of the runs
                summary.setdefault("not_made", []).append(f"{kind} {i}: {type(e).__name__}: {str(e)[:100]}")
                path.unlink()
                continue
            summary["ran"] += 1
            try:
                exercise(kind, path, manifest)
                outcome = "worked"
            except InputError as e:
                message = str(e)
                outcome = "refused"
                if "\n" in message or str(path) not in message:
                    summary["bad"].append(f"{kind} {i} ({what}): not one line naming the file: {message[:300]!r}")
            except BaseException as e:  # noqa: BLE001 (anything else is what the fuzz looks for)
                outcome = "bad"
                summary["bad"].append(f"{kind} {i} ({what}): {type(e).__name__}: {str(e)[:300]}")
            if outcome != "bad":
                summary[outcome] += 1
                tally[outcome] += 1
            path.unlink()
    print(json.dumps(summary))


@needs_kard
def test_fuzzed_real_stores_work_or_are_refused_in_one_line(tmp_path, demo_stores):
    """Seeded mutations of a real KARD keypoint store and the demo's frame store (attributes,
    datasets of other dtypes, ranks and shapes, bytes of data and metadata, links, structure):
    each mutated file works or ends in one InputError line naming it, never another
    exception, and the process stays under the memory bound."""
    kp_store, kp_manifest = kard_store(tmp_path / "kard", clips=10)
    frames_dir = tmp_path / "frames"
    frames_dir.mkdir()
    manifest = pd.read_csv(demo_stores / "clips.csv", dtype={"clip_id": str}).head(4)
    source = frame_store.Reader(demo_stores / "frames.h5")
    with frame_store.writer(frames_dir / "frames.h5", max_side=160, jpeg_quality=90) as w:
        for cid in manifest.clip_id:
            ds, attrs = source.clip(cid)
            w.add(cid, list(ds[:6]), attrs["width"], attrs["height"], attrs["scale"])
    source.close()
    manifest.assign(num_frames=6).to_csv(frames_dir / "clips.csv", index=False)
    work = tmp_path / "work"
    work.mkdir()
    spec = {"seed": 18, "work": str(work), "counts": FUZZ_MUTATIONS,
            "keypoints": {"store": str(kp_store), "manifest": str(kp_store.parent / "clips.csv")},
            "frames": {"store": str(frames_dir / "frames.h5"), "manifest": str(frames_dir / "clips.csv")}}
    code = "import sys; sys.path.insert(0, sys.argv[2]); import test_untrusted_stores as t; t.fuzz_main(sys.argv[1])"
    limited = [sys.executable, "-c", _LIMITED, str(MEMORY_LIMIT), sys.executable, "-c", code, json.dumps(spec),
               str(Path(__file__).parent)]
    out = subprocess.run(limited, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)),
                         timeout=600)
    result = json.loads(out.stdout)
    assert result["rc"] == 0, result["stderr"][-3000:]
    summary, peak = json.loads(result["stdout"].splitlines()[-1]), result["peak_mb"]
    report = (f"{summary['ran']} mutations: {summary['worked']} worked, {summary['refused']} refused in one "
              f"line, {len(summary['bad'])} bad; by store {summary['by_kind']}; peak RSS {peak:.0f} MB")
    print(report)
    (Path(os.environ.get("MGPIPE_FUZZ_REPORT", tmp_path / "fuzz.txt"))).write_text(report + "\n")
    assert summary["ran"] >= 0.9 * sum(FUZZ_MUTATIONS.values()), summary.get("not_made")
    assert not summary["bad"], report + "\n" + "\n".join(summary["bad"][:20])
    assert summary["refused"] > summary["ran"] // 3 and summary["worked"] > 0, report  # both outcomes met
    assert peak < PEAK_BOUND_MB, report
