"""Transfer on real data: pretrain on two skeleton datasets, fine-tune on the third, against
training from scratch on the same schedule (benchmarks/transfer.yaml says what and how).

For each target dataset T:
1. pretraining set: every clip of the other two datasets, keypoints converted by joint name into
   the pretraining layout (kinect_v1_20: it names every joint of the three), their label sets side
   by side (no class shared), written as one pyskl pickle; joint and limb models trained on it
   (seed 0, the recipe's schedule).
2. with `--starts cotrain`, instead of one after the other: per regime and seed, one model on the
   clips of 1. and the target's training clips together (one backbone, their label sets side by
   side in one head, the pretraining layout), scored on the target's test clips over the
   target's classes only (its part of the head, renormalised: a head per dataset at test time).
   with `--starts` selfsup or both: the joint and limb models' self-supervised pretraining
   (masked heatmap modelling, the recipe's `pretrain` section) on T's clips of pretrain.splits
   (its whole training split, labels unused: in the few-shot regimes that is the semi-supervised
   case), from random weights (selfsup) or from the supervised pretraining of 1. (both); seed 0.
3. for each regime (the whole training split of T, or `few` clips per class drawn with the seed)
   and each seed: the joint and limb models trained on T from scratch and from each start
   (init: the head re-initialised for T's classes, the first convolution mapped from the
   pretraining layout to T's by joint name, both logged), the same recipe and seed; each scored on
   T's test split with the test-time views, and the joint + limb ensemble (mean probabilities).

Prints and writes (OUT/summary.json, OUT/table.md) per target, regime and start: mean and standard
deviation over the seeds of test top-1, scratch and the start, for joint, limb and joint + limb,
and whether the issue's targets hold: with `few` clips per class the start beats scratch by at
least 0.05 mean top-1; with the whole training split it never loses by more than the seed spread
(the larger of the two standard deviations). Every finished run is kept (OUT/runs/<run>/result.json,
OUT/selfsup/...) and not repeated when the script runs again; a killed training resumes from its
last epoch.

    python benchmarks/bench_transfer.py                          # everything (hours on 2 cores)
    python benchmarks/bench_transfer.py --targets kard --regimes few --seeds 0
    python benchmarks/bench_transfer.py --targets kard --starts selfsup both   # beside scratch
    python benchmarks/bench_transfer.py --set recipe.pose_model.optim.epochs=2   # a smoke run
"""

from __future__ import annotations

import copy
import json
import logging
import pickle
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_common import (  # noqa: E402
    bench_arguments,
    load_bench,
    mean_sd,
    prepare,
    self_supervised,
    train_and_score,
)
from mgpipe.config import validate  # noqa: E402
from mgpipe.sources.skeleton_sources import combine  # noqa: E402
from mgpipe.stages.clips import write_csv  # noqa: E402

CONFIG = ROOT / "benchmarks" / "transfer.yaml"
FEW_MARGIN = 0.05  # fine-tuning must beat scratch by this much with few clips per class
STARTS = {"scratch": "random weights", "finetune": "supervised pretraining on the other datasets",
          "selfsup": "self-supervised pretraining on the target's clips (labels unused)",
          "both": "supervised, then self-supervised on the target's clips",
          "cotrain": "one model trained on the other datasets and the target together"}


def pretraining_pickle(bench: dict, sources: list[str], out: Path) -> Path:
    """Every clip of the source datasets (both of their splits, as training clips) in the
    pretraining layout, labels side by side: mgpipe's several-pickles stage (dataset.skeletons as
    a list), as a user's config would run it."""
    everything = {name: "train" for name in bench["split_map"]}
    combine([{"path": str(ROOT / bench["datasets"][name]["pickle"]), "layout": bench["datasets"][name]["layout"],
              "name": name, "split_map": everything} for name in sources], bench["pretrain_layout"], out)
    return out


def few_shot(manifest: Path, per_class: int | None, seed: int, out: Path) -> Path:
    """The manifest with `per_class` training clips per class (drawn with the seed), test kept."""
    if per_class is None:
        return manifest
    frame = pd.read_csv(manifest, dtype={"video_id": str, "clip_id": str})
    train = frame[frame.split == "train"].groupby("label", group_keys=False).apply(
        lambda g: g.sample(min(per_class, len(g)), random_state=seed))
    # The clips left out stay listed, unassigned: the manifest still describes the whole store.
    frame.loc[(frame.split == "train") & ~frame.index.isin(train.index), "split"] = "unassigned"
    write_csv(frame, out)
    return out


def target_data(bench, target, out: Path):
    """(pretraining data, target data) of one target, prepared once under out/."""
    sources = [d for d in bench["datasets"] if d != target]
    pre_pickle = out / "pretrain" / target / "pretrain.pkl"
    if not pre_pickle.exists():
        pretraining_pickle(bench, sources, pre_pickle)
    pre_data = prepare(pre_pickle, bench["pretrain_layout"], {"train": "train"}, out / "pretrain" / target)
    spec = bench["datasets"][target]
    return pre_data, prepare(ROOT / spec["pickle"], spec["layout"], bench["split_map"], out / "data" / target)


def cotraining_data(bench, target, manifest: Path, work: Path) -> tuple[tuple, int]:
    """(stores, label offset) for training on the sources and the target together: every clip of
    the other datasets (train), the target's train clips of `manifest` (train) and its test clips
    (test), all in the pretraining layout, label sets side by side with the target's last (from
    the offset on)."""
    if not (work / "clips.csv").exists():
        frame = pd.read_csv(manifest, dtype={"clip_id": str})
        with open(ROOT / bench["datasets"][target]["pickle"], "rb") as f:
            dataset = pickle.load(f)   # (the benchmark's own real data, trusted)
        dataset["split"] = {split: frame.clip_id[frame.split == split].tolist() for split in ("train", "test")}
        work.mkdir(parents=True, exist_ok=True)
        (work / "target.pkl").write_bytes(pickle.dumps(dataset))
        everything = {name: "train" for name in bench["split_map"]}
        entries = [{"path": str(ROOT / bench["datasets"][name]["pickle"]), "layout": bench["datasets"][name]["layout"],
                    "name": name, "split_map": everything} for name in bench["datasets"] if name != target]
        entries.append({"path": str(work / "target.pkl"), "layout": bench["datasets"][target]["layout"],
                        "name": target, "split_map": {"train": "train", "test": "test"}})
        combine(entries, bench["pretrain_layout"], work / "cotrain.pkl")
    data = prepare(work / "cotrain.pkl", bench["pretrain_layout"], {"train": "train", "test": "test"}, work)
    target_classes = pd.read_csv(manifest.parent / "classes.csv")
    return data, len(pd.read_csv(data[2])) - len(target_classes)


def target_scores(result: dict, offset: int) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities over the target's classes, renormalised; labels from 0) of a cotrained
    model's test scores: the target's head is the columns from `offset` on."""
    probs, labels = np.array(result["probs"])[:, offset:], np.array(result["labels"]) - offset
    return probs / probs.sum(axis=1, keepdims=True), labels


def regime_settings(bench, regime) -> tuple[int | None, int | None]:
    """(clips per class or None for all, epochs or None for the recipe's) of a regime: a number
    (clips per class), null, or {per_class, epochs}."""
    value = bench["regimes"][regime]
    if isinstance(value, dict):
        return value.get("per_class"), value.get("epochs")
    return value, None


def starting_points(bench, target, recipe, pre_data, data, out: Path, args) -> dict:
    """{start: {model: its initial weights (None: from scratch)}} for args.starts on one target:
    finetune, the supervised pretraining on the other datasets (seed 0); selfsup, the
    self-supervised pretraining (recipe's pretrain section) on the target's clips of
    pretrain.splits, labels unused (seed 0); both, the self-supervised pretraining started
    from the supervised one."""
    starts = {"scratch": dict.fromkeys(args.models)}
    supervised = {}
    if {"finetune", "both"} & set(args.starts):
        for model in args.models:
            train_and_score(model, recipe, pre_data, out / "pretrain" / target / model, threads=args.threads,
                            recipe=bench["recipe"])
            supervised[model] = out / "pretrain" / target / model / "model.pt"
        starts["finetune"] = supervised
    for start, init in (("selfsup", None), ("both", supervised)):
        if start in args.starts:
            starts[start] = {model: self_supervised(
                model, recipe, data, out / "selfsup" / f"{target}_{start}" / model,
                init=None if init is None else init[model], threads=args.threads,
                recipe=bench["recipe"])["weights"] for model in args.models}
    starts["cotrain"] = dict.fromkeys(args.models)   # (its data is made per regime and seed)
    return {start: starts[start] for start in args.starts}


def run_target(bench, target, recipe, out: Path, args) -> dict:
    pre_data, data = target_data(bench, target, out)
    starts = starting_points(bench, target, recipe, pre_data, data, out, args)
    rows = {}
    for regime in args.regimes:
        per_class, epochs = regime_settings(bench, regime)
        for seed in args.seeds:
            config = copy.deepcopy({**recipe, "seed": seed})
            asked = {**bench["recipe"], "seed": seed, "epochs": epochs}  # what the kept runs are checked against
            if epochs is not None:
                config["pose_model"]["optim"]["epochs"] = epochs
            manifest = few_shot(data[1], per_class, seed, out / "data" / target / f"clips_{regime}_{seed}.csv")
            run_data = (data[0], manifest, data[2])
            for start, inits in starts.items():
                probs = {}
                for model in args.models:
                    run = out / "runs" / f"{target}_{regime}_s{seed}_{start}_{model}"
                    if start == "cotrain":   # one model on the sources and these clips, scored on the target's head
                        cot_data, offset = cotraining_data(bench, target, manifest,
                                                           out / "cotrain" / f"{target}_{regime}_s{seed}")
                        r = train_and_score(model, config, cot_data, run, threads=args.threads, recipe=asked)
                        probs[model], labels = target_scores(r, offset)
                    else:
                        r = train_and_score(model, config, run_data, run, threads=args.threads, recipe=asked,
                                            init=inits[model])
                        probs[model], labels = np.array(r["probs"]), np.array(r["labels"])
                    rows.setdefault((regime, start, model), []).append(float((probs[model].argmax(1) == labels).mean()))
                if len(probs) == 2:
                    both = (probs["joint"] + probs["limb"]) / 2
                    rows.setdefault((regime, start, "joint+limb"), []).append(float((both.argmax(1) == labels).mean()))
                print(f"{target} {regime} seed {seed} {start}: " + ", ".join(
                    f"{m} {rows[(regime, start, m)][-1]:.3f}" for m in [*args.models, "joint+limb"]
                    if (regime, start, m) in rows), flush=True)
    return {f"{regime}/{start}/{model}": values for (regime, start, model), values in rows.items()}


def table(results: dict, regimes, bench) -> tuple[str, list[str]]:
    """Each start against scratch (mean ± sd over the seeds): the issue's targets, with few clips
    per class ahead by FEW_MARGIN, with all of them never behind by more than the seed spread."""
    lines = ["| target | regime | model | start | scratch | this start | gain | target met |",
             "|---|---|---|---|---|---|---|---|"]
    misses = []
    for target, rows in results.items():
        starts = list(dict.fromkeys(key.split("/")[1] for key in rows))
        for regime in regimes:
            for model in ("joint", "limb", "joint+limb"):
                s = rows.get(f"{regime}/scratch/{model}")
                for start in (x for x in starts if x != "scratch"):
                    f = rows.get(f"{regime}/{start}/{model}")
                    if not s or not f:
                        continue
                    (sm, ss), (fm, fs) = mean_sd(s), mean_sd(f)
                    gain = fm - sm
                    few = regime_settings(bench, regime)[0] is not None
                    met = gain >= FEW_MARGIN if few else gain >= -max(ss, fs)
                    if not met:
                        misses.append(f"{target} {regime} {model} {start}")
                    lines.append(f"| {target} | {regime} | {model} | {start} | {sm:.3f} ± {ss:.3f} | "
                                 f"{fm:.3f} ± {fs:.3f} | {gain:+.3f} | {'yes' if met else 'no'} |")
    return "\n".join(lines), misses


def main(argv=None) -> dict:
    ap = bench_arguments(__doc__.splitlines()[0], CONFIG, ROOT / "results" / "bench_transfer", threads=2)
    ap.add_argument("--targets", nargs="+")
    ap.add_argument("--regimes", nargs="+")
    ap.add_argument("--models", nargs="+", default=None, choices=["joint", "limb"])
    ap.add_argument("--starts", nargs="+", default=None, choices=list(STARTS),
                    help="where the target's models start (default: the config's starts)")
    args = ap.parse_args(argv)
    bench = load_bench(args)
    args.targets = args.targets or bench["targets"]
    args.regimes = args.regimes or list(bench["regimes"])
    args.seeds = args.seeds if args.seeds is not None else bench["seeds"]
    args.models = args.models or bench["models"]
    args.starts = ["scratch", *(s for s in (args.starts or bench["starts"]) if s != "scratch")]
    for name, spec in bench["datasets"].items():
        if not (ROOT / spec["pickle"]).is_file():
            sys.exit(f"{ROOT / spec['pickle']}: dataset {name} not found (../shared/data beside the checkout)")
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    recipe = validate(bench["recipe"], f"{args.config}: recipe")
    out = Path(args.out)
    t0 = time.time()
    for target in args.targets:  # every store first: runs of other models may start beside this one
        target_data(bench, target, out)
    print("data ready", flush=True)
    results = {t: run_target(bench, t, recipe, out, args) for t in args.targets}
    text, misses = table(results, args.regimes, bench)
    print(text)
    print("targets met" if not misses else f"targets missed: {', '.join(misses)}")
    summary = {"settings": args.set, "results": results, "misses": misses,
               "minutes": round((time.time() - t0) / 60, 1)}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    (out / "table.md").write_text(text + "\n")
    return summary


if __name__ == "__main__":
    main()
