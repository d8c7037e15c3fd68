"""The skeleton chain on a pyskl skeleton pickle (default: KARD 2D, OpenNI 15 joints) through the
library API: import the pickle into a keypoint store, train the joint and limb models on the
training split with a fixed schedule (no validation split: the last epoch is kept), score the
test split with the test-time views, and print train / test top-1 of joint, limb and their
score-level ensemble, with minutes per stage.

    python benchmarks/dev_kard.py                       # the recipe of benchmarks/kard.yaml
    python benchmarks/dev_kard.py --set pose_model.optim.epochs=12 --models joint

--set KEY=VALUE overrides one setting (dotted key, YAML value), e.g. pose_model.augment.shift=0.
Results (per-epoch logs, models, score files, summary.json) go to --out.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import pandas as pd
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mgpipe.config import load_yaml, validate  # noqa: E402
from mgpipe.formats.scores import read as read_scores  # noqa: E402
from mgpipe.formats.scores import stream_probs
from mgpipe.sources.skeleton_io import import_pickle  # noqa: E402
from mgpipe.stages.score import score_model  # noqa: E402
from mgpipe.stages.train import run as train_run  # noqa: E402

CONFIG = ROOT / "benchmarks" / "kard.yaml"
# The pickle's split names -> ours when the config's dataset.split_map gives none (pyskl's
# xsub_val is the test set; no validation split).
SPLITS = {"xsub_train": "train", "xsub_val": "test"}

def set_key(config: dict, dotted: str, value: str) -> None:
    *path, last = dotted.split(".")
    node = config
    for k in path:
        node = node.setdefault(k, {})
    node[last] = yaml.safe_load(value)


def load_config(path, overrides) -> tuple[dict, str, dict]:
    """(validated config, keypoint layout of the pickle, split map). The dataset and pose
    sections are the workflow's (this script reads the pickle itself), so only the rest is
    validated here."""
    config = load_yaml(path)
    for item in overrides:
        key, _, value = item.partition("=")
        set_key(config, key, value)
    layout = (config.pop("pose", None) or {}).get("pickle_layout", "openni15")
    splits = (config.get("dataset") or {}).get("split_map") or SPLITS
    for key in ("dataset", "results", "mode"):
        config.pop(key, None)
    return validate(config, str(path)), layout, splits


def prepare(pickle_path, work: Path, layout: str, splits: dict):
    """Keypoint store, manifest and class table of the pickle under work/."""
    work.mkdir(parents=True, exist_ok=True)
    kp_h5 = work / "keypoints.h5"
    frame = import_pickle(pickle_path, kp_h5, layout=layout, splits=list(splits))
    frame["split"] = frame["split"].map(splits).fillna("unassigned")
    frame["video_id"] = frame["clip_id"]
    manifest = work / "clips.csv"
    frame.to_csv(manifest, index=False)
    labels = sorted(frame.label.unique())
    classes = work / "classes.csv"
    pd.DataFrame({"label": range(len(labels)), "label_id": labels,
                  "name": [str(v) for v in labels]}).to_csv(classes, index=False)
    return kp_h5, manifest, classes, frame


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pickle", required=True, help="the KARD 2D pyskl pickle (kard2d.pkl)")
    ap.add_argument("--config", default=str(CONFIG))
    ap.add_argument("--out", default=str(ROOT / "results" / "dev_kard"))
    ap.add_argument("--models", nargs="+", default=["joint", "limb"], choices=["joint", "limb"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args(argv)
    if not Path(args.pickle).is_file():
        sys.exit(f"{args.pickle}: skeleton pickle not found")
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    config, layout, splits = load_config(args.config, args.set)
    out = Path(args.out)
    t0 = time.time()
    kp_h5, manifest, classes, frame = prepare(args.pickle, out, layout, splits)
    summary = {"overrides": args.set, "clips": frame.split.value_counts().to_dict(),
               "minutes": {"import": round((time.time() - t0) / 60, 2)}}
    probs, labels = {}, None
    for name in args.models:
        t1 = time.time()
        train_run(name, config, manifest_csv=manifest, classes_csv=classes, frames_h5=None,
                  keypoints_h5=kp_h5, out_dir=out / "models" / name, state_dir=out / "state" / name,
                  threads=args.threads, progress=False)
        t2 = time.time()
        history = pd.read_csv(out / "models" / name / "log.csv")
        scores_csv = out / "scores" / f"{name}.csv"
        score_model(out / "models" / name / "model.pt", config, manifest_csv=manifest, frames_h5=None,
                    keypoints_h5=kp_h5, out_csv=scores_csv, splits=("test",), threads=args.threads,
                    progress=False)
        t3 = time.time()
        scores = read_scores(scores_csv)
        probs[name] = stream_probs(scores, name)
        labels = scores.label.to_numpy()
        summary[name] = {"train_top1": float(history[f"train_top1_{name}"].iloc[-1]),
                         "test_top1": float((probs[name].argmax(1).numpy() == labels).mean())}
        summary["minutes"][f"train_{name}"] = round((t2 - t1) / 60, 2)
        summary["minutes"][f"test_{name}"] = round((t3 - t2) / 60, 2)
        print(f"{name}: train top-1 {summary[name]['train_top1']:.3f} (last epoch, augmented)  "
              f"test top-1 {summary[name]['test_top1']:.3f}  train {summary['minutes'][f'train_{name}']} min  "
              f"test {summary['minutes'][f'test_{name}']} min", flush=True)
    if len(probs) == 2:
        both = (probs["joint"] + probs["limb"]) / 2
        summary["joint+limb"] = {"test_top1": float((both.argmax(1).numpy() == labels).mean())}
        print(f"joint+limb: test top-1 {summary['joint+limb']['test_top1']:.3f}")
    summary["minutes"]["total"] = round((time.time() - t0) / 60, 2)
    print(f"total {summary['minutes']['total']} min")
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


if __name__ == "__main__":
    main()
