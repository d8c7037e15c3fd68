"""Real Snakemake runs for the tests: a workdir holding a copy of the workflow, `smk` to run it,
readers of a run's plan, and the tiny config's finished run, shared by every test that needs one.

The tiny run (tests/data/tiny.yaml: every stage and model of the method, one or two epochs) is
the base of the workflow, rerun, SLURM and logging tests. It runs once per test session, whichever
xdist worker asks first, under a file lock; each test gets a copy of the whole workdir with its
files' times and Snakemake's records, so the copy is a finished run (nothing to do) that the test
may change freely."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
from pathlib import Path

from mgpipe.tools.dry_run import jobs_per_rule

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "tests" / "data" / "tiny.yaml"


def make_workdir(path: Path) -> Path:
    """A copy of the workflow and of the mgpipe package: tests may edit module code in it."""
    path.mkdir(parents=True, exist_ok=True)
    for name in ("Snakefile", "config.yaml"):
        shutil.copy(REPO / name, path / name)
    for name in ("workflow", "profiles", "mgpipe", "config"):
        shutil.copytree(REPO / name, path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(TINY, path / "tiny.yaml")
    return path


def smk(workdir: Path, *args, check=True, timeout=900, env=None):
    env = dict(os.environ, PYTHONPATH=str(workdir), **(env or {}))  # the copy of mgpipe wins over the install
    proc = subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=workdir, env=env,
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def models_of(proc, rule: str) -> list[str]:
    """The model wildcards of the jobs of one rule in a dry run's plan, sorted."""
    out, current = [], None
    for line in proc.stdout.splitlines():
        if line.startswith("rule "):
            current = line[5:].rstrip(":")
        elif current == rule and line.strip().startswith("wildcards:"):
            wildcards = dict(w.split("=", 1) for w in line.split(":", 1)[1].strip().split(", "))
            out.append(wildcards["model"])
    return sorted(out)


def planned(proc) -> dict:
    """{rule: count} from the job-stats table of a dry run."""
    return jobs_per_rule(proc.stdout)


TINY_RUN_ARGS = ("--cores", "2", "--configfile", "tiny.yaml")

def lean_config(workdir: Path, **sections) -> str:
    """The tiny config for runs that exercise every rule but need not train every model: RGB,
    joint, limb and one fused variant (the motion stream and Video Swin use the same train and
    test rules); about half the tiny run's jobs and CPU. Written whole into the workdir as
    lean.json (a --configfile merges into dicts and cannot drop an ensemble member), with the
    sections given on top; its name is returned."""
    import json

    import yaml

    config = yaml.safe_load((workdir / "tiny.yaml").read_text())
    config["motion"]["enabled"] = config["swin"]["enabled"] = False
    config["fused"]["variants"] = ["full"]
    config["ensemble"] = {"members": {"fused": 1.0, "joint": 1.0, "limb": 1.0}}
    (workdir / "lean.json").write_text(json.dumps({**config, **sections}))
    return "lean.json"


def assert_lean_run_equals_tiny_run(lean: Path, tiny: Path) -> None:
    """Every model of a lean run (results/tiny of workdir `lean`) scored the test clips exactly as
    the same model of the tiny run did: same config and seed, same results, whichever other
    models trained beside it (and wherever the jobs ran)."""
    import json

    def models(workdir):
        return json.loads((workdir / "results/tiny/ensemble/metrics.json").read_text())["models"]

    ours, theirs = models(lean), models(tiny)
    assert set(ours) == {"rgb", "joint", "limb", "fused_full"}
    for model in ours:
        assert ours[model] == theirs[model], model
        scores = f"results/tiny/scores/{model}.csv"
        assert (lean / scores).read_bytes() == (tiny / scores).read_bytes(), model


def tiny_run_copy(tmp_path_factory, name: str) -> Path:
    """A new workdir in which `snakemake --cores 2 --configfile tiny.yaml` has finished."""
    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent          # every worker's base folder sits in the session's
    finished, failed = shared / "tiny_run", shared / "tiny_run.failed"
    with open(shared / "tiny_run.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)   # (released when the file closes)
        if failed.exists():                # one failure, reported to every test that needs the run
            raise AssertionError(failed.read_text())
        if not finished.exists():
            running = shared / "tiny_run.running"
            shutil.rmtree(running, ignore_errors=True)
            make_workdir(running)
            try:
                smk(running, *TINY_RUN_ARGS)
            except AssertionError as e:
                failed.write_text(str(e))
                raise
            running.rename(finished)
    copy = tmp_path_factory.mktemp(name)
    # copy2 keeps each file's modification time and copytree each folder's: Snakemake compares them
    shutil.copytree(finished, copy, symlinks=True, dirs_exist_ok=True)
    return copy
