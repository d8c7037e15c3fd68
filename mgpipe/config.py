"""Configuration: load YAML, fill defaults from the JSON schema, fail with one readable line."""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import math
from pathlib import Path

import yaml
from jsonschema import Draft202012Validator, validators

from mgpipe.io import InputError


class ConfigError(InputError):
    pass


def schema_path() -> Path:
    """The schema ships in workflow/schemas (source tree) and inside the package (wheel)."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "schemas" / "config.schema.yaml",
                      here.parent / "workflow" / "schemas" / "config.schema.yaml"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError("config.schema.yaml not found next to the mgpipe package")


# ----------------------------------------------------------------------------- untrusted YAML
# YAML aliases let a 1 KB file name one value a billion times ("billion laughs"): PyYAML builds
# it cheaply as shared references, but everything that walks the result (validation, JSON for
# Snakemake params, deep copies) expands it, for minutes and gigabytes. Every YAML file mgpipe
# reads goes through load_yaml, which bounds the expanded size before building anything.
YAML_MAX_BYTES = 16 * 2**20     # a config file is a few KB; a custom layout with names a few 10 KB
YAML_MAX_VALUES = 100_000       # values after alias expansion (the paper config holds ~400)
YAML_MAX_DEPTH = 64             # nesting levels (configs nest 4-5 deep)


def _yaml_children(node):
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return node.value if isinstance(node, yaml.SequenceNode) else ()


def _python_children(value):
    if isinstance(value, dict):
        return [*value.keys(), *value.values()]
    return value if isinstance(value, (list, tuple)) else ()


def _expansion_problem(root, children) -> str | None:
    """What is wrong with the size of a value graph once every shared (aliased) part is counted
    as often as it is reached, or None: above YAML_MAX_VALUES values, deeper than YAML_MAX_DEPTH,
    or a value that contains itself. Linear in the distinct parts (shared ones are counted once
    and remembered)."""
    sizes: dict[int, tuple[int, int]] = {}   # id -> (expanded values, height)
    active: set[int] = set()

    def visit(node, depth: int) -> tuple[int, int]:
        kids = children(node)
        if not kids:
            return 1, 1
        key = id(node)
        if key in active:
            raise _Refused("contains itself (a recursive alias)")
        if key not in sizes:
            if depth > YAML_MAX_DEPTH:
                raise _Refused(f"nests deeper than {YAML_MAX_DEPTH} levels")
            active.add(key)
            total, height = 1, 0
            for kid in kids:
                n, h = visit(kid, depth + 1)
                total, height = total + n, max(height, h)
                if total > YAML_MAX_VALUES:
                    raise _Refused(f"expands to more than {YAML_MAX_VALUES} values once its aliases "
                                   "are expanded (a YAML alias bomb?)")
            active.discard(key)
            sizes[key] = (total, height + 1)
        total, height = sizes[key]
        if depth + height - 1 > YAML_MAX_DEPTH:
            raise _Refused(f"nests deeper than {YAML_MAX_DEPTH} levels")
        return total, height

    try:
        visit(root, 1)
    except _Refused as e:
        return str(e)
    return None


class _Refused(Exception):
    pass


def _duplicate_key_problem(root) -> str | None:
    """A mapping that names a key twice, or None. YAML says keys are unique, but PyYAML (and so
    Snakemake) keeps the last value silently: a second `train:` section would drop the first
    one's settings without a word. Each node is looked at once (aliases share nodes)."""
    seen, todo = set(), [root]
    while todo:
        node = todo.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            keys = {}
            for key, _ in node.value:
                if isinstance(key, yaml.ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
                    if key.value in keys:
                        return (f"key {key.value!r} appears twice in one mapping (lines "
                                f"{keys[key.value] + 1} and {key.start_mark.line + 1}); YAML keeps only "
                                "the last, dropping the first one's settings: write each key once")
                    keys[key.value] = key.start_mark.line
        todo.extend(_yaml_children(node))
    return None


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader that checks the composed document's expanded size, and that no
    mapping names a key twice, before any Python value is built from it."""

    def compose_document(self):
        node = super().compose_document()
        problem = _expansion_problem(node, _yaml_children) or _duplicate_key_problem(node)
        if problem:
            raise _Refused(problem)
        return node


def load_yaml(path):
    """The data of a YAML file (safe tags only), or ConfigError naming the file: too large, an
    alias bomb, too deeply nested, a key written twice in one mapping, or not valid YAML.
    FileNotFoundError passes through."""
    path = Path(path)
    with open(path, "rb") as f:
        data = f.read(YAML_MAX_BYTES + 1)
    if len(data) > YAML_MAX_BYTES:
        raise ConfigError(f"{path}: refused: larger than {YAML_MAX_BYTES // 2**20} MiB (a config file is a few KB)")
    try:
        return yaml.load(data, Loader=_BoundedLoader)
    except _Refused as e:
        raise ConfigError(f"{path}: refused: the YAML {e}") from None
    except RecursionError:
        raise ConfigError(f"{path}: refused: the YAML nests deeper than {YAML_MAX_DEPTH} levels") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None


def _with_defaults(cls):
    validate_properties = cls.VALIDATORS["properties"]

    def fill(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if "default" in sub and name not in instance:
                    instance[name] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return validators.extend(cls, {"properties": fill})


_Validator = _with_defaults(Draft202012Validator)


# Keys an earlier mgpipe read, and what says the same now (a config of then gets that in its error)
REPLACED_KEYS = {"ensemble.search": "ensemble.weights: search, or config for false"}


def _describe(error) -> str:
    key = ".".join(str(p) for p in error.absolute_path)
    if error.validator == "additionalProperties":
        extra = [f"{key + '.' if key else ''}{e}"
                 for e in sorted(set(error.instance) - set(error.schema.get("properties", {})))]
        names = ", ".join(f"{e} (replaced by {REPLACED_KEYS[e]})" if e in REPLACED_KEYS else e for e in extra)
        return f"unknown config key {names}"
    if error.validator == "uniqueItems":
        # (dataset.classes [0, 0, 1, 2] would make four outputs, one of them never trained)
        earlier = [v for i, v in enumerate(error.instance) if v in error.instance[:i]]
        return f"config key {key}: {earlier[0]!r} is listed twice (each entry may appear once)"
    return f"config key {key or '<root>'}: {error.message}"


@functools.lru_cache(maxsize=1)
def _validator():
    return _Validator(load_yaml(schema_path()))


def validate(config: dict, source: str = "config", partial: bool = False) -> dict:
    """Validate in place (filling defaults) and return config; raise ConfigError with one line.

    partial: config holds only the sections one stage reads (--config-json), so the memory
    estimates that read other sections are left to the whole config's validation (a default
    standing in for the user's setting could refuse what the whole config allows)."""
    # A config from Snakemake's own YAML load (or --config-json) may share one value many times
    # over (YAML aliases): bound its expanded size before anything walks it.
    problem = _expansion_problem(config, _python_children)
    if problem:
        raise ConfigError(f"{source}: refused: the config {problem}")
    given = set(config) if isinstance(config, dict) else set()
    sections = given if partial else None
    validator = _validator()
    # Defaults are filled while validating, so validate twice: the second pass sees the filled
    # values (a default dict may itself need its sub-defaults).
    for _ in range(2):
        errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
        if errors:
            if errors[0].validator in ("maximum", "maxItems"):
                # a value above its maximum: say what it would cost where that is known
                _check_memory(config, source, sections)
            raise ConfigError(f"{source}: {_describe(errors[0])}")
    _check_finite(config, source)
    _check_pathways(config, source)
    _check_zoom_range(config, source)
    if {"rgb", "pose_model"} <= given and config.get("mode", "full") == "full":
        # (a stage given only one pathway's settings, or pose-only mode, has no fused network)
        _check_fused_shapes(config, source)
    _check_memory(config, source, sections)
    if {"pretrain", "limb"} <= given and "limb" in config["pretrain"]["models"] and not config["limb"]["enabled"]:
        raise ConfigError(f"{source}: config key pretrain.models: limb is pretrained but limb.enabled is "
                          "false (this config trains no limb model to start from the weights)")
    if "pose" in given and config.get("mode") == "pose" and reads_frames(config["pose"]["backend"]):
        raise ConfigError(f"{source}: config key mode: pose-only mode reads provided keypoints; "
                          f"pose.backend {config['pose']['backend']} needs videos (use openpose or pickle)")
    return config


def defaults() -> dict:
    """The complete config with every setting at its schema default (a fresh copy each call).

    For code that calls a stage's library function outside the workflow (tests, benchmarks):
    those functions take every setting as a required argument, so that the schema stays the one
    place where a default is written down."""
    return validate({}, "schema defaults")


def _check_finite(value, source: str, key: str = "") -> None:
    """JSON schema's `number` admits NaN and infinity (YAML spells them .nan and .inf); no setting
    of ours means either, and a NaN learning rate only shows up hours later as a diverged loss."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{source}: config key {key or '<root>'}: {value} is not a finite number")
    if isinstance(value, dict):
        for k, v in value.items():
            _check_finite(v, source, f"{key}.{k}" if key else str(k))
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_finite(v, source, f"{key}.{i}")


# The networks' sections (the schema's pathway) and the stages the fused network's pathways need.
_PATHWAY_SECTIONS = {"rgb": "rgb.network", "motion": "motion.network", "pose_model": "pose_model.network"}
_FUSED_STAGES = {"rgb": 4, "pose_model": 3}


def _check_pathways(config: dict, source: str) -> None:
    """A network's per-stage lists have one entry per stage (the schema bounds each list, not
    their agreement), and the fused network's pathways have the stages its laterals join: caught
    here with the key, not as a traceback when the network is built."""
    for section, key in _PATHWAY_SECTIONS.items():
        network = config.get(section, {}).get("network") if isinstance(config.get(section), dict) else None
        if not isinstance(network, dict) or "stage_blocks" not in network:
            continue
        stages = len(network["stage_blocks"])
        for name in ("inflate", "spatial_strides", "temporal_strides"):
            if name in network and len(network[name]) != stages:
                raise ConfigError(f"{source}: config key {key}.{name} has {len(network[name])} entries; "
                                  f"{key}.stage_blocks has {stages} (one per stage)")
        fused = config.get("fused")
        if (section in _FUSED_STAGES and config.get("mode", "full") == "full" and isinstance(fused, dict)
                and fused.get("variants") and stages != _FUSED_STAGES[section]):
            raise ConfigError(f"{source}: config key {key}.stage_blocks has {stages} stages; the fused "
                              f"network (fused.variants) needs {_FUSED_STAGES[section]} in this pathway")


def _check_zoom_range(config: dict, source: str) -> None:
    """The random zoom's range is [low, high] (the schema bounds each end, not their order)."""
    scale = (config.get("pose_model") or {}).get("augment", {}).get("scale") \
        if isinstance(config.get("pose_model"), dict) else None
    if isinstance(scale, list) and len(scale) == 2 and scale[0] > scale[1]:
        raise ConfigError(f"{source}: config key pose_model.augment.scale: {scale} is not a range "
                          f"[low, high] (low > high)")


def _check_fused_shapes(config: dict, source: str) -> None:
    """The fused network's laterals join the pathways at a fixed temporal ratio (4 pose frames per
    RGB frame) and equal spatial grids (pose input = RGB input / 4); catch a mismatch here, not
    as a shape error deep inside a convolution after hours of pretraining."""
    rgb, pose = config["rgb"], config["pose_model"]["input"]
    if pose["frames"] != 4 * rgb["frames"]:
        raise ConfigError(f"{source}: config key pose_model.input.frames ({pose['frames']}) must be "
                          f"4 x rgb.frames ({rgb['frames']}) for the fused network")
    if 4 * pose["size"] != rgb["size"]:
        raise ConfigError(f"{source}: config key pose_model.input.size ({pose['size']}) must be "
                          f"rgb.size / 4 ({rgb['size'] / 4:g}) for the fused network")
    # ... and keep that ratio through every stage, so no pathway may stride in time (the laterals'
    # 4-frame temporal stride); a model of pose-only mode may
    for section in ("rgb", "pose_model"):
        strides = config[section]["network"]["temporal_strides"]
        if any(s != 1 for s in strides):
            raise ConfigError(f"{source}: config key {section}.network.temporal_strides {strides}: the fused "
                              f"network needs 1 in every stage (its laterals join 4 pose "
                              f"frames to each RGB frame at every stage)")


# ----------------------------------------------------------------------------- memory
# The schema's maxima bound each key alone; these estimates bound the combinations that decide
# memory: a batch's network input (float32 on the device; the network's activations are many
# times more), and a clip's rendered heatmaps in the heatmap export. The paper recipe's largest
# is 0.1 GiB; a batch whose input alone is above the budget cannot train on any current GPU.
MEMORY_BUDGET = 4 * 2**30
HEATMAP_CLIP_FRAMES = 100   # the clip length the heatmap export is judged at (4 s at 25 fps)


def _key(config, dotted: str):
    """A positive integer setting, or None (absent, or not yet valid: the schema says why)."""
    value = config
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


class _Term:
    """One factor of an estimate: value ** power, from config key `key` (or the layout's
    channel count), `default` being its value at the schema defaults (None: a constant)."""

    def __init__(self, label, value, power=1, key=None, default=None):
        self.label, self.value, self.power, self.key, self.default = label, value, power, key, default

    def growth(self) -> float:
        """How many times this factor exceeds its default (0 for a constant)."""
        return (self.value / self.default) ** self.power if self.default else 0.0

    def __str__(self):
        return f"{self.value}{'^2' if self.power == 2 else ''}{self.label}"


def _estimates(config: dict, layout_known: bool = True) -> list[tuple[str, list[_Term]]]:
    """[(what, terms)], bytes = the product of the terms, for the estimates whose settings are
    all valid (the schema reports the others). layout_known False: the config has no pose
    section (a stage's own sections), so a layout counts as one channel, a lower bound."""
    try:
        from mgpipe.layouts import get_layout

        layout = get_layout((config.get("pose") or {}).get("layout", "coco17"))
        coco = get_layout("coco17")
    except Exception:   # an invalid layout is reported where it is read
        return []
    defaults = _schema_defaults()

    def setting(label, key, power=1):
        default_key = key.replace("limb.optim", "pose_model.optim")   # limb.optim defaults to it
        return _Term(label, _key(config, key), power, key, _key(defaults, default_key))

    def channels(kind):
        if not layout_known:
            return _Term(" channel (at least)", 1)
        count = {"joints": layout.num_joints, "limbs": layout.num_limbs}
        default = {"joints": coco.num_joints, "limbs": coco.num_limbs}
        return _Term(f" {kind}", sum(count[k] for k in kind.split("+")), 1, "pose.layout",
                     sum(default[k] for k in kind.split("+")))

    def batch(what, batch_key, chans, frames_key, size_key):
        return (what, [setting("", batch_key), chans, setting(" frames", frames_key),
                       setting(" px", size_key, 2), _Term(" bytes", 4)])

    pose = "pose_model.input"
    limb_on = (config.get("limb") or {}).get("enabled", True) is not False and layout.num_limbs > 0
    limb_batch = "limb.optim.batch_size" if _key(config, "limb.optim.batch_size") else "pose_model.optim.batch_size"
    out = []
    for name, kind, batch_key in [("joint", "joints", "pose_model.optim.batch_size")] + (
            [("limb", "limbs", limb_batch)] if limb_on else []):
        out += [batch(f"one training batch of the {name} model", batch_key, channels(kind),
                      f"{pose}.frames", f"{pose}.size"),
                batch(f"one validation batch of the {name} model", batch_key, channels(kind),
                      f"{pose}.frames", f"{pose}.test_size"),
                batch(f"one test batch of the {name} model", "test.batch_size", channels(kind),
                      f"{pose}.frames", f"{pose}.test_size")]
    if config.get("mode", "full") == "full":
        for model, batch_key in (("rgb", "rgb.optim.batch_size"), ("fused", "fused.optim.batch_size")):
            for stage, key in (("training", batch_key), ("test", "test.batch_size")):
                out.append(batch(f"the RGB input of one {stage} batch of the {model} model", key,
                                 _Term(" channels", 3), "rgb.frames", "rgb.size"))
                if model == "fused":  # tested at its training size (specs.ModelSpec.modalities)
                    out.append(batch(f"the pose input of one {stage} batch of the fused model", key,
                                     channels("joints"), f"{pose}.frames", f"{pose}.size"))
        for model in ("motion", "swin"):   # the optional frame-store members, where enabled
            if (config.get(model) or {}).get("enabled"):
                for stage, key in (("training", f"{model}.optim.batch_size"), ("test", "test.batch_size")):
                    out.append(batch(f"the input of one {stage} batch of the {model} model", key,
                                     _Term(" channels", 3), f"{model}.frames", f"{model}.size"))
    out.append((f"one {HEATMAP_CLIP_FRAMES}-frame clip of the heatmap export",
                [_Term(" frames", HEATMAP_CLIP_FRAMES), channels("joints+limbs"),
                 setting(" px", "heatmaps.size", 2), _Term(" byte", 1)]))
    return [(what, terms) for what, terms in out if all(t.value for t in terms)]


def _gib(n: float) -> str:
    for unit, scale in (("PiB", 2**50), ("TiB", 2**40), ("GiB", 2**30)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n / 2**30:.2f} GiB"


def _largest(terms: list[_Term], key: str) -> int:
    """The largest value of setting `key` that keeps the product of terms within MEMORY_BUDGET."""
    term = next(t for t in terms if t.key == key)
    rest = math.prod(t.value ** t.power for t in terms) / term.value ** term.power
    most = int((MEMORY_BUDGET / rest) ** (1 / term.power))
    while most > 0 and most ** term.power * rest > MEMORY_BUDGET:
        most -= 1
    while (most + 1) ** term.power * rest <= MEMORY_BUDGET:
        most += 1
    return most


def _check_memory(config: dict, source: str, sections=None) -> None:
    """Refuse a combination of settings whose estimate is above MEMORY_BUDGET, naming the key
    that grew most beyond its default, the figure, and how far that key may go (in every
    estimate it enters, the others as they are). sections: only the estimates that read no
    other top-level section (None: all)."""
    layout_known = sections is None or "pose" in sections
    estimates = [(what, terms) for what, terms in _estimates(config, layout_known)
                 if sections is None or all(t.key.split(".")[0] in sections for t in terms if t.key)]
    for what, terms in estimates:
        need = math.prod(t.value ** t.power for t in terms)
        if need <= MEMORY_BUDGET:
            continue
        blamed = max(terms, key=_Term.growth)
        formula = " x ".join(map(str, terms))
        if blamed.key == "pose.layout":   # (joints, limbs or both: a count of this estimate only)
            given, most = f"{blamed.value}{blamed.label}", _largest(terms, blamed.key)
            hint = f" with at most {most}{blamed.label}"
        else:
            given = blamed.value
            most = min(_largest(other, blamed.key) for _, other in estimates
                       if any(t.key == blamed.key for t in other))
            most = min(most, _schema_maximum(blamed.key) or most)
            hint = f" ({blamed.key} <= {most})"
        raise ConfigError(f"{source}: config key {blamed.key}: {given} needs {_gib(need)} for {what} "
                          f"({formula}); at most {_gib(MEMORY_BUDGET)} fits{hint if most >= 1 else ''}")


def _schema_maximum(dotted: str):
    """The schema's maximum of a key (None where it has none)."""
    schema = _validator().schema
    node = schema
    for part in dotted.split("."):
        while "$ref" in node:   # "#/$defs/name"
            node = schema["$defs"][node["$ref"].rsplit("/", 1)[1]]
        node = node.get("properties", {}).get(part, {})
    return node.get("maximum")


@functools.lru_cache(maxsize=1)
def _schema_defaults_json() -> str:
    config: dict = {}
    for _ in range(2):   # as validate: the second pass fills the defaults of filled sections
        for _ in _validator().iter_errors(config):
            pass
    return json.dumps(config)


def _schema_defaults() -> dict:
    return json.loads(_schema_defaults_json())


def _update(base: dict, other: dict) -> dict:
    """Nested update, as snakemake merges several --configfile files."""
    for key, value in other.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _update(base[key], value)
        else:
            base[key] = value
    return base


def apply_sets(config: dict, items) -> dict:
    """`--set key.sub=value` items applied in order over a config mapping (before validation).
    The value is read as YAML, as a config file would hold it: `8`, `cuda`, `[full, plain]`,
    `{epochs: 3}`, `null`. A malformed item is a ConfigError naming it."""
    for item in items or ():
        key, sep, text = item.partition("=")
        parts = key.strip().split(".")
        if not sep or not all(parts):
            raise ConfigError(f"--set {item}: expected KEY=VALUE with a dotted key (e.g. train.device=cpu)")
        if len(text) > 65536:
            raise ConfigError(f"--set {key}: refused: the value is longer than 64 KiB")
        try:
            value = yaml.load(text, Loader=_BoundedLoader) if text.strip() else ""
        except _Refused as e:
            raise ConfigError(f"--set {key}: refused: the YAML {e}") from None
        except (yaml.YAMLError, RecursionError) as e:
            raise ConfigError(f"--set {key}: not a YAML value ({str(e).splitlines()[0] if str(e) else 'too deep'})") from None
        node = config
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                raise ConfigError(f"--set {key}: {'.'.join(parts[:i + 1])} is a value, not a section")
            node = child
        node[parts[-1]] = value
    return config


def load(paths, overrides: dict | None = None) -> dict:
    """One config YAML, or several merged in order (later files update earlier ones)."""
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    config: dict = {}
    for path in map(Path, paths):
        try:
            data = load_yaml(path) or {}
        except FileNotFoundError:
            raise ConfigError(f"{path}: config file not found") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: a config file holds a mapping of keys")
        _update(config, data)
    for key, value in (overrides or {}).items():
        config[key] = value
    return validate(config, " + ".join(map(str, paths)))


def canonical(value) -> str:
    """Sorted, compact JSON: equal settings compare equal as Snakemake params."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def digest(value) -> str:
    return hashlib.sha256(canonical(value).encode()).hexdigest()[:16]


# Settings that change what a stage writes beside its results (TensorBoard events, the kept
# training state), never the results: they stay out of the rules' params (common.smk's
# model_config) and out of the training fingerprint, so turning one on or off neither reruns a
# finished training nor restarts a resumable one. The training rule passes them with --set.
OUTPUT_OPTIONS = {"train": ("tensorboard", "keep_state")}


def without_output_options(settings: dict) -> dict:
    """`settings` (whole config or some of its sections) less OUTPUT_OPTIONS (a shallow copy)."""
    out = dict(settings)
    for section, keys in OUTPUT_OPTIONS.items():
        if isinstance(out.get(section), dict):
            out[section] = {k: v for k, v in out[section].items() if k not in keys}
    return out


def code_digest(stage: str) -> str:
    """Digest of the code stage `stage` runs: every mgpipe module its entry module imports,
    found by static analysis (mgpipe/code_deps.py). The rules pass it as a param: editing any
    module a stage runs reruns that stage and, through its new output, everything downstream."""
    from mgpipe.code_deps import stage_digest

    return stage_digest(stage)


# Moved from mgpipe/pose_backends/__init__.py by the regroup (issue 27)
IMAGE_BACKENDS = ("mediapipe", "mmpose")


def reads_frames(backend: str) -> bool:
    """Whether a pose backend runs a model on the frames (a built-in one, or a user's module
    given by its dotted name) rather than reading provided keypoints."""
    return backend in IMAGE_BACKENDS or "." in backend
