"""The SLURM profile on a real SLURM: scripts/slurm_local.sh starts munge, MariaDB, slurmdbd,
slurmctld and slurmd for one local node (2 CPUs and two GPUs that are plain files: SLURM hands
them out and accounts them, torch in the job finds no CUDA), and the lean tiny workflow runs with
`--profile profiles/slurm` and train.device auto, every rule a SLURM job, to the models of the
local tiny run; its training and test jobs are allocated one GPU each, the data jobs none.
Needs root (the daemons) and the Debian packages (installed by the script); skipped otherwise,
failed instead where MGPIPE_REQUIRE_SLURM=1 (CI)."""

import json
import os
import re
import shlex
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from workflow_runs import (
    assert_lean_run_equals_tiny_run,
    lean_config,
    make_workdir,
    planned,
    smk,
    tiny_run_copy,
)

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "slurm_local.sh"
REQUIRED = os.environ.get("MGPIPE_REQUIRE_SLURM") == "1"


def unavailable(why: str):
    (pytest.fail if REQUIRED else pytest.skip)(f"no local SLURM: {why}")


@pytest.fixture(scope="session")
def slurm_conf():
    """A running one-node SLURM with accounting; stopped afterwards unless it was up before."""
    if os.geteuid() != 0:
        unavailable("scripts/slurm_local.sh needs root")
    try:
        import snakemake_executor_plugin_slurm  # noqa: F401
    except ImportError:
        unavailable("snakemake-executor-plugin-slurm is not installed (pip install '.[slurm]')")
    was_up = subprocess.run(["bash", str(SCRIPT), "status"], capture_output=True).returncode == 0
    t0 = time.time()
    proc = subprocess.run(["bash", str(SCRIPT), "start"], capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        unavailable(f"scripts/slurm_local.sh start failed: {proc.stderr.strip()[-500:]}")
    print(f"local SLURM up in {time.time() - t0:.1f} s")
    conf = proc.stdout.strip().splitlines()[-1]
    yield conf
    if not was_up:
        subprocess.run(["bash", str(SCRIPT), "stop"], capture_output=True, timeout=300)


def slurm_env(conf: str, workdir: Path) -> dict:
    return dict(os.environ, SLURM_CONF=conf, PYTHONPATH=str(workdir))


def write_test_profile(workdir: Path) -> str:
    """profiles/slurm with this cluster's account and partition, the node's 2 CPUs and memory
    that fits it, no retries (a cancelled job must fail), and quick status checks."""
    profile = yaml.safe_load((workdir / "profiles" / "slurm" / "config.yaml").read_text())
    profile["default-resources"].update(slurm_account="root", slurm_partition="debug", mem_mb=1000)
    for resources in profile["set-resources"].values():
        resources.update(mem_mb=1000)
        if "slurm_partition" in resources:
            resources["slurm_partition"] = "debug"
    profile.update({"cores": 2, "retries": 0, "latency-wait": 5,
                    "slurm-init-seconds-before-status-checks": 1})
    (workdir / "profiles" / "slurm-test").mkdir(exist_ok=True)
    (workdir / "profiles" / "slurm-test" / "config.yaml").write_text(yaml.safe_dump(profile))
    return "profiles/slurm-test"


def run_slurm(workdir: Path, conf: str, *args, check=True, timeout=1200):
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--profile", write_test_profile(workdir), *args],
                          cwd=workdir, env=slurm_env(conf, workdir), capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-4000:]}")
    return proc


def sacct(conf: str, workdir: Path, *args) -> list[dict]:
    """The jobs sacct knows (allocations only), as dicts; also printed."""
    fields = ["JobID", "JobName", "Comment", "State", "ExitCode", "Elapsed", "ReqTRES", "AllocTRES"]
    out = subprocess.run(["sacct", "-X", "-a", "-P", "-n", "-S", "now-1days", *args, "-o", ",".join(fields)],
                         env=slurm_env(conf, workdir), capture_output=True, text=True, check=True).stdout
    subprocess.run(["sacct", "-X", "-a", "-S", "now-1days", *args, "-o",
                    "JobID,Comment%40,State,ExitCode,Elapsed,AllocTRES%60"], env=slurm_env(conf, workdir))
    return [dict(zip(fields, line.split("|"))) for line in out.splitlines() if line]


def rule_of(comment: str) -> tuple[str, str]:
    """(rule, wildcards) from the executor's job comment rule_<rule>[_wildcards_<values>]."""
    m = re.fullmatch(r"rule_(.+?)(?:_wildcards_(.+))?", comment)
    assert m, comment
    return m.group(1), m.group(2) or ""


@pytest.fixture(scope="module")
def runs(slurm_conf, tmp_path_factory):
    """The tiny workflow locally (--cores 2: the tests' shared run) and, lean (workflow_runs.lean_config:
    every rule, fewer models), on SLURM in another copy of the workflow."""
    local = tiny_run_copy(tmp_path_factory, "local")
    cluster = make_workdir(tmp_path_factory.mktemp("slurm"))
    lean = lean_config(cluster)
    plan = planned(smk(cluster, "-n", "--cores", "2", "--configfile", lean))
    t0 = time.time()
    proc = run_slurm(cluster, slurm_conf, "--configfile", lean)
    print(f"lean tiny workflow on SLURM: {time.time() - t0:.0f} s")
    job_ids = re.findall(r"submitted with SLURM jobid (\d+)", proc.stdout + proc.stderr)
    assert job_ids, proc.stderr[-3000:]
    return {"local": local, "cluster": cluster, "plan": plan, "proc": proc, "jobs": ",".join(job_ids)}


def test_every_rule_is_one_slurm_job_and_models_equal_the_local_run(runs, slurm_conf):
    jobs = sacct(slurm_conf, runs["cluster"], "-j", runs["jobs"])
    assert jobs and all(j["State"] == "COMPLETED" for j in jobs), jobs
    per_rule = {}
    for job in jobs:
        rule, wildcards = rule_of(job["Comment"])
        per_rule.setdefault(rule, []).append(wildcards)
    expected = {rule: n for rule, n in runs["plan"].items() if rule != "all"}  # `all` runs no command
    assert {rule: len(w) for rule, w in per_rule.items()} == expected
    assert all(len(set(w)) == len(w) for w in per_rule.values())  # one job per rule run
    # the node lists two GPUs (sinfo gpu:2): with train.device auto every training and test job is
    # allocated train.gpus (1) of them, no data job one
    for j in sorted(jobs, key=lambda j: j["Comment"]):
        print(f"{j['JobName']:38} {j['Comment']:40} {j['State']:10} {j['AllocTRES']}")
    for job in jobs:
        rule = rule_of(job["Comment"])[0]
        if rule in ("train", "test"):
            assert "gres/gpu=1" in job["AllocTRES"].split(","), job
        else:
            assert "gpu" not in job["AllocTRES"], job
    assert_lean_run_equals_tiny_run(runs["cluster"], runs["local"])


def test_job_logs_are_where_the_readme_says(runs, slurm_conf):
    jobs = sacct(slurm_conf, runs["cluster"], "-j", runs["jobs"])
    readme = (REPO / "README.md").read_text()
    assert ".snakemake/slurm_logs/rule_<rule>/" in readme
    for job in jobs:
        rule, wildcards = rule_of(job["Comment"])
        slurm_log = runs["cluster"] / ".snakemake" / "slurm_logs" / f"rule_{rule}" / wildcards / f"{job['JobID']}.log"
        assert slurm_log.stat().st_size > 0, slurm_log
        stage_log = runs["cluster"] / "results" / "tiny" / "logs" / (f"{rule}_{wildcards}.log" if wildcards else f"{rule}.log")
        assert stage_log.exists(), stage_log


def test_cancelled_training_fails_with_a_message_and_the_rerun_resumes(runs, slurm_conf):
    """scancel mid-training: the rule fails naming the cancelled job; a rerun resumes from the
    last checkpointed epoch."""
    workdir = runs["cluster"]
    (workdir / "slow.yaml").write_text("pose_model:\n  optim: {epochs: 30, batch_size: 4, lr: 0.02, lr_steps: [25], warmup_epochs: 0}\n")
    target = ["results/tiny/models/joint/model.pt", "--configfile", "tiny.yaml", "slow.yaml"]
    state = workdir / "results" / "tiny" / "state" / "joint" / "last.pt"
    env = slurm_env(slurm_conf, workdir)
    proc = subprocess.Popen([sys.executable, "-m", "snakemake", "--profile", write_test_profile(workdir), *target],
                            cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    import torch

    try:
        started, deadline, cancelled = time.time(), time.time() + 600, None
        while time.time() < deadline and proc.poll() is None:
            if state.exists() and state.stat().st_mtime > started:  # written by this job
                try:
                    epoch = torch.load(state, weights_only=False)["epoch"] + 1
                except Exception:  # being replaced right now
                    epoch = 0
                if epoch >= 2:
                    queued = subprocess.run(["squeue", "-h", "-o", "%i %k"], env=env, capture_output=True,
                                            text=True, check=True).stdout.split("\n")
                    train = [line.split()[0] for line in queued if "rule_train_wildcards_joint" in line]
                    assert train, queued
                    subprocess.run(["scancel", train[0]], env=env, check=True)
                    cancelled = (train[0], epoch)
                    break
            time.sleep(0.2)
        out = proc.communicate(timeout=600)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert cancelled, f"training ended before it could be cancelled:\n{out[-3000:]}"
    print(out[-1500:])
    job_id, epoch = cancelled
    assert proc.returncode != 0
    assert re.search(rf"Error in rule train:.*SLURM-job '{job_id}' failed, SLURM status is: 'CANCELLED", out, re.S), out[-3000:]
    assert [j["State"].split()[0] for j in sacct(slurm_conf, workdir, "-j", job_id)] == ["CANCELLED"]

    log = workdir / "results" / "tiny" / "logs" / "train_joint.log"
    run_slurm(workdir, slurm_conf, *target)
    text = log.read_text()
    resumed = re.search(r"joint: resuming after epoch (\d+)", text)
    assert resumed and int(resumed.group(1)) >= epoch, text[-2000:]
    history = (workdir / "results" / "tiny" / "models" / "joint" / "log.csv").read_text().splitlines()
    assert len(history) == 1 + 30


def test_training_across_nodes_asks_for_the_nodes_and_starts_agents_under_srun(runs, slurm_conf):
    """train.nodes: 2 plans a training job with two nodes, one task each, launched by
    mgpipe.tools.multinode; on this one-node cluster the launcher itself runs in a batch job: srun
    starts the torchrun agent, which meets its processes at the c10d rendezvous on the first
    node of the allocation (two processes of one node here)."""
    workdir = runs["cluster"]
    (workdir / "nodes.yaml").write_text("train: {nodes: 2}\n")
    proc = run_slurm(workdir, slurm_conf, "results/tiny/models/joint/model.pt", "-n", "-R", "train",
                     "--configfile", "tiny.yaml", "nodes.yaml")
    plan = proc.stdout.split("rule train:", 1)[1]
    resources = re.search(r"resources: (.*)", plan).group(1).split(", ")
    assert {"nodes=2", "tasks=2", "mpi=srun"} <= set(resources), resources
    assert "python -m mgpipe.tools.multinode --nodes 2 --nproc-per-node 1 -m mgpipe train joint" in plan

    r = workdir / "results" / "tiny"
    cfg = yaml.safe_load((workdir / "tiny.yaml").read_text())
    train = ["python", "-m", "mgpipe.tools.multinode", "--nodes", "1", "--nproc-per-node", "2", "-m", "mgpipe",
             "train", "joint", "--config-json", json.dumps(cfg), "--manifest", str(r / "clips.csv"),
             "--classes", str(r / "classes.csv"), "--keypoints", str(r / "keypoints.h5"),
             "--out-dir", str(workdir / "multinode"), "--state-dir", str(workdir / "multinode_state"),
             "--threads", "1"]
    log = workdir / "multinode.log"
    job = subprocess.run(["sbatch", "--wait", "--parsable", "-N", "1", "-n", "1", "-c", "2", "--mem", "2000",
                          "-o", str(log), "--wrap", " ".join(map(shlex.quote, train))],
                         cwd=workdir, env=slurm_env(slurm_conf, workdir), capture_output=True, text=True, timeout=600)
    text = log.read_text()
    print(text[-1500:])
    assert job.returncode == 0, text[-3000:]
    assert re.search(r"mgpipe: srun --nodes 1 --ntasks 1 --ntasks-per-node 1 --kill-on-bad-exit=1 torchrun "
                     r"--nnodes 1 --nproc_per_node 2 --rdzv_backend c10d --rdzv_endpoint localhost:\d+", text)
    assert "joint: data-parallel over world size 2 (1 node(s) x 2 process(es))" in text
    assert (workdir / "multinode" / "model.pt").exists()


def test_jobs_are_fitted_to_the_largest_node_at_plan_time(slurm_conf, tmp_path):
    """More threads than the node has (cores: 64, set-threads 16) are fitted to its CPUs; memory
    or GPUs no node has, or a partition sinfo does not list, stop the plan with one line naming
    the rule; device cuda plans gpu=1."""
    workdir = make_workdir(tmp_path / "w")
    profile = yaml.safe_load((workdir / "profiles" / "slurm" / "config.yaml").read_text())
    profile["default-resources"].update(slurm_account="root", slurm_partition="debug")
    for resources in profile["set-resources"].values():
        resources.pop("slurm_partition", None)
    profile["cores"] = 64
    profile["default-resources"]["mem_mb"] = 1000
    (workdir / "profiles" / "big").mkdir()
    (workdir / "profiles" / "big" / "config.yaml").write_text(yaml.safe_dump(profile))
    env = slurm_env(slurm_conf, workdir)
    cpus = int(subprocess.run(["sinfo", "-h", "-N", "-o", "%c"], env=env, capture_output=True, text=True,
                              check=True).stdout.split()[0])
    mem = int(subprocess.run(["sinfo", "-h", "-N", "-o", "%m"], env=env, capture_output=True, text=True,
                             check=True).stdout.split()[0])

    def plan(*extra):
        return subprocess.run([sys.executable, "-m", "snakemake", "-n", "--profile", "profiles/big",
                               "--configfile", "tiny.yaml", *extra], cwd=workdir, env=env,
                              capture_output=True, text=True, timeout=300)

    (workdir / "cuda.yaml").write_text("train: {device: cuda}\n")
    proc = plan("cuda.yaml", "--set-resources", "train:mem_mb=1000", "test:mem_mb=1000")
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = re.findall(r"^rule (\w+):\n(?:    .*\n)*?    resources: (.*)$", proc.stdout, re.M)
    threads = dict(re.findall(r"^rule (\w+):\n(?:    .*\n)*?    threads: (\d+)$", proc.stdout, re.M))
    assert int(threads["decode"]) == cpus and int(threads["pose"]) <= cpus, threads
    for rule, resources in jobs:
        if rule in ("train", "test"):
            assert "gpu=1" in resources.split(", "), (rule, resources)
    gpus = int(re.search(r"gpu:(\d+)", subprocess.run(["sinfo", "-h", "-o", "%G"], env=env, capture_output=True,
                                                       text=True, check=True).stdout).group(1))
    (workdir / "many.yaml").write_text(f"train: {{device: cuda, gpus: {gpus + 1}}}\n")
    many = plan("many.yaml", "--set-resources", "train:mem_mb=1000", "test:mem_mb=1000")
    assert many.returncode != 0
    assert [l for l in many.stderr.splitlines() if l.startswith("mgpipe:")] == [
        f"mgpipe: the train rule asks for {gpus + 1} GPU(s) per node, but the largest node of partition debug has "
        f"{gpus} (sinfo); set train.gpus (train.device cpu: none), or the rule's slurm_partition to one with GPUs"], \
        many.stderr[-2000:]
    nowhere = plan("--set-resources", "heatmaps:slurm_partition=nowhere")
    assert [l for l in nowhere.stderr.splitlines() if l.startswith("mgpipe:")] == [
        "mgpipe: the heatmaps rule asks for partition nowhere, which sinfo does not list (partitions: debug); "
        "set slurm_partition in the profile"], nowhere.stderr[-2000:]
    big = plan("--set-resources", f"train:mem_mb={mem + 1}")
    assert big.returncode != 0
    assert [l for l in big.stderr.splitlines() if l.startswith("mgpipe:")] == [
        f"mgpipe: the train rule asks for mem_mb={mem + 1}, but the largest node of partition debug has {mem} MB "
        "(sinfo); lower it in the profile's set-resources"], big.stderr[-2000:]


def test_held_job_is_reported_and_cancelling_it_ends_its_rule_with_a_message(slurm_conf, tmp_path):
    """A job that cannot start by itself (held: --hold, pending with reason JobHeldUser) is
    reported while Snakemake waits (mgpipe/tools/slurm.py: PendingWatch), once; cancelled, it ends
    its rule at once with the job id and state, not a wait without end."""
    workdir = make_workdir(tmp_path / "w")
    profile = write_test_profile(workdir)
    cfg = yaml.safe_load((workdir / profile / "config.yaml").read_text())
    cfg["set-resources"]["demo_data"] = {"mem_mb": 1000, "slurm_extra": "'--hold'"}
    (workdir / profile / "config.yaml").write_text(yaml.safe_dump(cfg))
    env = dict(slurm_env(slurm_conf, workdir), MGPIPE_SLURM_WATCH_SECONDS="1")
    proc = subprocess.Popen([sys.executable, "-m", "snakemake", "--profile", profile, "results/tiny/demo_data/labels.csv",
                             "--configfile", "tiny.yaml"], cwd=workdir, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        job, deadline = None, time.time() + 300
        while job is None and time.time() < deadline and proc.poll() is None:
            time.sleep(0.5)
            job = re.search(r"^mgpipe: SLURM job (\d+) \(rule demo_data\) cannot start: JobHeldUser: it is held "
                            r"\(scontrol release \1, or scancel \1\)$", "".join(lines), re.M)
        assert job, "".join(lines)[-3000:]
        time.sleep(3)   # (a second look of the watch, which must not repeat the line)
        subprocess.run(["scancel", job.group(1)], env=env, check=True)
        t0 = time.time()
        proc.wait(timeout=180)
        reader.join(timeout=30)
        out = "".join(lines)
    finally:
        if proc.poll() is None:
            proc.kill()
    print(f"rule ended {time.time() - t0:.0f} s after scancel")
    assert proc.returncode != 0
    assert out.count("cannot start: JobHeldUser") == 1, out[-3000:]
    assert re.search(rf"Error in rule demo_data:.*SLURM-job '{job.group(1)}' failed, SLURM status is: 'CANCELLED",
                     out, re.S), out[-3000:]


@pytest.mark.parametrize("sinfo, gpus", [("(null)\n", 0), ("gpu:a100:4(S:0-1)\n(null)\ngpu:2\n", 4),
                                         ("gpu:tesla:1,mps:100\n", 1), ("mps:100\n", 0), ("", 0)])
def test_gpus_are_read_from_sinfo_gres(sinfo, gpus):
    from mgpipe.tools.slurm import gres_gpu_count

    assert gres_gpu_count(sinfo) == gpus


def test_multinode_launcher_outside_slurm_stops_with_one_line():
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    proc = subprocess.run([sys.executable, "-m", "mgpipe.tools.multinode", "--nodes", "2", "-m", "mgpipe", "train", "joint"],
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "mgpipe: train.nodes > 1 runs inside a SLURM job (no SLURM_JOB_ID here); use --profile profiles/slurm, or train.nodes: 1"]


def test_sinfo_nodes_are_read_per_partition():
    from mgpipe.tools.slurm import Partition, parse_sinfo_nodes

    text = ("gpu*|64|512000|gpu:a100:4(S:0-1)|2-00:00:00\ngpu*|32|256000+|gpu:2|2-00:00:00\n"
            "cpu|128|1000000|(null)|infinite\nshort|8|n/a|(null)|30:00\nnoise line\n")
    assert parse_sinfo_nodes(text) == {"gpu": Partition(64, 512000, 4, 2880), "": Partition(64, 512000, 4, 2880),
                                       "cpu": Partition(128, 1000000, 0, None), "short": Partition(8, 0, 0, 30)}


@pytest.mark.parametrize("text, minutes", [("infinite", None), ("UNLIMITED", None), ("30:00", 30), ("30:01", 31),
                                           ("2:00:00", 120), ("1-00:00:00", 1440), ("1-12:30", 2190), ("45", 45)])
def test_time_limits_are_read_in_minutes(text, minutes):
    from mgpipe.tools.slurm import time_limit_minutes

    assert time_limit_minutes(text) == minutes


def test_pending_watch_reports_jobs_of_this_workflow_that_cannot_start_once(tmp_path):
    from mgpipe.tools.slurm import PendingWatch

    other = tmp_path / "other"
    queue = (f"11|rule_train_wildcards_joint|JobHeldUser|{tmp_path}\n"
             f"12|rule_decode|Resources|{tmp_path}\n"                    # waits for what comes
             f"13|rule_test_wildcards_fused|QOSMaxGRESPerJob|{tmp_path}\n"
             f"14|rule_train|JobHeldUser|{other}\n"                      # another workflow's
             f"15|my own job|PartitionDown|{tmp_path}\n")                 # not an executor job
    watch = PendingWatch(print, str(tmp_path))
    assert watch.check(queue) == [
        "mgpipe: SLURM job 11 (rule train (joint)) cannot start: JobHeldUser: it is held "
        "(scontrol release 11, or scancel 11)",
        "mgpipe: SLURM job 13 (rule test (fused)) cannot start: QOSMaxGRESPerJob: it asks for more "
        "than a per-job limit of its QOS or association allows"]
    assert watch.check(queue) == []
