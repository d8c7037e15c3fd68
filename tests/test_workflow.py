"""Real Snakemake on the real workflow: DAG shape, lint, config errors, and a tiny end-to-end run
with the rerun behaviour users rely on (nothing to do twice, -R, params and code changes)."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from workflow_runs import (
    REPO,
    assert_lean_run_equals_tiny_run,
    lean_config,
    make_workdir,
    models_of,
    planned,
    smk,
    tiny_run_copy,
)

from mgpipe.tools.demo_data import class_counts

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return make_workdir(tmp_path_factory.mktemp("wf"))


def test_dry_run_plans_every_stage(workdir):
    proc = smk(workdir, "-n", "--cores", "2")
    jobs = planned(proc)
    # (no heatmaps job: the models draw their heatmaps from the keypoints, per sample)
    assert jobs == {"demo_data": 1, "clips": 1, "decode": 1, "pose": 1,
                    "train": 6, "merge": 3, "test": 6, "ensemble": 1, "all": 1}  # 3 ablation variants
    models = ["fused_full", "fused_nofusion", "fused_noproto", "joint", "limb", "rgb"]
    assert models_of(proc, "train") == models and models_of(proc, "test") == models
    assert models_of(proc, "merge") == models[:3]


def test_lint_is_clean(workdir):
    """Snakemake's lint finds nothing but its advice to give every rule a conda environment or
    container: mgpipe has none (it is installed with pip, README "Install"; a conda file that no
    test can build here, conda being out of reach, would only drift from pyproject.toml)."""
    proc = smk(workdir, "--lint", check=False)
    lints = {line.strip() for line in (proc.stdout + proc.stderr).splitlines() if line.lstrip().startswith("* ")}
    # and the train rule's output options (train.tensorboard, train.keep_state), read from the
    # config in its shell command on purpose: as params they would retrain a model when switched
    assert lints <= {"* Specify a conda environment or container for each rule.:",
                     "* Shell command directly uses variable config from outside of the rule:"}, (
        proc.stdout + proc.stderr)
    assert "Traceback" not in proc.stderr and "Error" not in proc.stdout + proc.stderr, proc.stderr


def gpus_planned(proc) -> dict:
    """{rule: sorted set of its jobs' gpu= values ('-' where none)} from a dry run's plan."""
    out = {}
    for block in proc.stdout.split("\nrule ")[1:]:
        rule = block.split(":", 1)[0]
        resources = re.search(r"^    resources: (.*)$", block, re.M)
        gpu = re.search(r"\bgpu=(\d+)", resources.group(1)) if resources else None
        out.setdefault(rule, set()).add(gpu.group(1) if gpu else "-")
    return {rule: sorted(v) for rule, v in out.items()}


@pytest.mark.parametrize("device, gpu", [("cuda", "1"), ("cpu", "0")])
def test_slurm_profile_asks_train_gpus_for_training_and_test(workdir, device, gpu):
    """On SLURM the train and test jobs ask for train.gpus GPUs (a pretraining job for one) whatever the submitting machine
    has (profiles/default's local cap, here 0 GPUs, does not apply); device cpu asks for none.
    (device auto asks where sinfo lists GPUs: tests/test_slurm.py.) A machine where sinfo cannot
    be asked: the local SLURM of tests/test_slurm.py, up beside this test, would hold the
    profile's CHANGE_ME partitions against its own (refused at plan time there)."""
    pytest.importorskip("snakemake_executor_plugin_slurm")
    (workdir / f"{device}.yaml").write_text(f"train: {{device: {device}}}\npretrain: {{models: [joint]}}\n")
    bin_dir = workdir / "no-sinfo"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "sinfo").write_text("#!/bin/sh\nexit 1\n")
    (bin_dir / "sinfo").chmod(0o755)
    env = {"CUDA_VISIBLE_DEVICES": "", "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    proc = smk(workdir, "-n", "--profile", "profiles/slurm", "--configfile", "tiny.yaml", f"{device}.yaml", env=env)
    plan = gpus_planned(proc)
    print(plan)
    assert plan["train"] == [gpu] and plan["test"] == [gpu] and plan["pretrain"] == [gpu], plan
    assert all(v == ["-"] for rule, v in plan.items() if rule not in ("train", "test", "pretrain")), plan


def test_local_plan_caps_gpus_at_the_visible_ones(workdir):
    (workdir / "two.yaml").write_text("train: {device: cuda, gpus: 2}\n")
    plan = gpus_planned(smk(workdir, "-n", "--cores", "2", "--configfile", "tiny.yaml", "two.yaml",
                            env={"CUDA_VISIBLE_DEVICES": "0,1"}))
    assert plan["train"] == ["2"] and plan["test"] == ["2"], plan
    plan = gpus_planned(smk(workdir, "-n", "--cores", "2", "--configfile", "tiny.yaml", env={"CUDA_VISIBLE_DEVICES": ""}))
    assert plan["train"] == ["0"], plan   # device auto, no GPU: one process on the CPU


@pytest.mark.parametrize("text, visible, line", [
    ("train: {gpus: 64}\n", "", "mgpipe: config key train.gpus: 64 GPUs per training job, but this machine has 0 visible; at most train.gpus: 1 here"),
    ("train: {gpus: 3, device: cuda}\n", "0,1", "mgpipe: config key train.gpus: 3 GPUs per training job, but this machine has 2 visible; at most train.gpus: 2 here"),
    ("train: {device: cuda}\n", "", "mgpipe: config key train.device: cuda, but this machine has no visible GPU (CUDA_VISIBLE_DEVICES, /proc/driver/nvidia/gpus); use auto or cpu"),
    ("train: {nodes: 2}\n", "", "mgpipe: config key train.nodes: 2 nodes need SLURM (--profile profiles/slurm); a local run trains on one machine: train.nodes: 1"),
])
def test_local_gpu_settings_that_cannot_work_stop_at_plan_time(workdir, text, visible, line):
    (workdir / "gpu.yaml").write_text(text)
    proc = smk(workdir, "-n", "--cores", "2", "--configfile", "tiny.yaml", "gpu.yaml", check=False,
               env={"CUDA_VISIBLE_DEVICES": visible})
    assert proc.returncode != 0
    assert [l for l in proc.stderr.splitlines() if l.startswith("mgpipe:")] == [line], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("args", [["--rulegraph"], ["--dag"], ["--summary"], ["--lint"]])
def test_commands_that_run_nothing_need_no_cores(workdir, args):
    proc = smk(workdir, *args, "--configfile", "tiny.yaml", check=False)
    assert "requires a total number of cores" not in proc.stdout + proc.stderr, proc.stderr[-2000:]
    if args[0] != "--lint":   # (lint: test_lint_is_clean)
        assert proc.returncode == 0, proc.stderr[-2000:]
    if args[0] in ("--rulegraph", "--dag"):
        assert proc.stdout.lstrip().startswith("digraph") and "train" in proc.stdout


@pytest.mark.parametrize("text, key", [
    ("train:\n  epochz: 3\n", "unknown config key train.epochz"),
    ("heatmaps:\n  size: big\n", "config key heatmaps.size: 'big' is not of type 'integer'"),
    ("ensemble:\n  members: {fused: 1.0, swin: 1.0}\n", "config key ensemble.members: swin is not trained"),
])
def test_bad_config_stops_with_one_line(workdir, text, key):
    (workdir / "bad.yaml").write_text(text)
    proc = smk(workdir, "-n", "--configfile", "bad.yaml", check=False)
    assert proc.returncode != 0
    lines = [l for l in (proc.stdout + proc.stderr).splitlines() if key in l]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    return tiny_run_copy(tmp_path_factory, "tiny")


def test_report_needs_no_cores(tiny_run):
    proc = smk(tiny_run, "--report", "report.html", "--configfile", "tiny.yaml", check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tiny_run / "report.html").stat().st_size > 0


def test_tiny_run_writes_every_output(tiny_run):
    r = tiny_run / "results" / "tiny"
    metrics = json.loads((r / "ensemble" / "metrics.json").read_text())
    assert set(metrics["models"]) == {"rgb", "joint", "limb", "motion", "swin", "fused_full", "fused_plain"}
    # the motion stream and Video Swin (tiny.yaml: random weights, 32 px) trained, tested, fused
    members = {"fused_full": 1.0, "joint": 1.0, "limb": 1.0, "motion": 1.0, "swin": 1.0}
    assert metrics["ensemble_weights"]["sets"]["config"]["weights"] == members
    assert set(metrics["ensemble"]["weights"]) == set(members)   # the searched weights of the same members
    summary = (r / "ensemble" / "summary.md").read_text()
    assert "| motion | motion |" in summary and "| swin | swin |" in summary
    assert "| config | fused_full 0.2, joint 0.2, limb 0.2, motion 0.2, swin 0.2 |" in summary
    assert set(metrics["models"]["fused_full"]) == {"rgb", "pose", "rgb:pose 1:1", "rgb:pose 2:1", "rgb:pose 1:2"}
    assert [a["variant"] for a in metrics["ablation"]] == ["full", "plain"]
    assert 0 <= metrics["ensemble"]["top1"] <= 1 and metrics["num_test_clips"] == sum(class_counts(1).values())
    # the demo config searches the ensemble weights on the val split and applies them to test
    chosen = metrics["ensemble_weights"]
    assert chosen["applied"] == "searched" and set(chosen["sets"]) == {"searched", "uniform", "config"}
    assert metrics["ensemble"]["weights"] == chosen["sets"]["searched"]["weights"]
    assert metrics["ensemble"]["top1"] == chosen["sets"]["searched"]["test"]["top1"]
    assert chosen["sets"]["searched"]["val"]["top1"] >= chosen["sets"]["uniform"]["val"]["top1"]
    assert "| **searched (applied)** |" in (r / "ensemble" / "summary.md").read_text()
    for f in ("confusion.png", "summary.md", "summary.html", "per_class.csv"):
        assert (r / "ensemble" / f).stat().st_size > 0
    assert 0 <= metrics["ensemble"]["macro_f1"] <= 1 and "macro_f1" in metrics["models"]["joint"]["joint"]
    scores = pd.read_csv(r / "scores" / "fused_full.csv")
    classes = pd.read_csv(r / "classes.csv", dtype={"name": str}, keep_default_na=False)
    assert [f"{s}:{k}:{c.label_id}:{c.name}" for s in ("rgb", "pose") for k, c in enumerate(classes.itertuples())] \
        == list(scores.columns[3:]) and set(scores.split) == {"val", "test"}
    log = pd.read_csv(r / "models" / "joint" / "log.csv")
    assert list(log.epoch) == [1, 2] and "val_top1" in log
    for rule in ("decode", "pose", "train_joint", "train_fused_full", "train_motion", "train_swin", "ensemble"):
        assert (r / "logs" / f"{rule}.log").stat().st_size > 0


def test_tiny_run_leaves_lines_in_its_logs_a_whole_summary_and_no_state(tiny_run):
    """Logs hold lines (no tqdm carriage returns), summary.html has its pictures inside, and the
    finished trainings' state is gone (train.keep_state false) while their outputs stand."""
    import re

    r = tiny_run / "results" / "tiny"
    for log_file in (r / "logs").glob("*.log"):
        assert "\r" not in log_file.read_text(), log_file
    assert "INFO mgpipe.progress: decode: 100%" in (r / "logs" / "decode.log").read_text()
    page = (r / "ensemble" / "summary.html").read_text()
    refs = re.findall(r"""(?:src|href)\s*=\s*['"]?([^'" >]*)""", page)
    assert len(refs) == 1 + 7 and all(x.startswith("data:image/png;base64,") for x in refs)
    assert "<h2>Data (clips per class and split)" in page and "<h2>Config" in page
    assert not (r / "state").exists()
    assert all((r / "models" / m / "model.pt").exists() for m in ("joint", "swin", "fused_full"))


def test_second_run_has_nothing_to_do(tiny_run):
    proc = smk(tiny_run, "--cores", "2", "--configfile", "tiny.yaml")
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_rerun_of_the_joint_model_plans_only_its_dependents(tiny_run):
    proc = smk(tiny_run, "--cores", "2", "--configfile", "tiny.yaml", "-R", "results/tiny/models/joint/model.pt", "-n")
    assert planned(proc) == {"train": 3, "merge": 2, "test": 3, "ensemble": 1, "all": 1}
    assert models_of(proc, "train") == ["fused_full", "fused_plain", "joint"]


def test_changed_training_setting_reruns_only_that_training(tiny_run):
    (tiny_run / "more.yaml").write_text("pose_model:\n  optim: {epochs: 3, batch_size: 4, lr: 0.02, lr_steps: [2]}\n")
    proc = smk(tiny_run, "--cores", "2", "--configfile", "tiny.yaml", "more.yaml", "-n")
    jobs = planned(proc)
    # the pose pathway settings feed the joint, limb and fused models; nothing upstream reruns
    assert "decode" not in jobs and "heatmaps" not in jobs
    assert models_of(proc, "train") == ["fused_full", "fused_plain", "joint", "limb"]


def test_editing_heatmap_code_reruns_what_draws_heatmaps(tiny_run):
    # the training samples are drawn with mgpipe/pose/heatmap_render.py (and cropped by its compact box)
    module = tiny_run / "mgpipe" / "pose" / "heatmap_render.py"
    original = module.read_text()
    try:
        module.write_text(original + "\n# an edit\n")
        proc = smk(tiny_run, "--cores", "2", "--configfile", "tiny.yaml", "-n")
        jobs = planned(proc)
    finally:
        module.write_text(original)
    assert models_of(proc, "train") == ["fused_full", "fused_plain", "joint", "limb", "motion", "rgb", "swin"]
    assert jobs["ensemble"] == 1
    assert "decode" not in jobs and "pose" not in jobs and "clips" not in jobs


def test_same_seed_gives_identical_metrics(tiny_run, tmp_path):
    """A fresh run from nothing with the same config and seed gives the same models (here the lean
    config's: workflow_runs.lean_config)."""
    other = make_workdir(tmp_path / "again")
    smk(other, "--cores", "2", "--configfile", lean_config(other))
    assert_lean_run_equals_tiny_run(other, tiny_run)


def _own_data_config(workdir: Path, demo: Path, on_missing: str) -> str:
    table = pd.read_csv(demo / "labels.csv", dtype={"video_id": str})
    extra = table.iloc[[0]].copy()
    extra["video_id"] = "lost_video"
    pd.concat([table, extra]).to_csv(workdir / "labels_missing.csv", index=False)
    (workdir / "own.yaml").write_text(
        f"results: results/own\n"
        f"dataset:\n  kind: imigue\n  label_table: labels_missing.csv\n  split: {demo}/split.csv\n"
        f"  videos: {demo}/videos\n  skeletons: {demo}/skeletons\n  on_missing: {on_missing}\n")
    return "own.yaml"


def test_missing_video_stops_before_training(tiny_run):
    demo = tiny_run / "results" / "tiny" / "demo_data"
    cfg = _own_data_config(tiny_run, demo, "error")
    proc = smk(tiny_run, "--cores", "2", "--configfile", "tiny.yaml", cfg, check=False)
    assert proc.returncode != 0
    assert "lost_video.mp4: video not found" in proc.stdout + proc.stderr
    assert not (tiny_run / "results" / "own" / "frames.h5").exists()


def test_missing_video_can_be_skipped_with_a_log_line(tiny_run):
    demo = tiny_run / "results" / "tiny" / "demo_data"
    cfg = _own_data_config(tiny_run, demo, "skip")
    smk(tiny_run, "--cores", "2", "--configfile", "tiny.yaml", cfg, "--until", "clips")
    assert "lost_video.mp4" in (tiny_run / "results/own/logs/clips.log").read_text()
    manifest = pd.read_csv(tiny_run / "results/own/clips.csv")
    assert "lost_video" not in set(manifest.video_id)


def test_paper_recipe_plans_on_user_data(tiny_run):
    demo = tiny_run / "results" / "tiny" / "demo_data"
    (tiny_run / "paths.yaml").write_text(
        f"results: results/paper\ndataset:\n  kind: imigue\n  label_table: {demo}/labels.csv\n"
        f"  split: {demo}/split.csv\n  videos: {demo}/videos\n  skeletons: {demo}/skeletons\n"
        f"  classes: [1, 2, 3, 4, 5, 6, 99]\n"
        # paper.yaml's Video Swin starts from torchvision's Kinetics weights, which a plan finds
        # in torch's cache or refuses in one line (no download in a job); none is cached here
        f"swin: {{weights: null}}\n"
        # and trains on CUDA, which a local plan without a GPU refuses in one line
        f"train: {{device: auto}}\n")
    jobs = planned(smk(tiny_run, "-n", "--cores", "2", "--configfile", "config/paper.yaml", "paths.yaml"))
    # the seed's ensemble: rgb, joint, limb, swin (Video Swin-B, weights by name: checked, not downloaded), fused_full
    assert "demo_data" not in jobs and jobs["train"] == 5 and jobs["test"] == 5


def test_feature_stages_are_shared_through_the_output_cache(tiny_run, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    env_cache = {"SNAKEMAKE_OUTPUT_CACHE": str(cache)}
    os.environ.update(env_cache)
    try:
        first = make_workdir(tmp_path / "first")
        targets = ["results/tiny/frames.h5", "results/tiny/heatmaps.h5"]
        # (targets first: --cache and --configfile take lists and would swallow them)
        smk(first, *targets, "--cores", "2", "--configfile", "tiny.yaml", "--cache")
        assert len(list(cache.iterdir())) == 3          # decode, pose, heatmaps
        second = make_workdir(tmp_path / "second")
        proc = smk(second, *targets, "--cores", "2", "--configfile", "tiny.yaml", "--cache")
        out = proc.stdout + proc.stderr
        for name in ("frames.h5", "keypoints.h5", "heatmaps.h5"):
            assert f"{name} from cache" in out
    finally:
        os.environ.pop("SNAKEMAKE_OUTPUT_CACHE")


def test_pose_only_mode_runs_without_videos(tiny_run, tmp_path):
    """The skeleton half of the pipeline from the same label table, with no video anywhere."""
    demo = tiny_run / "results" / "tiny" / "demo_data"
    data = tmp_path / "skeletons_only"
    shutil.copytree(demo, data, ignore=shutil.ignore_patterns("videos"))
    (tiny_run / "poseonly.yaml").write_text(
        f"results: results/poseonly\nmode: pose\ndataset:\n  kind: imigue\n"
        f"  label_table: {data}/labels.csv\n  split: {data}/split.csv\n  skeletons: {data}/skeletons\n")
    proc = smk(tiny_run, "-n", "--cores", "2", "--configfile", "tiny.yaml", "poseonly.yaml")
    assert planned(proc) == {"clips": 1, "pose": 1, "train": 2, "test": 2, "ensemble": 1, "all": 1}
    assert models_of(proc, "train") == ["joint", "limb"]
    smk(tiny_run, "--cores", "2", "--configfile", "tiny.yaml", "poseonly.yaml")
    r = tiny_run / "results" / "poseonly"
    metrics = json.loads((r / "ensemble" / "metrics.json").read_text())
    assert set(metrics["models"]) == {"joint", "limb"}
    assert set(metrics["ensemble"]["weights"]) == {"joint", "limb"}
    assert not (r / "frames.h5").exists()
    full = pd.read_csv(tiny_run / "results/tiny/clips.csv")
    pose_only = pd.read_csv(r / "clips.csv")
    # Same clips and splits as the full run of this label table; no video was probed.
    assert list(pose_only.clip_id) == list(full.clip_id) and list(pose_only.split) == list(full.split)
    assert pose_only.width.isna().all()
    assert "pose-only" in (r / "logs" / "clips.log").read_text()


# A new single-stream model, as a user would add it: one registry entry and nothing else.
TOY_SPEC = """

register(ModelSpec(
    name="toy", inputs=("joint",), outputs={"toy": "logits"},
    sections=("seed", "train", "pose_model", "heatmaps"),
    network=lambda config, channels: {"type": "single", "kind": "pose", "in_channels": channels[0],
                                      "cfg": {**config["pose_model"]["network"], "base_channels": 2}},
    optim=lambda config: {**config["pose_model"]["optim"], "epochs": 1},
    augment=_pose_augment, enabled=lambda config: True))
"""


def test_a_new_model_needs_one_registry_entry_and_no_rule(tiny_run, tmp_path):
    toy = make_workdir(tmp_path / "toy")
    rules = {f.name: f.read_text() for f in (toy / "workflow" / "rules").glob("*.smk")}
    specs_py = toy / "mgpipe" / "learning" / "specs.py"
    specs_py.write_text(specs_py.read_text() + TOY_SPEC)
    demo = tiny_run / "results" / "tiny" / "demo_data"
    (toy / "toy.yaml").write_text(
        f"results: results/toy\nmode: pose\ndataset:\n  kind: imigue\n  label_table: {demo}/labels.csv\n"
        f"  split: {demo}/split.csv\n  skeletons: {demo}/skeletons\nlimb: {{enabled: false}}\n"
        f"ensemble: {{members: {{joint: 1.0, toy: 1.0}}}}\n")
    proc = smk(toy, "-n", "--cores", "2", "--configfile", "tiny.yaml", "toy.yaml")
    assert models_of(proc, "train") == ["joint", "toy"] and models_of(proc, "test") == ["joint", "toy"]
    smk(toy, "--cores", "2", "--configfile", "tiny.yaml", "toy.yaml")
    r = toy / "results" / "toy"
    assert {f.name: f.read_text() for f in (toy / "workflow" / "rules").glob("*.smk")} == rules
    log = pd.read_csv(r / "models" / "toy" / "log.csv")
    assert list(log.epoch) == [1] and "train_top1_toy" in log      # its own schedule and stream
    scores = pd.read_csv(r / "scores" / "toy.csv")
    assert scores.columns[3].startswith("toy:0:")
    metrics = json.loads((r / "ensemble" / "metrics.json").read_text())
    assert set(metrics["models"]) == {"joint", "toy"} and set(metrics["ensemble"]["weights"]) == {"joint", "toy"}
    assert metrics["ensemble_weights"]["sets"]["config"]["weights"] == {"joint": 1.0, "toy": 1.0}
    from mgpipe.formats.checkpoints import load

    ckpt = load(r / "models" / "toy" / "model.pt")
    assert ckpt["name"] == "toy" and ckpt["arch"]["cfg"]["base_channels"] == 2


def test_image_pose_backend_reads_the_frame_store(workdir):
    proc = smk(workdir, "-n", "--cores", "2", "--configfile", "tiny.yaml", "--forceall",
               "--config", "pose={backend: mediapipe, python: /nonexistent/python}", "--until", "pose")
    assert planned(proc) == {"demo_data": 1, "clips": 1, "decode": 1, "pose": 1}
    pose_job = proc.stdout[proc.stdout.index("rule pose:"):]
    assert "frames.h5" in pose_job.split("output:")[0]


def test_keypoints_export_to_a_pyskl_pickle(tiny_run):
    from mgpipe.sources.skeleton_io import import_pickle

    smk(tiny_run, "results/tiny/keypoints.pkl", "--cores", "2", "--configfile", "tiny.yaml")
    table = import_pickle(tiny_run / "results/tiny/keypoints.pkl", tiny_run / "back.h5")
    manifest = pd.read_csv(tiny_run / "results/tiny/clips.csv")
    assert list(table.clip_id) == list(manifest.clip_id) and list(table.split) == list(manifest.split)


def mgpipe_cli(workdir: Path, *args, check=True):
    env = dict(os.environ, PYTHONPATH=str(workdir))
    proc = subprocess.run([sys.executable, "-m", "mgpipe", "-q", *args], cwd=workdir, env=env,
                          capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"mgpipe {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def test_predict_and_spot_on_a_demo_video(tiny_run, tmp_path):
    r = tiny_run / "results" / "tiny"
    manifest = pd.read_csv(r / "clips.csv", dtype={"video_id": str})
    video = manifest[manifest.split == "test"].video.iloc[0]
    common = ["--model", str(r / "models/fused_full/model.pt"), "--config", "config.yaml", "tiny.yaml",
              "--skeletons", str(r / "demo_data/skeletons")]
    proc = mgpipe_cli(tiny_run, "predict", video, *common, "--top-k", "3", "--out-dir", str(tmp_path / "p"))
    pred = json.loads((tmp_path / "p" / "prediction.json").read_text())
    classes = pd.read_csv(r / "classes.csv")
    assert [row["rank"] for row in pred["top_k"]] == [1, 2, 3]
    assert {row["class"] for row in pred["top_k"]} <= set(classes.name)
    probs = [row["probability"] for row in pred["top_k"]]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
    assert pred["top_k"][0]["class"] in proc.stdout

    mgpipe_cli(tiny_run, "predict", video, *common, "--spot", "--threshold", "0", "--out-dir", str(tmp_path / "s"))
    timeline = pd.read_csv(tmp_path / "s" / "timeline.csv")
    windows = pd.read_csv(tmp_path / "s" / "windows.csv")
    assert (tmp_path / "s" / "timeline.png").stat().st_size > 0
    frames = int(manifest[manifest.video == video].end_frame.max())  # the video is at least this long
    assert windows.start_frame.iloc[0] == 0 and windows.end_frame.iloc[-1] >= frames
    # Threshold 0: every window is a hit, so the segments tile the whole video without overlap.
    assert timeline.start_frame.iloc[0] == 0 and timeline.end_frame.iloc[-1] == windows.end_frame.iloc[-1]
    assert (timeline.start_frame.iloc[1:].to_numpy() == timeline.end_frame.iloc[:-1].to_numpy() + 1).all()
    assert timeline.windows.sum() == len(windows)


def test_predict_errors_are_one_line(tiny_run):
    r = tiny_run / "results" / "tiny"
    proc = mgpipe_cli(tiny_run, "predict", "nope.mp4", "--model", str(r / "models/joint/model.pt"),
                      "--config", "config.yaml", "tiny.yaml", check=False)
    assert proc.returncode == 2 and "nope.mp4: video not found" in proc.stderr
    assert "Traceback" not in proc.stderr
    video = str(next((r / "demo_data/videos").glob("*.mp4")))
    proc = mgpipe_cli(tiny_run, "predict", video, "--model", str(r / "models/joint/model.pt"),
                      "--config", "config.yaml", "tiny.yaml", check=False)
    assert proc.returncode == 2 and "give the video's keypoints with --skeletons" in proc.stderr


def test_predict_and_spot_on_a_video_of_a_real_photo(tiny_run, tmp_path):
    """A new video with no keypoints: the mediapipe backend (real weights, own environment) finds
    the person in a pan-and-zoom video of a real photo, and the demo model classifies it."""
    side = os.environ.get("MGPIPE_MEDIAPIPE_PYTHON") or str(REPO / ".venvs/mediapipe/bin/python")
    if not Path(side).exists():
        if os.environ.get("MGPIPE_REQUIRE_BACKENDS") == "1":
            pytest.fail(f"mediapipe environment not found at {side}: run scripts/install_mediapipe.sh")
        pytest.skip(f"mediapipe environment not found at {side}")
    video = tmp_path / "grace_hopper.mp4"
    mgpipe_cli(tiny_run, "photo-video", "grace_hopper", str(video), "--frames", "75")
    (tiny_run / "mediapipe.yaml").write_text(
        f"pose: {{backend: mediapipe, python: {side}, layout: coco17, options: {{model: pose}}}}\n")
    r = tiny_run / "results" / "tiny"
    common = ["--model", str(r / "models/fused_full/model.pt"), "--config", "config.yaml", "tiny.yaml", "mediapipe.yaml"]
    proc = mgpipe_cli(tiny_run, "predict", str(video), *common, "--out-dir", str(tmp_path / "p"))
    pred = json.loads((tmp_path / "p" / "prediction.json").read_text())
    assert len(pred["top_k"]) == 5 and pred["top_k"][0]["class"] in proc.stdout
    mgpipe_cli(tiny_run, "predict", str(video), *common, "--spot", "--window", "1", "--stride", "0.4",
               "--threshold", "0", "--out-dir", str(tmp_path / "s"))
    windows = pd.read_csv(tmp_path / "s" / "windows.csv")
    # 3 s at 25 fps: 1 s windows every 0.4 s start at frames 0, 10, ..., 50 and end at 74
    assert list(windows.start_frame) == [0, 10, 20, 30, 40, 50] and windows.end_frame.iloc[-1] == 74
    assert (tmp_path / "s" / "timeline.png").stat().st_size > 0
