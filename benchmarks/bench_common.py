"""Helpers shared by the benchmarks that drive training and testing through the library
(bench_transfer.py, bench_longtail.py): config overrides, a pickle's stores, one training run
with its test scores and one self-supervised pretraining (each kept and read back on a rerun),
and mean and spread over seeds."""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import time
from pathlib import Path

import pandas as pd
import yaml

from mgpipe.formats.scores import read as read_scores
from mgpipe.formats.scores import stream_probs
from mgpipe.learning.weights import init_source
from mgpipe.sources.skeleton_io import import_pickle
from mgpipe.stages.clips import write_csv
from mgpipe.stages.pretrain import run as pretrain_run
from mgpipe.stages.score import score_model
from mgpipe.stages.train import run as train_run


def set_key(config: dict, dotted: str, value: str) -> None:
    *path, last = dotted.split(".")
    node = config
    for k in path:
        node = node.setdefault(k, {})
    node[last] = yaml.safe_load(value)


def bench_arguments(description: str, config: Path, out: Path, threads: int) -> argparse.ArgumentParser:
    """The arguments every benchmark of this kind takes (a script adds its own)."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--config", default=str(config))
    ap.add_argument("--out", default=str(out))
    ap.add_argument("--seeds", nargs="+", type=int)
    ap.add_argument("--threads", type=int, default=threads)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override one setting of the benchmark config (dotted key, YAML value)")
    return ap


def load_bench(args) -> dict:
    """The benchmark config with the --set overrides applied."""
    bench = yaml.safe_load(Path(args.config).read_text())
    for item in args.set:
        key, _, value = item.partition("=")
        set_key(bench, key, value)
    return bench


def prepare(pickle_path, layout, splits: dict, work: Path, names=None):
    """Keypoint store, manifest and class table (label, label_id, name: `names` in label order,
    else the label) of a pickle under work/ (once)."""
    work.mkdir(parents=True, exist_ok=True)
    kp_h5, manifest, classes = work / "keypoints.h5", work / "clips.csv", work / "classes.csv"
    if not manifest.exists():
        frame = import_pickle(pickle_path, kp_h5, layout=layout, splits=list(splits))
        frame["split"] = frame["split"].map(splits).fillna("unassigned")
        frame["video_id"] = frame["clip_id"]
        labels = sorted(frame.label.unique())
        pd.DataFrame({"label": range(len(labels)), "label_id": labels,
                      "name": [str(names[k] if names else k) for k in labels]}).to_csv(classes, index=False)
        write_csv(frame, manifest)  # the manifest last: it marks the folder done
    return kp_h5, manifest, classes


def test_scores(name, checkpoint, config, data, out: Path, threads=2) -> dict:
    """{probs, labels, top1} of a trained model on the manifest's test split (score file in out/)."""
    kp_h5, manifest, _ = data
    out.mkdir(parents=True, exist_ok=True)
    score_model(checkpoint, config, manifest_csv=manifest, frames_h5=None, keypoints_h5=kp_h5,
                out_csv=out / "scores.csv", splits=("test",), threads=threads, progress=False)
    scores = read_scores(out / "scores.csv")
    probs = stream_probs(scores, name)
    return {"probs": probs.tolist(), "labels": scores.label.tolist(),
            "top1": float((probs.argmax(1).numpy() == scores.label.to_numpy()).mean())}


def run_settings(recipe, data, init) -> str:
    """What a run's result depends on: the recipe as the benchmark writes it (not the validated
    config, which a new schema default would change), the stores and clips, the starting weights."""
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode())
    for path in (*data, init):
        if path is not None:
            digest.update(hashlib.sha256(Path(path).read_bytes()).digest())
    return digest.hexdigest()[:16]


def train_and_score(name, config, data, out: Path, init=None, threads=2, recipe=None) -> dict:
    """One training run and its test scores; a finished run is read back, not repeated, and
    only when it was made with the same settings (`recipe`: what the benchmark asked for, by
    default the config; another recipe under the same out/ stops)."""
    result_file, settings = out / "result.json", run_settings(config if recipe is None else recipe, data, init)
    if result_file.exists():
        result = json.loads(result_file.read_text())
        if result.get("settings", settings) != settings:
            sys.exit(f"{result_file}: made with other settings (recipe, clips or init); "
                     "use another --out or remove the run")
        return result
    kp_h5, manifest, classes = data
    t0 = time.time()
    train_run(name, config, manifest_csv=manifest, classes_csv=classes, frames_h5=None, keypoints_h5=kp_h5,
              out_dir=out, state_dir=out / "state",
              init=None if init is None else init_source.given(init), threads=threads, progress=False)
    result = {"minutes": round((time.time() - t0) / 60, 2), "settings": settings}
    if (pd.read_csv(manifest).split == "test").any():
        result.update(test_scores(name, out / "model.pt", config, data, out, threads=threads))
    result_file.write_text(json.dumps(result))
    return result


def self_supervised(name, config, data, out: Path, init=None, threads=2, recipe=None) -> dict:
    """One self-supervised pretraining (config["pretrain"]: its splits, mask and schedule) of
    model `name` on the data's clips, labels unused, into out/weights.pth; kept and read back
    like train_and_score's runs. {minutes, record, weights}."""
    result_file, settings = out / "result.json", run_settings(config if recipe is None else recipe, data, init)
    if result_file.exists():
        result = json.loads(result_file.read_text())
        if result.get("settings") != settings:
            sys.exit(f"{result_file}: made with other settings (recipe, clips or init); "
                     "use another --out or remove the run")
        return result
    kp_h5, manifest, _ = data
    t0 = time.time()
    record = pretrain_run(name, config, manifest_csv=manifest, keypoints_h5=kp_h5, out_dir=out,
                          state_dir=out / "state", init=None if init is None else init_source.given(init),
                          threads=threads, progress=False)
    result = {"minutes": round((time.time() - t0) / 60, 2), "settings": settings,
              "record": {k: v for k, v in record.items() if k != "init"}, "weights": str(out / "weights.pth")}
    result_file.write_text(json.dumps(result))
    return result


def mean_sd(values):
    return (statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0)
