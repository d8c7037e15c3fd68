"""Stage 9: score-level fusion, metrics, confusion matrix and the summary report.

Every model's test scores are reported per stream; a fused network also at stream weights 1:1,
2:1 and 1:2; the ensemble averages the members' probabilities with the config weights, or with
member and stream weights searched on the validation split and then applied unchanged to test.
"""

from __future__ import annotations

import base64
import html
import itertools
import logging
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from mgpipe.formats.checkpoints import describe_class_difference
from mgpipe.formats.scores import class_table, stream_probs, streams_of
from mgpipe.formats.scores import read as read_scores
from mgpipe.io import InputError, atomic_path, write_json, write_text
from mgpipe.learning.specs import REGISTRY, combine_streams

log = logging.getLogger(__name__)
STREAM_WEIGHTS = {"1:1": (1, 1), "2:1": (2, 1), "1:2": (1, 2)}


def metrics(probs: torch.Tensor, labels: np.ndarray, num_classes: int) -> dict:
    """Top-1, top-5, mean class accuracy and macro-F1 of class probabilities [N, K], with the
    recall of each class present in `labels` (per_class) and a row per class (class_table: count,
    predicted, recall, precision, f1; see per_class_table). Mean class accuracy averages the
    recall of the classes present in the labels. Macro-F1 averages F1 over the classes present
    in the labels or the predictions (as scikit-learn's f1_score(average="macro")): a class
    with test clips but no predictions has F1 0, a class without test clips that is predicted
    has F1 0 too (its predictions are all wrong), a class neither present nor predicted is left
    out."""
    labels = np.asarray(labels)
    order = np.argsort(-probs.numpy(), axis=1, kind="stable")
    pred = order[:, 0]
    top5 = (order[:, :5] == labels[:, None]).any(1).mean()
    table = per_class_table(pred, labels, num_classes)
    per_class = {r["label"]: r["recall"] for r in table if r["count"]}
    counted = [r["f1"] for r in table if r["count"] or r["predicted"]]
    return {"top1": round(float((pred == labels).mean()), 6), "top5": round(float(top5), 6),
            "mean_class_accuracy": round(float(np.mean(list(per_class.values()))), 6),
            "macro_f1": round(float(np.mean(counted)), 6),
            "per_class": per_class, "class_table": table, "n": int(len(labels))}


def per_class_table(pred: np.ndarray, labels: np.ndarray, num_classes: int) -> list[dict]:
    """One row per class: test clips (count), clips predicted as it, recall (None without test
    clips), precision (None without predictions) and F1 (0 when nothing of it is right)."""
    rows = []
    for k in range(num_classes):
        count, predicted = int((labels == k).sum()), int((pred == k).sum())
        hits = int(((labels == k) & (pred == k)).sum())
        recall = hits / count if count else None
        precision = hits / predicted if predicted else None
        f1 = 2 * hits / (count + predicted) if hits else 0.0   # = 2PR / (P + R)
        rows.append({"label": k, "count": count, "predicted": predicted,
                     "recall": None if recall is None else round(recall, 6),
                     "precision": None if precision is None else round(precision, 6),
                     "f1": round(f1, 6)})
    return rows


def confusion(probs: torch.Tensor, labels, num_classes: int) -> np.ndarray:
    m = np.zeros((num_classes, num_classes), dtype=int)
    np.add.at(m, (np.asarray(labels), probs.argmax(1).numpy()), 1)
    return m


def model_probs(scores: pd.DataFrame, weights=None) -> torch.Tensor:
    """A model's class probabilities from its score file: its streams combined, 1:1 unless
    `weights` (one per stream, in the file's stream order) say otherwise."""
    streams = streams_of(scores)
    weights = dict(zip(streams, weights)) if weights else None
    return combine_streams({s: stream_probs(scores, s) for s in streams}, weights)


def _variant_flags(name: str) -> dict | None:
    """{"variant", "fusion", "prototype"} of a registered fused variant, else None."""
    spec = REGISTRY.get(name)
    return spec.ablation if spec else None


def _aligned(scores: dict, split: str) -> tuple[dict, np.ndarray]:
    """Rows of one split, in one clip order for every model (score files must cover the same clips)."""
    ref = None
    out = {}
    for name, s in scores.items():
        s = s[s.split == split].sort_values("clip_id").reset_index(drop=True)
        if ref is None:
            ref = s
        elif not s.clip_id.equals(ref.clip_id):
            raise InputError(f"score files of {name} and {next(iter(scores))} cover different clips")
        out[name] = s
    return out, ref.label.to_numpy()


# ---- ensemble weights: as written, or chosen on the validation split --------------------------
# The search weighs (member, stream) units: a member's weight is the sum of its units' weights,
# its stream weights their shares, so that member and stream weights are chosen together and the
# ensemble is still sum_m w_m * combine_streams(streams of m at its stream weights).
SEARCH_BUDGET = 5000     # the most weight sets one search evaluates on the validation split
SEARCH_MAX_STEPS = 20    # the finest grid: weights in steps of 1/20 of the total
SEARCH_MIN_VAL_CLIPS = 5  # fewer validation clips: no search (the config weights, with a warning)
SEARCH_OBJECTIVE = ("validation top-1, then validation mean class accuracy; exact ties go to the "
                    "weights nearest the uniform ones (squared distance of the unit shares)")


def simplex_grid(units: int, steps: int) -> np.ndarray:
    """Every way of sharing `steps` equal parts among `units` ([G, units], rows summing to 1),
    in a fixed order (stars and bars)."""
    rows = []
    for bars in itertools.combinations(range(steps + units - 1), units - 1):
        edges = (-1, *bars, steps + units - 1)
        rows.append([edges[i + 1] - edges[i] - 1 for i in range(units)])
    return np.asarray(rows, dtype=np.float64) / steps


def grid_steps(units: int, budget: int = SEARCH_BUDGET) -> int:
    """The finest step count (at most SEARCH_MAX_STEPS) whose simplex grid over `units` holds at
    most `budget` weight sets: steps of 1/20 for up to 4 units (1,771 sets at 4: the fused
    network's two streams, joint and limb), 1/11 for 6 (4,368), 1/7 for 8 (3,432), 1/5 for
    10 to 12 (4,368 at 12: eight members, four of them two-stream)."""
    fits = [s for s in range(1, SEARCH_MAX_STEPS + 1) if math.comb(s + units - 1, units - 1) <= budget]
    return max(fits, default=1)


def _unit_weights(units: list, members: dict, streams: dict) -> np.ndarray:
    """Unit weights of member weights at streams 1:1 (combine_streams' mean of the streams)."""
    return np.array([members[m] / len(streams[m]) for m, _ in units], dtype=np.float64)


def _val_objective(candidates: np.ndarray, unit_probs: np.ndarray, labels: np.ndarray, chunk=256):
    """(correct clips, mean class accuracy) of each weight set [G, U] over unit probabilities
    [U, N, K]; argmax ties go to the first class, as in `metrics`."""
    units, n, k = unit_probs.shape
    flat = unit_probs.reshape(units, n * k)
    onehot = (labels[:, None] == np.unique(labels)[None, :]).astype(np.float64)
    correct, mca = [], []
    for start in range(0, len(candidates), chunk):
        hits = (candidates[start:start + chunk] @ flat).reshape(-1, n, k).argmax(2) == labels
        correct.append(hits.sum(1))
        mca.append((hits @ onehot / onehot.sum(0)).mean(1))
    return np.concatenate(correct), np.concatenate(mca)


def search_weights(val: dict, labels: np.ndarray, members: dict) -> dict:
    """Member and stream weights chosen on validation rows alone: `val` {member: its val score
    rows, aligned to `labels`}. Candidates: the uniform weights, the config weights (`members`,
    streams 1:1) and the simplex grid over the (member, stream) units (grid_steps); the best by
    SEARCH_OBJECTIVE. Returns {"weights": {member: share}, "stream_weights": {member: {stream:
    share}} for members of several streams, "evaluations", "grid_step", "units"}."""
    members = scaled_weights(members)
    streams = {m: streams_of(val[m]) for m in members}
    units = [(m, s) for m in members for s in streams[m]]
    unit_probs = np.stack([stream_probs(val[m], s).numpy() for m, s in units])
    steps = grid_steps(len(units))
    uniform = _unit_weights(units, {m: 1.0 for m in members}, streams)
    candidates = np.vstack([uniform, _unit_weights(units, members, streams), simplex_grid(len(units), steps)])
    correct, mca = _val_objective(candidates, unit_probs, labels)
    shares = candidates / candidates.sum(1, keepdims=True)
    distance = ((shares - uniform / uniform.sum()) ** 2).sum(1)
    # (rounded: sums of the same shares in another order must tie, not differ in the last bit)
    best = np.lexsort((np.arange(len(candidates)), distance.round(9), -mca.round(9), -correct))[0]
    unit_share = dict(zip(units, shares[best]))
    member_share = {m: float(sum(unit_share[m, s] for s in streams[m])) for m in members}
    stream_weights = {m: {s: round(float(unit_share[m, s] / member_share[m]), 6) for s in streams[m]}
                      for m in members if len(streams[m]) > 1 and member_share[m] > 0}
    return {"weights": {m: round(w, 6) for m, w in member_share.items()}, "stream_weights": stream_weights, "evaluations": int(len(candidates)),
            "grid_step": 1 / steps, "units": [f"{m}:{s}" for m, s in units]}


def scaled_weights(weights: dict, what: str = "ensemble weights") -> dict:
    """Member weights over their largest (same ratios; sums and products of them cannot
    overflow: weights of 1e308 would sum to infinity and give NaN probabilities). InputError
    for a weight that is negative or not a finite number, or weights that are all zero."""
    for m, w in weights.items():
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
            raise InputError(f"{what}: the weight of {m} is {w!r}; a weight is a finite number >= 0")
    top = max(weights.values(), default=0)
    if top <= 0:
        raise InputError(f"{what} sum to zero")
    return {m: w / top for m, w in weights.items()}


def ensemble_probs(frames: dict, weights: dict, stream_weights: dict | None = None) -> torch.Tensor:
    """The weighted mean of the members' probabilities, each member's streams combined at its
    stream weights (1:1 where none are given)."""
    stream_weights = stream_weights or {}
    weights = scaled_weights(weights)
    total = sum(weights.values())
    return sum(w * model_probs(frames[m], [stream_weights[m][s] for s in streams_of(frames[m])]
                               if m in stream_weights else None)
               for m, w in weights.items() if w) / total


def _scalar_metrics(probs, labels, num_classes) -> dict:
    return {k: v for k, v in metrics(probs, labels, num_classes).items() if not isinstance(v, dict)}


def choose_weights(scores: dict, members: dict, mode: str, num_classes: int) -> dict:
    """The ensemble's weight sets (searched, uniform, config) with their validation and test
    metrics, and which one is applied: the searched weights with `mode` "search" and a validation
    split, else the config weights. The search sees the validation rows only."""
    scaled_weights(members, "config key ensemble.members")   # (refuses odd weights)
    # a member the config weighs 0 takes no part: not in the search, not in the uniform set
    active = {m: w for m, w in members.items() if w > 0}
    frames = {m: scores[m] for m in active}
    without_val = [m for m, f in frames.items() if not (f.split == "val").any()]
    has_val = not without_val
    sets = {"uniform": {"weights": {m: 1.0 for m in active}, "stream_weights": {}},
            "config": {"weights": dict(members), "stream_weights": {}}}
    search = None
    val_clips = int((frames[next(iter(frames))].split == "val").sum()) if has_val else 0
    if mode == "search" and has_val and val_clips < SEARCH_MIN_VAL_CLIPS:
        note = (f"ensemble.weights is search, but the validation split holds only {val_clips} clip(s), "
                f"fewer than the {SEARCH_MIN_VAL_CLIPS} a search needs (weights chosen on so few "
                "clips are chance): the config weights are kept")
        log.warning(note)
    elif mode == "search" and has_val:
        val, val_labels = _aligned(frames, "val")
        search = search_weights(val, val_labels, active)
        search["weights"] = {m: search["weights"].get(m, 0.0) for m in members}
        sets = {"searched": {"weights": search["weights"], "stream_weights": search["stream_weights"]}, **sets}
        note = (f"member and stream weights searched on the validation split ({len(val_labels)} clips; "
                f"{search['evaluations']} weight sets, grid step {search['grid_step']:g}; objective: "
                f"{SEARCH_OBJECTIVE}), then applied to test")
        log.info("ensemble weights: %s", note)
    elif mode == "search" and len(without_val) < len(frames):
        note = (f"ensemble.weights is search, but the score file of {', '.join(without_val)} holds no "
                "validation rows while the others do (score files of different runs or manifests? "
                "rerun its test stage): the config weights are kept")
        log.warning(note)
    elif mode == "search":
        note = ("ensemble.weights is search, but the score files hold no validation split "
                "(dataset.val_fraction 0 and no val subjects): the config weights are kept")
        log.warning(note)
    else:
        note = "the config weights (ensemble.members as written, streams 1:1)"
    for split in ("val", "test") if has_val else ("test",):
        rows, labels = _aligned(frames, split)
        for chosen in sets.values():
            chosen[split] = _scalar_metrics(ensemble_probs(rows, chosen["weights"], chosen["stream_weights"]),
                                            labels, num_classes)
    return {"mode": mode, "applied": "searched" if search else "config", "note": note,
            "search": {k: search[k] for k in ("evaluations", "grid_step", "units")} if search else None,
            "objective": SEARCH_OBJECTIVE if search else None, "sets": sets}


def _check_class_tables(score_files: dict, scores: dict, classes: pd.DataFrame, classes_csv) -> None:
    """Every score file must hold the run's class table (count, order, ids and names): averaging
    columns of different classes gives a plausible and wrong ensemble."""
    first = None
    for name, frame in scores.items():
        table = class_table(frame)
        first = first or (score_files[name], table)
        diff = describe_class_difference(first[1], table)
        if diff:
            raise InputError(f"{first[0]} and {score_files[name]}: score files of different class tables "
                             f"({diff}); ensemble the models of one run")
        # (a class table without label ids, written by hand, is held to its names)
        ids = ([i for i, _ in table] + [-1] * len(classes))[:len(classes)]
        if "label_id" in classes:
            try:
                ids = [int(i) for i in classes.label_id]
            except (TypeError, ValueError):
                raise InputError(f"{classes_csv}: column label_id holds a value that is not an integer") from None
        diff = describe_class_difference(table, list(zip(ids, classes.name)))
        if diff:
            raise InputError(f"{score_files[name]}: its class table differs from {classes_csv} ({diff})")


def _check_labels(score_files: dict, scores: dict) -> None:
    """Every score file must give each clip the same split and label: the metrics take the
    labels of one file, and a file of another manifest (a relabelled clip) would be scored
    against labels it was not tested on."""
    first = next(iter(scores))
    ref = scores[first].set_index("clip_id")[["split", "label"]]
    for name, frame in scores.items():
        if name == first:
            continue
        other = frame.set_index("clip_id")[["split", "label"]]
        common = ref.index.intersection(other.index)
        a, b = ref.loc[common], other.loc[common]
        differ = (a.label.astype(str) != b.label.astype(str)) | (a.split != b.split)
        if differ.any():
            clip = differ[differ].index[0]
            raise InputError(f"{score_files[first]} and {score_files[name]}: clip {clip!r} has label "
                             f"{a.label[clip]} ({a.split[clip]}) in one and {b.label[clip]} ({b.split[clip]}) "
                             "in the other: score files of different manifests; ensemble the models of one run")


def build_report(score_files: dict, classes_csv, out_dir, *, members: dict, weights: str = "config",
        variants_order=None, curves: dict | None = None, manifest_csv=None, run_config: dict | None = None) -> dict:
    """`weights`: "config" (the members' weights as written) or "search" (chosen on the
    validation split: choose_weights). For the summary: `curves` {model: curve.png},
    `manifest_csv` (the data: clips per split and class), `run_config` (the run's config)."""
    out_dir = Path(out_dir)
    curves = {name: Path(p) for name, p in (curves or {}).items()}
    for name, path in curves.items():
        if not path.is_file():
            raise InputError(f"{path}: training curve of model {name} not found")
    # names as text: a dataset whose classes are named by numbers must not give numeric names
    # (metrics.json keys, plot labels)
    classes = pd.read_csv(classes_csv, dtype={"name": str}, keep_default_na=False)
    if "name" not in classes or classes.name.duplicated().any():
        twice = classes.name[classes.name.duplicated()].iloc[0] if "name" in classes else None
        raise InputError(f"{classes_csv}: " + ("no column 'name'" if twice is None else
                                               f"class name {twice!r} appears twice"))
    K = len(classes)
    scores = {name: read_scores(p) for name, p in score_files.items()}
    _check_class_tables(score_files, scores, classes, classes_csv)
    fused_names = [n for n in scores if _variant_flags(n)]
    first_fused = f"fused_{variants_order[0]}" if variants_order else (fused_names or [None])[0]
    members = {first_fused if m == "fused" else m: w for m, w in members.items()}
    missing = sorted(set(members) - set(scores))
    if missing:
        raise InputError(f"ensemble member(s) {missing} have no score file (models: {sorted(scores)})")

    _check_labels(score_files, scores)
    test, labels = _aligned(scores, "test")
    report = {"num_test_clips": int(len(labels)), "classes": classes.name.tolist(), "models": {}}
    for name, s in test.items():
        streams = streams_of(s)
        rows = {stream: metrics(stream_probs(s, stream), labels, K) for stream in streams}
        if len(streams) == 2:
            rows.update({f"{':'.join(streams)} {k}": metrics(model_probs(s, w), labels, K)
                         for k, w in STREAM_WEIGHTS.items()})
        for r in rows.values():
            r.pop("per_class"), r.pop("class_table")
        report["models"][name] = rows

    has_val = all((s.split == "val").any() for s in scores.values())
    report["validation"] = ("best epoch by validation top-1" if has_val else
                            "none: every model is its last epoch of the fixed schedule")
    chosen = choose_weights(scores, members, weights, K)
    applied = chosen["sets"][chosen["applied"]]
    ens = ensemble_probs(test, applied["weights"], applied["stream_weights"])
    ens_metrics = metrics(ens, labels, K)
    ens_metrics["per_class"] = {classes.name[k]: v for k, v in ens_metrics["per_class"].items()}
    ens_metrics["class_table"] = [{"class": classes.name[r["label"]], **r} for r in ens_metrics["class_table"]]
    report["ensemble"] = {"weights": applied["weights"], "stream_weights": applied["stream_weights"],
                          "searched_on_val": chosen["applied"] == "searched", **ens_metrics}
    report["ensemble_weights"] = chosen
    report["ablation"] = [
        {**_variant_flags(n),
         **{k: v["top1"] for k, v in report["models"][n].items()},
         "mean_class_accuracy": report["models"][n]["rgb:pose 1:1"]["mean_class_accuracy"]}
        for n in fused_names]

    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "metrics.json", report)
    write_per_class(report["ensemble"]["class_table"], out_dir / "per_class.csv")
    plot_confusion(confusion(ens, labels, K), classes.name.tolist(), out_dir / "confusion.png",
                   title=f"ensemble, test top-1 {ens_metrics['top1']:.3f}")
    # the summary's context: what ran (versions, config), on what (data), how it trained (curves)
    context = {"versions": versions(), "config": run_config,
               "data": data_counts(manifest_csv, classes) if manifest_csv is not None else None,
               "curves": curves, "confusion": out_dir / "confusion.png"}
    md = summary_markdown(report, context, out_dir)
    write_text(out_dir / "summary.md", md)
    write_text(out_dir / "summary.html", summary_html(report, context))
    log.info("ensemble test top-1 %.4f (weights %s)", ens_metrics["top1"],
             _weights_text(applied["weights"], applied["stream_weights"]))
    return report


def plot_confusion(matrix: np.ndarray, names: list[str], path, title="") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(names)
    fig, ax = plt.subplots(figsize=(1.6 + 0.55 * n, 1.2 + 0.5 * n))
    rows = matrix.sum(1, keepdims=True)
    ax.imshow(matrix / np.maximum(rows, 1), cmap="Blues", vmin=0, vmax=1)
    for i, j in itertools.product(range(n), range(n)):
        if matrix[i, j]:
            ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=8,
                    color="white" if matrix[i, j] > rows[i, 0] / 2 else "black")
    # class names are shown as written: "$x^2$" or "a$b" is not matplotlib mathtext (which
    # would render or, malformed, fail at savefig after all the training)
    ax.set_xticks(range(n), names, rotation=60, ha="right", fontsize=8, parse_math=False)
    ax.set_yticks(range(n), names, fontsize=8, parse_math=False)
    ax.set_xlabel("predicted"), ax.set_ylabel("true"), ax.set_title(title, fontsize=9, parse_math=False)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)


def write_per_class(table: list[dict], path) -> None:
    """The ensemble's per-class table as CSV (empty recall: no test clips; empty precision:
    never predicted)."""
    with atomic_path(path) as tmp:
        pd.DataFrame(table, columns=["label", "class", "count", "predicted", "recall", "precision", "f1"]
                     ).to_csv(tmp, index=False)


def _f1(m: dict) -> str:
    return f"{m['macro_f1']:.4f}" if "macro_f1" in m else ""


def _table(report: dict) -> list[list[str]]:
    rows = [["model", "scores", "top-1", "top-5", "mean class acc.", "macro-F1"]]
    for name, combos in report["models"].items():
        for combo, m in combos.items():
            rows.append([name, combo, f"{m['top1']:.4f}", f"{m['top5']:.4f}",
                         f"{m['mean_class_accuracy']:.4f}", _f1(m)])
    e = report["ensemble"]
    w = _weights_text(e["weights"], e.get("stream_weights"))
    rows.append(["**ensemble**", w, f"{e['top1']:.4f}", f"{e['top5']:.4f}",
                 f"{e['mean_class_accuracy']:.4f}", _f1(e)])
    return rows


def _class_rows(report: dict) -> list[list[str]]:
    """The ensemble's per-class table ("-": no test clips, or never predicted)."""
    def cell(v):
        return "-" if v is None else f"{v:.4f}"

    rows = [["class", "test clips", "predicted", "recall", "precision", "F1"]]
    for r in report["ensemble"].get("class_table", []):
        rows.append([r["class"], str(r["count"]), str(r["predicted"]), cell(r["recall"]), cell(r["precision"]),
                     cell(r["f1"])])
    return rows


def _weights_text(weights: dict, stream_weights: dict | None = None, share=False) -> str:
    """"fused_full 0.5 (rgb:pose 0.3:0.7), joint 0.5": member weights (as shares of their total
    with `share`) and the stream weights of members that have them."""
    if share:
        weights = scaled_weights(weights)
    total = sum(weights.values()) if share else 1.0
    parts = []
    for m, w in weights.items():
        streams = (stream_weights or {}).get(m)
        ratio = (f" ({':'.join(streams)} {':'.join(f'{v:.3g}' for v in streams.values())})"
                 if streams else "")
        parts.append(f"{m} {w / total:.3g}{ratio}")
    return ", ".join(parts)


def _weights_table(report: dict) -> list[list[str]]:
    """The weight sets side by side (member weights as shares of their total), on val and test."""
    chosen = report["ensemble_weights"]
    head = ["weights", "members (streams)"]
    cols = [(split, k, label) for split in ("val", "test")
            for k, label in (("top1", "top-1"), ("top5", "top-5"), ("mean_class_accuracy", "mean class acc."))]
    rows = [head + [f"{split} {label}" for split, _, label in cols]]
    for name, weight_set in chosen["sets"].items():
        label = f"**{name} (applied)**" if name == chosen["applied"] else name
        rows.append([label, _weights_text(weight_set["weights"], weight_set["stream_weights"], share=True)]
                    + [f"{weight_set[split][k]:.4f}" if split in weight_set else "-" for split, k, _ in cols])
    return rows


def _ablation(report: dict) -> list[list[str]]:
    rows = [["variant", "fusion", "prototype loss", "rgb", "pose", "rgb:pose 1:1", "mean class acc."]]
    for r in report["ablation"]:
        rows.append([r["variant"], "yes" if r["fusion"] else "no", "yes" if r["prototype"] else "no",
                     f"{r['rgb']:.4f}", f"{r['pose']:.4f}", f"{r['rgb:pose 1:1']:.4f}",
                     f"{r['mean_class_accuracy']:.4f}" if "mean_class_accuracy" in r else ""])
    return rows


# (what the comparison shows, variant without it, variant with it)
ABLATION_EFFECTS = (("the fusion module", "nofusion", "full"), ("the prototype loss", "noproto", "full"),
                    ("both", "plain", "full"))


def ablation_effects(report: dict) -> list[str]:
    """One sentence per pair of trained variants that differ in one ingredient (or both): what
    adding it changed in the fused network's test top-1 (rgb:pose 1:1)."""
    top1 = {r["variant"]: r["rgb:pose 1:1"] for r in report["ablation"]}
    return [f"Adding {what} ({without} -> {with_}): test top-1 {top1[without]:.4f} -> "
            f"{top1[with_]:.4f} ({top1[with_] - top1[without]:+.4f})."
            for what, without, with_ in ABLATION_EFFECTS if without in top1 and with_ in top1]


def _md(rows):
    out = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    out += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    return "\n".join(out)


def versions() -> dict:
    import torch as _torch

    from mgpipe import __version__

    return {"mgpipe": __version__, "torch": _torch.__version__}


def data_counts(manifest_csv, classes: pd.DataFrame) -> list[list[str]]:
    """Clips per class and split of the run's manifest, as table rows (header, classes, total)."""
    from mgpipe.stages.clips import read_manifest

    manifest = read_manifest(manifest_csv)
    if not {"label", "split"} <= set(manifest.columns):
        raise InputError(f"{manifest_csv}: not a clip manifest (no label or split column)")
    splits = [s for s in ("train", "val", "test") if (manifest.split == s).any()]
    splits += sorted(set(manifest.split.astype(str)) - set(splits))
    counts = pd.crosstab(pd.to_numeric(manifest.label, errors="coerce"), manifest.split.astype(str))
    rows = [["class", *splits, "total"]]
    for k, name in enumerate(classes.name):
        n = [int(counts.at[k, s]) if k in counts.index and s in counts.columns else 0 for s in splits]
        rows.append([name, *map(str, n), str(sum(n))])
    totals = [int((manifest.split == s).sum()) for s in splits]
    rows.append(["**all classes**", *map(str, totals), str(sum(totals))])
    return rows


def _config_text(config: dict) -> str:
    import yaml

    return yaml.safe_dump(config, sort_keys=True, default_flow_style=None, width=100).rstrip()


def _header(report: dict, context: dict) -> str:
    v = context["versions"]
    return (f"mgpipe {v['mgpipe']}, torch {v['torch']}. Test clips: {report['num_test_clips']}. "
            f"Model selection: {report.get('validation', 'best epoch by validation top-1')}.")


def summary_markdown(report: dict, context: dict | None = None, out_dir=".") -> str:
    """summary.md: the sections of summary.html, its pictures as links beside it."""
    context = context or {"versions": versions(), "config": None, "data": None, "curves": {}}
    parts = [f"# mgpipe results\n\n{_header(report, context)}\n"]
    if context.get("data"):
        parts += ["## Data (clips per class and split)\n", _md(context["data"]), ""]
    parts += ["## Models and ensemble (test split)\n", _md(_table(report)), ""]
    if context.get("curves"):
        parts += ["## Training curves\n"]
        for name, path in context["curves"].items():
            parts += [f"![{name}]({Path(os.path.relpath(path, out_dir)).as_posix()})", ""]
    if "ensemble_weights" in report:
        parts += ["## Ensemble weights\n", f"Applied: {report['ensemble_weights']['note']}.\n",
                  _md(_weights_table(report)), ""]
    if report["ablation"]:
        parts += ["## Ablation of the fused network (test top-1)\n", _md(_ablation(report)), "",
                  *[f"- {line}" for line in ablation_effects(report)], ""]
    parts += ["## Per class (ensemble, test split)\n",
              "Recall is the class's accuracy; macro-F1 averages F1 over the classes with test clips "
              "or predictions (a class never predicted has F1 0; '-': undefined).\n",
              _md(_class_rows(report)), "", "## Confusion matrix of the ensemble\n",
              "![confusion matrix](confusion.png)", ""]
    if context.get("config") is not None:
        parts += ["## Config\n", "```yaml", _config_text(context["config"]), "```", ""]
    return "\n".join(parts)


def _data_uri(path) -> str:
    """A PNG as a data: URI, so that summary.html keeps its pictures when moved or mailed."""
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def summary_html(report: dict, context: dict | None = None) -> str:
    """summary.html: one self-contained page (pictures embedded, no file or network reference)."""
    context = context or {"versions": versions(), "config": None, "data": None, "curves": {}}

    def table(rows):
        head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c.strip('*'))}</td>" for c in r) + "</tr>"
                       for r in rows[1:])
        return f"<table><tr>{head}</tr>{body}</table>"

    def image(path, alt):
        return f"<img alt='{html.escape(alt, quote=True)}' src='{_data_uri(path)}'>"

    data = (f"<h2>Data (clips per class and split)</h2>{table(context['data'])}"
            if context.get("data") else "")
    weights = (f"<h2>Ensemble weights</h2><p>Applied: {html.escape(report['ensemble_weights']['note'])}.</p>"
               f"{table(_weights_table(report))}") if "ensemble_weights" in report else ""
    effects = "".join(f"<li>{html.escape(line)}</li>" for line in ablation_effects(report))
    abl = (f"<h2>Ablation of the fused network (test top-1)</h2>{table(_ablation(report))}"
           f"<ul>{effects}</ul>") if report["ablation"] else ""
    confusion_png = context.get("confusion")
    matrix = (f"<h2>Confusion matrix of the ensemble</h2><div class='matrix'>"
              f"{image(confusion_png, 'confusion matrix')}</div>" if confusion_png else "")
    curves = "".join(f"<figure>{image(path, name + ' training curve')}<figcaption>{html.escape(name)}"
                     "</figcaption></figure>" for name, path in (context.get("curves") or {}).items())
    curves = f"<h2>Training curves</h2><div class='curves'>{curves}</div>" if curves else ""
    config = (f"<h2>Config</h2><details><summary>the run's settings (YAML)</summary>"
              f"<pre>{html.escape(_config_text(context['config']))}</pre></details>"
              if context.get("config") is not None else "")
    return ("<!doctype html><html><head><meta charset='utf-8'><title>mgpipe results</title>"
            "<style>body{font-family:sans-serif;margin:2em}td,th{padding:3px 10px;"
            "border-bottom:1px solid #ddd;text-align:left}img{max-width:100%}.matrix img{max-width:520px}"
            ".curves{display:flex;flex-wrap:wrap}.curves figure{width:32%;margin:0 1% 1em 0}"
            "figcaption{font-size:12px;color:#555}"
            "pre{background:#f6f6f6;padding:1em;font-size:12px}</style></head><body>"
            f"<h1>mgpipe results</h1><p>{html.escape(_header(report, context))}</p>{data}"
            f"<h2>Models and ensemble (test split)</h2>{table(_table(report))}{curves}{weights}{abl}"
            f"<h2>Per class (ensemble, test split)</h2>{table(_class_rows(report))}{matrix}{config}"
            "</body></html>\n")
