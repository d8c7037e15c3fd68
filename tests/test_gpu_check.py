"""benchmarks/gpu_check.sh always ends in its table: each step runs on its own and the table
records it (ok, FAILED with its exit status and last line, skipped with the reason). Here the
store step is forced to fail (FAIL_STEP): the bench after it still runs, fails for want of the
store and is recorded with its own message; the steps that need CUDA are skipped and named; the
script exits 1. (The whole check on the CPU, to its table with every step ok, is a step of .ci/run.)"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]


def steps_of(table: str) -> dict[str, str]:
    """{step: the rest of its row} from the table's Steps section."""
    section = table.split("## Steps\n\n", 1)[1].split("\n\n", 1)[0].splitlines()[1:]
    names = ("CUDA tests", "store", "paper-size bench on the GPU", "bench",
             "training epoch of the demo on the GPU")
    out = {}
    for row in section:
        row = row.strip()
        name = max((n for n in names if row.startswith(n + " ")), key=len)
        out[name] = row[len(name):].strip()
    return out


@pytest.mark.skipif(torch.cuda.is_available(), reason="with CUDA the script runs the GPU steps instead")
def test_a_failing_step_is_recorded_and_the_rest_run_to_the_table(tmp_path):
    env = dict(os.environ, OUT=str(tmp_path), SUBJECTS="4", PYTHON=sys.executable, FAIL_STEP="store")
    proc = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh")], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    print(proc.stdout)
    assert proc.returncode == 1, proc.stderr[-3000:]
    table = (tmp_path / "gpu_table.md").read_text()
    assert table in proc.stdout
    steps = steps_of(table)
    assert list(steps) == ["CUDA tests", "store", "paper-size bench on the GPU", "bench",
                           "training epoch of the demo on the GPU"]
    assert steps["CUDA tests"].startswith("skipped") and "no CUDA device" in steps["CUDA tests"]
    assert steps["store"].startswith("FAILED (exit 1)") and "FAIL_STEP=store: this step fails on purpose" in steps["store"]
    # the bench ran after it and failed on its own: the store it reads is missing
    assert steps["bench"].startswith("FAILED (exit ") and "clips.csv" in steps["bench"], steps["bench"]
    assert (tmp_path / "logs" / "bench.log").read_text().strip()
    assert steps["training epoch of the demo on the GPU"].startswith("skipped")
    assert not (tmp_path / "bench.csv").exists() and "## Networks" not in table
