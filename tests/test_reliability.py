"""Reliability suite: every way a stage can meet a bad file, a hostile file, a kill, a full disk or
a second run, and what the user then sees.

The contract checked throughout: the command ends with exactly one error line of the form
`mgpipe <command>: error: <path>: <reason>` naming the file (exit 2 for bad input, 1 for an
output the system refused), every other stderr line is a log record, no traceback, no output
file is created and no temporary is left behind; a hostile file's payload never runs (the marker
file it would create does not exist). Nothing here measures time: processes are synchronised on
files they write, polled with generous bounds.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import importlib
import io
import json
import logging
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import time
import warnings
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import write_video

from mgpipe import io as mgio
from mgpipe.cli import main
from mgpipe.stages.pose import read_openpose_frame

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
BASE_CONFIG = [str(REPO / "config.yaml"), str(REPO / "tests" / "data" / "tiny.yaml")]
# decode and heatmaps at the schema's defaults, from whichever folder the tests run
DEFAULTS = ["--config-json", "{}"]
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING) \S+: ")
POLL_BOUND_S = 300  # how long a poll waits for a process at most (a hang, not a slow machine)


# ----------------------------------------------------------------------------- helpers
def error_line(stderr: str, command: str) -> str:
    """The one error line of a failed command; every other stderr line must be a log record."""
    other = [line for line in stderr.splitlines() if line.strip() and not LOG_LINE.match(line)]
    assert len(other) == 1, f"expected one error line, got:\n{stderr[-3000:]}"
    assert other[0].startswith(f"mgpipe {command}: error: "), other[0]
    assert "Traceback" not in stderr
    return other[0]


def assert_refused(rc, stderr, command, path, code=2) -> str:
    assert rc == code, stderr[-3000:]
    line = error_line(stderr, command)
    assert line.startswith(f"mgpipe {command}: error: {path}: "), line
    return line


@contextlib.contextmanager
def restored_logging():
    """main() points the root logger at this moment's stderr: put it back afterwards, so later
    tests do not log into a closed capture."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def run_main(capsys, *argv):
    """mgpipe in this process (fast: torch is imported once): (exit code, stderr). Warnings
    count as stderr lines, as in the real command (pytest would otherwise collect them)."""
    capsys.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for hidden in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
            warnings.simplefilter("ignore", hidden)  # what Python hides from a command's user
        with restored_logging():
            rc = main(["-q", *map(str, argv)])
    shown = "".join(warnings.formatwarning(w.message, w.category, w.filename, w.lineno) for w in caught)
    return rc, capsys.readouterr().err + shown


def run_cli(*argv, cwd=None, timeout=POLL_BOUND_S):
    """The real `mgpipe` command in a fresh interpreter."""
    return subprocess.run([sys.executable, "-m", "mgpipe", "-q", *map(str, argv)], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


def temporaries(path: Path) -> list[Path]:
    """Hidden temporary files of output `path` (what atomic_path writes before the rename)."""
    return sorted(path.parent.glob(f".{path.name}.*"))


def write_yaml(path: Path, obj: dict) -> str:
    path.write_text(json.dumps(obj))  # JSON is YAML
    return str(path)


def poll(condition, what: str, proc: subprocess.Popen | None = None):
    """Wait until condition() holds; fail early if proc ends first (it was meant to be stopped)."""
    deadline = time.monotonic() + POLL_BOUND_S
    while not condition():
        if proc is not None and proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"process ended (rc {proc.returncode}) before {what}:\n{out}\n{err}")
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)


def write_manifest(path: Path, videos: list[Path], frames: int) -> Path:
    """A clip manifest with one whole-video training clip per video (what `mgpipe clips` writes)."""
    rows = [{"clip_id": f"{v.stem}_000000_{frames - 1:06d}", "video_id": v.stem, "video": str(v),
             "start_frame": 0, "end_frame": frames - 1, "num_frames": frames, "label": 0,
             "label_id": 1, "class_name": "one", "subject_id": i + 1, "split": "train",
             "width": 64, "height": 48, "fps": 25.0} for i, v in enumerate(videos)]
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


# ----------------------------------------------------------------------------- hostile files
class Call:
    """Pickles as `fn(*args)`: the __reduce__ gadget every pickle exploit is built from."""

    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args

    def __call__(self):  # never called: the pickler only checks that a reducer's callable is one
        raise AssertionError


def _touch_command(marker: Path) -> str:
    return f"touch {marker}"


def dotted_dtypes_pickle(marker: Path) -> bytes:
    """The issue's protocol-4 pickle: STACK_GLOBAL('numpy.dtypes', '__builtins__.get') reaches
    dict.get of the builtins, ('eval',) gives eval, and eval runs the payload."""
    def text(s):
        b = s.encode()
        return b"\x8c" + bytes([len(b)]) + b
    code = f"__import__('os').system({_touch_command(marker)!r})"
    return (b"\x80\x04" + text("numpy.dtypes") + text("__builtins__.get") + b"\x93"
            + text("eval") + b"\x85R" + text(code) + b"\x85R.")


def _gadgets(marker: Path) -> dict:
    """name -> an object whose unpickling runs code (or raw pickle bytes doing so)."""
    cmd = _touch_command(marker)
    inner = io.BytesIO()
    torch.save(Call(os.system, cmd), inner)
    return {
        "os.system": Call(os.system, cmd),
        "subprocess.Popen": Call(Call(getattr, Call(subprocess.Popen, ["touch", str(marker)]), "wait")),
        "builtins.eval": Call(eval, f"open({str(marker)!r}, 'w').close()"),
        "builtins.exec": Call(exec, f"import pathlib; pathlib.Path({str(marker)!r}).touch()"),
        "functools.partial": Call(Call(functools.partial, os.system, cmd)),
        "importlib.import_module": Call(Call(getattr, Call(importlib.import_module, "os"), "system"), cmd),
        "numpy.dtypes dotted name": dotted_dtypes_pickle(marker),
        "torch._tensor._rebuild_from_type_v2": Call(torch._tensor._rebuild_from_type_v2, os.system,
                                                    torch.Tensor, (cmd,), {}),
        "torch.storage._load_from_bytes": Call(torch.storage._load_from_bytes, inner.getvalue()),
    }


GADGETS = list(_gadgets(Path("m")))


def hostile_skeleton_pickle(path: Path, gadget: str, marker: Path) -> Path:
    payload = _gadgets(marker)[gadget]
    if isinstance(payload, bytes):
        path.write_bytes(payload)
    else:  # inside an otherwise well-formed pyskl pickle
        data = {"split": {"train": ["v1"]}, "annotations": [
            {"frame_dir": "v1", "label": 0, "img_shape": (48, 64), "total_frames": 4,
             "keypoint": payload, "keypoint_score": np.ones((1, 4, 17), np.float32)}]}
        path.write_bytes(pickle.dumps(data, protocol=2 if gadget == "os.system" else 4))
    return path


def _replace_data_pkl(ckpt: bytes, data_pkl: bytes) -> bytes:
    """A torch zip checkpoint whose data.pkl is replaced (what a hand-made hostile file does)."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(ckpt)) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as dst:
        for item in src.infolist():
            data = data_pkl if item.filename.endswith("/data.pkl") else src.read(item)
            dst.writestr(item, data)
    return out.getvalue()


def hostile_checkpoint(path: Path, gadget: str, marker: Path) -> Path:
    payload = _gadgets(marker)[gadget] if gadget in GADGETS else None
    shaped = {"model": {"w": torch.zeros(2)}, "num_classes": 7, "name": "rgb", "epoch": 1,
              "val_top1": None}
    buf = io.BytesIO()
    if gadget == "legacy format os.system":  # torch's pre-1.6 plain-pickle file format
        torch.save({**shaped, "arch": Call(os.system, _touch_command(marker))}, buf,
                   _use_new_zipfile_serialization=False)
    elif gadget == "tensor beyond its storage":  # a storage trick: size/stride past the bytes
        storage = torch.zeros(4).storage()
        huge = Call(torch._utils._rebuild_tensor_v2, storage, 0, (1 << 40,), (1,), False, {})
        torch.save({**shaped, "model": {"w": huge}, "arch": {}}, buf)
    elif isinstance(payload, bytes):  # raw pickle bytes as the zip's data.pkl
        torch.save({**shaped, "arch": {}}, buf)
        buf = io.BytesIO(_replace_data_pkl(buf.getvalue(), payload))
    else:  # the gadget pickled inside data.pkl of a normal-looking checkpoint
        torch.save({**shaped, "arch": payload}, buf)
    path.write_bytes(buf.getvalue())
    return path


CHECKPOINT_GADGETS = GADGETS + ["legacy format os.system", "tensor beyond its storage"]


def refusal_problems(rc, err, command, path, marker, output) -> list[str]:
    """What is wrong with how a command met a hostile file (empty: refused as it should be)."""
    problems = ["PAYLOAD RAN"] if marker.exists() else []
    if output.exists():
        problems.append(f"wrote {output.name}")
    try:
        assert_refused(rc, err, command, path)
    except AssertionError:
        shown = [line[:250] for line in err.splitlines() if line.strip() and not LOG_LINE.match(line)]
        problems.append(f"exit {rc}, stderr besides log records: {shown[:4]}")
    return problems


def test_gadgets_really_run_code(tmp_path):
    """The hostile files are real: a plain unpickler (torch.load(weights_only=False) for the
    checkpoints) runs each payload. Without this the refusals below could pass vacuously."""
    for i, gadget in enumerate(GADGETS):
        marker = tmp_path / f"pickle{i}"
        with contextlib.suppress(Exception):
            pickle.loads(hostile_skeleton_pickle(tmp_path / f"p{i}.pkl", gadget, marker).read_bytes())
        assert marker.exists(), gadget
    for i, gadget in enumerate(CHECKPOINT_GADGETS[:-1]):
        marker = tmp_path / f"ckpt{i}"
        with contextlib.suppress(Exception):
            torch.load(hostile_checkpoint(tmp_path / f"c{i}.pt", gadget, marker), weights_only=False)
        assert marker.exists(), gadget


# ---- inputs the hostile files are given with
@pytest.fixture(scope="module")
def trained(demo_stores, tmp_path_factory):
    """Valid rgb and joint checkpoints (one epoch on the tiny demo stores) and the config."""
    root = tmp_path_factory.mktemp("trained")
    one_epoch = {"rgb": {"optim": {"epochs": 1}}, "pose_model": {"optim": {"epochs": 1}}}
    config = [*BASE_CONFIG, write_yaml(root / "one_epoch.yaml", one_epoch)]
    out = {}
    for name in ("rgb", "joint"):
        with restored_logging():
            rc = main(["-q", "train", name, "--config", *config, "--manifest", str(demo_stores / "clips.csv"),
                       "--classes", str(demo_stores / "classes.csv"), "--frames", str(demo_stores / "frames.h5"),
                       "--keypoints", str(demo_stores / "keypoints.h5"), "--out-dir", str(root / name)])
        assert rc == 0
        out[name] = root / name / "model.pt"
    return {"config": config, **out}


def _checkpoint_commands(stores: Path, trained: dict, evil: Path, out: Path) -> dict:
    """command -> argv that loads `evil` as a checkpoint; the output each would write."""
    cfg = ["--config", *trained["config"]]
    data = ["--manifest", stores / "clips.csv", "--frames", stores / "frames.h5",
            "--keypoints", stores / "keypoints.h5"]
    video = sorted((stores / "demo" / "videos").glob("*.mp4"))[0]
    return {
        "predict": (["predict", video, "--model", evil, *cfg, "--skeletons", stores / "demo" / "skeletons",
                     "--classes", stores / "classes.csv", "--out-dir", out], out / "prediction.json"),
        "merge --rgb": (["merge", "--rgb", evil, "--pose", trained["joint"], "--model", "fused_full",
                         "--out", out / "merged.pt", *cfg], out / "merged.pt"),
        "merge --pose": (["merge", "--rgb", trained["rgb"], "--pose", evil, "--model", "fused_full",
                          "--out", out / "merged.pt", *cfg], out / "merged.pt"),
        "test": (["test", evil, *cfg, *data, "--out", out / "scores.csv"], out / "scores.csv"),
        "train --init": (["train", "fused_full", *cfg, *data, "--classes", stores / "classes.csv",
                          "--init", evil, "--out-dir", out], out / "model.pt"),
    }


CHECKPOINT_COMMANDS = ["predict", "merge --rgb", "merge --pose", "test", "train --init"]


@pytest.mark.parametrize("command", CHECKPOINT_COMMANDS)
def test_hostile_checkpoint_is_refused(command, demo_stores, trained, tmp_path, capsys):
    """Every known gadget chain in a checkpoint: one line naming the file, no side effect."""
    failures = []
    for i, gadget in enumerate(CHECKPOINT_GADGETS):
        marker, out = tmp_path / f"marker{i}", tmp_path / f"out{i}"
        evil = hostile_checkpoint(tmp_path / f"evil{i}.pt", gadget, marker)
        argv, output = _checkpoint_commands(demo_stores, trained, evil, out)[command]
        try:
            rc, err = run_main(capsys, *argv)
        except BaseException as e:  # a refusal must be the CLI's line, never an exception
            failures.append(f"{gadget}: raised {type(e).__name__}: {str(e)[:200]}")
            continue
        problems = refusal_problems(rc, err, argv[0], evil, marker, output)
        if problems:
            failures.append(f"{gadget}: {'; '.join(problems)}")
    assert not failures, f"mgpipe {command}:\n" + "\n".join(failures)


@pytest.mark.parametrize("gadget", ["os.system", "numpy.dtypes dotted name"])
@pytest.mark.parametrize("command", CHECKPOINT_COMMANDS)
def test_hostile_checkpoint_real_cli(command, gadget, demo_stores, trained, tmp_path):
    """The same through the installed command: the refusal line, nothing run, nothing written."""
    marker, out = tmp_path / "marker", tmp_path / "out"
    evil = hostile_checkpoint(tmp_path / "evil.pt", gadget, marker)
    argv, output = _checkpoint_commands(demo_stores, trained, evil, out)[command]
    proc = run_cli(*argv)
    assert not marker.exists(), "payload ran"
    assert_refused(proc.returncode, proc.stderr, argv[0], evil)
    assert not output.exists()


def _pickle_commands(tmp_path: Path, stores: Path, evil: Path) -> dict:
    """command -> argv that reads `evil` as a skeleton pickle, and the output it would write."""
    pose_cfg = {"pose": {"backend": "pickle", "pickle_layout": "coco17", "layout": "coco17"}}
    pose_only = {"mode": "pose", "dataset": {"kind": "csv", "time_unit": "frames"}, **pose_cfg}
    tmp_path.mkdir(exist_ok=True)
    labels = tmp_path / "labels.csv"
    pd.DataFrame({"video": ["v1", "v2"], "start": [0, 0], "end": [3, 3], "label": [1, 2],
                  "subject": [1, 2], "split": ["train", "test"]}).to_csv(labels, index=False)
    return {
        "pose": (["pose", "--manifest", stores / "clips.csv", "--skeletons", evil, "--config",
                  *BASE_CONFIG, write_yaml(tmp_path / "pickle.yaml", pose_cfg),
                  "--out", tmp_path / "keypoints.h5"], tmp_path / "keypoints.h5"),
        "clips": (["clips", "--labels", labels, "--skeletons", evil, "--config", *BASE_CONFIG,
                   write_yaml(tmp_path / "pose_only.yaml", pose_only), "--out", tmp_path / "clips.csv",
                   "--classes-out", tmp_path / "classes.csv"], tmp_path / "clips.csv"),
    }


@pytest.mark.parametrize("command", ["pose", "clips"])
def test_hostile_skeleton_pickle_is_refused(command, demo_stores, tmp_path, capsys):
    failures = []
    for i, gadget in enumerate(GADGETS):
        marker = tmp_path / f"marker{i}"
        evil = hostile_skeleton_pickle(tmp_path / f"evil{i}.pkl", gadget, marker)
        argv, output = _pickle_commands(tmp_path / f"run{i}", demo_stores, evil)[command]
        try:
            rc, err = run_main(capsys, *argv)
        except BaseException as e:
            failures.append(f"{gadget}: raised {type(e).__name__}: {str(e)[:200]}")
            continue
        problems = refusal_problems(rc, err, command, evil, marker, output)
        if problems:
            failures.append(f"{gadget}: {'; '.join(problems)}")
    assert not failures, f"mgpipe {command}:\n" + "\n".join(failures)


@pytest.mark.parametrize("command", ["pose", "clips"])
def test_hostile_skeleton_pickle_real_cli(command, demo_stores, tmp_path):
    """The issue's 105-byte pickle through the installed command."""
    marker = tmp_path / "marker"
    evil = hostile_skeleton_pickle(tmp_path / "evil.pkl", "numpy.dtypes dotted name", marker)
    argv, output = _pickle_commands(tmp_path / "run", demo_stores, evil)[command]
    proc = run_cli(*argv)
    assert not marker.exists(), "payload ran"
    assert_refused(proc.returncode, proc.stderr, command, evil)
    assert not output.exists()


def test_real_pickle_still_loads(tmp_path, capsys):
    """The refusals do not refuse real data: KARD's pyskl pickle goes through `mgpipe pose`."""
    kard = SHARED / "kard2d.pkl"
    if not kard.is_file():
        pytest.skip(f"{kard} not present (real-data tests need ../shared/data)")
    data = pickle.loads(kard.read_bytes())  # trusted test data: the plain unpickler is fine here
    ann = data["annotations"][0]
    manifest = write_manifest(tmp_path / "clips.csv", [Path("x.mp4")], ann["total_frames"])
    rows = pd.read_csv(manifest)
    rows["clip_id"], rows["video_id"], rows["width"], rows["height"] = ann["frame_dir"], ann["frame_dir"], 640, 480
    rows.to_csv(manifest, index=False)
    cfg = write_yaml(tmp_path / "kard.yaml", {"pose": {"backend": "pickle", "pickle_layout": "openni15",
                                                       "layout": "openni15"}})
    rc, err = run_main(capsys, "pose", "--manifest", manifest, "--skeletons", kard, "--config",
                       *BASE_CONFIG, cfg, "--out", tmp_path / "kp.h5")
    assert rc == 0, err
    with h5py.File(tmp_path / "kp.h5") as h5:
        assert h5[f"clips/{ann['frame_dir']}/keypoints"].shape[1] == ann["total_frames"]


# ----------------------------------------------------------------------------- killed stages
# A stage is stopped at a known point: a small driver runs the real CLI in a fresh interpreter
# with one function of the stage wrapped so that its Nth call writes a flag file and waits.
# The test waits for the flag (so the temporary store is known to hold data) and kills -9.
_PAUSE_DRIVER = r"""
import os, sys, time
from pathlib import Path
import importlib
target = importlib.import_module(sys.argv[1])
function, after, flag = sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
original = getattr(target, function)
calls = [0]

def paused(*args, **kwargs):
    calls[0] += 1
    if calls[0] == after:
        flag.write_text(str(os.getpid()))
        for _ in range(3000):  # killed by the test long before; never hangs forever
            time.sleep(0.1)
        os._exit(3)
    return original(*args, **kwargs)

setattr(target, function, paused)
from mgpipe.cli import main
sys.exit(main(sys.argv[5:]))
"""


def start_paused(tmp_path: Path, module: str, function: str, after: int, *argv) -> tuple[subprocess.Popen, Path]:
    flag = tmp_path / f"paused-{function}-{len(list(tmp_path.glob('paused-*')))}"
    proc = subprocess.Popen([sys.executable, "-c", _PAUSE_DRIVER, module, function, str(after), str(flag),
                             "-q", *map(str, argv)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    poll(flag.exists, f"{module}.{function} call {after}", proc)
    return proc, flag


def kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=POLL_BOUND_S)  # reaped: its pid is gone, as after a real kill
    assert proc.returncode == -signal.SIGKILL


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    paths = []
    for name in ("a", "b", "c"):
        write_video(root / f"{name}.mp4", frames=20)
        paths.append(root / f"{name}.mp4")
    return write_manifest(root / "clips.csv", paths, 20), paths


def _frame_counts(store: Path) -> dict:
    with h5py.File(store) as h5:
        return {cid: len(ds) for cid, ds in h5["clips"].items()}


def test_killed_decode_leaves_no_store_and_no_leak(videos, tmp_path):
    manifest, paths = videos
    out = tmp_path / "frames.h5"
    # Stopped before its second video: the first video's frames are in the temporary store.
    proc, _ = start_paused(tmp_path, "mgpipe.stages.decode", "decode_video", 2,
                           "decode", "--manifest", manifest, *DEFAULTS, "--out", out)
    assert len(temporaries(out)) == 1 and temporaries(out)[0].stat().st_size > 0
    kill(proc)
    assert not out.exists()  # never a half store under the output's name
    assert len(temporaries(out)) == 1  # what a kill leaves: removed by the next run
    proc = run_cli("decode", "--manifest", manifest, *DEFAULTS, "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert "removed" in proc.stderr and temporaries(out) == []
    assert _frame_counts(out) == {f"{p.stem}_000000_000019": 20 for p in paths}


def test_killed_heatmaps_leave_no_store_and_no_leak(demo_stores, tmp_path):
    out = tmp_path / "heatmaps.h5"
    small = ["--config-json", json.dumps({"heatmaps": {"size": 16}})]
    args = ["heatmaps", "--keypoints", demo_stores / "keypoints.h5", *small, "--out", out]
    proc, _ = start_paused(tmp_path, "mgpipe.formats.heatmaps", "_write_volume", 3, *args)
    kill(proc)
    first = temporaries(out)
    assert not out.exists() and len(first) == 1
    # Killed again: starting, it removed the first kill's temporary; only its own is left.
    proc, _ = start_paused(tmp_path, "mgpipe.formats.heatmaps", "_write_volume", 3, *args)
    kill(proc)
    second = temporaries(out)
    assert not out.exists() and len(second) == 1 and second != first
    proc = run_cli(*args)
    assert proc.returncode == 0, proc.stderr
    assert temporaries(out) == []
    reference = tmp_path / "reference" / "heatmaps.h5"
    assert run_cli(*args[:-2], "--out", reference).returncode == 0
    with h5py.File(out) as got, h5py.File(reference) as want:
        assert sorted(got["joint"]) == sorted(want["joint"]) and len(got["joint"]) > 2
        for cid in want["joint"]:
            assert np.array_equal(got["joint"][cid][()], want["joint"][cid][()])


def test_a_live_writer_is_not_disturbed(videos, tmp_path):
    """Only temporaries of dead writers go: a paused (live) decode keeps its temporary while
    another output in the same folder, and even the same output, is written beside it."""
    manifest, _ = videos
    out, other = tmp_path / "frames.h5", tmp_path / "other.h5"
    proc, _ = start_paused(tmp_path, "mgpipe.stages.decode", "decode_video", 2,
                           "decode", "--manifest", manifest, *DEFAULTS, "--out", out)
    try:
        live = temporaries(out)
        assert len(live) == 1
        assert run_cli("decode", "--manifest", manifest, *DEFAULTS, "--out", other).returncode == 0
        assert run_cli("decode", "--manifest", manifest, *DEFAULTS, "--out", out).returncode == 0
        assert temporaries(out) == live and live[0].stat().st_size > 0
    finally:
        kill(proc)
    assert mgio.stale_temporaries(out) == live


def test_stale_temporary_rules(tmp_path):
    """Which leftovers atomic_path removes: a dead writer's, a reused pid's (other start time);
    not a live process's, not another output's, not another machine's."""
    out = tmp_path / "store.h5"
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True).stdout.strip()
        host = mgio._HOST
        start = mgio._start_time(child.pid)
        names = {
            "dead": f".store.h5.{host}-{gone}-123-abcd1234.h5",
            "reused pid": f".store.h5.{host}-{child.pid}-{(start or 0) + 1}-abcd1234.h5",
            "live": f".store.h5.{host}-{child.pid}-{start}-abcd1234.h5",
            "other output": f".store.h5.bak.{host}-{gone}-123-abcd1234.bak",
            "other machine": f".store.h5.{'0' * 8 if host != '0' * 8 else '1' * 8}-{gone}-123-abcd1234.h5",
        }
        for name in names.values():
            (tmp_path / name).write_bytes(b"x")
        with mgio.atomic_path(out) as tmp:
            tmp.write_bytes(b"new")
        left = {p.name for p in tmp_path.iterdir()}
        assert names["dead"] not in left
        assert (names["reused pid"] not in left) == bool(start)  # start times known on Linux
        assert {names["live"], names["other output"], names["other machine"]} <= left
        assert out.read_bytes() == b"new"
    finally:
        child.kill()
        child.wait()


def test_stale_temporaries_without_proc(tmp_path, monkeypatch):
    """Where there is no /proc (macOS), the pid alone decides: a live writer's temporary stays."""
    monkeypatch.setattr(mgio, "_PROC", False)
    out = tmp_path / "store.h5"
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    live = tmp_path / f".store.h5.{mgio._HOST}-{os.getpid()}-0-abcd1234.h5"
    dead = tmp_path / f".store.h5.{mgio._HOST}-{gone}-0-abcd1234.h5"
    live.write_bytes(b"x")
    dead.write_bytes(b"x")
    assert mgio.remove_stale_temporaries(out) == [dead]
    assert live.exists()


# ----------------------------------------------------------------------------- full disk, read-only
ENOSPC_H5 = ("Unable to synchronously create dataset (file write failed: time = Tue Dec  1 "
             "00:00:00 2026, filename = '{tmp}', file descriptor = 5, errno = 28, error message = "
             "'No space left on device', buf = 0x55d0c0a0, total write size = 4096, bytes this "
             "sub-write = 4096, bytes actually written = 18446744073709551615, offset = 0)")


def _inject_enospc(monkeypatch, owner, name):
    """Make the stage's writer fail as h5py does on a full disk (its long message, no errno)."""
    def full(group, *args, **kwargs):
        raise OSError(ENOSPC_H5.format(tmp=group.file.filename))
    monkeypatch.setattr(owner, name, full)


def test_disk_full_injected_decode(videos, tmp_path, capsys, monkeypatch):
    manifest, _ = videos
    out = tmp_path / "frames.h5"
    _inject_enospc(monkeypatch, h5py.Group, "create_dataset")
    rc, err = run_main(capsys, "decode", "--manifest", manifest, *DEFAULTS, "--out", out)
    line = assert_refused(rc, err, "decode", out, code=1)
    assert line.endswith("No space left on device)"), line
    assert not out.exists() and temporaries(out) == []


def test_disk_full_injected_heatmaps(demo_stores, tmp_path, capsys, monkeypatch):
    import mgpipe.formats.heatmaps

    out = tmp_path / "heatmaps.h5"
    _inject_enospc(monkeypatch, mgpipe.formats.heatmaps, "_write_volume")
    rc, err = run_main(capsys, "heatmaps", "--keypoints", demo_stores / "keypoints.h5", *DEFAULTS,
                       "--out", out)
    line = assert_refused(rc, err, "heatmaps", out, code=1)
    assert "No space left on device" in line
    assert not out.exists() and temporaries(out) == []


@pytest.fixture
def tiny_tmpfs(tmp_path):
    """A 64 KiB tmpfs (root only): a real full disk."""
    mount = tmp_path / "small"
    mount.mkdir()
    yield from _mounted(["-t", "tmpfs", "-o", "size=64k", "tmpfs"], mount,
                        "cannot mount a tmpfs here", "the injected-OSError tests cover a full disk")


@pytest.mark.parametrize("stage", ["decode", "pose", "heatmaps"])
def test_disk_full_real_tmpfs(stage, tiny_tmpfs, videos, demo_stores):
    out = tiny_tmpfs / f"{stage}.h5"
    if stage == "decode":
        # quality 100 and the full frame size: well over 64 KiB of JPEGs
        argv = ["decode", "--manifest", videos[0], "--config-json",
                json.dumps({"decode": {"jpeg_quality": 100, "max_side": 0}}), "--out", out]
    elif stage == "pose":
        argv = ["pose", "--manifest", demo_stores / "clips.csv", "--skeletons",
                demo_stores / "demo" / "skeletons", "--config", *BASE_CONFIG, "--out", out]
    else:
        argv = ["heatmaps", "--keypoints", demo_stores / "keypoints.h5", *DEFAULTS, "--out", out]
    proc = run_cli(*argv)
    line = assert_refused(proc.returncode, proc.stderr, stage, out, code=1)
    assert line.endswith("(No space left on device)"), line
    assert list(tiny_tmpfs.iterdir()) == []  # nothing left filling the disk


def _mounted(args, target, cannot: str, covered_by: str):
    """Mount onto target for the test (skip, naming the test that covers it, where mounting is
    not allowed), then unmount."""
    proc = subprocess.run(["mount", *args, str(target)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"{cannot} ({proc.stderr.strip() or proc.returncode}); {covered_by}")
    yield target
    subprocess.run(["umount", str(target)], check=True)


@pytest.fixture
def read_only_folder(tmp_path):
    """A folder nobody may write to: chmod for a normal user; a read-only bind mount for root
    (root ignores permission bits)."""
    folder = tmp_path / "ro"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    yield from _mounted(["--bind", "-o", "ro", str(folder)], folder,
                        "root cannot make a read-only mount here", "test_read_only_injected covers it")


@pytest.mark.parametrize("where", ["folder", "subfolder"])
def test_read_only_output_folder(where, read_only_folder, videos):
    out = read_only_folder / ("frames.h5" if where == "folder" else "sub/frames.h5")
    proc = run_cli("decode", "--manifest", videos[0], *DEFAULTS, "--out", out)
    line = assert_refused(proc.returncode, proc.stderr, "decode", out, code=1)
    assert re.search(r"\((Read-only file system|Permission denied)\)$", line), line


def test_read_only_injected(videos, tmp_path, capsys, monkeypatch):
    import tempfile

    out = tmp_path / "frames.h5"

    def refuse(*args, dir=None, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(dir))
    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    rc, err = run_main(capsys, "decode", "--manifest", videos[0], *DEFAULTS, "--out", out)
    assert assert_refused(rc, err, "decode", out, code=1).endswith("(Permission denied)")


def test_unwritable_log_file(videos, tmp_path, capsys):
    """--log into a path that cannot be a file: one line, not a traceback from logging."""
    (tmp_path / "log").mkdir()
    rc, err = run_main(capsys, "--log", tmp_path / "log", "decode", "--manifest", videos[0],
                       *DEFAULTS, "--out", tmp_path / "frames.h5")
    assert rc == 1 and error_line(err, "decode").startswith(f"mgpipe decode: error: {tmp_path / 'log'}: ")


# ----------------------------------------------------------------------------- bad videos
def _zero_frame_video(path: Path) -> None:
    import av

    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        out.start_encoding()


def _audio_only(path: Path) -> None:
    import av

    with av.open(str(path), "w") as out:
        stream = out.add_stream("aac", rate=16000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 16000
        for _ in range(4):
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def _faststart_video(path: Path, frames=40) -> None:
    """An mp4 with its index (moov) before the data, as streaming tools write them: cut in the
    middle, the header still lists every frame and the file opens."""
    import av

    rng = np.random.default_rng(0)
    with av.open(str(path), "w", options={"movflags": "faststart"}) as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for _ in range(frames):
            img = rng.integers(0, 255, (48, 64, 3), np.uint8)  # noise: many bytes per frame
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


@pytest.fixture(scope="module")
def bad_videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_videos")
    write_video(root / "good.mp4", frames=40)
    whole = (root / "good.mp4").read_bytes()
    _faststart_video(root / "fast.mp4")
    fast = (root / "fast.mp4").read_bytes()
    made = {
        "text renamed .mp4": ("text.mp4", lambda p: p.write_text("subject,split\n1,train\n" * 20)),
        "empty file": ("empty.mp4", lambda p: p.write_bytes(b"")),
        "truncated mp4 (index lost)": ("cut.mp4", lambda p: p.write_bytes(whole[: len(whole) // 2])),
        "truncated mp4 (data cut)": ("cutdata.mp4", lambda p: p.write_bytes(fast[: len(fast) // 2])),
        "zero frames": ("zero.mp4", _zero_frame_video),
        "audio only": ("audio.mp4", _audio_only),
        "a folder named .mp4": ("folder.mp4", lambda p: p.mkdir()),
    }
    out = {}
    for case, (name, make) in made.items():
        make(root / name)
        out[case] = root / name
    return out


DECODE_CASES = ["text renamed .mp4", "empty file", "truncated mp4 (index lost)",
                "truncated mp4 (data cut)", "zero frames", "audio only", "a folder named .mp4"]


@pytest.mark.parametrize("case", DECODE_CASES)
def test_bad_video_at_decode(case, bad_videos, tmp_path, capsys):
    video = bad_videos[case]
    manifest = write_manifest(tmp_path / "clips.csv", [video], 30)
    out = tmp_path / "frames.h5"
    rc, err = run_main(capsys, "decode", "--manifest", manifest, *DEFAULTS, "--out", out)
    assert_refused(rc, err, "decode", video)
    assert not out.exists() and temporaries(out) == []


def test_truncated_video_is_refused_with_threads(bad_videos, videos, tmp_path):
    """In a worker pool too (threads 2), among good videos, through the installed command."""
    video = bad_videos["truncated mp4 (data cut)"]
    manifest = write_manifest(tmp_path / "clips.csv", [*videos[1], video], 20)
    out = tmp_path / "frames.h5"
    proc = run_cli("decode", "--manifest", manifest, *DEFAULTS, "--out", out, "--threads", 2)
    line = assert_refused(proc.returncode, proc.stderr, "decode", video)
    assert "damaged video" in line
    assert not out.exists() and temporaries(out) == []


def test_short_but_sound_video_is_a_warning(bad_videos, tmp_path, capsys):
    """A sound video that ends before its label does: kept, with a warning (not damage)."""
    manifest = write_manifest(tmp_path / "clips.csv", [bad_videos["text renamed .mp4"].parent / "good.mp4"], 45)
    rc, err = run_main(capsys, "decode", "--manifest", manifest, *DEFAULTS, "--out", tmp_path / "frames.h5")
    assert rc == 0 and "has 40 of 45 frames (video ends early)" in err


def _csv_labels(path: Path, videos: dict) -> Path:
    rows = [{"video": v, "start": 0, "end": 9, "label": i % 2 + 1, "subject": i + 1,
             "split": ["train", "val", "test"][i % 3]} for i, v in enumerate(videos)]
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


# A video cut in its data (index intact) passes the clip stage's header probe: the decode stage
# refuses it (test_bad_video_at_decode, test_truncated_video_is_refused_with_threads).
CLIPS_CASES = [c for c in DECODE_CASES if c != "truncated mp4 (data cut)"]


@pytest.mark.parametrize("case", CLIPS_CASES)
def test_bad_video_at_clips(case, bad_videos, tmp_path, capsys):
    """The clip stage probes every video: a bad one stops it with the file's name."""
    video = bad_videos[case]
    folder = tmp_path / "videos"
    folder.mkdir()
    for name in ("good1", "good2"):
        shutil.copy(video.parent / "good.mp4", folder / f"{name}.mp4")
    target = folder / "bad.mp4"
    (shutil.copytree if video.is_dir() else shutil.copy)(video, target)
    labels = _csv_labels(tmp_path / "labels.csv", ["good1", "bad", "good2"])
    cfg = write_yaml(tmp_path / "csv.yaml", {"dataset": {"kind": "csv", "time_unit": "frames"}})
    rc, err = run_main(capsys, "clips", "--labels", labels, "--videos", folder, "--config", *BASE_CONFIG,
                       cfg, "--out", tmp_path / "clips.csv", "--classes-out", tmp_path / "classes.csv")
    assert_refused(rc, err, "clips", target)
    assert not (tmp_path / "clips.csv").exists()


# ----------------------------------------------------------------------------- keypoint files
POSE = [100.0, 120.0, 0.9] * 25


def _openpose(path: Path, people=None, raw: str | None = None) -> Path:
    path.write_text(raw if raw is not None else json.dumps({"version": 1.3, "people": people}))
    return path


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf"), None, 1e9, -1e9, 1e39])
def test_openpose_unusable_value_is_a_missing_joint(value, tmp_path):
    """NaN, inf, null and coordinates no frame has are missing joints, and only that joint."""
    for slot in range(3):
        flat = list(POSE)
        flat[3 + slot] = value  # joint 1's x, y or score (a score of 1e9 is out of range too)
        kp = read_openpose_frame(_openpose(tmp_path / f"f{slot}.json", [{"pose_keypoints_2d": flat}]))
        assert kp.shape == (1, 137, 3)
        assert np.array_equal(kp[0, 1], [0, 0, 0]), (slot, kp[0, 1])
        assert np.allclose(kp[0, 0], [100, 120, 0.9]) and np.allclose(kp[0, 2], [100, 120, 0.9])
        assert np.isfinite(kp).all()


@pytest.mark.parametrize("case, content, expected", [
    ("string value", {"people": [{"pose_keypoints_2d": ["12.5"] + POSE[1:]}]}, "holds '12.5', expected numbers"),
    ("word", {"people": [{"pose_keypoints_2d": POSE[:-1] + ["high"]}]}, "holds 'high', expected numbers"),
    ("boolean", {"people": [{"pose_keypoints_2d": [True] + POSE[1:]}]}, "holds True, expected numbers"),
    ("nested list", {"people": [{"hand_left_keypoints_2d": [[1, 2, 3]] * 21}]}, "holds [1, 2, 3]"),
    ("part is a dict", {"people": [{"face_keypoints_2d": {"x": 1}}]}, "face_keypoints_2d is a dict"),
    ("wrong length", {"people": [{"pose_keypoints_2d": POSE[:-1]}]}, "pose_keypoints_2d has 74 values, expected 75"),
    ("people not a list", {"people": {"0": POSE}}, "'people' is not a list"),
    ("person not an object", {"people": [POSE]}, "'people' is not a list of person objects"),
    ("no people key", {"version": 1.3}, "an object without 'people'"),
    ("a JSON list", [1, 2, 3], "it holds a JSON list"),
    ("truncated JSON", '{"version":1.3,"people":[{"pose_keypoints_2d":[100.0,12', "JSONDecodeError"),
    ("empty file", "", "JSONDecodeError"),
    ("integer beyond any float", '{"people":[{"pose_keypoints_2d":[' + "9" * 400 + "," + ",".join(["1"] * 74) + "]}]}",
     "too large"),
])
def test_openpose_malformed_is_one_error_naming_the_file(case, content, expected, tmp_path):
    path = tmp_path / "v_000000000000_keypoints.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    with pytest.raises(mgio.InputError) as e:
        read_openpose_frame(path)
    message = str(e.value)
    assert message.startswith(f"{path}: ") and "\n" not in message and expected in message, message


def test_real_openpose_frame_corrupted(tmp_path):
    """A real iMiGUE OpenPose frame, damaged three ways."""
    folder = SHARED / "imigue_openpose_excerpt" / "298"
    if not folder.is_dir():
        pytest.skip(f"{folder} not present (real-data tests need ../shared/data)")
    real = sorted(folder.glob("*.json"))[0]
    frame = json.loads(real.read_text())
    clean = read_openpose_frame(real)
    nan = json.loads(real.read_text())
    nan["people"][0]["pose_keypoints_2d"][3:6] = [float("nan")] * 3  # json writes NaN, as Python's does
    got = read_openpose_frame(_openpose(tmp_path / "nan.json", raw=json.dumps(nan)))
    assert np.array_equal(got[0, 1], [0, 0, 0])
    assert np.array_equal(np.delete(got, 1, axis=1), np.delete(clean, 1, axis=1))
    text = real.read_text()
    cut = _openpose(tmp_path / "cut.json", raw=text[: len(text) // 2])
    with pytest.raises(mgio.InputError, match=re.escape(str(cut))):
        read_openpose_frame(cut)
    frame["people"][0]["face_keypoints_2d"][7] = "0.5"
    worded = _openpose(tmp_path / "str.json", raw=json.dumps(frame))
    with pytest.raises(mgio.InputError, match=re.escape(f"{worded}: person 0: face_keypoints_2d")):
        read_openpose_frame(worded)


def test_malformed_openpose_at_pose_stage(demo_stores, tmp_path, capsys):
    """Through `mgpipe pose` (worker processes): one line naming the damaged frame file."""
    skeletons = tmp_path / "skeletons"
    shutil.copytree(demo_stores / "demo" / "skeletons", skeletons)
    manifest = pd.read_csv(demo_stores / "clips.csv", dtype={"video_id": str, "clip_id": str})
    row = manifest.iloc[len(manifest) // 2]
    damaged = skeletons / row.video_id / f"{row.video_id}_{row.start_frame + 1:012d}_keypoints.json"
    assert damaged.is_file()
    damaged.write_text(damaged.read_text().replace(",", ', "x",', 1))
    out = tmp_path / "keypoints.h5"
    rc, err = run_main(capsys, "pose", "--manifest", demo_stores / "clips.csv", "--skeletons", skeletons,
                       "--config", *BASE_CONFIG, "--out", out, "--threads", 2)
    assert_refused(rc, err, "pose", damaged)
    assert not out.exists() and temporaries(out) == []


def test_nan_and_huge_keypoints_do_not_distort_heatmaps(demo_stores, tmp_path, capsys):
    """NaN and 1e9 values in the frame files give the same keypoint store as the joint missing."""
    manifest = pd.read_csv(demo_stores / "clips.csv", dtype={"video_id": str, "clip_id": str})
    row = manifest.iloc[0]
    stores = {}
    for case, value in (("missing", 0.0), ("nan", float("nan")), ("huge", 1e9)):
        skeletons = tmp_path / case
        shutil.copytree(demo_stores / "demo" / "skeletons" / row.video_id, skeletons / row.video_id)
        for f in range(row.start_frame, row.end_frame + 1):
            path = skeletons / row.video_id / f"{row.video_id}_{f:012d}_keypoints.json"
            frame = json.loads(path.read_text())
            for person in frame["people"]:
                person["pose_keypoints_2d"][0:3] = [value, value, 0.0 if case == "missing" else 0.8]
            path.write_text(json.dumps(frame))
        one = tmp_path / f"{case}.csv"
        manifest.iloc[:1].to_csv(one, index=False)
        rc, err = run_main(capsys, "pose", "--manifest", one, "--skeletons", skeletons, "--config",
                           *BASE_CONFIG, "--out", tmp_path / f"{case}.h5")
        assert rc == 0, err
        with h5py.File(tmp_path / f"{case}.h5") as h5:
            stores[case] = h5[f"clips/{row.clip_id}/keypoints"][()]
    assert np.isfinite(stores["nan"]).all()
    assert np.array_equal(stores["nan"], stores["missing"])
    assert np.array_equal(stores["huge"], stores["missing"])


# ----------------------------------------------------------------------------- bad label rows
@pytest.mark.parametrize("case, change, expected", [
    ("end before start", {"start": 9, "end": 2}, "row 4"),
    ("non-numeric frame", {"start": "ten"}, "ten"),
    ("empty label", {"label": ""}, "row 4"),
    ("id with a slash", {"video": "../good1"}, "../good1"),
    ("start past the video", {"start": 500, "end": 600}, "500"),
    ("missing column", {"subject": None}, "subject"),
])
def test_bad_label_row_at_clips(case, change, expected, bad_videos, tmp_path, capsys):
    """A bad row of the label table stops `mgpipe clips` with one line naming the table (or the
    video the row points at) and the row."""
    folder = tmp_path / "videos"
    folder.mkdir()
    for name in ("good1", "good2", "good3"):
        shutil.copy(bad_videos["empty file"].parent / "good.mp4", folder / f"{name}.mp4")
    rows = [{"video": v, "start": 0, "end": 9, "label": i % 2 + 1, "subject": i + 1, "split": s}
            for i, (v, s) in enumerate([("good2", "train"), ("good3", "val"), ("good1", "test")])]
    rows[2].update(change)  # the third data row: line 4 of the file
    table = pd.DataFrame(rows)
    if change.get("subject", 0) is None:
        table = table.drop(columns=["subject"])
    labels = tmp_path / "labels.csv"
    table.to_csv(labels, index=False)
    cfg = write_yaml(tmp_path / "csv.yaml", {"dataset": {"kind": "csv", "time_unit": "frames"}})
    rc, err = run_main(capsys, "clips", "--labels", labels, "--videos", folder, "--config", *BASE_CONFIG,
                       cfg, "--out", tmp_path / "clips.csv", "--classes-out", tmp_path / "classes.csv")
    assert rc == 2, err
    line = error_line(err, "clips")
    assert str(labels) in line or str(folder) in line, line
    assert expected in line, line
    assert not (tmp_path / "clips.csv").exists()


# ----------------------------------------------------------------------------- concurrent runs
_GATE = '''

def _test_gate():
    """Test only (written into a copy of the workflow): hold the job until the test says go."""
    import os, pathlib, time

    gate = os.environ.get("MGPIPE_TEST_GATE")
    if gate:
        pathlib.Path(gate + ".waiting").touch()
        for _ in range(3000):
            if pathlib.Path(gate).exists():
                return
            time.sleep(0.1)
'''


def _tree(root: Path) -> dict:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_second_snakemake_run_is_refused_by_the_lock(tmp_path):
    from workflow_runs import make_workdir

    workdir = make_workdir(tmp_path / "wf")
    cli = workdir / "mgpipe" / "cli.py"
    text = cli.read_text()
    assert "def cmd_demo_data(args):\n" in text  # where the gate goes
    cli.write_text(text.replace("def cmd_demo_data(args):\n", "def cmd_demo_data(args):\n    _test_gate()\n", 1)
                   + _GATE)
    gate = tmp_path / "gate"
    env = dict(os.environ, PYTHONPATH=str(workdir), MGPIPE_TEST_GATE=str(gate))
    target = ["results/tiny/clips.csv", "--cores", "1", "--configfile", "tiny.yaml"]
    first = subprocess.Popen([sys.executable, "-m", "snakemake", *target], cwd=workdir, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        poll(lambda: Path(f"{gate}.waiting").exists(), "the first run's job to start", first)
        assert list((workdir / ".snakemake" / "locks").iterdir())
        before = _tree(workdir / "results")
        second = subprocess.run([sys.executable, "-m", "snakemake", *target], cwd=workdir, env=env,
                                capture_output=True, text=True, timeout=POLL_BOUND_S)
        said = second.stdout + second.stderr
        assert second.returncode != 0
        assert "Directory cannot be locked" in said, said
        assert "Traceback" not in said
        assert _tree(workdir / "results") == before  # the first run's files untouched
        assert first.poll() is None
    finally:
        gate.touch()
        out, _ = first.communicate(timeout=POLL_BOUND_S)
    assert first.returncode == 0, out
    assert (workdir / "results" / "tiny" / "clips.csv").is_file()
    again = subprocess.run([sys.executable, "-m", "snakemake", *target], cwd=workdir, env=env,
                           capture_output=True, text=True, timeout=POLL_BOUND_S)
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr
