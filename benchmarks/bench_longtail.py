"""Class imbalance on real data: KARD's training split cut to a long tail, the joint model trained
with each imbalance option of mgpipe (benchmarks/longtail.yaml says what and how).

1. The long-tailed split: per-class training counts falling geometrically from `head` to `tail`
   over KARD's 18 classes (round(head * (tail/head) ** (i / 17)) for the i-th class), the order
   of the classes and the clips kept drawn with `split_seed`; the test split untouched (270
   clips, 15 per class). One split for every run: the seeds vary the training, not the data.
2. For each seed, the joint model trained with plain cross-entropy, sqrt and inverse class-aware
   sampling and the class-balanced loss; logit adjustment rescores the plain model with
   test.logit_adjust = 1 (no retraining). Each scored on the test split with the test views.

Prints and writes (OUT/summary.json, OUT/table.md): mean ± sd over the seeds of test top-1, mean
class accuracy and macro-F1 per option, the gain in mean class accuracy over plain, the mean
recall of the head, middle and tail thirds of the classes (by training clips), and whether
the target holds (an option gains >= `target.gain` mean class accuracy without losing top-1 beyond
the seed spread, the larger sd of the two). Every finished run is kept (OUT/runs/<run>/result.json)
and not repeated when the script runs again; a killed training resumes from its last epoch.

    python benchmarks/bench_longtail.py --threads 1                  # 12 trainings (about 1 h)
    python benchmarks/bench_longtail.py --seeds 0 --options plain sqrt
    python benchmarks/bench_longtail.py --set recipe.pose_model.optim.epochs=2   # a smoke run
"""

from __future__ import annotations

import copy
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_common import bench_arguments, load_bench, mean_sd, prepare, test_scores, train_and_score  # noqa: E402
from mgpipe.config import validate  # noqa: E402
from mgpipe.stages.ensemble import metrics  # noqa: E402

CONFIG = ROOT / "benchmarks" / "longtail.yaml"
NUM_CLASSES = 18
COLUMNS = (("top1", "top-1"), ("mean_class_accuracy", "mean class acc."), ("macro_f1", "macro-F1"))


def longtail_counts(head: int, tail: int, num_classes: int) -> list[int]:
    """Training clips per class, in the order of the (shuffled) classes: geometric head -> tail."""
    steps = np.arange(num_classes) / (num_classes - 1)
    return [int(round(head * (tail / head) ** s)) for s in steps]


def longtail_manifest(manifest: Path, head: int, tail: int, seed: int, out: Path) -> tuple[Path, dict]:
    """The manifest with its training split cut to the long tail (test rows kept, the others
    unassigned) and
    {label: training clips} of the cut."""
    frame = pd.read_csv(manifest, dtype={"video_id": str, "clip_id": str})
    rng = np.random.default_rng(seed)
    labels = sorted(frame.label.unique())
    order = [labels[i] for i in rng.permutation(len(labels))]
    counts = dict(zip(order, longtail_counts(head, tail, len(labels))))
    train = frame[frame.split == "train"]
    keep = []
    for label in labels:
        rows = train.index[train.label == label].to_numpy()
        keep += sorted(rng.choice(rows, size=min(counts[label], len(rows)), replace=False).tolist())
    # the dropped clips stay in the manifest outside every split: the keypoint store holds them
    cut = frame.copy()
    cut.loc[(cut.split == "train") & ~cut.index.isin(keep), "split"] = "unassigned"
    out.parent.mkdir(parents=True, exist_ok=True)
    cut.to_csv(out, index=False)
    return out, {int(k): int(v) for k, v in counts.items()}


def merged(recipe: dict, changes: dict) -> dict:
    out = copy.deepcopy(recipe)
    for section, values in changes.items():
        out.setdefault(section, {}).update(values)
    return out


def run_option(option: str, changes: dict, recipe: dict, seed: int, data, out: Path, args) -> dict:
    """One option's result for one seed: a training run, or (a test-only option) the plain
    model of the seed rescored with the option's test settings."""
    config = validate(merged({**recipe, "seed": seed}, changes), f"{args.config}: option {option}")
    if set(changes) <= {"test"} and changes:
        plain = out / "runs" / f"plain_s{seed}"
        rescored = plain / option
        result_file = rescored / "result.json"
        if not result_file.exists():
            train_and_score(args.model, config, data, plain, threads=args.threads)  # the plain model first
            result = test_scores(args.model, plain / "model.pt", config, data, rescored, threads=args.threads)
            result_file.write_text(json.dumps(result))
        return json.loads(result_file.read_text())
    return train_and_score(args.model, config, data, out / "runs" / f"{option}_s{seed}", threads=args.threads)


def table(results: dict, gain_needed: float) -> tuple[str, list[str]]:
    """The markdown table (mean ± sd over seeds) and the options that meet the target."""
    head = "| option | " + " | ".join(h for _, h in COLUMNS) + " | mean class acc. gain | target met |"
    lines = [head, "|---" * (len(COLUMNS) + 3) + "|"]
    plain = results.get("plain")
    met = []
    for option, rows in results.items():
        cells = []
        for key, _ in COLUMNS:
            m, sd = mean_sd([r[key] for r in rows])
            cells.append(f"{m:.3f} ± {sd:.3f}")
        verdict, gain = "", ""
        if plain and option != "plain":
            (pm, psd), (om, osd) = (mean_sd([r["mean_class_accuracy"] for r in x]) for x in (plain, rows))
            (pt, pts), (ot, ots) = (mean_sd([r["top1"] for r in x]) for x in (plain, rows))
            ok = om - pm >= gain_needed and ot >= pt - max(pts, ots)
            gain, verdict = f"{om - pm:+.3f}", "yes" if ok else "no"
            if ok:
                met.append(option)
        lines.append(f"| {option} | " + " | ".join(cells) + f" | {gain} | {verdict} |")
    return "\n".join(lines), met


def thirds(counts: dict) -> dict:
    """{"head": labels, "middle": ..., "tail": ...}: the classes by training clips, in thirds."""
    order = sorted(counts, key=lambda k: -counts[k])
    n = len(order)
    return {"head": order[:n // 3], "middle": order[n // 3:2 * n // 3], "tail": order[2 * n // 3:]}


def recall_table(results: dict, counts: dict) -> str:
    """Mean test recall of the head, middle and tail thirds of the classes (by training clips),
    mean ± sd over seeds: where an option moves accuracy."""
    groups = thirds(counts)
    sizes = {g: f"{min(counts[k] for k in ks)}-{max(counts[k] for k in ks)}" for g, ks in groups.items()}
    lines = ["| option | " + " | ".join(f"{g} recall ({sizes[g]} clips)" for g in groups) + " |",
             "|---" * (len(groups) + 1) + "|"]
    for option, rows in results.items():
        cells = []
        for g, ks in groups.items():
            m, sd = mean_sd([float(np.mean([r["recall"][k] for k in ks])) for r in rows])
            cells.append(f"{m:.3f} ± {sd:.3f}")
        lines.append(f"| {option} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    ap = bench_arguments(__doc__.splitlines()[0], CONFIG, ROOT / "results" / "bench_longtail", threads=1)
    ap.add_argument("--options", nargs="+")
    args = ap.parse_args(argv)
    bench = load_bench(args)
    options = {o: bench["options"][o] or {} for o in (args.options or bench["options"])}
    args.seeds = args.seeds if args.seeds is not None else bench["seeds"]
    args.model = bench["model"]
    pickle_path = ROOT / bench["pickle"]
    if not pickle_path.is_file():
        sys.exit(f"{pickle_path}: KARD's pickle not found (../shared/data beside the checkout)")
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    recipe = bench["recipe"]
    out = Path(args.out)
    kp_h5, manifest, classes = prepare(pickle_path, bench["layout"], bench["split_map"], out / "data",
                                      names=bench.get("class_names"))
    lt = bench["longtail"]
    cut, counts = longtail_manifest(manifest, lt["head"], lt["tail"], lt["split_seed"], out / "data" / "longtail.csv")
    logging.info("long-tailed training split: %d clips, per class %s", sum(counts.values()), counts)
    data = (kp_h5, cut, classes)
    t0 = time.time()
    results: dict = {}
    for seed in args.seeds:
        for option, changes in options.items():
            r = run_option(option, changes, recipe, seed, data, out, args)
            m = metrics(torch.tensor(r["probs"]), np.array(r["labels"]), NUM_CLASSES)
            results.setdefault(option, []).append({**{k: m[k] for k, _ in COLUMNS}, "seed": seed,
                                                   "minutes": r.get("minutes"), "recall": m["per_class"]})
            print(f"seed {seed} {option}: " + ", ".join(f"{h} {m[k]:.3f}" for k, h in COLUMNS)
                  + (f" ({r['minutes']} min training)" if r.get("minutes") else ""), flush=True)
    text, met = table(results, bench["target"]["gain"])
    verdict = (f"target met by: {', '.join(met)}" if met else
               f"target missed: no option gains {bench['target']['gain']} mean class accuracy "
               "without losing top-1 beyond the seed spread")
    by_count = recall_table(results, counts)
    print(text)
    print(verdict)
    print(by_count)
    summary = {"settings": args.set, "train_counts": counts, "results": results, "met_by": met,
               "minutes": round((time.time() - t0) / 60, 1)}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    (out / "table.md").write_text(text + "\n\n" + verdict + "\n\n" + by_count + "\n")
    return summary


if __name__ == "__main__":
    main()
