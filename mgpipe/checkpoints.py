"""The checkpoint format: what a model file holds, and the only code that reads or writes one.

A checkpoint is a dict of tensors and plain Python values (str, int, float, bool, None, lists,
tuples, dicts), nothing else:

    model        the state dict (tensors only)
    arch         the network's architecture settings (plain dict; see specs.ModelSpec.network)
    num_classes  int
    name         the model's name in the workflow (rgb, joint, limb, motion, swin, fused_<variant>)
    epoch        the epoch it comes from (0 for merged weights)
    val_top1     its validation top-1, or None (merged weights, or no validation split)
    classes      the class table in output order: [{"label": k, "label_id": id, "name": str}]
    layout       the keypoint layout of the store it trained on: {"name", "joints", "limbs"}
    inputs       {dotted config key: value}: the settings that shape its test-time input
                 (specs.ModelSpec.input_settings: frames, sizes, RGB mean/std, heatmap sigma
                 and box padding)
    settings     the config sections that define it (ModelSpec.settings; trained models only)
    train_class_counts  the training split's clips per class (trained models only): the prior
                 of test-time logit adjustment (mgpipe/imbalance.py)
    ...          optional plain extras (selected, merged_from, fingerprint)

classes, layout and inputs are "what the model was trained on" (written by train and merge);
predict and test hold their inputs to them (fit_config, check_layout, check_classes), so a
model never silently scores data it was not trained for. A checkpoint from before they were
recorded is refused with one line (retrain it): guessing its classes or input sizes from the
current config is exactly the silent wrong answer the record exists to prevent.

Training state files (state/<model>/last.pt) follow the same rule: the optimiser state and the
RNG state are tensors and plain values too.

torch checkpoints are pickles, and a pickle can run any code while it loads. Every load here
therefore uses torch's restricted unpickler (`weights_only=True`), which builds tensors and
plain containers only and refuses any other global: a hostile file is refused with one line
that names it, before any of its code can run.
"""

from __future__ import annotations

import copy
import re
import warnings
from pathlib import Path

import torch

from .io import InputError, atomic_path

REQUIRED_KEYS = ("model", "arch", "num_classes", "name")


def save(obj: dict, path) -> None:
    """Write a checkpoint atomically (a killed job never leaves a truncated file)."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def _refusal(error: Exception, what: str) -> str:
    """One line out of torch's multi-paragraph errors (their wording differs between versions)."""
    text = str(error)
    found = re.search(r"GLOBAL ([\w.]+)", text)
    if found:
        return (f"{what} refused: it references {found.group(1)}, which no checkpoint holds "
                "(loading it could run code)")
    if "Weights only load failed" in text or "weights_only" in text:
        found = re.search(r"Unsupported operand (\d+)", text)
        held = f"pickle operation {found.group(1)}" if found else "objects other than tensors and plain values"
        return f"{what} refused: it holds {held}, which no checkpoint holds (loading it could run code)"
    return f"not a readable {what} ({type(error).__name__}; expected a file written by torch.save)"


def load_file(path, what: str = "checkpoint") -> dict:
    """Any mgpipe .pt file (checkpoint or training state) as a dict, loaded without running code."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: {what} not found")
    try:
        with warnings.catch_warnings():  # torch warns about old pickle protocols before refusing
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # whatever the unpickler or the zip reader raises, it is bad input
        raise InputError(f"{path}: {_refusal(e, what)}") from None
    if not isinstance(obj, dict):
        raise InputError(f"{path}: {what} holds a {type(obj).__name__}, expected a dict")
    return obj


def load(path) -> dict:
    """A model checkpoint, checked for the keys every stage relies on."""
    ckpt = load_file(path)
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    if missing:
        raise InputError(f"{path}: not an mgpipe model checkpoint (missing {', '.join(missing)})")
    if not isinstance(ckpt["model"], dict) or not all(isinstance(v, torch.Tensor) for v in ckpt["model"].values()):
        raise InputError(f"{path}: checkpoint 'model' is not a state dict of tensors")
    if not isinstance(ckpt["arch"], dict) or not isinstance(ckpt["num_classes"], int):
        raise InputError(f"{path}: checkpoint 'arch' or 'num_classes' has the wrong type")
    return ckpt


# ---- what a model was trained on ------------------------------------------------------------

RECORD_KEYS = ("classes", "layout", "inputs")


def class_table(classes_csv) -> list[dict]:
    """A run's class table (classes.csv: label, label_id, name; one row per output, in output
    order) as the plain records a checkpoint keeps."""
    import pandas as pd

    try:
        frame = pd.read_csv(classes_csv, dtype={"name": str}, keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise InputError(f"{classes_csv}: not a readable class table ({str(e).splitlines()[0][:120]})") from None
    if not {"label_id", "name"} <= set(frame.columns) or frame.empty:
        raise InputError(f"{classes_csv}: a class table has columns label_id and name and a row per class")
    if "label" in frame and list(frame.label) != list(range(len(frame))):
        raise InputError(f"{classes_csv}: column label must number the rows 0..{len(frame) - 1} in order")
    try:
        ids = [int(v) for v in frame.label_id]
    except (TypeError, ValueError):
        raise InputError(f"{classes_csv}: column label_id holds a value that is not an integer") from None
    return [{"label": k, "label_id": i, "name": str(n)} for k, (i, n) in enumerate(zip(ids, frame.name))]


def layout_record(layout) -> dict:
    return {"name": layout.name, "joints": list(layout.joints), "limbs": [list(e) for e in layout.limbs]}


def model_record(spec, config: dict, classes: list[dict], layout) -> dict:
    """The checkpoint entries that say what a model of `spec` trained with `config` was trained
    on (see the module docstring)."""
    return {"classes": classes, "layout": layout_record(layout), "inputs": spec.input_settings(config),
            "settings": spec.settings(config)}


def record(ckpt: dict, path) -> dict:
    """{classes, layout, inputs} of a model checkpoint; a checkpoint without them is refused."""
    missing = [k for k in RECORD_KEYS if k not in ckpt]
    if missing:
        raise InputError(f"{path}: the checkpoint does not record what the model was trained on "
                         f"(no {', '.join(missing)}; written by an older mgpipe): retrain it")
    classes, layout, inputs = (ckpt[k] for k in RECORD_KEYS)
    def is_int(v):
        return isinstance(v, int) and not isinstance(v, bool)

    if not (isinstance(classes, list) and len(classes) == ckpt["num_classes"]
            and all(isinstance(c, dict) and is_int(c.get("label_id")) and isinstance(c.get("name"), str)
                    for c in classes)
            and isinstance(layout, dict) and isinstance(layout.get("name"), str)
            and isinstance(layout.get("joints"), list) and all(isinstance(j, str) for j in layout["joints"])
            and isinstance(layout.get("limbs"), list)
            and all(isinstance(e, (list, tuple)) and len(e) == 2 and all(map(is_int, e)) for e in layout["limbs"])
            and isinstance(inputs, dict) and all(isinstance(k, str) for k in inputs)):
        raise InputError(f"{path}: the checkpoint's record of classes, layout and inputs is malformed")
    return {k: ckpt[k] for k in RECORD_KEYS}


def _show(value) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def _lookup(config: dict, key: str):
    value = config
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            return _ABSENT
        value = value[part]
    return value


_ABSENT = object()


def _same(a, b) -> bool:
    """Equal settings; numbers compare as numbers (YAML's 0.6 and JSON's 0.6, 64 and 64.0)."""
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool) \
            and not isinstance(b, bool):
        return float(a) == float(b)
    return a == b


def fit_config(ckpt: dict, path, config: dict, given=None) -> dict:
    """A copy of `config` whose input settings are the checkpoint's. A setting the config sets
    (every one, or those named in `given`, the dotted keys the user's own config files set)
    to another value is refused with one line naming the checkpoint, the setting and both values;
    a setting the config leaves to its default takes the checkpoint's value."""
    inputs = record(ckpt, path)["inputs"]
    out = copy.deepcopy(config)
    for key, trained in inputs.items():
        value = _lookup(config, key)
        explicit = given is None or key in given
        if value is not _ABSENT and explicit and not _same(value, trained):
            raise InputError(f"{path}: the model was trained with {key} = {_show(trained)}, the config "
                             f"sets {_show(value)} (use the config it was trained with, or leave "
                             f"{key} out and the model's value is used)")
        section, *inner, last = key.split(".")
        node = out.setdefault(section, {})
        for part in inner:
            node = node.setdefault(part, {})
        node[last] = copy.deepcopy(trained)
    # the recorded values come from a file: held to the schema (types, minima, maxima) like any
    # config. (mode pose: a single-pathway model's settings need not fit a fused network's)
    from .config import validate

    validate({"mode": "pose", **{s: copy.deepcopy(out[s]) for s in {k.split(".")[0] for k in inputs}}},
             f"{path} (its recorded input settings)")
    return out


def check_layout(ckpt: dict, path, spec, layout, where) -> None:
    """The keypoint layout of `where` (a store, or the config's pose.layout) must be the one the
    model trained on: its joints (heatmap channels, the flip, the compact box) and, for a model
    that reads limbs, its limbs."""
    trained = record(ckpt, path)["layout"]
    joints, limbs = list(layout.joints), [list(e) for e in layout.limbs]
    what = None
    if list(trained["joints"]) != joints:
        what = (f"{len(trained['joints'])} joints" if len(trained["joints"]) != len(joints)
                else "other joints or joint order")
        theirs = f"{len(joints)} joints" if len(trained["joints"]) != len(joints) else "its own"
    elif "limb" in spec.inputs and [list(e) for e in trained["limbs"]] != limbs:
        what, theirs = f"{len(trained['limbs'])} limbs", f"{len(limbs)} limbs"
    if what:
        raise InputError(f"{path}: the model was trained on keypoint layout {trained['name']!r} ({what}); "
                         f"{where} has layout {layout.name!r} ({theirs})")


def describe_class_difference(a: list, b: list) -> str | None:
    """None when two class tables ([(label_id, name)] in output order) agree, else what differs."""
    if len(a) != len(b):
        return f"{len(a)} vs {len(b)} classes"
    for k, (x, y) in enumerate(zip(a, b)):
        if tuple(x) != tuple(y):
            return f"output {k} is class {x[0]} {x[1]!r} vs {y[0]} {y[1]!r}"
    return None


def class_pairs(classes: list[dict]) -> list[tuple]:
    return [(int(c["label_id"]), str(c["name"])) for c in classes]


def check_classes(ckpt: dict, path, classes: list[dict], where) -> None:
    """A class table (e.g. the run's classes.csv) must be the one the model was trained on."""
    diff = describe_class_difference(class_pairs(record(ckpt, path)["classes"]), class_pairs(classes))
    if diff:
        raise InputError(f"{path}: the model's class table differs from {where} ({diff})")


def check_manifest_classes(ckpt: dict, path, manifest, where) -> None:
    """Every clip of a manifest must name a class of the model, at the model's output for it."""
    import pandas as pd

    trained = class_pairs(record(ckpt, path)["classes"])
    for column in ("label", "label_id"):
        if column in manifest and not pd.api.types.is_integer_dtype(manifest[column]):
            raise InputError(f"{where}: column {column} holds values that are not integers")
    labels = manifest.label.to_numpy()
    beyond = manifest[(labels < 0) | (labels >= len(trained))]
    if len(beyond):
        top = int(manifest.label.max())
        raise InputError(f"{path}: the model has {len(trained)} classes, {where} has clips of class "
                         f"output {int(beyond.label.iloc[0])} (clip {beyond.clip_id.iloc[0]}; outputs up to "
                         f"{top}, {top + 1} classes): test it on the data it was trained for")
    if not {"label_id", "class_name"} <= set(manifest.columns):
        return
    for row in manifest.drop_duplicates("label").itertuples():
        ident, name = trained[int(row.label)]
        # names compare where the manifest reader kept them as text (a missing or numeric-looking
        # name may come back as NaN or a number); the class id always compares
        theirs = (int(row.label_id), row.class_name if isinstance(row.class_name, str) else name)
        if theirs != (ident, name):
            raise InputError(f"{path}: the model's output {int(row.label)} is class {ident} {name!r}, "
                             f"{where} gives it to class {theirs[0]} {theirs[1]!r} (clip {row.clip_id})")
