"""Weights, caches and checkpoint files are untrusted input (issue 25, items 1, 2, 4, 7, 8, 10).

Hostile files are made from real files: a joint model trained here on the demo stores (mgpipe's
own checkpoint), its pyskl / MMAction2 export (mgpipe export-checkpoint) and a torchvision-format
Swin3D state dict. Each ends in one line naming the file through the real `mgpipe` command or
Snakemake (rc 2, no traceback, nothing written), never in code run from a cache, a memory bomb, a
silent cast or a NaN model with rc 0; the memory case runs in its own process and is measured.
"""

import json
import os
import pickle
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from test_reliability import error_line, run_main, write_yaml
from workflow_runs import make_workdir, smk

from mgpipe import config as mgconfig
from mgpipe.formats import checkpoints
from mgpipe.io import InputError
from mgpipe.learning import imbalance, specs
from mgpipe.learning.weights import initialise as tinit
from mgpipe.learning.weights import mmaction
from mgpipe.stages import train as train_mod

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "tests" / "data" / "tiny.yaml"
BOMB_BYTES = 2**30          # what the bomb inflates to
MEMORY_GROWTH_BOUND = 200 * 2**20
COULD_RUN_CODE = ("could run code", "weights_only=False")


def tiny_config():
    cfg = yaml.safe_load(TINY.read_text())
    cfg["pose_model"]["optim"].update(epochs=1)
    return mgconfig.validate(cfg)


@pytest.fixture(scope="module")
def real(demo_stores, tmp_path_factory):
    """A joint model trained on the demo stores (one epoch), its MMAction2 export, its config."""
    root = tmp_path_factory.mktemp("weights")
    cfg = tiny_config()
    train_mod.run("joint", cfg, manifest_csv=demo_stores / "clips.csv", classes_csv=demo_stores / "classes.csv",
                  frames_h5=demo_stores / "frames.h5", keypoints_h5=demo_stores / "keypoints.h5",
                  out_dir=root / "joint", state_dir=root / "joint" / "state", progress=False)
    mmaction.export(root / "joint" / "model.pt", root / "joint_mmaction.pth")
    return {"model": root / "joint" / "model.pt", "pyskl": root / "joint_mmaction.pth", "config": cfg,
            "stores": demo_stores}


def trusted(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def train_args(real, init, out):
    s = real["stores"]
    return ["train", "joint", "--config", str(TINY), "--manifest", s / "clips.csv", "--classes", s / "classes.csv",
            "--keypoints", s / "keypoints.h5", "--init", init, "--out-dir", out]


def mgpipe_test_args(real, model, out, *configs, base=TINY):
    s = real["stores"]
    return ["test", model, "--config", str(base), *configs, "--manifest", s / "clips.csv",
            "--keypoints", s / "keypoints.h5", "--out", out]


def plan_lines(stderr: str) -> list:
    """Snakemake's stderr lines less its note on the workflow's profile."""
    return [l for l in stderr.splitlines() if l.strip() and not l.startswith("Using workflow specific profile")]


def refused(rc, err, command, path) -> str:
    """rc 2 and exactly one error line naming the file, no traceback."""
    assert rc == 2, err[-3000:]
    line = error_line(err, command)
    assert line.startswith(f"mgpipe {command}: error: {path}: "), line
    return line


def refused_as_init(capsys, real, tmp_path, init) -> str:
    out = tmp_path / "out"
    rc, err = run_main(capsys, *train_args(real, init, out))
    line = refused(rc, err, "train", init)
    written = [f for f in out.rglob("*") if f.is_file() and f.name != "lock"] if out.exists() else []
    assert not written, f"nothing is written for a refused init: {written}"
    return line


def refused_as_model(capsys, real, tmp_path, model, *configs, base=TINY) -> str:
    out = tmp_path / "scores.csv"
    rc, err = run_main(capsys, *mgpipe_test_args(real, model, out, *configs, base=base))
    line = refused(rc, err, "test", model)
    assert not out.exists()
    return line


# ---- item 10: files that are no checkpoint -------------------------------------------------------

def _not_a_checkpoint(kind: str, path: Path, real) -> Path:
    if kind == "HDF5":
        import shutil
        shutil.copy(real["stores"] / "keypoints.h5", path)
    elif kind == "gzip":
        import gzip
        path.write_bytes(gzip.compress(real["pyskl"].read_bytes()))
    elif kind == "CSV text":
        path.write_bytes((real["stores"] / "clips.csv").read_bytes())
    elif kind == "a plain Python pickle":
        path.write_bytes(pickle.dumps({"state_dict": {"backbone.conv1.conv.weight": np.zeros(3)}}))
    else:  # torch's legacy format: storages sized by the pickle's own claims
        torch.save({"state_dict": {"backbone.conv1.conv.weight": torch.zeros(3)}}, path,
                   _use_new_zipfile_serialization=False)
    return path


@pytest.mark.parametrize("kind", ["HDF5", "gzip", "CSV text", "a plain Python pickle", "torch's legacy"])
def test_a_file_that_is_no_checkpoint_is_named_for_what_it_looks_like(real, tmp_path, capsys, kind):
    init = _not_a_checkpoint(kind, tmp_path / "init.pth", real)
    line = refused_as_init(capsys, real, tmp_path, init)
    assert f"not a PyTorch checkpoint (looks like {kind}" in line, line
    assert not any(w in line for w in COULD_RUN_CODE), line
    model = _not_a_checkpoint(kind, tmp_path / "model.pt", real)
    line = refused_as_model(capsys, real, tmp_path, model)
    assert f"not a PyTorch checkpoint (looks like {kind}" in line and not any(w in line for w in COULD_RUN_CODE)


# ---- item 2: memory bombs -------------------------------------------------------------------------

def _rezip(src: Path, dst: Path, deflate=()) -> Path:
    """A copy of torch zip `src` whose records named in `deflate` are deflated."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            kind = zipfile.ZIP_DEFLATED if any(info.filename.endswith(k) for k in deflate) else zipfile.ZIP_STORED
            zout.writestr(info.filename, data, compress_type=kind)
    return dst


def _bomb(path: Path) -> Path:
    small = path.with_suffix(".small")
    torch.save({"state_dict": {"backbone.conv1.conv.weight": torch.zeros(4)}}, small)
    _rezip_deflated(small, path)
    small.unlink()
    return path


def _rezip_deflated(src: Path, dst: Path) -> None:
    """data/0 deflated from BOMB_BYTES zero bytes (zipfile's own streaming writer, level 9)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", compression=zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            if info.filename.endswith("/data/0"):
                out = zipfile.ZipInfo(info.filename)
                out.compress_type = zipfile.ZIP_DEFLATED
                with zout.open(out, "w", force_zip64=True) as f:
                    block = bytes(2**24)
                    for _ in range(BOMB_BYTES // len(block)):
                        f.write(block)
            else:
                zout.writestr(info.filename, zin.read(info.filename))


# Peak memory is read as VmHWM, the high-water mark of this process's own address space, which
# starts afresh at exec. Not ru_maxrss: Linux carries the parent's peak into a child across
# fork/vfork + exec, so a child of a big pytest worker starts with the worker's peak and a growth
# below it reads as 0 (the control below once measured 0 MB that way and failed).
_PEAK_KB = "int(open('/proc/self/status').read().split('VmHWM:')[1].split()[0])"

_MEASURED = f"""
import json, sys
import mgpipe.stages.train, mgpipe.stages.score, mgpipe.cli  # (imports before the measurement)
before = {_PEAK_KB}
try:
    rc = mgpipe.cli.main(sys.argv[2:])
finally:
    after = {_PEAK_KB}
    open(sys.argv[1], "w").write(json.dumps({{"growth_kb": after - before}}))
sys.exit(rc)
"""


def test_a_deflated_record_that_would_inflate_to_1_gib_is_refused_within_200_mb(real, tmp_path):
    bomb = _bomb(tmp_path / "bomb.pth")
    assert bomb.stat().st_size < 2 * 2**20   # ~1 MB on disk
    with zipfile.ZipFile(bomb) as z:
        assert max(i.file_size for i in z.infolist()) == BOMB_BYTES
    for command, args in (("train", train_args(real, bomb, tmp_path / "out")),
                          ("test", mgpipe_test_args(real, bomb, tmp_path / "scores.csv"))):
        report = tmp_path / f"{command}.json"
        proc = subprocess.run([sys.executable, "-c", _MEASURED, str(report), "-q", *map(str, args)],
                              capture_output=True, text=True, timeout=300,
                              env=dict(os.environ, PYTHONPATH=str(REPO)))
        line = refused(proc.returncode, proc.stderr, command, bomb)
        assert "is compressed (torch.save never compresses; it could inflate far beyond the file)" in line
        growth = json.loads(report.read_text())["growth_kb"] * 1024
        print(f"\nbomb ({bomb.stat().st_size / 2**20:.1f} MB -> {BOMB_BYTES / 2**30:.0f} GiB) through "
              f"mgpipe {command}: {line}\n  peak RSS growth {growth / 2**20:.1f} MB")
        assert growth < MEMORY_GROWTH_BOUND, growth
    assert not (tmp_path / "out" / "model.pt").exists() and not (tmp_path / "scores.csv").exists()
    # the control: torch.load itself inflates the record (the bound above is mgpipe's check)
    control = (f"import sys, torch\nbefore = {_PEAK_KB}\n"
               "try:\n    torch.load(sys.argv[1], weights_only=True)\nexcept Exception:\n    pass\n"
               f"print({_PEAK_KB} - before)")
    proc = subprocess.run([sys.executable, "-c", control, str(bomb)], capture_output=True, text=True, timeout=300)
    unguarded = int(proc.stdout.split()[-1]) * 1024
    print(f"  the same file through torch.load directly: peak RSS growth {unguarded / 2**20:.0f} MB")
    assert unguarded > 2 * MEMORY_GROWTH_BOUND


def test_zip_records_torch_never_writes_are_refused_before_torch_reads_them(real, tmp_path):
    # a deflated data.pkl; a central directory claiming more than the file
    deflated = _rezip(real["pyskl"], tmp_path / "deflated.pth", deflate=("data.pkl",))
    with pytest.raises(InputError, match=r"record .*data\.pkl is compressed"):
        mmaction.read(deflated)
    raw = bytearray(real["pyskl"].read_bytes())
    at = raw.find(b"PK\x01\x02")
    while at != -1:   # the central entry of data.pkl: its uncompressed size (offset 24) to 2 GiB
        name_len = int.from_bytes(raw[at + 28:at + 30], "little")
        if raw[at + 46:at + 46 + name_len].decode().endswith("data.pkl"):
            raw[at + 24:at + 28] = (2**31).to_bytes(4, "little")
            break
        at = raw.find(b"PK\x01\x02", at + 4)
    forged = tmp_path / "forged.pth"
    forged.write_bytes(bytes(raw))
    with pytest.raises(InputError) as e:
        mmaction.read(forged)
    assert str(e.value).startswith(f"{forged}: ") and "\n" not in str(e.value)
    assert "2147483648 bytes in a file of" in str(e.value) or "damaged zip" in str(e.value), str(e.value)


def test_snakemake_refuses_a_bomb_at_plan_time_in_one_line(real, tmp_path):
    work = make_workdir(tmp_path / "wf")
    _bomb(work / "bomb.pt")
    (work / "init.yaml").write_text("init: {joint: bomb.pt}\n")
    proc = smk(work, "-n", "--cores", "1", "--configfile", "tiny.yaml", "init.yaml", check=False)
    lines = plan_lines(proc.stderr)
    assert proc.returncode != 0 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert lines[0].startswith("mgpipe: config key init.joint: bomb.pt: init checkpoint refused: its record ")
    assert "is compressed" in lines[0]


# ---- item 4: non-finite and odd tensors ----------------------------------------------------------

def _with_tensor(src: Path, dst: Path, where: str, make) -> Path:
    """A copy of checkpoint `src` whose tensor `where` (a BatchNorm statistic, a weight) is
    replaced by make(tensor)."""
    obj = trusted(src)
    state = obj["state_dict"] if "state_dict" in obj else obj["model"]
    key = next(k for k in state if k.endswith(where))
    state[key] = make(state[key])
    torch.save(obj, dst)
    return dst


ODD = {
    "NaN": ("running_var", lambda t: t.clone().fill_(float("nan")), "holds NaN"),
    "inf": ("conv1.conv.weight", lambda t: t.clone().fill_(float("inf")), "holds infinite values"),
    "complex": ("conv1.conv.weight", lambda t: t.to(torch.complex64), "holds a complex tensor (complex64"),
    "integer": ("conv1.conv.weight", lambda t: t.to(torch.int32), "int32 values for a floating-point tensor (not cast)"),
    "bool": ("conv1.conv.weight", lambda t: t.bool(), "bool values for a floating-point tensor (not cast)"),
    "meta": ("conv1.conv.weight", lambda t: t.to("meta"), "holds a meta tensor (a shape without values)"),
    "sparse": ("conv1.conv.weight", lambda t: t.to_sparse(), "holds a sparse tensor (sparse_coo)"),
    "broadcast": ("conv1.conv.weight", lambda t: t.flatten()[:1].clone().expand(t.shape), "a broadcast view"),
}


@pytest.mark.parametrize("odd", list(ODD))
def test_non_finite_and_odd_tensors_in_an_init_file_are_refused(real, tmp_path, capsys, odd):
    where, make, expected = ODD[odd]
    init = _with_tensor(real["pyskl"], tmp_path / "init.pth", where, make)
    line = refused_as_init(capsys, real, tmp_path, init)
    assert expected in line and "learning rate" not in line, line


@pytest.mark.parametrize("odd", ["NaN", "inf", "integer", "sparse"])
def test_non_finite_and_odd_tensors_in_a_model_are_refused_by_test(real, tmp_path, capsys, odd):
    where, make, expected = ODD[odd]
    where = {"running_var": "bn1.running_var", "conv1.conv.weight": "stem.0.weight"}[where]
    model = _with_tensor(real["model"], tmp_path / "model.pt", where, make)
    line = refused_as_model(capsys, real, tmp_path, model)
    assert expected in line, line


def test_nan_logits_and_probabilities_are_one_line_never_empty_cells(real, tmp_path, capsys):
    """A finite model whose logits overflow float32 (weights of 1e38): refused at the first
    batch's logits, no score file."""
    obj = trusted(real["model"])
    obj["model"]["backbone.stem.0.weight"] = torch.full_like(obj["model"]["backbone.stem.0.weight"], 3e38)
    obj["model"]["head.fc.weight"] = torch.full_like(obj["model"]["head.fc.weight"], 3e38)
    torch.save(obj, tmp_path / "model.pt")
    line = refused_as_model(capsys, real, tmp_path, tmp_path / "model.pt")
    assert "the model's logits are NaN or infinite on joint val" in line or "on joint test" in line, line


@pytest.mark.parametrize("layout, expected", [
    ({"joints": ["nose", "nose"]}, "names joint 'nose' twice"),
    ({"limbs": [[0, 99]]}, "has limb [0, 99], which is not two different joints of its"),
    ({"limbs": [[-1, 2]]}, "has limb [-1, 2]"),
])
def test_a_recorded_layout_with_duplicate_joints_or_limbs_out_of_range_is_one_line(real, tmp_path, capsys,
                                                                                  layout, expected):
    obj = trusted(real["model"])
    record = dict(obj["layout"])
    if "joints" in layout:
        record["joints"] = ["nose", "nose"] + record["joints"][2:]
    else:
        record["limbs"] = layout["limbs"] + record["limbs"][1:]
    obj["layout"] = record
    torch.save(obj, tmp_path / "model.pt")
    line = refused_as_init(capsys, real, tmp_path, tmp_path / "model.pt")
    assert f"its recorded keypoint layout {expected}" in line, line
    line = refused_as_model(capsys, real, tmp_path, tmp_path / "model.pt")
    assert f"its recorded keypoint layout {expected}" in line, line


def test_nan_weights_after_training_are_blamed_on_the_init_when_the_init_was_nan(real, tmp_path, capsys):
    init = _with_tensor(real["model"], tmp_path / "init.pt", "head.fc.weight", lambda t: t.clone().fill_(float("nan")))
    line = refused_as_init(capsys, real, tmp_path, init)
    assert "tensor model.head.fc.weight holds NaN" in line and "learning rate" not in line, line


# ---- item 8: records of the wrong type or size ----------------------------------------------------

@pytest.mark.parametrize("field, value, expected", [
    ("arch", "single", "'arch' is not an architecture record"),
    ("arch", {"type": 5}, "'arch' is not an architecture record"),
    ("num_classes", 10**400, "'num_classes' is 10000000000000000000..., expected an integer 1..1000000"),
    ("name", 7, "'name' is not a string"),
])
def test_a_model_record_of_the_wrong_type_is_one_line(real, tmp_path, capsys, field, value, expected):
    obj = trusted(real["model"])
    obj[field] = value
    torch.save(obj, tmp_path / "model.pt")
    assert expected in refused_as_init(capsys, real, tmp_path, tmp_path / "model.pt")
    assert expected in refused_as_model(capsys, real, tmp_path, tmp_path / "model.pt")


def test_a_recorded_class_count_of_10_to_the_400_with_logit_adjustment_is_one_line(real, tmp_path, capsys):
    obj = trusted(real["model"])
    obj["train_class_counts"] = [10**400] + obj["train_class_counts"][1:]
    torch.save(obj, tmp_path / "model.pt")
    adjust = write_yaml(tmp_path / "adjust.yaml", {"test": {"logit_adjust": 1.0}})
    line = refused_as_model(capsys, real, tmp_path, tmp_path / "model.pt", adjust)
    assert "its recorded training class counts hold 100000000000... (401 digits), not a clip count" in line, line
    with pytest.raises(InputError, match="not a clip count"):   # predict's path (the same function)
        imbalance.logit_offset(obj, tmp_path / "model.pt", 1.0)


def test_recorded_input_sizes_are_held_to_the_memory_guard_in_test(real, tmp_path, capsys):
    obj = trusted(real["model"])
    obj["inputs"] = {**obj["inputs"], "pose_model.input.frames": 256, "pose_model.input.test_size": 1024}
    torch.save(obj, tmp_path / "model.pt")
    # a config that leaves the input sizes to the model (as the workflow's test jobs do)
    bare = write_yaml(tmp_path / "bare.yaml", {"test": {"batch_size": 8}})
    out = tmp_path / "scores.csv"
    rc, err = run_main(capsys, *mgpipe_test_args(real, tmp_path / "model.pt", out, base=bare))
    assert rc == 2 and not out.exists(), err[-3000:]
    line = error_line(err, "test")
    assert line.startswith(f"mgpipe test: error: {tmp_path / 'model.pt'} (its recorded input settings): "
                           "config key pose_model.input.test_size: 1024 needs "), line
    assert "GiB for one" in line and "at most 4.0 GiB fits (pose_model.input.test_size <= " in line, line


# ---- items 1 and 7: plan time ------------------------------------------------------------------------

def test_snakemake_refuses_at_plan_time_what_only_the_training_job_found(real, tmp_path, monkeypatch):
    """An init whose shapes do not fit, a swin.weights file of another variant, init.fused from a
    single-pathway model, a weight name that is not cached: one line each at `snakemake -n`."""
    work = make_workdir(tmp_path / "wf")
    wide = mgconfig.load(work / "tiny.yaml")
    wide["pose_model"]["network"]["base_channels"] = 8
    arch = specs.get("joint").network(wide, (17, 19))
    mmaction_state, _ = mmaction.export_state(specs.build(arch, 5), arch)
    torch.save({"state_dict": mmaction_state}, work / "wide.pth")
    torch.save({"patch_embed.proj.weight": torch.zeros(128, 3, 2, 4, 4)}, work / "swin_b.pth")
    import shutil
    shutil.copy(real["pyskl"], work / "joint.pth")
    cases = [
        ("init: {joint: wide.pth}", "init.joint: wide.pth: backbone.conv1.conv.weight has shape (8, 17, 1, 7, 7)"
                                    ", the model's backbone.stem.0.weight (4, 17, 1, 7, 7): another architecture"),
        ("swin: {weights: swin_b.pth}", "swin.weights: swin_b.pth: patch_embed.proj.weight has shape "
                                        "(128, 3, 2, 4, 4), the model's (96, 3, 2, 4, 4): weights of another Swin3D variant"),
        ("init: {fused: joint.pth}", "init.fused: joint.pth: no tensor of the pyskl / MMAction2 ResNet3dSlowOnly "
                                     "checkpoint matches the model (RGBPoseConv3D names); a fused model starts from"),
        ("swin: {weights: KINETICS400_V1}", "swin.weights: torchvision weight KINETICS400_V1: swin3d_t-7615ae03.pth "
                                            "is not in torch's cache"),
    ]
    env_home = tmp_path / "torch_home"
    for text, expected in cases:
        (work / "init.yaml").write_text(text + "\n")
        env = dict(os.environ, PYTHONPATH=str(work), TORCH_HOME=str(env_home))
        proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--configfile",
                               "tiny.yaml", "init.yaml"], cwd=work, env=env, capture_output=True, text=True,
                              timeout=600)
        lines = plan_lines(proc.stderr)
        assert proc.returncode != 0 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
        assert lines[0].startswith("mgpipe: config key ") and expected in lines[0], lines[0]
        print(f"\nsnakemake -n ({text}): {lines[0][:400]}")
    assert not (work / "results").exists()


def test_a_cached_weight_name_is_a_rule_input_and_in_the_fingerprint(tmp_path):
    """A weight name resolves to its hash-checked file in torch's cache: an input of the training
    job (a new file retrains the member) and so in the training fingerprint; the job is given
    the name (--init-weights) and checks the file's hash itself."""
    import hashlib

    work = make_workdir(tmp_path / "wf")
    home = tmp_path / "torch_home"
    cache = home / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    # the published name carries the file's sha256 prefix; this forged file cannot have
    # torchvision's (7615ae03), so it is refused: the plan names the hash
    net = specs.build(specs.get("swin").network({**mgconfig.load(work / "tiny.yaml")}, (17, 19)), 3).net
    torch.save(net.state_dict(), cache / "swin3d_t-7615ae03.pth")
    digest = hashlib.sha256((cache / "swin3d_t-7615ae03.pth").read_bytes()).hexdigest()
    (work / "init.yaml").write_text("swin: {weights: KINETICS400_V1}\n")
    env = dict(os.environ, PYTHONPATH=str(work), TORCH_HOME=str(home))
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--configfile", "tiny.yaml",
                           "init.yaml"], cwd=work, env=env, capture_output=True, text=True, timeout=600)
    lines = plan_lines(proc.stderr)
    assert proc.returncode != 0 and len(lines) == 1, proc.stderr[-3000:]
    assert f"the file's sha256 {digest[:12]}... does not begin with 7615ae03" in lines[0], lines[0]
    # a file that does carry its hash (what torch.hub writes) is the rule input, the name the job's --init-weights
    # (the real file is 120 MB and offline here: the URL's name is made to carry this file's hash)
    digest = hashlib.sha256((cache / "swin3d_t-7615ae03.pth").read_bytes()).hexdigest()
    (cache / "swin3d_t-7615ae03.pth").rename(cache / f"swin3d_t-{digest[:8]}.pth")
    (work / "mgpipe" / "models" / "swin.py").write_text(
        (work / "mgpipe" / "models" / "swin.py").read_text().replace(
            "    return weights_enum(variant)[name].url",
            f"    return 'https://download.pytorch.org/models/swin3d_t-{digest[:8]}.pth'"))
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", "-p", "--cores", "1", "--configfile",
                           "tiny.yaml", "init.yaml"], cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "--init-weights KINETICS400_V1" in proc.stdout, proc.stdout[-3000:]
    inputs = [line for line in proc.stdout.splitlines() if line.strip().startswith("input:")]
    assert any(str(cache / f"swin3d_t-{digest[:8]}.pth") in line for line in inputs), proc.stdout[-3000:]


# ---- the fuzz --------------------------------------------------------------------------------------
# Seeded mutations of the three real kinds of weights files (an mgpipe model, its MMAction2 export,
# a torchvision-format Swin3D state dict): tensors (dtypes, shapes, non-finite values, meta, sparse,
# broadcast views), records (arch, num_classes, layout, class counts, inputs), pickles (objects,
# non-tensor values, a global that would run code) and the zip container (records deflated,
# sizes forged, bytes flipped, cut, inserted). Every file is read or refused in one InputError
# line naming it; any other outcome (an exception, a line not naming the file, an allocation
# beyond the bound, code run) fails the test.
FUZZ_SEED = 25
FUZZ_FIELDS, FUZZ_BYTES = 300, 150


class _Marker:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


# (the address-space bound of the pickle fuzz, the same 1 GiB of headroom)
from test_untrusted_pickles import _MemoryBound  # noqa: E402


def _odd_tensor(rng, t: torch.Tensor):
    ops = [
        lambda: t.to(torch.int64), lambda: t.to(torch.int32), lambda: t.bool(), lambda: t.to(torch.uint8),
        lambda: t.to(torch.complex64), lambda: t.half(), lambda: t.double(), lambda: t.bfloat16(),
        lambda: t.clone().fill_(float("nan")) if t.is_floating_point() else t,
        lambda: t.clone().index_fill_(0, torch.tensor([0]), float("inf")) if t.is_floating_point() and t.dim() else t,
        lambda: t.to("meta"), lambda: t.to_sparse() if t.dim() else t,
        lambda: t.flatten()[:1].clone().expand(t.shape) if t.numel() and t.dim() else t, lambda: t.reshape(-1),
        lambda: t[:1] if t.dim() else t, lambda: t.unsqueeze(0), lambda: t.transpose(0, -1) if t.dim() > 1 else t,
        lambda: torch.zeros(0), lambda: t * 1e30, lambda: t.clone(),
        lambda: "abc", lambda: None, lambda: 3.5, lambda: [t], lambda: t.numpy() if t.dim() else 1,
    ]
    return ops[rng.integers(len(ops))]()


def _odd_value(rng, marker):
    values = ["single", 5, None, 10**400, -3, 0, True, 2.5, float("nan"), [], {}, {"type": 5}, {"type": "single"},
              ["a"], "x" * 1000, {"name": "x", "joints": ["a", "a"], "limbs": []},
              {"name": "x", "joints": ["a", "b"], "limbs": [[0, 9]]}, {"name": 3, "joints": [], "limbs": [[0]]},
              [10**400, 1], [-1, 2], [{"label_id": "x"}], {"pose_model.input.test_size": 10**9},
              {"pose_model.input.frames": 256, "pose_model.input.test_size": 1024}, _Marker(marker)]
    return values[rng.integers(len(values))]


def _mutate_object(rng, obj: dict, marker) -> dict:
    for _ in range(rng.integers(1, 4)):
        op = rng.integers(8)
        state = obj.get("model") if isinstance(obj.get("model"), dict) else \
            obj.get("state_dict") if isinstance(obj.get("state_dict"), dict) else obj
        keys = [k for k, v in state.items() if isinstance(v, torch.Tensor)]
        if op <= 3 and keys:
            key = keys[rng.integers(len(keys))]
            state[key] = _odd_tensor(rng, state[key])
        elif op == 4 and keys:
            key = keys[rng.integers(len(keys))]
            state[key + ("_x" if rng.random() < 0.5 else "")] = state.pop(key)
        elif op == 5:
            fields = [k for k in obj if k not in ("model", "state_dict")] or ["meta"]
            obj[fields[rng.integers(len(fields))]] = _odd_value(rng, marker)
        elif op == 6:
            for field in ("arch", "num_classes", "name", "layout", "inputs", "train_class_counts", "classes"):
                if field in obj and rng.random() < 0.3:
                    obj[field] = _odd_value(rng, marker)
        else:
            choice = rng.integers(4)
            if choice == 0:
                obj = [obj] if rng.random() < 0.5 else {"checkpoint": obj}
            elif choice == 1 and keys:
                state[keys[rng.integers(len(keys))]] = _Marker(marker)
            elif choice == 2:
                obj.pop(("model", "state_dict", "arch", "name", "layout")[rng.integers(5)], None)
            elif keys:
                state["module." + keys[0]] = state[keys[0]]
        if not isinstance(obj, dict):
            break
    return obj


def _mutate_container(rng, src: Path, dst: Path) -> None:
    raw = bytearray(src.read_bytes())
    op = rng.integers(6)
    if op == 0:   # a record deflated (torch never writes one)
        with zipfile.ZipFile(src) as z:
            names = [i.filename for i in z.infolist()]
        _rezip(src, dst, deflate=(names[rng.integers(len(names))],))
        return
    if op == 1:   # a size field of a central or local header forged
        at = raw.find(b"PK\x01\x02") if rng.random() < 0.5 else raw.find(b"PK\x03\x04")
        offset = 24 if raw[at:at + 4] == b"PK\x01\x02" else 22
        raw[at + offset:at + offset + 4] = int(rng.choice([0, 2**31, 2**32 - 1, 7])).to_bytes(4, "little")
    elif op == 2:
        for i in rng.integers(len(raw), size=rng.integers(1, 9)):
            raw[i] = int(rng.integers(256))
    elif op == 3:
        raw = raw[:int(rng.integers(len(raw)))]
    elif op == 4:
        at = int(rng.integers(len(raw)))
        raw[at:at] = bytes(rng.integers(256, size=int(rng.integers(1, 64))).astype(np.uint8))
    else:   # bytes inside data.pkl (the pickle) flipped
        at = raw.find(b"data.pkl")
        start = at + len(b"data.pkl")
        for i in rng.integers(start, min(len(raw), start + 400), size=rng.integers(1, 6)):
            raw[i] = int(rng.integers(256))
    dst.write_bytes(bytes(raw))


def _swin_subset():
    """A torchvision-format Swin3D state dict: swin3d_t's first stages (as torchvision names
    them), small enough to fuzz."""
    model = specs.build(specs.get("swin").network({**mgconfig.defaults(), "swin": {
        **mgconfig.defaults()["swin"], "variant": "t"}}, (17, 19)), 3)
    state = model.net.state_dict()
    keep = [k for k in state if k.startswith(("patch_embed.", "features.0.", "features.1."))]
    return {k: state[k].clone() for k in keep}


def test_fuzzed_weights_files_are_read_or_refused_in_one_line(real, tmp_path):
    from mgpipe.learning.inference import load_model
    from mgpipe.models.swin import _read_file

    started = time.process_time()
    rng = np.random.default_rng(FUZZ_SEED)
    cfg = real["config"]
    record = trusted(real["model"])["layout"]
    from mgpipe.layouts import Layout
    layout = Layout(record["name"], tuple(record["joints"]), tuple(map(tuple, record["limbs"])))
    arch = specs.get("joint").network(cfg, (layout.num_joints, layout.num_limbs))
    swin_path = tmp_path / "swin_subset.pth"
    torch.save(_swin_subset(), swin_path)
    bases = {"mgpipe": real["model"], "pyskl": real["pyskl"], "torchvision": swin_path}
    marker = tmp_path / "marker"

    def exercise(kind, path):
        if kind == "torchvision":
            _read_file(path)
            return
        model = specs.build(arch, 5)
        tinit.initialise(model, arch, path, channels="joint", target_layout=layout)
        if kind == "mgpipe":
            _, ckpt, spec = load_model(path)
            checkpoints.fit_config(ckpt, path, cfg)
            checkpoints.check_layout(ckpt, path, spec, layout, "the store")
            imbalance.logit_offset(ckpt, path, 1.0)

    counts, failures = {}, []
    with _MemoryBound():
        for i in range(FUZZ_FIELDS + FUZZ_BYTES):
            kind = list(bases)[i % 3]
            path = tmp_path / f"m{i}.pth"
            if i < FUZZ_FIELDS:
                obj = _mutate_object(rng, trusted(bases[kind]), marker)
                try:
                    torch.save(obj, path)
                except Exception:   # noqa: BLE001 - a mutation torch cannot write is no case
                    counts.setdefault("not made", 0)
                    counts["not made"] += 1
                    continue
                family = "fields"
            else:
                _mutate_container(rng, bases[kind], path)
                family = "container"
            tally = counts.setdefault(f"{kind} {family}", {"read": 0, "refused": 0, "other": 0})
            try:
                exercise(kind, path)
                tally["read"] += 1
            except InputError as e:
                message = str(e)
                if message.startswith(f"{path}: ") and "\n" not in message and "MemoryError" not in message:
                    tally["refused"] += 1
                else:
                    tally["other"] += 1
                    failures.append(f"{path.name} ({kind} {family}): not one line naming the file: {message[:300]!r}")
            except Exception as e:   # noqa: BLE001 - what the fuzz exists to catch
                tally["other"] += 1
                failures.append(f"{path.name} ({kind} {family}): {type(e).__name__}: {str(e)[:300]}")
            path.unlink()
    totals = {k: sum(v[k] for n, v in counts.items() if n != "not made") for k in ("read", "refused", "other")}
    report = (f"weights fuzz (seed {FUZZ_SEED}, {time.process_time() - started:.1f} s CPU): "
              f"{sum(totals.values())} mutations: {totals['read']} read, {totals['refused']} refused in one line, "
              f"{totals['other']} other; by base: "
              + "; ".join(f"{k}: {v}" for k, v in counts.items()))
    print("\n" + report)
    if os.environ.get("MGPIPE_FUZZ_REPORT"):
        with open(os.environ["MGPIPE_FUZZ_REPORT"], "a") as f:
            f.write(report + "\n")
    assert not marker.exists(), "a mutated file ran code"
    assert not failures, f"{len(failures)} mutated file(s) not read or refused in one line:\n" + "\n".join(failures[:20])
    for name, v in counts.items():
        if name != "not made":
            assert v["refused"] > 0, (name, v)
    assert totals["read"] > 0
