"""The JHMDB accuracy table: every member and the ensemble, test top-1 and mean class accuracy
per seed, mean +- sd, from benchmarks/jhmdb.yaml runs in RUNS/seed<N>.

    python benchmarks/jhmdb_table.py RUNS --seeds 0 1 2 --run          # run what is missing, then the table
    python benchmarks/jhmdb_table.py RUNS --seeds 0 1 2                # the table of the finished seeds

--run starts `nice -n 10 snakemake --cores all --configfile benchmarks/jhmdb.yaml
RUNS/paths_seed<N>.yaml` for each seed whose ensemble/metrics.json is missing (a finished seed is
kept and reused; a killed one resumes). Decode and pose read no seed: a later seed copies seed 0's
frame and keypoint stores when its clips are the same (only the validation draw differs) and marks
them done (`snakemake --touch`), instead of spending the pose stage again.
--data: the folder with labels.csv, split.csv and videos/ (default ../shared/data/jhmdb).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "benchmarks" / "jhmdb.yaml"
# (row name, model, stream row of metrics.json): the fused models by their 1:1 stream average,
# the full model's two pathways on their own beside it
ROWS = [("joint", "joint", "joint"), ("limb", "limb", "limb"), ("rgb", "rgb", "rgb"),
        ("motion", "motion", "motion"), ("swin", "swin", "swin"),
        ("fused_full", "fused_full", "rgb:pose 1:1"),
        ("fused_full (rgb pathway)", "fused_full", "rgb"),
        ("fused_full (pose pathway)", "fused_full", "pose"),
        ("fused_nofusion", "fused_nofusion", "rgb:pose 1:1"),
        ("fused_noproto", "fused_noproto", "rgb:pose 1:1")]


def snakemake(args: list[str]) -> None:
    cmd = ["nice", "-n", "10", sys.executable, "-m", "snakemake", "--cores", "all", *args]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=REPO, check=True)


def run_seed(runs: Path, seed: int, data: Path) -> None:
    folder = runs / f"seed{seed}"
    if (folder / "ensemble" / "metrics.json").is_file():
        return
    paths = runs / f"paths_seed{seed}.yaml"
    if not paths.is_file():   # (an existing one is kept: other paths would rerun the seed)
        data = os.path.relpath(data, REPO)   # the workflow runs in the repository
        paths.write_text(json.dumps({
            "seed": seed, "results": str(folder),
            "dataset": {"label_table": f"{data}/labels.csv", "split": f"{data}/split.csv",
                        "videos": f"{data}/videos"}}) + "\n")
    config = ["--configfile", str(RECIPE), str(paths)]
    first = runs / "seed0"
    stores = ("frames.h5", "keypoints.h5")
    if seed != 0 and all((first / s).is_file() for s in stores) and not (folder / "keypoints.h5").exists():
        snakemake([str(folder / "clips.csv"), *config])
        mine, theirs = (pd.read_csv(f / "clips.csv") for f in (folder, first))
        same = ["clip_id", "num_frames", "width", "height"]
        if mine[same].equals(theirs[same]):
            for s in stores:
                shutil.copyfile(first / s, folder / s)
            snakemake(["--touch", *(str(folder / s) for s in stores), *config])
    snakemake(config)


def table(runs: Path, seeds: list[int]) -> tuple[pd.DataFrame, list[int]]:
    reports = {}
    for seed in seeds:
        path = runs / f"seed{seed}" / "ensemble" / "metrics.json"
        if path.is_file():
            reports[seed] = json.loads(path.read_text())
    rows = []
    for name, model, stream in [*ROWS, ("ensemble", None, None)]:
        row = {"member": name}
        for metric, short in (("top1", "top-1"), ("mean_class_accuracy", "mca")):
            values = []
            for seed, report in reports.items():
                if model is None:
                    value = report["ensemble"][metric]
                else:
                    value = report["models"].get(model, {}).get(stream, {}).get(metric, np.nan)
                row[f"{short} s{seed}"] = value
                values.append(value)
            values = np.array(values, float)
            values = values[np.isfinite(values)]
            row[f"{short} mean ± sd"] = ("" if not len(values) else f"{values[0]:.3f}" if len(values) == 1
                                         else f"{values.mean():.3f} ± {values.std(ddof=1):.3f}")
        rows.append(row)
    return pd.DataFrame(rows), sorted(reports)


def markdown(frame: pd.DataFrame) -> str:
    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    for row in frame.itertuples(index=False):
        lines.append("| " + " | ".join(("" if np.isnan(v) else f"{v:.3f}") if isinstance(v, float) else str(v)
                                       for v in row) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", type=Path, help="folder of the seed runs (RUNS/seed<N>)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--run", action="store_true", help="run the seeds whose metrics are missing")
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "jhmdb")
    args = p.parse_args(argv)
    runs = args.runs.resolve()
    if args.run:
        runs.mkdir(parents=True, exist_ok=True)
        for seed in args.seeds:
            run_seed(runs, seed, args.data.resolve())
    frame, done = table(runs, args.seeds)
    if not done:
        print(f"no finished seed under {runs} (seed<N>/ensemble/metrics.json)", file=sys.stderr)
        return 2
    print(f"JHMDB test split, seeds {done} (test top-1 and mean class accuracy, mca)\n")
    print(markdown(frame))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
