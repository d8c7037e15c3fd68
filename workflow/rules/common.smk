# Helpers shared by the rules: config validation, paths, per-stage params.

import os
import shlex
import sys
from pathlib import Path

from mgpipe import config as mgconfig
from mgpipe import plan as mgplan
from mgpipe.runtime import visible_gpu_count
from mgpipe.tools import slurm as mgslurm
from mgpipe.learning import specs
from mgpipe.sources import skeleton_sources as mgsources
from mgpipe.io import InputError
from mgpipe.config import reads_frames
from mgpipe.learning.weights import init_source

try:
    # Snakemake's own YAML load keeps the last of a key written twice: each config file it read
    # (the Snakefile's configfile and every --configfile) goes through mgpipe's loader too,
    # which refuses that (and bounds the file's size), before the merged config is validated.
    for _file in workflow.configfiles:
        try:
            mgconfig.load_yaml(_file)
        except FileNotFoundError:
            pass  # (Snakemake said so already)
    mgconfig.validate(config, "config")
except mgconfig.ConfigError as e:
    # One line naming the key, not a traceback.
    sys.exit(f"mgpipe: {e}")

R = config["results"]
# Several skeleton pickles (dataset.skeletons as a list, kind pyskl): the combine_skeletons rule
# writes them as one pickle in pose.layout (mgpipe/sources/skeleton_sources.py), which every later stage
# reads as it reads one pickle: so the config names that pickle from here on.
SKELETON_SOURCES = None
if isinstance(config["dataset"]["skeletons"], list):
    if config["dataset"]["kind"] != "pyskl":
        sys.exit(
            "mgpipe: config key dataset.skeletons: a list of pickles is a dataset of its own "
            "(dataset.kind pyskl, mode pose, pose.backend pickle)"
        )
    try:
        SKELETON_SOURCES = mgsources.sources(config["dataset"]["skeletons"])
    except InputError as e:
        sys.exit(f"mgpipe: config key dataset.skeletons: {e}")
    config["dataset"]["skeletons"] = f"{R}/skeletons.pkl"
    config["dataset"]["split_map"] = None  # the combined pickle's splits are train/val/test
    config["dataset"]["class_names"] = config["dataset"]["class_names"] or mgsources.class_names(SKELETON_SOURCES)
    config["pose"]["pickle_layout"] = config["pose"]["layout"]
DS = config["dataset"]
DEMO = DS["kind"] == "demo"
POSE_ONLY = config["mode"] == "pose"
POSE = config["pose"]
IMAGE_POSE = reads_frames(POSE["backend"])
# Videos are read when RGB is trained or a pose model looks at the frames.
NEED_VIDEOS = not POSE_ONLY or IMAGE_POSE
NEED_SKELETONS = not IMAGE_POSE

if DEMO:
    DATA = {
        "labels": f"{R}/demo_data/labels.csv",
        "split": f"{R}/demo_data/split.csv",
        "videos": f"{R}/demo_data/videos" if NEED_VIDEOS else None,
        "skeletons": f"{R}/demo_data/skeletons" if NEED_SKELETONS else None,
    }
    if POSE["backend"] == "pickle":
        sys.exit(
            "mgpipe: config key pose.backend: the demo data provides OpenPose JSON; use "
            "openpose (or export a pickle with `mgpipe export-pickle`)"
        )
else:
    PYSKL = DS["kind"] == "pyskl"  # the skeleton pickle is the whole dataset: no label table, no videos
    if PYSKL and (not POSE_ONLY or POSE["backend"] != "pickle"):
        sys.exit(
            "mgpipe: config key dataset.kind: pyskl provides keypoints and no videos; use "
            "mode: pose and pose.backend: pickle"
        )
    DATA = {
        "labels": None if PYSKL else DS["label_table"],
        "split": None if PYSKL else DS["split"],
        "videos": DS["videos"] if NEED_VIDEOS else None,
        "skeletons": DS["skeletons"] if NEED_SKELETONS else None,
    }
    required = {} if PYSKL else {"labels": "dataset.label_table"}
    if NEED_VIDEOS:
        required["videos"] = "dataset.videos"
    if NEED_SKELETONS:
        required["skeletons"] = "dataset.skeletons"
    for key, name in required.items():
        if not DATA[key]:
            why = "in pose-only mode" if key == "skeletons" and POSE_ONLY else f"with pose.backend {POSE['backend']}"
            if key == "videos":
                why = "unless mode is pose"
            if key == "labels":
                why = f"when dataset.kind is {DS['kind']}"
            sys.exit(f"mgpipe: config key {name} must be set {why}")
    for key, value in DATA.items():
        if value and not Path(value).exists() and not (key == "skeletons" and SKELETON_SOURCES):
            name = "dataset.label_table" if key == "labels" else f"dataset.{key}"
            sys.exit(f"mgpipe: config key {name}: {value} does not exist")

# Snakemake reads braces in a file name as a wildcard, and a command reads a leading "-" as an
# option; any other character (spaces, quotes, $) is safe: every shell command quotes its paths.
PATH_KEYS = (
    {"results": R}
    if DEMO
    else {
        "results": R,
        "dataset.label_table": DATA["labels"],
        "dataset.split": DATA["split"],
        "dataset.videos": DATA["videos"],
        "dataset.skeletons": DATA["skeletons"],
    }
)
for key, value in PATH_KEYS.items():
    if value and ("{" in str(value) or "}" in str(value)):
        sys.exit(f"mgpipe: config key {key}: {value}: braces are not allowed in a path (Snakemake wildcards)")
    if value and str(value).startswith("-"):
        sys.exit(f"mgpipe: config key {key}: {value}: a path starting with '-' reads as an option; write ./{value}")

# The model registry (mgpipe/learning/specs.py) decides which models this config trains and what each
# reads; the rules below only turn that into jobs.
MODELS = specs.trained_models(config)
SPECS = {m: specs.get(m) for m in MODELS}
# Where each model starts (mgpipe/learning/weights/init_source.py, the one reader of the config's
# init section and swin.weights): a file, another run's results folder, a torchvision weight name
# or the merge stage's output. Checked here, before anything runs (missing, hostile, of no
# supported form or not fitting the model: one line); the file is a rule input, so a new file
# retrains the model; the training job gets the source on its command line (init_args).
# A model in pretrain.models starts from the pretrain stage's output, and that stage starts where
# the model's init key says (PRETRAIN: {model: that source or None}; checked here the same way).
INIT = {}
PRETRAIN = {}
_RUN_MODELS = {os.path.realpath(f"{R}/models/{m}/model.pt") for m in MODELS}
for _model in MODELS:
    try:
        _source = init_source.resolve(config, _model)
        if _source is not None and _source.kind == init_source.SELF_SUPERVISED:
            INIT[_model] = _source
            PRETRAIN[_model] = _source = init_source.configured(config, _model)
    except InputError as e:
        sys.exit(f"mgpipe: {e}")
    if _source is None:
        continue
    INIT.setdefault(_model, _source)
    if _source.kind in init_source.OUTPUTS:
        continue  # (an output of this run's merge or pretrain rule)
    if os.path.realpath(_source.file) == os.path.realpath(f"{R}/models/{_model}/model.pt"):
        # (early, before the file is read; every output of the run is compared at the end of
        # the Snakefile: check_init_outputs)
        sys.exit(f"mgpipe: {_source.named_by}: {_source.file} is the model this run trains")
    # Another model of this run: its model.pt is an output (check_init_outputs makes it a
    # dependency, or refuses a cycle); today's file is not what the job will read, so its
    # weights are checked when the training job loads them.
    if os.path.realpath(_source.file) not in _RUN_MODELS:
        # (imported here: it needs torch, which a plan without init files never loads)
        from mgpipe.learning.weights import initialise

        try:
            initialise.check_source(config, _model, _source)
        except InputError as e:
            sys.exit(f"mgpipe: {_source.named_by}: {e}")
MERGED = [m for m, source in INIT.items() if source.kind == init_source.MERGED]
_not_trained = [m for m in config["pretrain"]["models"] if m not in MODELS]
if _not_trained:
    sys.exit(f"mgpipe: config key pretrain.models: {', '.join(_not_trained)} is not trained by this config")
# Pose-only mode trains no RGB or fused network: the ensemble keeps the members it has.
ENSEMBLE = dict(config["ensemble"])
if POSE_ONLY:
    ENSEMBLE["members"] = {m: w for m, w in ENSEMBLE["members"].items() if m in MODELS}
    if not ENSEMBLE["members"]:
        sys.exit("mgpipe: config key ensemble.members: pose-only mode needs joint and/or limb members")

# A member this config does not train would only fail at the ensemble, after all the training.
_untrained = [m for m in ENSEMBLE["members"] if m not in MODELS and not (m == "fused" and not POSE_ONLY)]
if _untrained:
    sys.exit(
        f"mgpipe: config key ensemble.members: {', '.join(_untrained)} is not trained by this config "
        f"(it trains {', '.join(MODELS)}; motion and swin train with motion.enabled / swin.enabled)"
    )

FINAL_OUTPUTS = [
    f"{R}/ensemble/metrics.json",
    f"{R}/ensemble/summary.html",
    *[f"{R}/models/{m}/curve.png" for m in MODELS],
]


def stage_config(*keys):
    """The config sections a stage reads, as sorted JSON: the rule's params (so a change
    elsewhere does not rerun it) and the --config-json the command receives."""
    return mgconfig.canonical({k: config[k] for k in keys})


def model_config(model, *extra):
    """A model's config sections (its spec's, plus `extra` ones) as sorted JSON: a setting the
    model does not read never reruns it."""
    return mgconfig.canonical(mgconfig.without_output_options(SPECS[model].settings(config, *extra)))


def code(stage):
    return mgconfig.code_digest(stage)


# Jobs sent to SLURM ask for GPUs only where the cluster has them: with train.device auto, a
# cluster whose nodes list no `gpu` generic resource (sinfo) gets CPU jobs; device cuda always
# asks, device cpu never does.
# (the Snakemake inside each job must ask for the same: there SLURM_JOB_ID tells it it is on SLURM)
# The Snakefile is read before Snakemake picks its executor (workflow.executor_plugin is still None
# here, and a dry run swaps it for `dryrun`): a run for SLURM shows in its SLURM default resources
# (slurm_account / slurm_partition, set by profiles/slurm) or in --executor slurm.
_default_resources = workflow.resource_settings.default_resources
ON_SLURM = (
    "SLURM_JOB_ID" in os.environ
    or any(prev in ("--executor", "-e") and arg.startswith("slurm") for prev, arg in zip(sys.argv, sys.argv[1:]))
    or (_default_resources is not None and any(name.startswith("slurm_") for name in _default_resources.parsed))
)
CLUSTER_GPUS = mgslurm.cluster_gpu_count() if ON_SLURM and config["train"]["device"] == "auto" else None
NODES = config["train"]["nodes"]
if ON_SLURM:
    # profiles/default, loaded with every run and winning over --profile, caps the global `gpu`
    # resource at the GPUs of the machine Snakemake runs on (a login node: 0), and Snakemake
    # lowers every job's `gpu` to that cap. On SLURM the cluster hands out the GPUs: no cap.
    workflow.global_resources.pop("gpu", None)
else:
    # Checked at plan time, not in the training job after the data stages.
    if NODES > 1:
        sys.exit(
            f"mgpipe: config key train.nodes: {NODES} nodes need SLURM (--profile profiles/slurm); "
            "a local run trains on one machine: train.nodes: 1"
        )
    _visible = visible_gpu_count()
    _gpus = config["train"]["gpus"]
    if config["train"]["device"] == "cuda" and _visible == 0:
        sys.exit(
            "mgpipe: config key train.device: cuda, but this machine has no visible GPU "
            "(CUDA_VISIBLE_DEVICES, /proc/driver/nvidia/gpus); use auto or cpu"
        )
    # device auto without GPUs trains one process on the CPU (the default train.gpus: 1)
    if config["train"]["device"] != "cpu" and _gpus > max(_visible, 1):
        sys.exit(
            f"mgpipe: config key train.gpus: {_gpus} GPUs per training job, but this machine has "
            f"{_visible} visible; at most train.gpus: {max(_visible, 1)} here"
        )


# The data rules take every core of the run (--cores). Commands that run nothing (--dag,
# --rulegraph, --report, --summary, --lint) need no --cores: 1 there. On SLURM each rule's threads
# are fitted to its partition's largest node (fit_rules_to_cluster).
ALL_THREADS = workflow.global_resources.get("_cores") or 1
# {partition: its largest node (CPUs, MB, GPUs, time limit)} from sinfo, for the main Snakemake
# that submits (not the one inside a job)
SLURM_NODES = mgslurm.read_partitions() if ON_SLURM and "SLURM_JOB_ID" not in os.environ else {}


onstart:
    # SLURM: a job pending for something that does not come by itself (a hold, a partition that is
    # down, a per-job limit) is reported while the run lasts; the executor would wait for it
    # without a word. (The main Snakemake only: the one inside each job runs without hooks.)
    if SLURM_NODES:
        from snakemake.logging import logger as _logger

        mgslurm.PendingWatch(_logger.warning, os.getcwd()).start()


def plain_resource(rule_, value):
    """A rule's resource as a plain value, None where it depends on the job (its input, wildcards).
    Profile values are expressions Snakemake evaluates per job: evaluated here without a job."""
    value = getattr(value, "value", value)
    if callable(value):
        import inspect

        known = dict(wildcards={}, input=[], attempt=1, threads=1, rulename=rule_.name, async_run=None)
        try:
            value = value(**{k: known[k] for k in inspect.signature(value).parameters})
        except Exception:
            return None
    return value


def fit_rules_to_cluster():
    """SLURM: no job that cannot start. A job asking for more CPUs, memory, GPUs or time than any
    node of its partition has pends forever (reason PartitionConfig) while Snakemake waits without
    a word. Before anything is submitted, each rule's threads are fitted to the largest node of its
    partition (sinfo); memory, GPUs or a runtime its partition does not have, or a partition sinfo
    does not list, stop the run with one line naming the rule (mgpipe/tools/slurm.py). Called at the end of
    the Snakefile: every rule, with the profile's set-threads and set-resources, exists."""
    if not SLURM_NODES:
        return
    for rule_ in workflow.rules:
        if rule_.norun:
            continue  # (a target such as `all`: nothing is submitted)
        partition = plain_resource(rule_, rule_.resources.get("slurm_partition")) or ""
        if partition not in SLURM_NODES:
            sys.exit(f"mgpipe: {mgslurm.unknown_partition(rule_.name, partition, SLURM_NODES)}")
        node = SLURM_NODES[partition]
        threads = getattr(rule_.resources.get("_cores"), "value", rule_.resources.get("_cores"))
        if isinstance(threads, int) and threads > node.cpus:
            rule_.resources["_cores"] = node.cpus
        gpus = plain_resource(rule_, rule_.resources.get("gpu"))
        gres = plain_resource(rule_, rule_.resources.get("gres"))  # (across nodes: GPUs per node)
        if gpus is None and isinstance(gres, str):
            gpus = mgslurm.gres_gpu_count(gres)
        problem = mgslurm.fit_problem(
            rule_.name,
            partition,
            node,
            mem_mb=plain_resource(rule_, rule_.resources.get("mem_mb")),
            gpus=gpus,
            runtime=plain_resource(rule_, rule_.resources.get("runtime")),
        )
        if problem:
            sys.exit(f"mgpipe: {problem}")


def gpu_count():
    """GPUs a training or test job asks for, per node."""
    device = config["train"]["device"]
    if device == "cpu" or (device == "auto" and CLUSTER_GPUS == 0):
        return 0
    return config["train"]["gpus"]


def train_resources():
    """SLURM resources of a training job beyond memory and time. Across nodes (train.nodes > 1):
    one task per node (`mpi` tells the executor that the command starts its own srun), and
    the GPUs as a per-node generic resource."""
    if NODES == 1:
        return {"gpu": gpu_count()}
    extra = {"nodes": NODES, "tasks": NODES, "mpi": "srun", "tasks_per_gpu": 0}
    if gpu_count():
        extra["gres"] = f"gpu:{gpu_count()}"
    return extra


# Several processes per training job: data-parallel processes launched by torchrun, one per GPU
# (one per node on CPU nodes); across nodes, one torchrun agent per node under srun
# (mgpipe/tools/multinode.py). A command prefix of several words, so it goes into the command as it
# is, each word quoted here.
if NODES > 1:
    LAUNCHER = shlex.join(
        [
            "python",
            "-m",
            "mgpipe.tools.multinode",
            "--nodes",
            str(NODES),
            "--nproc-per-node",
            str(max(1, gpu_count())),
            "-m",
        ]
    )
elif gpu_count() > 1:
    LAUNCHER = shlex.join(["torchrun", "--standalone", "--nproc_per_node", str(gpu_count()), "-m"])
else:
    LAUNCHER = ""


# Every path and value that goes into a shell command is quoted, with `{x:q}` in the command or
# with shlex.quote here for params that hold several arguments (these go in without :q).
def optional_arg(flag, value):
    return f"{flag} {shlex.quote(str(value))}" if value else ""


def pose_inputs(wildcards):
    data = {"manifest": f"{R}/clips.csv"}
    if IMAGE_POSE:
        data["frames"] = f"{R}/frames.h5"
    if DATA["skeletons"]:
        data["skeletons"] = DATA["skeletons"]
    return data


def model_inputs(wildcards):
    """The files a model reads: the clip and class tables, the stores its spec names, and the
    merge stage's weights for a model that starts from them."""
    spec = SPECS[wildcards.model]
    data = dict(manifest=f"{R}/clips.csv", classes=f"{R}/classes.csv")
    data.update({store: f"{R}/{store}.h5" for store in spec.stores})
    return data


def train_inputs(wildcards):
    data = model_inputs(wildcards)
    if wildcards.model in INIT:
        data["init"] = INIT[wildcards.model].file
    return data


def pretrain_inputs(wildcards):
    data = dict(manifest=f"{R}/clips.csv", keypoints=f"{R}/keypoints.h5")
    if PRETRAIN[wildcards.model] is not None:
        data["init"] = PRETRAIN[wildcards.model].file
    return data


def pretrain_init_args(wildcards, input):
    """Where the pretraining starts: the model's init file and its keypoint layout, if any."""
    if "init" not in input.keys():
        return ""
    layout = PRETRAIN[wildcards.model].layout
    return " ".join(filter(None, [optional_arg("--init", input.init), optional_arg("--init-layout", layout)]))


def frames_arg(wildcards, input):
    return optional_arg("--frames", input.frames) if "frames" in input.keys() else ""


def init_args(wildcards, input):
    """The model's init source as the training command takes it: a torchvision weight by its
    name (the job finds its file in torch's cache, hash checked), else the file and the keypoint
    layout the config gives it."""
    if "init" not in input.keys():
        return ""
    source = INIT[wildcards.model]
    if source.weights:
        return optional_arg("--init-weights", source.weights)
    return " ".join(filter(None, [optional_arg("--init", input.init), optional_arg("--init-layout", source.layout)]))


# The decode and pose stages, as one job (data.smk, features.smk) or one job per shard
# (shards.smk): the same command, settings and resources, the shard jobs' runtime their share.
DECODE_SHELL = (
    "mgpipe decode --manifest {input.manifest:q} --config-json {params.cfg:q} "
    "--out {output.frames:q} --threads {threads} 2> {log:q}"
)
POSE_SHELL = (
    "mgpipe pose --manifest {input.manifest:q} {params.skeletons} {params.frames} "
    "--config-json {params.cfg:q} --out {output.keypoints:q} --threads {threads} 2> {log:q}"
)
DECODE_MEM_MB, DECODE_MINUTES = 4000, 240
POSE_MEM_MB, POSE_MINUTES = (4000, 1440) if IMAGE_POSE else (2000, 120)


def decode_params():
    return dict(cfg=stage_config("decode"), code=code("decode"))


def pose_params():
    return dict(
        cfg=stage_config("pose"),
        skeletons=optional_arg("--skeletons", DATA["skeletons"]),
        frames=lambda wildcards, input: (optional_arg("--frames", input.frames) if IMAGE_POSE else ""),
        code=code("pose"),
    )


# Sharded data stages (workflow/rules/shards.smk): decode and pose as SHARDS jobs when > 1.
SHARDS = config["data"]["shards"]


def shard_runtime(minutes_in_all):
    """Minutes a shard job asks for: its share of the unsharded stage's, twice over (the hash
    gives shards of uneven length), at least half an hour."""
    return max(30, -(-2 * minutes_in_all // SHARDS))


SHARD_SLICES = f"{R}/shards/clips"


def shard_slice(wildcards):
    """A shard's manifest slice. Where the slice file exists it is named directly, and the
    shard job reaches the slicing checkpoint through an ancient `slices` input: it waits for a
    rerun of the checkpoint and is re-read after it, but the folder's time is not compared. Asking
    the checkpoint (`get()`) before Snakemake has looked at its output stands the whole folder in
    for the slice on the first pass; the folder is newer than every shard it left untouched, so
    each of them counted as outdated there, and Snakemake 9 keeps that first-pass reason on the
    gather jobs after the checkpoint is re-read: the workflow regathered on every run. The gather
    jobs depend on the folder itself (not ancient), so that a rerun of the checkpoint holds back
    everything that reads the gathered stores until the shards it replans have run; once
    gathered, a store is newer than the folder. Only a slice that does not exist yet (a fresh
    run, a new shard count) waits on the checkpoint through `get()`."""
    path = os.path.join(SHARD_SLICES, f"{wildcards.shard}.csv")
    if os.path.isfile(path):
        return path
    return os.path.join(checkpoints.shard_clips.get().output.slices, f"{wildcards.shard}.csv")


def check_init_outputs():
    """Every init file but the merge and pretrain stages' (a pretraining's own start included) against every output of this run's rules, by real
    path (mgpipe/plan.py): an output of the run is refused (Snakemake would remove it before its
    job), another model's model.pt becomes that output as its rule spells it (a dependency), and
    a cycle is refused. Called at the end of the Snakefile, once all rules are defined, before any job."""
    files = {m: s for m, s in INIT.items() if s.kind not in init_source.OUTPUTS}
    files.update({m: s for m, s in PRETRAIN.items() if s is not None})  # (such a model's INIT is an OUTPUT)
    try:
        checked = mgplan.check_inits(files, R, list(workflow.rules))
    except InputError as e:
        sys.exit(f"mgpipe: {e}")
    for model, source in checked.items():
        (PRETRAIN if model in PRETRAIN else INIT)[model] = source
