"""benchmarks/gpu_check.sh on a machine without CUDA: it runs what needs no GPU (the generated
store, a demo-size bench with the real loaders, the data-path costs), names every step it skipped,
and exits 0."""

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="with CUDA the script runs the GPU steps instead")
def test_gpu_check_on_the_cpu_says_what_it_skipped(tmp_path):
    env = dict(os.environ, OUT=str(tmp_path), SUBJECTS="4", PYTHON=sys.executable)
    proc = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh")], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = (tmp_path / "gpu_table.md").read_text()
    assert table in proc.stdout
    skipped = table.split("## Skipped")[1]
    for step in ("CUDA tests", "paper-size bench", "training epoch of the demo on the GPU"):
        assert step in skipped
    bench = pd.read_csv(tmp_path / "bench.csv")
    assert list(bench.model) == ["joint", "rgb", "fused_full"] and (bench["full step clips/s"] > 0).all()
    path = pd.read_csv(tmp_path / "bench_data_path.csv")
    assert [r.split()[0] for r in path["data path"]] == ["joint", "joint", "limb", "limb", "rgb", "rgb", "rgb", "heatmap"]  # sample, batch step (rgb: floor)
