"""The shipped skeleton-chain benchmark config (benchmarks/kard.yaml) on the real KARD pickle,
shortened for CI: real Snakemake, pyskl kind, OpenNI 15 layout, no validation split, ensemble
stage. It must learn: 18 classes, chance is 1/18 = 0.056. The full-length figures are in the
README (benchmarks/dev_kard.py)."""

import json
import shutil
from pathlib import Path

import pytest
from workflow_runs import REPO, make_workdir, smk

pytestmark = pytest.mark.slow

KARD = Path(__file__).resolve().parents[2] / "shared" / "data" / "kard2d.pkl"

SHORT = """dataset:
  skeletons: {pickle}
pose_model:
  input: {{frames: 12, size: 24, test_size: 24}}
  network: {{base_channels: 8, stage_blocks: [1, 1, 1], inflate: [0, 1, 1], spatial_strides: [2, 2, 2], temporal_strides: [1, 1, 1], dropout: 0.2}}
  optim: {{epochs: 6}}
test: {{views: 1}}
"""


def test_kard_skeleton_chain_learns(tmp_path):
    if not KARD.is_file():
        pytest.skip(f"real data {KARD} not found (../shared/data beside the checkout)")
    work = make_workdir(tmp_path / "kard")
    shutil.copy(REPO / "benchmarks" / "kard.yaml", work / "kard.yaml")
    (work / "short.yaml").write_text(SHORT.format(pickle=KARD))
    smk(work, "--cores", "2", "--configfile", "kard.yaml", "short.yaml")
    r = work / "results" / "kard"
    metrics = json.loads((r / "ensemble" / "metrics.json").read_text())
    assert metrics["num_test_clips"] == 270 and set(metrics["models"]) == {"joint", "limb"}
    assert metrics["validation"].startswith("none")
    joint = metrics["models"]["joint"]["joint"]["top1"]
    print(f"KARD, short chain: joint {joint:.3f}, ensemble {metrics['ensemble']['top1']:.3f}")
    assert joint > 0.3 and metrics["ensemble"]["top1"] > 0.3       # chance: 0.056
    assert "last epoch" in (r / "ensemble" / "summary.md").read_text()
    assert (r / "ensemble" / "confusion.png").stat().st_size > 0
