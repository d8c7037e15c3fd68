"""Config files and command lines as a careless or hostile user writes them (issue 18, cases 6
and 8): duplicate classes, sizes that cannot fit in memory, YAML alias bombs, and an output path
that is also an input. Each ends in one line naming the key or file; nothing is written."""

import copy
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_cli

from mgpipe import config
from mgpipe.config import ConfigError

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
SHIPPED = ["config.yaml", "config/paper.yaml", "config/mediapipe.yaml", "benchmarks/kard.yaml",
           "tests/data/tiny.yaml"]


_run = run_cli


def _one_error_line(rc, err, command):
    assert rc == 2, err
    assert err.startswith(f"mgpipe {command}: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err


def _bounded(argv, cwd=REPO, timeout=120, env=None, address_space_mib=None):
    """Run argv as a child of a fresh Python, under an address-space ulimit if given:
    (CompletedProcess, the peak resident memory in MiB of argv and its children). A hang fails
    through the timeout instead of stalling the suite."""
    probe = ("import json, resource, subprocess, sys\n"
             "limit = json.loads(sys.argv[2])\n"
             "if limit: resource.setrlimit(resource.RLIMIT_AS, (limit * 2**20, limit * 2**20))\n"
             "p = subprocess.run(json.loads(sys.argv[1]), capture_output=True, text=True)\n"
             "print(json.dumps([p.returncode, p.stdout, p.stderr, "
             "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024]))\n")
    outer = subprocess.run([sys.executable, "-c", probe, json.dumps(argv), json.dumps(address_space_mib)],
                           cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    rc, out, err, peak_mib = json.loads(outer.stdout)
    return subprocess.CompletedProcess(argv, rc, out, err), peak_mib


def _alias_bomb(levels=9) -> str:
    """`pose.options` whose aliases name 10 ** levels strings in a 1 KB file."""
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, levels)]
    return "pose:\n  options:\n" + "".join(f"    {line}\n" for line in lines)


# ----------------------------------------------------------------------------- shipped configs
@pytest.mark.parametrize("path", SHIPPED)
def test_shipped_configs_pass_every_new_limit(path):
    merged = config.load([REPO / "config.yaml", REPO / path])
    # the memory estimates of what they train are far inside the budget
    for what, terms in config._estimates(merged):
        need = 1
        for term in terms:
            need *= term.value ** term.power
        assert need < config.MEMORY_BUDGET / 10, (path, what, need)


def test_a_layout_shared_through_yaml_anchors_still_loads(tmp_path):
    """Anchors are how a config reuses one layout for pose.layout and pose.pickle_layout."""
    p = tmp_path / "anchors.yaml"
    p.write_text("pose:\n  layout: &mine {name: mine, joints: [nose, neck], limbs: [[0, 1]]}\n"
                 "  pickle_layout: *mine\n")
    merged = config.load([REPO / "config.yaml", p])
    assert merged["pose"]["pickle_layout"]["joints"] == ["nose", "neck"]


# ----------------------------------------------------------------------------- unique classes
@pytest.mark.parametrize("key, values, twice", [
    ("classes", [0, 0, 1, 2], "0"),
    ("class_names", ["wave", "nod", "wave"], "'wave'"),
])
def test_duplicate_classes_are_refused_in_one_line(key, values, twice):
    with pytest.raises(ConfigError) as err:
        config.validate({"dataset": {"kind": "csv", key: values}})
    msg = str(err.value)
    assert f"config key dataset.{key}: {twice} is listed twice" in msg and "\n" not in msg


def test_clips_refuses_duplicate_classes_before_reading_anything(tmp_path, capsys):
    labels = tmp_path / "labels.csv"
    labels.write_text("video,start,end,label,subject,split\nv1,0,10,0,s1,train\n")
    rc, err = _run(capsys, "clips", "--labels", labels, "--config-json",
                   json.dumps({"mode": "pose", "dataset": {"kind": "csv", "classes": [0, 0, 1, 2]}}),
                   "--out", tmp_path / "clips.csv", "--classes-out", tmp_path / "classes.csv")
    _one_error_line(rc, err, "clips")
    assert "config key dataset.classes: 0 is listed twice" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.csv"]


# ----------------------------------------------------------------------------- memory
@pytest.mark.parametrize("settings, key, figure", [
    ({"heatmaps": {"size": 100000}}, "heatmaps.size", "31.8 TiB"),
    ({"rgb": {"size": 4096}}, "rgb.size", "15.0 GiB"),
    ({"mode": "pose", "pose_model": {"input": {"frames": 800, "size": 128}}}, "pose_model.input.frames",
     "8.3 GiB"),
    ({"pose_model": {"optim": {"batch_size": 100000}}}, "pose_model.optim.batch_size", "635.5 GiB"),
    ({"limb": {"optim": {"batch_size": 3000}}}, "limb.optim.batch_size", "20.2 GiB"),
    ({"test": {"batch_size": 4000}}, "test.batch_size", "33.2 GiB"),
    ({"pose": {"layout": {"name": "big", "joints": [f"j{i}" for i in range(1000)], "limbs": []}}},
     "pose.layout", "4.9 GiB"),
])
def test_settings_that_cannot_fit_are_refused_with_the_figure(settings, key, figure):
    given = copy.deepcopy(settings)
    with pytest.raises(ConfigError) as err:
        config.validate(settings)
    msg = str(err.value)
    assert msg.startswith(f"config: config key {key}: ") and "\n" not in msg, msg
    assert f"needs {figure} for " in msg and "at most 4.0 GiB fits" in msg, msg
    # the largest value the message offers is accepted
    most = re.search(rf"\({re.escape(key)} <= (\d+)\)", msg)
    if most:
        *path, last = key.split(".")
        node = given
        for part in path:
            node = node[part]
        node[last] = int(most.group(1))
        config.validate(given)


@pytest.mark.parametrize("settings, key, maximum", [
    ({"test": {"views": 1000}}, "test.views", 100),
    ({"train": {"val_views": 101}}, "train.val_views", 100),
    ({"decode": {"max_side": 100000}}, "decode.max_side", 8192),
    ({"dataset": {"demo": {"num_subjects": 10 ** 6}}}, "dataset.demo.num_subjects", 1000),
    ({"pose_model": {"network": {"base_channels": 10 ** 5, "stage_blocks": [1], "inflate": [0],
                                 "spatial_strides": [1], "temporal_strides": [1]}}},
     "pose_model.network.base_channels", 1024),
    ({"heatmaps": {"size": 1050}}, "heatmaps.size", 1024),
])
def test_schema_maxima_name_the_key_and_the_maximum(settings, key, maximum):
    with pytest.raises(ConfigError) as err:
        config.validate(settings)
    assert str(err.value) == f"config: config key {key}: {settings_value(settings, key)} is greater than the maximum of {maximum}"


def settings_value(settings, key):
    for part in key.split("."):
        settings = settings[part]
    return settings


def test_heatmaps_stage_refuses_a_huge_size_before_reading_the_store(tmp_path, capsys):
    rc, err = _run(capsys, "heatmaps", "--keypoints", tmp_path / "kp.h5", "--config-json",
                   '{"heatmaps": {"size": 100000}}', "--out", tmp_path / "hm.h5")
    _one_error_line(rc, err, "heatmaps")
    # the stage is not told the layout (it is the keypoint store's): one channel, a lower bound
    assert "config key heatmaps.size: 100000 needs 931.3 GiB" in err and "1 channel (at least)" in err
    assert not list(tmp_path.iterdir())


def test_a_stage_is_judged_on_the_sections_it_is_given():
    """A stage's --config-json holds only the sections it reads: defaults standing in for the
    others must not refuse what the whole config allows (the workflow judges the whole)."""
    big = {"name": "big", "joints": [f"j{i}" for i in range(1000)], "limbs": []}
    whole = {"pose": {"layout": big}, "mode": "pose",
             "pose_model": {"input": {"frames": 8, "size": 16, "test_size": 16}}}
    config.validate(copy.deepcopy(whole))
    config.validate({"pose": {"layout": big}}, "--config-json", partial=True)   # the pose stage
    with pytest.raises(ConfigError, match="config key pose.layout: 1000 joints needs 4.9 GiB"):
        config.validate({"pose": {"layout": big}})


# ----------------------------------------------------------------------------- YAML
def test_alias_bomb_is_refused_naming_the_file(tmp_path):
    p = tmp_path / "bomb.yaml"
    p.write_text(_alias_bomb())
    with pytest.raises(ConfigError) as err:
        config.load([REPO / "config.yaml", p])
    msg = str(err.value)
    assert msg.startswith(f"{p}: refused: the YAML expands to more than 100000 values") and "\n" not in msg


def test_alias_bomb_through_the_command_ends_at_once_in_little_memory(tmp_path):
    p = tmp_path / "bomb.yaml"
    p.write_text(_alias_bomb())
    proc, peak_mib = _bounded([sys.executable, "-m", "mgpipe", "-q", "decode", "--manifest",
                               str(tmp_path / "clips.csv"), "--config", str(p), "--out",
                               str(tmp_path / "frames.h5")], timeout=60, address_space_mib=2048)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert f"{p}: refused: the YAML expands" in proc.stderr
    assert peak_mib < 500, peak_mib     # (before: minutes and past a GB)
    assert sorted(x.name for x in tmp_path.iterdir()) == ["bomb.yaml"]


@pytest.mark.parametrize("text, problem", [
    ("pose:\n  options: &loop {again: *loop}\n", "contains itself"),
    ("pose:\n  options: " + "[" * 100 + "]" * 100 + "\n", "nests deeper than 64 levels"),
    ("pose:\n  options: " + "[" * 5000 + "]" * 5000 + "\n", "nests deeper than 64 levels"),
])
def test_recursive_and_deep_yaml_is_refused_naming_the_file(tmp_path, text, problem):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as err:
        config.load(p)
    assert str(err.value).startswith(f"{p}: refused: the YAML {problem}"), str(err.value)


def test_a_huge_config_file_is_refused_before_parsing(tmp_path):
    p = tmp_path / "c.yaml"
    with open(p, "wb") as f:
        f.write(b"# " + b"x" * (config.YAML_MAX_BYTES + 10) + b"\n")
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(p))}: refused: larger than 16 MiB"):
        config.load(p)


def test_a_config_value_sharing_itself_is_bounded_whatever_loaded_it():
    """Snakemake loads --configfile with its own YAML loader and hands mgpipe the shared
    references: validate bounds them before anything walks the config."""
    leaf = ["lol"] * 10
    for _ in range(8):
        leaf = [leaf] * 10
    with pytest.raises(ConfigError, match="^config: refused: the config expands to more than 100000 values"):
        config.validate({"pose": {"options": {"bomb": leaf}}})
    loop: dict = {}
    loop["again"] = loop
    with pytest.raises(ConfigError, match="contains itself"):
        config.validate({"pose": {"options": loop}})


# ----------------------------------------------------------------------------- paths
@pytest.fixture
def label_table(tmp_path):
    """A copy of the real iMiGUE label excerpt (the user's file, which must survive)."""
    src = SHARED / "imigue_labels_excerpt.csv"
    if not src.is_file():
        pytest.skip(f"{src} not present (real-data tests need ../shared/data)")
    return Path(shutil.copy(src, tmp_path / "labels.csv"))


@pytest.mark.parametrize("how", ["same path", "another spelling", "symlink", "hard link", "log"])
def test_clips_never_writes_over_its_label_table(label_table, tmp_path, capsys, how):
    before = label_table.read_bytes()
    out, extra = str(label_table), []
    if how == "another spelling":
        (tmp_path / "sub").mkdir()
        out = str(tmp_path / "sub" / ".." / "." / "labels.csv")
    elif how == "symlink":
        out = str(tmp_path / "link.csv")
        Path(out).symlink_to(label_table)
    elif how == "hard link":
        out = str(tmp_path / "hard.csv")
        Path(out).hardlink_to(label_table)
    elif how == "log":
        out, extra = str(tmp_path / "clips.csv"), ["--log", label_table]
    rc, err = _run(capsys, *extra, "clips", "--labels", label_table, "--config-json",
                   '{"dataset": {"kind": "imigue"}, "mode": "pose"}', "--out", out,
                   "--classes-out", tmp_path / "classes.csv")
    _one_error_line(rc, err, "clips")
    flag = "--log" if how == "log" else "--out"
    assert f"error: {flag} " in err and f"is the same file as --labels {label_table}" in err, err
    assert label_table.read_bytes() == before
    assert not (tmp_path / "classes.csv").exists() and not (tmp_path / "clips.csv").exists()


@pytest.mark.parametrize("argv, message", [
    (["clips", "--labels", "{d}/labels.csv", "--out", "{d}/x.csv", "--classes-out", "{d}/x.csv"],
     "--classes-out {d}/x.csv is the same file as --out {d}/x.csv, which this command also writes"),
    (["train", "joint", "--manifest", "{d}/m.csv", "--keypoints", "{d}/k.h5", "--classes", "{d}/c.csv",
      "--init", "{d}/run/model.pt", "--out-dir", "{d}/run"],
     "--out-dir {d}/run/model.pt is the same file as --init {d}/run/model.pt"),
    (["train", "joint", "--manifest", "{d}/run/state/last.pt", "--keypoints", "{d}/k.h5", "--classes",
      "{d}/c.csv", "--out-dir", "{d}/run"],
     "--state-dir {d}/run/state/last.pt is the same file as --manifest {d}/run/state/last.pt"),
    (["test", "{d}/model.pt", "--manifest", "{d}/m.csv", "--keypoints", "{d}/k.h5", "--out", "{d}/model.pt"],
     "--out {d}/model.pt is the same file as checkpoint {d}/model.pt"),
    (["ensemble", "--scores", "joint={d}/ens/metrics.json", "--classes", "{d}/c.csv", "--out-dir", "{d}/ens"],
     "--out-dir {d}/ens/metrics.json is the same file as --scores {d}/ens/metrics.json"),
    (["export-pickle", "--keypoints", "{d}/k.h5", "--manifest", "{d}/m.csv", "--out", "{d}/k.h5"],
     "--out {d}/k.h5 is the same file as --keypoints {d}/k.h5"),
    (["predict", "{d}/p/timeline.csv", "--model", "{d}/model.pt", "--out-dir", "{d}/p"],
     "--out-dir {d}/p/timeline.csv is the same file as video {d}/p/timeline.csv"),
])
def test_every_stage_refuses_an_output_that_is_an_input(tmp_path, capsys, argv, message):
    d = str(tmp_path)
    (tmp_path / "model.pt").write_bytes(b"weights")   # predict checks its model exists
    config_json = [] if argv[0] == "export-pickle" else ["--config-json", "{}"]
    rc, err = _run(capsys, *[a.format(d=d) for a in argv], *config_json)
    _one_error_line(rc, err, argv[0])
    assert message.format(d=d) in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]   # nothing written


def test_every_command_declares_what_it_reads_and_writes():
    """A new path argument must say whether it is read or written, or its outputs would go
    unchecked: every argument that takes free text is a declared path or one of these."""
    import argparse

    from mgpipe.cli import parser

    not_paths = {"config_json", "run_config_json", "set", "model", "models", "modes", "help", "version",
                 "init_layout", "init_weights"}   # (names: a keypoint layout, a torchvision weight)
    sub = next(a for a in parser()._actions if isinstance(a, argparse._SubParsersAction))
    declared = 0
    for command, p in sub.choices.items():
        for action in p._actions:
            if getattr(action, "reads", None) or getattr(action, "writes", None):
                declared += 1
                continue
            free_text = action.type is None and action.choices is None and action.nargs != 0
            assert not free_text or action.dest in not_paths, (command, action.dest)
    assert declared > 40


def test_an_output_beside_its_input_is_fine(tmp_path):
    """Only the same file is refused: predict may write into the folder holding the video."""
    from mgpipe.cli import check_paths, parser

    args = parser().parse_args(["predict", str(tmp_path / "clip.mp4"), "--model", str(tmp_path / "m.pt"),
                                "--out-dir", str(tmp_path)])
    check_paths(args)   # no error


# ----------------------------------------------------------------------------- Snakemake
@pytest.mark.slow
@pytest.mark.parametrize("text, line", [
    ("dataset:\n  classes: [0, 0, 1, 2]\n", "config key dataset.classes: 0 is listed twice"),
    # (mgpipe reads every config file Snakemake read, for duplicate keys: the file speaks first)
    (_alias_bomb(), "refused: the YAML expands to more than 100000 values"),
])
def test_snakemake_dry_run_stops_with_one_mgpipe_line(tmp_path, text, line):
    """Snakemake reads --configfile with its own YAML loader (the bomb costs it nothing: PyYAML
    keeps the aliases as shared references); the workflow's validation then stops in one line
    before anything walks the config."""
    from workflow_runs import make_workdir

    workdir = make_workdir(tmp_path / "wf")
    (workdir / "bad.yaml").write_text(text)
    proc, peak_mib = _bounded([sys.executable, "-m", "snakemake", "-n", "--configfile", "bad.yaml"],
                              cwd=workdir, timeout=300, env={**os.environ, "PYTHONPATH": str(workdir)})
    assert proc.returncode != 0
    lines = [x for x in (proc.stdout + proc.stderr).splitlines() if x.startswith("mgpipe:")]
    assert len(lines) == 1 and line in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert peak_mib < 1024, peak_mib
    assert not (workdir / "results").exists()
