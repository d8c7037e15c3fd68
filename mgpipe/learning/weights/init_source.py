"""Where a model's initial weights come from: the one reader of the config's `init` section
(and of the key a spec names instead: swin.weights).

resolve(config, model) turns the config into an InitSource when the workflow plans a run
(workflow/rules/common.smk), which checks it there (initialise.check_source) and passes it to
the training job on the command line (--init FILE [--init-layout NAME], or --init-weights
NAME); `mgpipe train` without those options calls resolve itself (from_command_line). Training takes the InitSource
as it is and never reads these config keys: so the plan, the job and its record agree on one
answer. A model in pretrain.models starts from the pretrain stage's output; that stage starts
where the model's init key says (`configured`). Reading the weights into a model is
initialise.py's work.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mgpipe.io import InputError
from mgpipe.layouts import LayoutError, get_layout
from mgpipe.learning import specs

# What an InitSource's file is:
FILE = "file"                        # a checkpoint the config (or --init) names
RESULTS_FOLDER = "results folder"    # another run's results folder: its model of the same name
TORCHVISION = "torchvision weight"   # a torchvision weight name: its file in torch's hub cache
MERGED = "merged"                    # the merge stage's output (a fused model the config gives no file)
SELF_SUPERVISED = "self-supervised"  # the pretrain stage's output (a model in pretrain.models)
KINDS = (FILE, RESULTS_FOLDER, TORCHVISION, MERGED, SELF_SUPERVISED)
OUTPUTS = (MERGED, SELF_SUPERVISED)  # kinds whose file a stage of this run writes


@dataclass(frozen=True)
class InitSource:
    file: str                  # the file the training job reads (the rule's input)
    kind: str                  # one of KINDS
    named_by: str              # where it was named, as messages say it: "config key init.joint", "--init"
    layout: str | None = None  # the file's keypoint layout as the config names it (None: recorded or inferred)
    weights: str | None = None  # the torchvision weight name (kind TORCHVISION)

    def describe(self) -> str:
        what = f"torchvision weight {self.weights}" if self.weights else self.kind
        return f"{self.file} ({what}, {self.named_by})"


def config_key(model: str) -> str:
    """The dotted config key that names a model's initial weights: its spec's own (swin.weights),
    else init.<model>, one init.fused for every fused variant."""
    spec = specs.get(model)
    if spec.weights:
        return spec.weights
    return "init.fused" if spec.is_fused else f"init.{model}"


def pretrained_file(config: dict, model: str) -> str:
    """The pretrain stage's output for `model` (the stage's rule and the training's init agree on it)."""
    return f"{config['results']}/pretrained/{model}/weights.pth"


def resolve(config: dict, model: str) -> InitSource | None:
    """Where `model`'s training starts: the pretrain stage's output for a model in
    pretrain.models (that stage itself starts where `configured` says), else `configured`."""
    if model in config.get("pretrain", {}).get("models", ()):
        return InitSource(pretrained_file(config, model), SELF_SUPERVISED,
                          "config key pretrain.models (the self-supervised stage's output)")
    return configured(config, model)


def configured(config: dict, model: str) -> InitSource | None:
    """Where `model` starts, as its init key says: the file its key names (a folder: a results
    folder, its <folder>/models/<model>/model.pt; {path, layout}: with the file's keypoint
    layout), a torchvision weight name (the key a spec names, swin.weights), or, for a model
    that starts from merged weights and is given no file, the merge stage's output. None: from
    scratch. InputError naming the key: a layout or a weight name that does not exist."""
    key = config_key(model)
    value = config
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if value is None:
        if specs.get(model).merged_start:
            return InitSource(f"{config['results']}/merged/{model}.pt", MERGED,
                              f"config key {key} (null: the merge stage's output)")
        return None
    if specs.get(model).weights and isinstance(value, str):
        from mgpipe.models.swin import WEIGHT_NAME

        if WEIGHT_NAME.match(value):
            return torchvision_source(config, model, value, f"config key {key}")
    path, layout = (value, None) if isinstance(value, str) else (value["path"], value.get("layout"))
    if layout is not None:
        try:
            get_layout(layout)
        except LayoutError as e:
            raise InputError(f"config key {key}: {e}") from None
    path = Path(path)
    if path.is_dir():
        return InitSource(str(path / "models" / model / "model.pt"), RESULTS_FOLDER, f"config key {key}", layout)
    return InitSource(str(path), FILE, f"config key {key}", layout)


def torchvision_source(config: dict, model: str, name: str, named_by: str) -> InitSource:
    """A torchvision weight name as a source: its file where torch's hub cache keeps it (whether
    it is there, with its hash, initialise.check_source and the training job say). InputError: a name the
    model's Swin3D variant does not have."""
    from mgpipe.models.swin import cache_path, named_weights

    variant = specs.get(model).network(config, (0, 0))["variant"]
    try:
        named_weights(name, variant)
    except InputError as e:
        raise InputError(f"{named_by}: {e}") from None
    return InitSource(str(cache_path(name, variant)), TORCHVISION, named_by, weights=name)


def from_command_line(config: dict, model: str, file=None, layout=None, weights=None) -> InitSource | None:
    """The source `mgpipe train` was given (--init FILE with --init-layout, or --init-weights
    NAME), else the config's (resolve: a command run without the workflow; a fused model's
    merged weights must be there then: the workflow's merge job is not)."""
    if layout is not None and file is None:
        raise InputError("--init-layout names the keypoint layout of the --init file: give --init too")
    if weights is not None:
        return torchvision_source(config, model, weights, "--init-weights")
    if file is not None:
        if layout is not None:
            try:
                get_layout(layout)
            except LayoutError as e:
                raise InputError(f"--init-layout: {e}") from None
        return given(file, layout)
    source = resolve(config, model)
    if source is not None and source.kind in OUTPUTS and not Path(source.file).is_file():
        stage = "the merge stage's weights (mgpipe merge)" if source.kind == MERGED else \
            "the self-supervised pretraining's weights (mgpipe pretrain; pretrain.models)"
        raise InputError(f"{source.file}: not found: {model} starts from {stage}, or from the file --init names")
    return source


def given(file, layout: str | None = None) -> InitSource:
    """A file named directly (mgpipe train --init, a script): taken as it is."""
    return InitSource(str(Path(file)), FILE, "--init", layout)
