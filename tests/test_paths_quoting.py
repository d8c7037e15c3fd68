"""Results and data folders whose names hold spaces, quotes and `$(...)` (issue 18, case 1): every
path a rule puts into a shell command is quoted, so the command sees each path as one argument,
runs nothing from it, and writes nothing outside the results folder."""

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from workflow_runs import lean_config, make_workdir

pytestmark = pytest.mark.slow

# A space, both quotes, a command substitution in both spellings, and a `;`.
HOSTILE = "my run 'single' \"double\" $(touch marker) `touch marker`;"


def smk(workdir: Path, *args, check=True):
    # No bytecode caches: the test asserts that nothing outside the results folder is written.
    env = dict(os.environ, PYTHONPATH=str(workdir), PYTHONDONTWRITEBYTECODE="1")
    proc = subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=workdir, env=env,
                          capture_output=True, text=True, timeout=1800)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def shell_commands(proc) -> list[str]:
    commands = [line.split(":", 1)[1].strip() for line in (proc.stdout + proc.stderr).splitlines()
                if line.startswith("Shell command:")]
    return [c for c in commands if c != "None"]   # (rule all has none)


def tree(root: Path, skip: set[Path]) -> dict:
    """{relative path: (size, mtime)} of every file under root outside the folders in skip."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if Path(dirpath, d) not in skip]
        for name in filenames:
            st = os.lstat(Path(dirpath, name))
            out[str(Path(dirpath, name).relative_to(root))] = (st.st_size, st.st_mtime_ns)
    return out


def markers(*roots: Path) -> list[Path]:
    return [p for root in roots for p in root.rglob("marker")]


def test_every_shell_path_is_one_quoted_argument(tmp_path):
    """A dry run prints each job's command: every results path in it parses back (as the shell
    splits words) to one whole argument under the results folder; none is cut at the space."""
    workdir = make_workdir(tmp_path / "wf")
    results = f"results/{HOSTILE}"
    (workdir / "results").mkdir()
    (workdir / "results" / "my").write_text("an unrelated file\n")
    (workdir / "hostile.json").write_text(json.dumps({"results": results}))
    proc = smk(workdir, "-n", "-p", "--forceall", "--cores", "2", "--configfile", "tiny.yaml", "hostile.json")
    commands = shell_commands(proc)
    # demo_data, clips, decode, pose, 7 train, 2 merge, 7 test, ensemble
    assert len(commands) == 21, proc.stdout
    paths = 0
    for cmd in commands:
        words = shlex.split(cmd)
        assert "results/my" not in words, cmd
        log = words[words.index("2>") + 1]
        assert log.startswith(results + "/logs/"), cmd
        for word in words:
            if "results/" in word and not word.startswith("{"):   # (not the --config-json)
                assert word.split("=", 1)[-1].startswith(results + "/"), (word, cmd)
                paths += 1
    assert paths > 50
    # A real job with the same name: the demo data generator, its log in the results folder.
    smk(workdir, "--cores", "2", "--configfile", "tiny.yaml", "hostile.json", "--until", "demo_data")
    assert (workdir / results / "logs" / "demo_data.log").exists()
    assert (workdir / results / "demo_data" / "labels.csv").exists()
    assert (workdir / "results" / "my").read_text() == "an unrelated file\n"
    assert not markers(tmp_path, Path.cwd())


def test_tiny_run_in_hostile_results_and_data_folders(tmp_path):
    """The tiny workflow end to end on user data (not the demo rule) kept in a folder with a
    hostile name, writing into a results folder with a hostile name."""
    from mgpipe.tools.demo_data import generate

    workdir = make_workdir(tmp_path / "wf")
    data = workdir / f"data {HOSTILE}"
    generate(data, seed=0, num_subjects=4, segments_per_class=1, width=160, height=120, fps=25,
             progress=False, processes=1)
    results = f"results/{HOSTILE}"
    (workdir / "results").mkdir()
    (workdir / "results" / "my").write_text("an unrelated file\n")
    config = json.loads((workdir / lean_config(workdir)).read_text())
    (workdir / "hostile.json").write_text(json.dumps({
        **config, "results": results,
        "dataset": {"kind": "imigue", "label_table": f"{data}/labels.csv", "split": f"{data}/split.csv",
                    "videos": f"{data}/videos", "skeletons": f"{data}/skeletons"}}))
    skip = {workdir / results, workdir / ".snakemake"}
    before = tree(tmp_path, skip)

    smk(workdir, "--cores", "2", "--configfile", "hostile.json")

    metrics = json.loads((workdir / results / "ensemble" / "metrics.json").read_text())
    assert set(metrics["models"]) == {"rgb", "joint", "limb", "fused_full"}   # every rule ran
    assert not (workdir / results / "demo_data").exists()       # the data came from the hostile folder
    assert not markers(tmp_path, Path.cwd())
    assert tree(tmp_path, skip) == before


@pytest.mark.parametrize("results, message", [
    # Snakemake reads braces as wildcards; a command reads a leading "-" as an option.
    ("results/run {1}", "mgpipe: config key results: results/run {1}: braces are not allowed in a path "
                        "(Snakemake wildcards)"),
    ("-run", "mgpipe: config key results: -run: a path starting with '-' reads as an option; write ./-run"),
])
def test_paths_a_command_cannot_take_stop_with_one_line(tmp_path, results, message):
    workdir = make_workdir(tmp_path / "wf")
    (workdir / "bad.json").write_text(json.dumps({"results": results}))
    proc = smk(workdir, "-n", "--cores", "2", "--configfile", "tiny.yaml", "bad.json", check=False)
    assert proc.returncode != 0
    assert [l for l in (proc.stdout + proc.stderr).splitlines() if "mgpipe:" in l] == [message], proc.stderr
    assert "Traceback" not in proc.stderr
