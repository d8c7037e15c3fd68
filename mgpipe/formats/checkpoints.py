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
                 of test-time logit adjustment (mgpipe/learning/imbalance.py)
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
that names it, before any of its code can run. Before torch reads a byte, the container is
checked (_check_container): only torch's zip format with stored records no larger than the file
(a deflated record is a memory bomb; the legacy format sizes storages by its own claims), and a
file that is no checkpoint at all (HDF5, gzip, CSV, a plain pickle) is named for what it looks
like. After loading, every tensor must be dense, hold values, be real and finite
(check_tensors): no NaN or infinite value enters a model; fit_problem refuses integer, boolean
or complex values for a floating-point parameter instead of casting them.
"""

from __future__ import annotations

import copy
import re
import warnings
import zipfile
from pathlib import Path

import torch

from mgpipe.io import InputError, atomic_path

REQUIRED_KEYS = ("model", "arch", "num_classes", "name")


def save(obj: dict, path) -> None:
    """Write a checkpoint atomically (a killed job never leaves a truncated file)."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def _refusal(error: Exception, what: str) -> str:
    """One line out of torch's multi-paragraph errors (their wording differs between versions).
    (Only a file that got past _check_container reaches torch: a torch zip archive whose records
    are stored as torch stores them, so "could run code" is said only of its pickle.)"""
    text = str(error)
    found = re.search(r"GLOBAL ([\w.]+)", text)
    if found:
        return (f"{what} refused: it references {found.group(1)}, which no checkpoint holds "
                "(loading it could run code)")
    if "Weights only load failed" in text or "weights_only" in text:
        found = re.search(r"Unsupported operand (\d+)", text)
        held = f"pickle operation {found.group(1)}" if found else "objects other than tensors and plain values"
        return f"{what} refused: it holds {held}, which no checkpoint holds (loading it could run code)"
    if isinstance(error, MemoryError):
        return f"{what} refused: it claims more memory than this machine has (MemoryError)"
    return f"not a readable {what} ({type(error).__name__}; expected a file written by torch.save)"


# ---- the container, before torch reads a byte of it -----------------------------------------
# torch.save (torch >= 1.6) writes a zip archive of STORED (uncompressed) records: data.pkl (the
# pickle), data/<n> (each storage's raw bytes) and a few small ones. Anything else is refused
# here, before torch.load: a deflated record would be inflated by torch's zip reader to whatever
# size it claims (a 1 MB file to 1 GiB), and the legacy pre-1.6 format sizes its storages by the
# pickle's own claims. So no record is larger than the file, and loading costs at most about
# the file's size in memory.
_MAGIC = ((b"\x89HDF\r\n\x1a\n", "HDF5"), (b"\x1f\x8b", "gzip"), (b"BZh", "bzip2"),
          (b"\xfd7zXZ\x00", "xz"), (b"\x93NUMPY", "a numpy .npy array"), (b"\x89PNG", "PNG"),
          (b"\xff\xd8\xff", "JPEG"), (b"%PDF", "PDF"), (b"\x7fELF", "an executable"),
          (b"SQLite format 3", "SQLite"), (b"\x00\x00\x00\x18ftyp", "MP4"),
          (b"\x00\x00\x00\x20ftyp", "MP4"), (b"\x00\x00\x00\x1cftyp", "MP4"))
# torch's legacy format starts with the pickled magic number 0x1950a86a20f9469cfc6c
_LEGACY = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"


def _looks_like(head: bytes) -> str:
    """What a file that is no torch zip archive looks like, from its first bytes."""
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    if head.startswith(_LEGACY):
        return "torch's legacy (pre-1.6) format, which mgpipe does not read: re-save it with a current torch"
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "a plain Python pickle"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return "binary data of an unknown format"
    if text.isprintable() or all(c.isprintable() or c in "\r\n\t" for c in text):
        first = text.lstrip()[:1]
        kind = ("JSON" if first in "{[" else "CSV" if "," in text.split("\n", 1)[0] else "")
        return f"{kind} text".strip() if kind else "text"
    return "binary data of an unknown format"


def _check_container(path: Path, what: str) -> None:
    """Refuse, in one line, a file torch.load must not be given: no torch zip archive, or one with
    records torch never writes (compressed, larger than the file, sizes that disagree)."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(4096)
    if not head:
        raise InputError(f"{path}: not a PyTorch checkpoint (an empty file); {what} must be written by torch.save")
    if not head.startswith(b"PK\x03\x04"):
        raise InputError(f"{path}: not a PyTorch checkpoint (looks like {_looks_like(head)}); "
                         f"{what} must be written by torch.save")
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError, NotImplementedError) as e:
        # (NotImplementedError: a zip feature or version Python's zipfile does not read, e.g. a
        # header claiming "zip file version 17.5"; torch.save writes none)
        raise InputError(f"{path}: not a readable {what} (a damaged zip archive: "
                         f"{str(e).splitlines()[0][:120] if str(e) else type(e).__name__})") from None
    if not any(i.filename.endswith("data.pkl") for i in infos):
        raise InputError(f"{path}: not a PyTorch checkpoint (a zip archive without data.pkl); "
                         f"{what} must be written by torch.save")
    total = 0
    with open(path, "rb") as f:
        for info in infos:
            if info.compress_type != zipfile.ZIP_STORED:
                raise InputError(f"{path}: {what} refused: its record {info.filename[:80]} is compressed "
                                 "(torch.save never compresses; it could inflate far beyond the file)")
            if info.file_size != info.compress_size or info.file_size > size:
                raise InputError(f"{path}: {what} refused: its record {info.filename[:80]} claims "
                                 f"{info.file_size} bytes in a file of {size} (a damaged or forged archive)")
            f.seek(info.header_offset)
            local = f.read(30)
            if len(local) < 30 or local[:4] != b"PK\x03\x04" or local[8:10] != b"\x00\x00":
                raise InputError(f"{path}: {what} refused: the local header of record "
                                 f"{info.filename[:80]} is damaged or says it is compressed")
            total += info.file_size
    if total > size:
        raise InputError(f"{path}: {what} refused: its records claim {total} bytes in a file of {size} "
                         "(a damaged or forged archive)")


# ---- tensors: what may come out of a checkpoint -----------------------------------------------
_MAX_VALUES = 200_000   # containers and values walked in one file (a checkpoint has a few thousand)


def _tensor_problem(t: torch.Tensor) -> str | None:
    if t.layout != torch.strided:
        return f"a sparse tensor ({str(t.layout).removeprefix('torch.')})"
    if t.is_meta:
        return "a meta tensor (a shape without values)"
    if t.is_quantized:
        return "a quantized tensor"
    if t.is_complex():
        return f"a complex tensor ({str(t.dtype).removeprefix('torch.')}; no parameter is complex)"
    if t.numel() * t.element_size() > t.untyped_storage().nbytes():
        # a broadcast view (stride 0) claims more values than the file holds: checking or copying
        # it would allocate them all (a state dict's tensors are stored whole)
        return (f"a tensor of shape {tuple(t.shape)} over {t.untyped_storage().nbytes()} stored bytes "
                "(a broadcast view, which no checkpoint holds)")
    if t.is_floating_point() and t.numel() and not bool(torch.isfinite(t).all()):
        bad = t[~torch.isfinite(t)]
        kind = "NaN" if bool(torch.isnan(bad).any()) else "infinite values"
        return f"{kind} ({int(bad.numel())} of {t.numel()} values)"
    return None


def check_tensors(obj, path, what: str = "checkpoint") -> None:
    """Every tensor anywhere in a loaded file: dense, with values, real, finite. A NaN or
    infinite value (a BatchNorm statistic, a weight) would otherwise train, test and predict
    with rc 0 and empty or NaN scores."""
    stack, seen = [("", obj)], 0
    while stack:
        key, value = stack.pop()
        seen += 1
        if seen > _MAX_VALUES:
            raise InputError(f"{path}: {what} refused: it holds more than {_MAX_VALUES} values")
        if isinstance(value, torch.Tensor):
            problem = _tensor_problem(value)
            if problem:
                raise InputError(f"{path}: {what} refused: tensor {key} holds {problem}")
        elif isinstance(value, dict):
            stack.extend((f"{key}.{k}" if key else str(k), v) for k, v in value.items())
        elif isinstance(value, (list, tuple)):
            stack.extend((f"{key}[{i}]", v) for i, v in enumerate(value))


def fit_problem(source: torch.Tensor, target: torch.Tensor) -> str | None:
    """Why `source` cannot be copied into the parameter or buffer `target` (None: it can): a
    floating-point parameter takes floating-point values only (an integer, boolean or complex
    tensor would be cast silently), an integer buffer (num_batches_tracked) integers only."""
    if target.is_floating_point() != source.is_floating_point() or source.is_complex():
        kind = "floating-point" if target.is_floating_point() else str(target.dtype).removeprefix("torch.")
        return f"{str(source.dtype).removeprefix('torch.')} values for a {kind} tensor (not cast)"
    return None


def load_file(path, what: str = "checkpoint") -> dict:
    """Any mgpipe .pt file (checkpoint or training state) as a dict, loaded without running code
    and within about the file's size in memory; every tensor in it dense, real and finite."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: {what} not found")
    try:
        _check_container(path, what)
    except OSError as e:
        raise InputError(f"{path}: {what} could not be read ({e.strerror or type(e).__name__})") from None
    try:
        with warnings.catch_warnings():  # torch warns about old pickle protocols before refusing
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # whatever the unpickler or the zip reader raises, it is bad input
        raise InputError(f"{path}: {_refusal(e, what)}") from None
    if not isinstance(obj, dict):
        raise InputError(f"{path}: {what} holds a {type(obj).__name__}, expected a dict")
    check_tensors(obj, path, what)
    return obj


MAX_CLASSES = 1_000_000   # a classifier's outputs (ImageNet-21k has 21,841)


def check_model_entries(ckpt: dict, path, what: str = "checkpoint") -> None:
    """The entries every stage relies on, of the right types: model (a state dict of tensors),
    arch (a dict whose type, kind and variant are strings), num_classes (1..MAX_CLASSES), name."""
    if not isinstance(ckpt["model"], dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                      for k, v in ckpt["model"].items()):
        raise InputError(f"{path}: {what} 'model' is not a state dict of tensors")
    arch = ckpt["arch"]
    if not isinstance(arch, dict) or not isinstance(arch.get("type"), str) \
            or not all(isinstance(arch.get(k), str) for k in ("kind", "variant") if k in arch):
        raise InputError(f"{path}: {what} 'arch' is not an architecture record (a dict whose type, "
                         "kind and variant are strings)")
    n = ckpt["num_classes"]
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= MAX_CLASSES:
        shown = f"{str(n)[:20]}..." if isinstance(n, int) and len(str(n)) > 20 else repr(n)[:40]
        raise InputError(f"{path}: {what} 'num_classes' is {shown}, expected an integer 1..{MAX_CLASSES}")
    if not isinstance(ckpt["name"], str):
        raise InputError(f"{path}: {what} 'name' is not a string")


def load(path) -> dict:
    """A model checkpoint, checked for the keys every stage relies on."""
    ckpt = load_file(path)
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    if missing:
        raise InputError(f"{path}: not an mgpipe model checkpoint (missing {', '.join(missing)})")
    check_model_entries(ckpt, path)
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
    problem = layout_problem(layout)
    if problem:
        raise InputError(f"{path}: its recorded keypoint layout {problem}")
    return {k: ckpt[k] for k in RECORD_KEYS}


def layout_problem(layout: dict) -> str | None:
    """What is wrong with a recorded layout {name, joints, limbs} (None: nothing): joints are
    distinct names, limbs pairs of two different joints by index."""
    joints, limbs = layout.get("joints"), layout.get("limbs")
    if not isinstance(joints, list) or not joints or not all(isinstance(j, str) for j in joints):
        return "has no list of joint names"
    if len(set(joints)) != len(joints):
        twice = next(j for j in joints if joints.count(j) > 1)
        return f"names joint {twice[:40]!r} twice"
    if not isinstance(limbs, list):
        return "has no list of limbs"
    for limb in limbs:
        if not (isinstance(limb, (list, tuple)) and len(limb) == 2
                and all(isinstance(i, int) and not isinstance(i, bool) for i in limb)):
            return "has a limb that is not a pair of joint indices"
        if not all(0 <= i < len(joints) for i in limb) or limb[0] == limb[1]:
            return (f"has limb {list(limb)!s:.40}, which is not two different joints of its "
                    f"{len(joints)} (0..{len(joints) - 1})")
    return None


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
    from mgpipe.config import _check_memory, validate

    sections = {k.split(".")[0] for k in inputs}
    validate({"mode": "pose", **{s: copy.deepcopy(out[s]) for s in sections}},
             f"{path} (its recorded input settings)")
    # and to the memory guard, with this config's batch sizes and layout: each recorded size may
    # be within its maximum while together they need tens of GB for one test batch
    probe = {"mode": "full", **{s: copy.deepcopy(out[s]) for s in sections | ({"test", "pose"} & set(out))}}
    for member in ("motion", "swin"):
        if isinstance(probe.get(member), dict):
            probe[member]["enabled"] = True
    if ckpt.get("name") != "limb":   # (the limb estimates are the limb model's own)
        probe["limb"] = {"enabled": False}
    _check_memory(probe, f"{path} (its recorded input settings)")
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
