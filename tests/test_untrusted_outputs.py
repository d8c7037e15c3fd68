"""Outputs, folders, shard counts, score files, config files and launcher settings are
untrusted too (issue 25, items 3, 5, 6, 8, 9, 10): each case ends in one line naming the file
and the problem (rc 2, no traceback), with nothing written and nothing lost."""

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from conftest import run_cli

from mgpipe import config as mgconfig
from mgpipe import io as mgio
from mgpipe.formats import scores
from mgpipe.learning import specs

REPO = Path(__file__).resolve().parents[1]


def _one_line(rc, err, command):
    assert rc == 2, err
    assert err.startswith(f"mgpipe {command}: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err


def _manifest(path, videos=2):
    rows = [{"clip_id": f"v{v}_c{c}", "video_id": f"v{v}", "label": c, "split": "train"}
            for v in range(videos) for c in range(2)]
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


# ---- item 5: outputs replace only regular files ----------------------------------------------

@pytest.mark.parametrize("kind", ["device", "symlink", "fifo", "directory"])
def test_an_output_never_replaces_what_is_not_a_regular_file(tmp_path, capsys, kind):
    target = tmp_path / "user.csv"
    target.write_text("the user's file\n")
    out = tmp_path / "out.h5"
    if kind == "device":
        out = Path("/dev/null")
    elif kind == "symlink":
        out.symlink_to(target)
    elif kind == "fifo":
        os.mkfifo(out)
    else:
        out.mkdir()
    before = os.lstat(out)
    store = tmp_path / "0.h5"
    store.write_bytes(b"")
    rc, err = run_cli(capsys, "gather", "keypoints", store, "--out", out)
    _one_line(rc, err, "gather")
    what = {"device": "a character device", "symlink": "a symbolic link", "fifo": "a FIFO",
            "directory": "a directory"}[kind]
    assert f"--out {out}: refusing to write the output: it is {what}" in err, err
    after = os.lstat(out)
    assert (after.st_mode, after.st_ino, after.st_rdev) == (before.st_mode, before.st_ino, before.st_rdev)
    assert target.read_text() == "the user's file\n"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.h5.")]   # no temporary left


@pytest.mark.parametrize("kind", ["symlink", "fifo"])
def test_the_atomic_writer_itself_refuses(tmp_path, kind):
    """The cause: every writer goes through io.atomic_path, which replaces regular files only."""
    target, out = tmp_path / "target.txt", tmp_path / "out.txt"
    target.write_text("kept\n")
    out.symlink_to(target) if kind == "symlink" else os.mkfifo(out)
    with pytest.raises(mgio.InputError, match="refusing to write the output: it is a"):
        mgio.write_text(out, "new\n")
    assert target.read_text() == "kept\n" and not stat.S_ISREG(os.lstat(out).st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt", "target.txt"]
    regular = tmp_path / "regular.txt"
    regular.write_text("old\n")
    mgio.write_text(regular, "new\n")
    assert regular.read_text() == "new\n"


def test_shard_never_touches_numbered_csvs_it_did_not_write(tmp_path, capsys):
    manifest = _manifest(tmp_path / "clips.csv", videos=4)
    folder = tmp_path / "mine"
    folder.mkdir()
    for name in ("0.csv", "7.csv"):
        (folder / name).write_text(f"the user's {name}\n")
    rc, err = run_cli(capsys, "shard", "--manifest", manifest, "--shards", "2", "--out-dir", folder)
    _one_line(rc, err, "shard")
    assert "refusing to write shard slices into a folder this command did not make" in err, err
    assert sorted(p.name for p in folder.iterdir()) == ["0.csv", "7.csv"]
    assert all((folder / n).read_text() == f"the user's {n}\n" for n in ("0.csv", "7.csv"))
    # a folder the command made is its own: it rewrites and removes its slices there
    own = tmp_path / "slices"
    assert run_cli(capsys, "shard", "--manifest", manifest, "--shards", "3", "--out-dir", own)[0] == 0
    assert sorted(p.name for p in own.iterdir()) == [".mgpipe-shard-slices", "0.csv", "1.csv", "2.csv"]
    assert run_cli(capsys, "shard", "--manifest", manifest, "--shards", "2", "--out-dir", own)[0] == 0
    assert sorted(p.name for p in own.iterdir()) == [".mgpipe-shard-slices", "0.csv", "1.csv"]


# ---- item 6: shard counts --------------------------------------------------------------------

@pytest.mark.parametrize("shards", ["1000000000", "4097", "0", "-3"])
def test_a_huge_shard_count_is_one_line_at_once(tmp_path, shards):
    manifest = _manifest(tmp_path / "clips.csv")
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-m", "mgpipe", "shard", "--manifest", str(manifest),
                           "--shards", shards, "--out-dir", str(tmp_path / "s")],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path,
                          env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert time.time() - t0 < 60
    _one_line(proc.returncode, proc.stderr, "shard")
    assert f"data.shards is {shards}; use 1 to 4096" in proc.stderr, proc.stderr
    assert not (tmp_path / "s").exists()


def test_more_shards_than_videos_is_refused_before_any_slice(tmp_path, capsys):
    manifest = _manifest(tmp_path / "clips.csv", videos=2)
    rc, err = run_cli(capsys, "shard", "--manifest", manifest, "--shards", "3", "--out-dir", tmp_path / "s")
    _one_line(rc, err, "shard")
    assert "data.shards 3 is more than the 2 videos of the manifest" in err, err
    assert not (tmp_path / "s").exists()


def test_the_output_check_is_linear_in_the_shard_count(tmp_path):
    from mgpipe.cli import check_paths, parser

    timings = {}
    for n in (512, 4096):
        args = parser().parse_args(["shard", "--manifest", str(tmp_path / "m.csv"), "--shards", str(n),
                                    "--out-dir", str(tmp_path / "s")])
        t0 = time.perf_counter()
        check_paths(args)
        timings[n] = time.perf_counter() - t0
    # quadratic would be 64 times slower at 8x the shards (and took 9 minutes at 4,096)
    assert timings[4096] < 5 and timings[4096] < 24 * timings[512] + 0.05, timings


@pytest.mark.parametrize("link", ["external", "soft"])
def test_gather_refuses_links_in_shard_stores(demo_stores, tmp_path, capsys, link):
    shard = tmp_path / "0.h5"
    import shutil

    shutil.copy(demo_stores / "keypoints.h5", shard)
    with h5py.File(shard, "a") as h5:
        name = sorted(h5["clips"].keys())[0]
        del h5["clips"][name]
        if link == "external":   # the clip's data read from another file
            h5["clips"][name] = h5py.ExternalLink(str(demo_stores / "keypoints.h5"), f"/clips/{name}")
        else:                    # a dataset inside a clip pointing elsewhere in the file
            other = sorted(h5["clips"].keys())[0]
            h5.create_group(f"clips/{name}")
            for key in h5[f"clips/{other}"].keys():
                h5[f"clips/{name}/{key}"] = h5py.SoftLink(f"/clips/{other}/{key}")
    out = tmp_path / "keypoints.h5"
    rc, err = run_cli(capsys, "gather", "keypoints", shard, "--out", out)
    _one_line(rc, err, "gather")
    assert f"is {'an external' if link == 'external' else 'a soft'} link" in err and str(shard) in err, err
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".keypoints.h5")]


# ---- item 9: the ensemble trusts no score file ---------------------------------------------

CLASSES = [{"label_id": 10, "name": "a"}, {"label_id": 11, "name": "b"}, {"label_id": 12, "name": "c"}]


def _score_files(tmp_path, val=12, test=9, limb_val=True):
    ids = [f"c{i:02d}" for i in range(val + test)]
    split = ["val"] * val + ["test"] * test
    labels = np.arange(val + test) % 3
    rng = np.random.default_rng(0)
    files = {}
    for name in ("joint", "limb"):
        p = rng.dirichlet(np.ones(3), size=len(ids))
        rows = pd.DataFrame({"clip_id": ids, "split": split, "label": labels})
        if name == "limb" and not limb_val:
            rows, p = rows[val:], p[val:]
        files[name] = tmp_path / f"{name}.csv"
        scores.write(files[name], [scores.table(rows, {name: p}, CLASSES)])
    classes = tmp_path / "classes.csv"
    pd.DataFrame({"label": range(3), "label_id": [10, 11, 12], "name": ["a", "b", "c"]}).to_csv(classes, index=False)
    return files, classes


def _ensemble(capsys, tmp_path, files, classes, members, weights="search"):
    cfg = json.dumps({"ensemble": {"members": members, "weights": weights}, "fused": {"variants": ["full"]}})
    out = tmp_path / "ens"
    rc, err = run_cli(capsys, "ensemble", "--scores", *[f"{k}={v}" for k, v in files.items()],
                      "--classes", classes, "--out-dir", out, "--config-json", cfg)
    return rc, err, out


def _edit(path, change):
    frame = pd.read_csv(path, dtype={"clip_id": str})
    change(frame)
    frame.to_csv(path, index=False, float_format="%.6f")


@pytest.mark.parametrize("fault, message", [
    ("label", "clip 'c03' has label 0 (val) in one and 1 (val) in the other: score files of different manifests"),
    ("duplicate", "clip 'c00' has more than one row"),
    ("sum", "clip 'c05': the limb probabilities sum to 0.5"),
])
def test_score_files_that_disagree_or_are_no_distributions_are_refused(tmp_path, capsys, fault, message):
    files, classes = _score_files(tmp_path)
    if fault == "label":
        _edit(files["limb"], lambda f: f.__setitem__("label", f.label.where(f.clip_id != "c03", 1)))
    elif fault == "duplicate":
        frame = pd.read_csv(files["limb"], dtype={"clip_id": str})
        pd.concat([frame, frame.iloc[[0]]]).to_csv(files["limb"], index=False)
    else:
        def halve(f):
            cols = [c for c in f.columns if c.startswith("limb:")]
            f.loc[f.clip_id == "c05", cols] = f.loc[f.clip_id == "c05", cols] / 2
        _edit(files["limb"], halve)
    rc, err, out = _ensemble(capsys, tmp_path, files, classes, {"joint": 1.0, "limb": 1.0})
    _one_line(rc, err, "ensemble")
    assert message in err and str(files["limb"]) in err, err
    assert not out.exists()


def test_huge_member_weights_give_the_same_ensemble_not_nan(tmp_path, capsys):
    files, classes = _score_files(tmp_path)
    rc, err, out = _ensemble(capsys, tmp_path, files, classes, {"joint": 1.0, "limb": 1.0}, "config")
    assert rc == 0, err
    plain = json.loads((out / "metrics.json").read_text())["ensemble"]
    rc, err, out = _ensemble(capsys, tmp_path, files, classes, {"joint": 1e308, "limb": 1e308}, "config")
    assert rc == 0, err
    huge = json.loads((out / "metrics.json").read_text())["ensemble"]
    assert huge["top1"] == plain["top1"] and huge["class_table"] == plain["class_table"]
    rc, err, _ = _ensemble(capsys, tmp_path, files, classes, {"joint": 1e308, "limb": 1e308}, "search")
    assert rc == 0, err


def test_the_search_leaves_out_members_weighted_zero(tmp_path, capsys):
    files, classes = _score_files(tmp_path)
    rc, err, out = _ensemble(capsys, tmp_path, files, classes, {"joint": 1.0, "limb": 0.0})
    assert rc == 0, err
    chosen = json.loads((out / "metrics.json").read_text())["ensemble_weights"]
    assert chosen["applied"] == "searched" and chosen["search"]["units"] == ["joint:joint"]
    assert chosen["sets"]["searched"]["weights"] == {"joint": 1.0, "limb": 0.0}
    assert chosen["sets"]["uniform"]["weights"] == {"joint": 1.0}


def test_one_member_without_validation_rows_is_named(tmp_path, capsys):
    files, classes = _score_files(tmp_path, limb_val=False)
    rc, err, out = _ensemble(capsys, tmp_path, files, classes, {"joint": 1.0, "limb": 1.0})
    assert rc == 0, err
    note = json.loads((out / "metrics.json").read_text())["ensemble_weights"]["note"]
    assert "the score file of limb holds no validation rows while the others do" in note, note
    assert "val_fraction 0" not in note and note in err


def test_a_tiny_validation_split_is_not_searched_and_says_so(tmp_path, capsys):
    files, classes = _score_files(tmp_path, val=1)
    rc, err, out = _ensemble(capsys, tmp_path, files, classes, {"joint": 1.0, "limb": 1.0})
    assert rc == 0, err
    chosen = json.loads((out / "metrics.json").read_text())["ensemble_weights"]
    assert chosen["applied"] == "config" and "holds only 1 clip(s), fewer than the 5" in chosen["note"]
    assert "holds only 1 clip(s)" in err


# ---- item 10: config files --------------------------------------------------------------------

DUPLICATE = "seed: 3\ntrain:\n  epochs_unused: 1\nseed: 4\n"


def test_a_key_written_twice_is_refused_by_mgpipe(tmp_path, capsys):
    path = tmp_path / "dup.yaml"
    path.write_text("train:\n  device: cpu\nseed: 1\ntrain:\n  threads: 2\n")
    manifest = _manifest(tmp_path / "clips.csv")
    rc, err = run_cli(capsys, "decode", "--manifest", manifest, "--config", path, "--out", tmp_path / "f.h5")
    _one_line(rc, err, "decode")
    assert f"{path}: refused: the YAML key 'train' appears twice in one mapping (lines 1 and 4)" in err, err
    assert not (tmp_path / "f.h5").exists()
    nested = tmp_path / "nested.yaml"
    nested.write_text("train:\n  device: cpu\n  device: cuda\n")
    with pytest.raises(mgconfig.ConfigError, match="key 'device' appears twice"):
        mgconfig.load(nested)


def test_a_key_written_twice_is_refused_by_the_workflow(tmp_path):
    from workflow_runs import make_workdir, smk

    work = make_workdir(tmp_path / "wf")
    (work / "dup.yaml").write_text("train:\n  device: cpu\nseed: 1\ntrain:\n  threads: 2\n")
    proc = smk(work, "-n", "--cores", "1", "--configfile", "tiny.yaml", "dup.yaml", check=False)
    lines = [l for l in proc.stderr.splitlines() if l.startswith("mgpipe:")]
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert lines == [f"mgpipe: {work / 'dup.yaml'}: refused: the YAML key 'train' appears twice in one mapping "
                     "(lines 1 and 4); YAML keeps only the last, dropping the first one's settings: "
                     "write each key once"], proc.stderr[-2000:]
    # the Snakefile's own configfile (config.yaml) goes through the same check
    (work / "config.yaml").write_text((work / "config.yaml").read_text() + "\nseed: 5\nseed: 6\n")
    proc = smk(work, "-n", "--cores", "1", check=False)
    assert proc.returncode != 0 and "mgpipe: config.yaml: refused: the YAML key 'seed' appears twice" in proc.stderr


# ---- items 8 and 10: training refuses what it cannot train on -------------------------------

def _train(capsys, stores, out, model="joint", manifest=None, **sections):
    cfg = mgconfig.defaults()
    cfg["pose_model"]["input"].update(frames=8, size=8, test_size=8)
    for key, value in sections.items():
        cfg[key].update(value)
    return run_cli(capsys, "train", model, "--config-json", mgconfig.canonical(specs.get(model).settings(cfg)),
                   "--manifest", manifest or stores / "clips.csv", "--classes", stores / "classes.csv",
                   "--keypoints", stores / "keypoints.h5", "--frames", stores / "frames.h5",
                   "--out-dir", out)


def test_a_manifest_label_outside_the_class_table_is_one_line(demo_stores, tmp_path, capsys):
    frame = pd.read_csv(demo_stores / "clips.csv", dtype=str, keep_default_na=False)
    frame.loc[3, "label"] = "99"
    frame.to_csv(tmp_path / "clips.csv", index=False)
    rc, err = _train(capsys, demo_stores, tmp_path / "out", manifest=tmp_path / "clips.csv")
    _one_line(rc, err, "train")
    assert f"clip {frame.clip_id[3]!r} has label '99', outside the" in err, err
    assert not (tmp_path / "out" / "model.pt").exists() and not (tmp_path / "out" / "state" / "last.pt").exists()


def test_a_motion_gap_longer_than_a_clip_is_one_line(demo_stores, tmp_path, capsys):
    manifest = pd.read_csv(demo_stores / "clips.csv", dtype={"clip_id": str})
    with h5py.File(demo_stores / "frames.h5", "r") as h5:
        lengths = {c: len(h5["clips"][c]) for c in manifest.clip_id}
    shortest = min(lengths, key=lambda c: (lengths[c], c))
    if lengths[shortest] > 64:
        pytest.skip("the demo's clips are longer than motion.gap's maximum")
    gap = lengths[shortest]
    rc, err = _train(capsys, demo_stores, tmp_path / "out", model="motion",
                     motion={"enabled": True, "gap": gap, "frames": 2, "size": 32,
                             "network": {"base_channels": 4, "stage_blocks": [1, 1, 1, 1], "inflate": [0, 0, 1, 1],
                                         "spatial_strides": [1, 2, 2, 2], "temporal_strides": [1, 1, 1, 1],
                                         "dropout": 0.2}})
    _one_line(rc, err, "train")
    assert (f"config key motion.gap is {gap}, but clip {shortest!r} has only {gap} frame(s)") in err, err
    assert not (tmp_path / "out" / "model.pt").exists()


# ---- item 8: the multi-node launcher's environment ---------------------------------------------

def test_array_job_ids_and_odd_ports(tmp_path):
    from mgpipe.tools.multinode import LaunchError, job_key, rendezvous_port

    assert job_key("1234") == 1234
    assert job_key("123_4") not in (1234, job_key("1234"), job_key("123_5"))   # int("123_4") == 1234
    for bad in ("12a", " 12", "+12", "１２", "1_2_3", ""):
        with pytest.raises(LaunchError):
            job_key(bad)
    env = dict(os.environ, PYTHONPATH=str(REPO), SLURM_JOB_NODELIST="node[1-2]")
    for extra, message in ((dict(SLURM_JOB_ID="12x"), "SLURM_JOB_ID '12x' is not a SLURM job id"),
                           (dict(SLURM_JOB_ID="5", MGPIPE_RDZV_PORT="http"), "MGPIPE_RDZV_PORT 'http' is not a port"),
                           (dict(SLURM_JOB_ID="5", MGPIPE_RDZV_PORT="99999"), "MGPIPE_RDZV_PORT '99999'")):
        proc = subprocess.run([sys.executable, "-m", "mgpipe.tools.multinode", "--nodes", "2", "-m", "mgpipe", "train",
                               "joint"], capture_output=True, text=True, timeout=60, env={**env, **extra})
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and message in proc.stderr, proc.stderr
    os.environ.pop("MGPIPE_RDZV_PORT", None)
    assert 20000 <= rendezvous_port("123_4") < 40000


# ---- item 3: runs that would delete their own results -----------------------------------------

@pytest.fixture(scope="module")
def init_workdir(tmp_path_factory):
    from test_transfer import randomised, save_pyskl
    from workflow_runs import make_workdir

    work = make_workdir(tmp_path_factory.mktemp("init") / "wf")
    cfg = mgconfig.load(work / "tiny.yaml")
    for model in ("joint", "limb"):
        net, arch = randomised(model, (17, 18), 60, cfg=cfg)
        path = work / "results" / "tiny" / "models" / model / "model.pt"
        path.parent.mkdir(parents=True, exist_ok=True)
        save_pyskl(net, arch, path)
    return work


def _plan(work, init_yaml):
    from workflow_runs import smk

    (work / "init.yaml").write_text(init_yaml)
    before = {p: p.read_bytes() for p in (work / "results").rglob("*") if p.is_file()}
    proc = smk(work, "-n", "-p", "--cores", "1", "--configfile", "tiny.yaml", "init.yaml", check=False)
    assert {p: p.read_bytes() for p in (work / "results").rglob("*") if p.is_file()} == before
    return proc


@pytest.mark.parametrize("spelling", ["absolute", "symlink", "dotdot"])
def test_an_init_that_is_the_models_own_output_is_refused_at_plan_time(init_workdir, spelling):
    own = init_workdir / "results" / "tiny" / "models" / "joint" / "model.pt"
    path = {"absolute": str(own), "dotdot": "results/tiny/models/../models/joint/model.pt",
            "symlink": "link.pt"}[spelling]
    link = init_workdir / "link.pt"
    if spelling == "symlink" and not link.is_symlink():
        link.symlink_to(own)
    proc = _plan(init_workdir, f"init: {{joint: {path}}}\n")
    lines = [l for l in proc.stderr.splitlines() if l.startswith("mgpipe:")]
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert lines == [f"mgpipe: config key init.joint: {path} is the model this run trains"], proc.stderr[-2000:]


def test_an_init_that_is_another_output_of_the_run_is_refused(init_workdir):
    """A valid checkpoint where the merge stage writes: the merge would replace it."""
    import shutil

    merged = init_workdir / "results" / "tiny" / "merged" / "fused_full.pt"
    merged.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(init_workdir / "results" / "tiny" / "models" / "joint" / "model.pt", merged)
    try:
        proc = _plan(init_workdir, f"init: {{joint: {merged}}}\n")
    finally:
        merged.unlink()
    lines = [l for l in proc.stderr.splitlines() if l.startswith("mgpipe:")]
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert lines == [f"mgpipe: config key init.joint: {merged} is results/tiny/merged/fused_full.pt, an output "
                     "of this run's rule merge (rewritten or removed when that rule runs): an init file is a "
                     "trained model's model.pt or a file outside the results folder"], proc.stderr[-2000:]


def test_models_initialised_from_each_others_outputs_are_a_refused_cycle(init_workdir):
    r = init_workdir / "results" / "tiny" / "models"
    proc = _plan(init_workdir, f"init: {{joint: {r}/limb/model.pt, limb: ./results/../results/tiny/models/joint/model.pt}}\n")
    lines = [l for l in proc.stderr.splitlines() if l.startswith("mgpipe:")]
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert lines == ["mgpipe: config keys init.joint and init.limb: the models start from each other's trained "
                     "weights (joint -> limb -> joint), a cycle: each would retrain the other on every run; "
                     "start one of them from a file outside the results folder"], proc.stderr[-2000:]
    # one model from the other's output, however spelled, is a dependency of the plan
    proc = _plan(init_workdir, f"init: {{limb: {r}/joint/model.pt}}\n")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "--init results/tiny/models/joint/model.pt --out-dir results/tiny/models/limb" in proc.stdout
