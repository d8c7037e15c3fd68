"""Configuration: load YAML, fill defaults from the JSON schema, fail with one readable line."""

from __future__ import annotations

import copy
import hashlib
import json
import math
from pathlib import Path

import yaml
from jsonschema import Draft202012Validator, validators

from .io import InputError
from .pose_backends import reads_frames


def schema_path() -> Path:
    """The schema ships in workflow/schemas (source tree) and inside the package (wheel)."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "schemas" / "config.schema.yaml",
                      here.parent / "workflow" / "schemas" / "config.schema.yaml"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError("config.schema.yaml not found next to the mgpipe package")


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


def _describe(error) -> str:
    key = ".".join(str(p) for p in error.absolute_path)
    if error.validator == "additionalProperties":
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        names = ", ".join(f"{key + '.' if key else ''}{e}" for e in extra)
        return f"unknown config key {names}"
    return f"config key {key or '<root>'}: {error.message}"


class ConfigError(InputError):
    pass


def validate(config: dict, source: str = "config") -> dict:
    """Validate in place (filling defaults) and return config; raise ConfigError with one line."""
    given = set(config) if isinstance(config, dict) else set()
    schema = yaml.safe_load(schema_path().read_text())
    validator = _Validator(schema)
    # Defaults are filled while validating, so validate twice: the second pass sees the filled
    # values (a default dict may itself need its sub-defaults).
    for _ in range(2):
        errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
        if errors:
            raise ConfigError(f"{source}: {_describe(errors[0])}")
    _check_finite(config, source)
    if {"rgb", "pose_model"} <= given and config.get("mode", "full") == "full":
        # (a stage given only one pathway's settings, or pose-only mode, has no fused network)
        _check_fused_shapes(config, source)
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


def _update(base: dict, other: dict) -> dict:
    """Nested update, as snakemake merges several --configfile files."""
    for key, value in other.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _update(base[key], value)
        else:
            base[key] = value
    return base


def load(paths, overrides: dict | None = None) -> dict:
    """One config YAML, or several merged in order (later files update earlier ones)."""
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    config: dict = {}
    for path in map(Path, paths):
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except FileNotFoundError:
            raise ConfigError(f"{path}: config file not found") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
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


# Modules whose code each stage runs. Snakemake does not notice edits to an imported package,
# so the rules pass this digest as a param: editing a stage's module reruns that stage and,
# through its new output, everything downstream, and nothing upstream.
STAGE_MODULES = {
    "demo_data": ["demo_data.py", "layouts.py", "skeleton_io.py"],
    "clips": ["clips.py", "label_tables.py", "skeleton_io.py", "layouts.py", "demo_data.py"],
    "decode": ["decode.py", "formats"],
    "pose": ["pose.py", "pose_runner.py", "pose_backends", "layouts.py", "skeleton_io.py", "formats"],
    "heatmaps": ["heatmaps.py", "layouts.py", "formats"],
    "train": ["train.py", "samples.py", "heatmaps.py", "layouts.py", "specs.py", "inference.py", "models",
              "checkpoints.py", "fingerprint.py", "formats", "transfer/__init__.py", "transfer/init.py",
              "transfer/layouts.py", "transfer/mmaction.py"],  # not transfer/side.py (a test helper)
    "merge": ["merge.py", "specs.py", "inference.py", "models", "checkpoints.py"],
    "test": ["evaluate.py", "inference.py", "samples.py", "heatmaps.py", "layouts.py", "specs.py", "models",
             "checkpoints.py", "formats"],
    "ensemble": ["ensemble.py", "formats", "specs.py"],
}


def code_digest(stage: str) -> str:
    root = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for entry in STAGE_MODULES[stage]:
        path = root / entry
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        for f in files:
            h.update(f.relative_to(root).as_posix().encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:16]
