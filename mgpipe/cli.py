"""The `mgpipe` command: one subcommand per pipeline stage, usable without Snakemake.

Errors end the command with one line naming the file and the problem. Exit status: 0 done;
1 an output could not be written (or the system refused a read); 2 bad user input; 3 the input
was fine but the computation failed (a training diverged); 130 interrupted.
Each argument that names a file says, where it is declared, whether the command reads or writes
it (`_arg(..., reads=...)`, `writes=...`), so that no output can be an input or another output.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
from pathlib import Path

from mgpipe.io import ComputationError, InputError, OutputError, describe_os_error, replaceable_problem

log = logging.getLogger("mgpipe")


def _config(args) -> dict:
    """The command's config: the --config files merged in order (none for predict and test unless
    given: the model's record then supplies its settings), or --config-json, then each --set."""
    from mgpipe import config as cfg

    data, source = _raw_config(args)
    cfg.apply_sets(data, args.set)
    if args.set:
        source += " + --set"
    return cfg.validate(data, source, partial=bool(args.config_json))


def _raw_config(args) -> tuple[dict, str]:
    from mgpipe import config as cfg

    if args.config_json:
        try:
            data = json.loads(args.config_json)
        except json.JSONDecodeError as e:
            raise InputError(f"--config-json: not valid JSON ({e})") from None
        except RecursionError:
            raise InputError("--config-json: refused: nested too deeply") from None
        if not isinstance(data, dict):
            raise InputError("--config-json: a config is a mapping of keys")
        return data, "--config-json"
    data = {}
    for path in args.config or ():
        try:
            part = cfg.load_yaml(path) or {}
        except FileNotFoundError:
            raise InputError(f"{path}: config file not found") from None
        if not isinstance(part, dict):
            raise InputError(f"{path}: a config file holds a mapping of keys")
        cfg._update(data, part)
    return data, " + ".join(args.config or ()) or "schema defaults"


def _given(args) -> set:
    """The dotted keys ("a", "a.b", "a.b.c") the user's config files, JSON or --set items set
    themselves, as opposed to schema defaults: predict and test take a model's own input settings
    for the rest."""
    from mgpipe import config as cfg

    data, _ = _raw_config(args)
    cfg.apply_sets(data, args.set)
    keys, todo = set(), [("", data)]
    while todo:
        prefix, node = todo.pop()
        for k, v in node.items():
            keys.add(prefix + str(k))
            if isinstance(v, dict):
                todo.append((f"{prefix}{k}.", v))
    return keys


def cmd_photo_video(args):
    from mgpipe.tools.photo_video import pan_zoom_video, sample_photo

    pan_zoom_video(sample_photo(args.photo), args.out, frames=args.frames, size=(args.width, args.height),
                   fps=args.fps, seed=args.seed)
    log.info("wrote %s: %d frames of %s panned and zoomed", args.out, args.frames, args.photo)


def cmd_demo_data(args):
    from mgpipe.tools.demo_data import generate

    config = _config(args)
    stats = generate(args.out, seed=config["seed"], **config["dataset"]["demo"], progress=not args.quiet)
    log.info("demo data in %s: %s", args.out, stats)


def cmd_clips(args):
    from mgpipe.stages.clips import build_manifest, write_csv

    config = _config(args)
    if args.labels is None and config["dataset"]["kind"] != "pyskl":
        raise InputError(f"mgpipe clips: --labels is needed for dataset.kind {config['dataset']['kind']}")
    manifest, class_table = build_manifest(args.labels, args.split, args.videos, config,
                                           skeletons_dir=args.skeletons)
    write_csv(class_table, args.classes_out)
    write_csv(manifest, args.out)


def cmd_decode(args):
    from mgpipe.stages.clips import read_manifest
    from mgpipe.stages.decode import build_frame_store

    decode = _config(args)["decode"]
    build_frame_store(read_manifest(args.manifest), args.out, max_side=decode["max_side"],
                      quality=decode["jpeg_quality"], threads=args.threads, progress=not args.quiet)


def cmd_pose(args):
    from mgpipe.stages.clips import read_manifest
    from mgpipe.stages.pose import build_keypoint_store

    pose = _config(args)["pose"]
    build_keypoint_store(read_manifest(args.manifest), args.skeletons, args.out,
                         backend=pose["backend"], frames_h5=args.frames, layout=pose["layout"],
                         low_score=pose["low_score"], threads=pose["workers"] or args.threads,
                         python=pose["python"],
                         options=pose["options"], pickle_layout=pose["pickle_layout"],
                         outlier_margin=pose["outlier_margin"], progress=not args.quiet)


def cmd_shard(args):
    from mgpipe.stages.clips import read_manifest
    from mgpipe.stages.shards import write_slices

    manifest = read_manifest(args.manifest)
    videos = manifest.video_id.nunique() if "video_id" in manifest else None
    if videos is not None and args.shards > max(videos, 1):
        # a shard holds whole videos: the others would be empty jobs (each with its SLURM time)
        raise InputError(f"{args.manifest}: data.shards {args.shards} is more than the {videos} videos of "
                         f"the manifest (a shard holds whole videos); set data.shards to at most {max(videos, 1)}")
    write_slices(manifest, args.shards, args.out_dir, source=args.manifest)


def cmd_combine_skeletons(args):
    from mgpipe.sources.skeleton_sources import combine

    try:
        spec = json.loads(args.sources_json)
        entries, layout = spec["sources"], spec["layout"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise InputError(f"--sources-json: expected {{sources: [...], layout: ...}} ({e})") from None
    combine(entries, layout, args.out)


def cmd_gather(args):
    from mgpipe.stages.shards import gather

    gather(args.kind, args.stores_in, args.out)


def cmd_export_pickle(args):
    from mgpipe.sources.skeleton_io import export_pickle
    from mgpipe.stages.clips import read_manifest

    data = export_pickle(args.keypoints, read_manifest(args.manifest), args.out)
    log.info("wrote %s: %d annotations, splits %s", args.out, len(data["annotations"]),
             {k: len(v) for k, v in data["split"].items()})


def cmd_export_checkpoint(args):
    from mgpipe.learning.weights.mmaction import export

    summary = export(args.checkpoint, args.out)
    log.info("export-checkpoint: %s -> %s (MMAction2 format): %d tensors%s", args.checkpoint, args.out,
             summary["tensors"], f"; kept in meta only (no MMAction2 counterpart): {len(summary['not_in_mmaction'])}"
             if summary["not_in_mmaction"] else "")


def cmd_heatmaps(args):
    from mgpipe.pose.heatmap_render import build_heatmap_store

    heatmaps = _config(args)["heatmaps"]
    stats = build_heatmap_store(args.keypoints, args.out, size=heatmaps["size"], sigma=heatmaps["sigma"],
                                padding=heatmaps["padding"], threads=args.threads,
                                progress=not args.quiet, log=log.info)
    log.info("heatmaps: %s", stats)


def cmd_train(args):
    from mgpipe.learning.weights.init_source import from_command_line
    from mgpipe.stages.train import run

    config = _config(args)
    init = from_command_line(config, args.model, args.init, args.init_layout, args.init_weights)
    run(args.model, config, manifest_csv=args.manifest, classes_csv=args.classes,
        frames_h5=args.frames, keypoints_h5=args.keypoints, out_dir=args.out_dir,
        state_dir=args.state_dir or Path(args.out_dir) / "state", init=init,
        threads=args.threads, progress=not args.quiet)


def cmd_pretrain(args):
    from mgpipe.learning.weights.init_source import configured, from_command_line
    from mgpipe.stages.pretrain import run

    config = _config(args)
    # where the pretraining starts: --init, else the model's init key (as the workflow passes it)
    init = from_command_line(config, args.model, args.init, args.init_layout) \
        if args.init or args.init_layout else configured(config, args.model)
    run(args.model, config, manifest_csv=args.manifest, keypoints_h5=args.keypoints, out_dir=args.out_dir,
        state_dir=args.state_dir or Path(args.out_dir) / "state", init=init, threads=args.threads,
        progress=not args.quiet)


def cmd_merge(args):
    from mgpipe.stages.merge import merge_checkpoints

    merge_checkpoints(args.rgb, args.pose, _config(args), args.model, args.out)


def cmd_test(args):
    from mgpipe.stages.score import score_model

    score_model(args.checkpoint, _config(args), manifest_csv=args.manifest, frames_h5=args.frames,
                keypoints_h5=args.keypoints, out_csv=args.out, threads=args.threads,
                progress=not args.quiet, classes_csv=args.classes, given=_given(args))


def cmd_predict(args):
    from mgpipe.stages.predict import predict_video

    if not Path(args.model).is_file():
        raise InputError(f"{args.model}: model checkpoint not found")
    config = _config(args)
    result = predict_video(args.video, args.model, config, classes_csv=args.classes, skeletons=args.skeletons,
                 k=args.top_k, spot=args.spot, window_s=args.window, stride_s=args.stride,
                 threshold=args.threshold, ignore=args.ignore, out_dir=args.out_dir,
                 threads=args.threads, progress=not args.quiet, given=_given(args))
    table = result["table"]
    if args.spot:
        print(f"{args.video}: {len(table)} micro-gesture segment(s) in {result['windows']} windows")
    else:
        print(f"{args.video}: top-{args.top_k} ({result['model']})")
    print(table.to_string(index=False) if len(table) else "(none)")


def cmd_ensemble(args):
    from mgpipe.stages.ensemble import build_report

    config = _config(args)
    files = {}
    for item in args.scores:
        name, sep, path = item.partition("=")
        if not sep:
            raise InputError(f"--scores {item}: expected NAME=PATH")
        files[name] = path
    curves = {}
    for item in args.curves or ():
        name, sep, path = item.partition("=")
        if not sep:
            raise InputError(f"--curves {item}: expected NAME=PATH")
        curves[name] = path
    run_config = None
    if args.run_config_json:
        try:
            run_config = json.loads(args.run_config_json)
        except (json.JSONDecodeError, RecursionError) as e:
            raise InputError(f"--run-config-json: not valid JSON ({e})") from None
    build_report(files, args.classes, args.out_dir, members=config["ensemble"]["members"],
        weights=config["ensemble"]["weights"], variants_order=config["fused"]["variants"],
        curves=curves, manifest_csv=args.manifest, run_config=run_config)


def cmd_bench(args):
    from mgpipe.tools.bench import MODES, network_rates

    base, manifest = None, None
    if args.size == "config" or args.stores:
        base = _config(args)
    if args.stores:
        from mgpipe.stages.clips import read_manifest

        root = Path(args.stores)
        manifest = read_manifest(root / "clips.csv")
    modes = args.modes.split(",")
    unknown = sorted(set(modes) - set(MODES))
    if unknown:
        raise InputError(f"--modes: unknown {unknown}; known: {sorted(MODES)}")
    batch = {"joint": args.batch_pose, "rgb": args.batch_rgb, "fused_full": args.batch_fused}
    table = network_rates(models=args.models.split(","), modes=modes, size="paper" if args.size == "paper" else "config",
                batch=batch, steps=args.steps, warmup=args.warmup, device=args.device, base_config=base,
                manifest=manifest, frames_h5=root / "frames.h5" if args.stores else None,
                keypoints_h5=root / "keypoints.h5" if args.stores else None, workers=args.workers)
    print(table.to_string(index=False))
    if args.stores:
        from mgpipe.tools.bench import data_path

        path_table = data_path(manifest, frames_h5=root / "frames.h5", keypoints_h5=root / "keypoints.h5",
                               size="paper" if args.size == "paper" else "config", base_config=base)
        print()
        print(path_table.to_string(index=False))
    if args.out:
        from mgpipe.stages.clips import write_csv

        write_csv(table, args.out)
        if args.stores:
            write_csv(path_table, Path(args.out).with_name(Path(args.out).stem + "_data_path.csv"))


# ---- arguments: each path argument declares what the command does with it -----------------

def _files_in(*names):
    """writes= of a folder argument: the files the command writes into it."""
    return lambda folder, args: [os.path.join(folder, n) for n in names]


def _arg(p, *flags, reads=None, writes=None, when_absent=False, **kw):
    """add_argument, recording whether the value is a path the command reads or writes: True (the
    value itself, or each value of a list), or a function (value, args) -> paths (files inside a
    folder; with when_absent, also called without a value: a folder the command defaults).
    Only recorded arguments take part in check_paths."""
    action = p.add_argument(*flags, **kw)
    action.reads, action.writes, action.when_absent = reads, writes, when_absent
    return action


def _paths(action, value, args, role) -> list[str]:
    how = getattr(action, role, None)
    if not how or (value in (None, "", []) and not getattr(action, "when_absent", False)):
        return []
    if callable(how):
        return [str(x) for x in how(value, args)]
    return [str(v) for v in value] if isinstance(value, (list, tuple)) else [str(value)]


def _path_args(args) -> tuple[list, list]:
    """([(argument, path) read], [(argument, path) written]) of the parsed command line, from
    the declarations of the command's arguments."""
    read, written = [], []
    for action in _COMMANDS[args.command]._actions:
        value = getattr(args, action.dest, None)
        flag = action.option_strings[-1] if action.option_strings else action.dest
        read += [(flag, x) for x in _paths(action, value, args, "reads")]
        written += [(flag, x) for x in _paths(action, value, args, "writes")]
    if args.log:
        written.append(("--log", args.log))
    return read, written


def _path_keys(path: str) -> list:
    """What identifies a file however it is spelled: its real path, and (where it exists) its
    device and inode (a hard link, another spelling of a mount)."""
    keys = [("path", os.path.realpath(path))]
    try:
        info = os.stat(path)
        keys.append(("inode", info.st_dev, info.st_ino))
    except OSError:
        pass
    return keys


def check_paths(args) -> None:
    """InputError naming both when an output path is an input path (or another output path),
    checked before anything is read or written. Linear in the number of paths (a shard command
    names one output per shard): each path is looked up by its keys (_path_keys)."""
    read, written = _path_args(args)
    inputs: dict = {}
    for in_flag, path in read:
        for key in _path_keys(path):
            inputs.setdefault(key, (in_flag, path))
    outputs: dict = {}
    for out_flag, out in written:
        keys = _path_keys(out)
        for key in keys:
            if key in inputs:
                in_flag, path = inputs[key]
                raise InputError(f"{out_flag} {out} is the same file as {in_flag} {path}: refusing to "
                                 "write over an input; give the output another path")
        for key in keys:
            if key in outputs:
                other_flag, other = outputs[key]
                raise InputError(f"{out_flag} {out} is the same file as {other_flag} {other}, which this "
                                 "command also writes: give each output its own path")
        for key in keys:
            outputs.setdefault(key, (out_flag, out))
    for out_flag, out in written:
        # an output replaces only a regular file: never a device (/dev/null), FIFO, folder or link
        problem = replaceable_problem(out) if out_flag != "--log" else None   # (--log appends)
        if problem:
            raise InputError(f"{out_flag} {out}: refusing to write the output: it {problem}")


def _add_config(p, default=("config.yaml",), default_help="config.yaml"):
    g = p.add_mutually_exclusive_group()
    _arg(g, "--config", nargs="+", default=list(default) if default else None, metavar="YAML", reads=True,
         help="workflow config YAML(s), later ones updating earlier ones like snakemake --configfile "
              f"(default: {default_help})")
    g.add_argument("--config-json", help="config as a JSON string (what the workflow passes)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="change one setting over the config, e.g. --set train.device=cpu "
                        "--set fused.variants=[full] (YAML values; repeatable)")


class _Parser(argparse.ArgumentParser):
    """Bad arguments end in one line (`mgpipe predict: error: argument --window: ...`), as every
    other input error does; --help still shows the usage. Subcommand parsers are of this class."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


class _Help(argparse.RawDescriptionHelpFormatter):
    """Shows every option's default (argparse's ArgumentDefaultsHelpFormatter shows it only for
    options that have a help text, and also for flags and empty lists)."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if ("%(default)" not in text and "(default" not in text   # (a text that says its own default)
                and default not in (None, False, [], argparse.SUPPRESS)
                and action.option_strings):
            text += f" (default: {' '.join(map(str, default)) if isinstance(default, list) else default})"
        return text

    def _format_action(self, action):
        if action.help is None and action.option_strings and action.default not in (None, False, []):
            action.help = ""
        return super()._format_action(action)


def _number(kind, test, wants):
    """An argparse type: a number of `kind` (int, float) passing `test`, else one line saying
    what it `wants`."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number ({wants})") from None
        if not test(value):
            raise argparse.ArgumentTypeError(f"{text}: {wants}")
        return value
    return parse


_seconds = _number(float, lambda v: math.isfinite(v) and v > 0, "a positive finite number of seconds")
_probability = _number(float, lambda v: 0 <= v <= 1, "a probability between 0 and 1")
_count = _number(int, lambda v: v >= 1, "a whole number of at least 1")


def _label_ids(text):
    """--ignore: comma-separated integer label ids."""
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: comma-separated integer label ids expected "
                                         "(e.g. 99 or 7,99)") from None


def _data_args(p, frames_required=False):
    """The stores a model reads."""
    _arg(p, "--manifest", required=True, reads=True, help="clips.csv of the run")
    _arg(p, "--frames", required=frames_required, reads=True, help="frames.h5 (models that read frames)")
    _arg(p, "--keypoints", required=True, reads=True, help="keypoints.h5")


# ---- the commands, in the order --help lists them ------------------------------------------

def _p_predict(p):
    p.add_argument("video", help="the video file").reads = True
    _arg(p, "--model", required=True, reads=True,
         help="model.pt of a trained model (fused, rgb, joint, limb, motion or swin)")
    _add_config(p, default=None, default_help="none: every setting the model recorded, the rest "
                                              "at the schema's defaults")
    _arg(p, "--classes", reads=True, help="a class table to check against the model's own (which names the classes)")
    _arg(p, "--skeletons", reads=True, help="provided keypoints of this video (OpenPose folder holding "
         "<video name>/..., or a pickle) when pose.backend is openpose or pickle")
    p.add_argument("--top-k", type=_count, default=5, help="classes to list")
    p.add_argument("--spot", action="store_true", help="slide a window over the video; write a timeline")
    p.add_argument("--window", type=_seconds, default=2.0, help="window length in seconds (--spot)")
    p.add_argument("--stride", type=_seconds, default=0.5, help="window step in seconds (--spot)")
    p.add_argument("--threshold", type=_probability, default=0.5, help="least probability of a spotted gesture")
    p.add_argument("--ignore", type=_label_ids, default=[],
                   help="comma-separated label ids never reported (e.g. a non-gesture class)")
    _arg(p, "--out-dir", writes=_files_in("prediction.json", "timeline.csv", "windows.csv", "timeline.png"),
         help="write prediction.json (and timeline.csv/.png, windows.csv with --spot)")
    p.add_argument("--threads", type=_count, default=1, help="CPU threads")


def _p_test(p):
    _arg(p, "checkpoint", reads=True, help="model.pt of a trained model")
    _add_config(p, default=None, default_help="none: every setting the model recorded, the rest "
                                              "at the schema's defaults")
    _data_args(p)
    _arg(p, "--classes", reads=True, help="the run's classes.csv: refused unless it is the model's class table")
    _arg(p, "--out", required=True, writes=True, help="scores CSV")
    p.add_argument("--threads", type=int, default=1, help="CPU threads")


def _p_export_checkpoint(p):
    _arg(p, "checkpoint", reads=True, help="model.pt of an mgpipe model")
    _arg(p, "--out", required=True, writes=True, help="the MMAction2-format .pth")


def _p_export_pickle(p):
    _arg(p, "--keypoints", required=True, reads=True, help="keypoints.h5")
    _arg(p, "--manifest", required=True, reads=True, help="clips.csv (labels and split)")
    _arg(p, "--out", required=True, writes=True, help="the pickle")


def _p_heatmaps(p):
    _arg(p, "--keypoints", required=True, reads=True, help="keypoints.h5")
    _add_config(p)
    _arg(p, "--out", required=True, writes=True, help="heatmaps.h5")
    p.add_argument("--threads", type=int, default=1, help="CPU threads")


def _p_bench(p):
    p.add_argument("--size", choices=["paper", "config"], default="paper",
                   help="paper-size networks, or the pathways of --config")
    p.add_argument("--models", default="joint,rgb,fused_full", help="comma list of models")
    p.add_argument("--modes", default="fp32,bf16,bf16+cl",
                   help="comma list of fp32, bf16, bf16+cl, bf16+cl+compile")
    _arg(p, "--stores", reads=lambda root, args: [os.path.join(root, f) for f in ("clips.csv", "frames.h5", "keypoints.h5")],
         help="a results folder with clips.csv, frames.h5, keypoints.h5: also time the full step fed "
              "by the real loaders")
    p.add_argument("--workers", type=int, default=4, help="loader workers")
    p.add_argument("--batch-pose", type=int, default=32, help="batch of the pose models")
    p.add_argument("--batch-rgb", type=int, default=16, help="batch of the RGB model")
    p.add_argument("--batch-fused", type=int, default=16, help="batch of the fused model")
    p.add_argument("--steps", type=int, default=10, help="timed steps")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="where to run")
    _arg(p, "--out", writes=lambda out, args: [out, str(Path(out).with_name(Path(out).stem + "_data_path.csv"))],
         help="also write the table as CSV (and <out>_data_path.csv with --stores)")
    _add_config(p)


def _p_demo_data(p):
    _arg(p, "out", writes=_files_in("labels.csv", "split.csv", "README.txt", "videos", "skeletons"),
         help="folder for the demo data")
    _add_config(p)


def _p_photo_video(p):
    p.add_argument("photo", choices=["grace_hopper", "astronaut"], help="a photo that ships in a package")
    _arg(p, "out", writes=True, help="the video file")
    p.add_argument("--frames", type=int, default=48, help="frames")
    p.add_argument("--width", type=int, default=320, help="pixels")
    p.add_argument("--height", type=int, default=240, help="pixels")
    p.add_argument("--fps", type=int, default=25, help="frames per second")
    p.add_argument("--seed", type=int, default=0, help="the pan-and-zoom path's seed")


def _p_clips(p):
    _arg(p, "--labels", reads=True, help="label file or folder in the format of dataset.kind (none for "
         "kind pyskl: the --skeletons pickle holds the labels)")
    _arg(p, "--split", reads=True, help="CSV subject_id,split (unless the labels carry a split per row)")
    _arg(p, "--videos", reads=True, help="folder of videos (not needed in pose-only mode)")
    _arg(p, "--skeletons", reads=True, help="provided keypoints (OpenPose folder or pickle), checked per video")
    _add_config(p)
    _arg(p, "--out", required=True, writes=True, help="clips.csv")
    _arg(p, "--classes-out", required=True, writes=True, help="classes.csv")


def _p_decode(p):
    _arg(p, "--manifest", required=True, reads=True, help="clips.csv")
    _add_config(p)
    _arg(p, "--out", required=True, writes=True, help="frames.h5")
    p.add_argument("--threads", type=int, default=1, help="CPU threads")


def _p_pose(p):
    _arg(p, "--manifest", required=True, reads=True, help="clips.csv")
    _arg(p, "--skeletons", reads=True, help="provided keypoints: OpenPose folder or skeleton pickle")
    _arg(p, "--frames", reads=True, help="frame store, for the mediapipe and mmpose backends")
    _add_config(p)
    _arg(p, "--out", required=True, writes=True, help="keypoints.h5")
    p.add_argument("--threads", type=int, default=1, help="CPU threads")


def _p_shard(p):
    _arg(p, "--manifest", required=True, reads=True, help="clips.csv")
    p.add_argument("--shards", type=int, required=True,
                   help="number of shards (data.shards; at most the manifest's videos)")
    _arg(p, "--out-dir", required=True, help="folder of the slices <shard>.csv", writes=_shard_slices)


def _shard_slices(folder, args) -> list[str]:
    """The slices `shard` writes (a bounded number of them: checked before the list is made)."""
    from mgpipe.config import _schema_maximum

    most = _schema_maximum("data.shards")
    if not 1 <= args.shards <= most:
        raise InputError(f"--shards {args.shards}: data.shards is {args.shards}; use 1 to {most} "
                         "(and at most the manifest's videos)")
    return [os.path.join(folder, f"{i}.csv") for i in range(args.shards)]


def _p_combine_skeletons(p):
    _arg(p, "--sources-json", required=True, reads=_source_pickles,
         help="{sources: dataset.skeletons as a list, layout: pose.layout} as JSON (what the workflow passes)")
    _arg(p, "--out", required=True, writes=True, help="the combined pickle")


def _source_pickles(text, args) -> list[str]:
    try:
        return [str(s["path"]) for s in json.loads(text)["sources"]]
    except (json.JSONDecodeError, KeyError, TypeError):
        return []   # (cmd_combine_skeletons says what is wrong)


def _p_gather(p):
    p.add_argument("kind", choices=("frames", "keypoints"), help="which store")
    _arg(p, "stores_in", nargs="+", metavar="STORE", reads=True, help="the shard stores, in shard order")
    _arg(p, "--out", required=True, writes=True, help="the gathered store")


def _p_train(p):
    p.add_argument("model", help="rgb, joint, limb, motion, swin or fused_<variant>")
    _add_config(p)
    _data_args(p)
    _arg(p, "--classes", required=True, reads=True, help="classes.csv")
    # Where the model starts; none of the three: where the config's init section (swin.weights)
    # says (learning/weights/init_source.py), as the workflow passes it
    start = p.add_mutually_exclusive_group()
    _arg(start, "--init", reads=True, help="initial weights file (default: the config's init.<model>; a fused "
         "model: the merge stage's output)")
    _arg(p, "--init-layout", help="the keypoint layout of the --init file (default: recorded in it, or inferred)")
    _arg(start, "--init-weights", metavar="NAME", help="a torchvision weight name (Video Swin): its file in "
         "torch's cache, hash checked")
    _arg(p, "--out-dir", required=True, writes=_files_in("model.pt", "log.csv", "curve.png"),
         help="model.pt, log.csv, curve.png")
    _arg(p, "--state-dir", help="resumable training state (default: OUT_DIR/state)", when_absent=True,
         writes=lambda folder, args: [os.path.join(folder or os.path.join(args.out_dir, "state"), f)
                                      for f in ("last.pt", "best.pt", "lock")])
    p.add_argument("--threads", type=int, default=1, help="CPU threads")


def _p_pretrain(p):
    p.add_argument("model", choices=("joint", "limb"), help="the pose model whose pathway is pretrained")
    _add_config(p)
    _arg(p, "--manifest", required=True, reads=True, help="clips.csv of the run (pretrain.splits picks the clips)")
    _arg(p, "--keypoints", required=True, reads=True, help="keypoints.h5")
    _arg(p, "--init", reads=True, help="where the pretraining starts (default: the config's init.<model>)")
    _arg(p, "--init-layout", help="the keypoint layout of the --init file (default: recorded in it, or inferred)")
    _arg(p, "--out-dir", required=True, writes=_files_in("weights.pth", "log.csv", "curve.png"),
         help="weights.pth (the pathway as a pyskl / MMAction2 backbone checkpoint), log.csv, curve.png")
    _arg(p, "--state-dir", help="resumable state (default: OUT_DIR/state)", when_absent=True,
         writes=lambda folder, args: [os.path.join(folder or os.path.join(args.out_dir, "state"), f)
                                      for f in ("last.pt", "lock")])
    p.add_argument("--threads", type=int, default=1, help="CPU threads")


def _p_merge(p):
    _arg(p, "--rgb", required=True, reads=True, help="the trained RGB model")
    _arg(p, "--pose", required=True, reads=True, help="the trained joint model")
    p.add_argument("--model", default="fused_full",
                   help="the model the weights are for: one that starts from merged weights")
    _arg(p, "--out", required=True, writes=True, help="the merged checkpoint")
    _add_config(p)


def _p_ensemble(p):
    _arg(p, "--scores", nargs="+", required=True, metavar="NAME=PATH", help="each model's score file",
         reads=lambda items, args: [path for _, _, path in (i.partition("=") for i in items) if path])
    _arg(p, "--classes", required=True, reads=True, help="classes.csv")
    _arg(p, "--curves", nargs="+", metavar="NAME=PATH", help="each model's curve.png, shown in the summary",
         reads=lambda items, args: [path for _, _, path in (i.partition("=") for i in items or ()) if path])
    _arg(p, "--manifest", reads=True, help="clips.csv of the run: the summary counts its clips per split and class")
    p.add_argument("--run-config-json", help="the run's whole config as JSON, shown in the summary "
                                             "(the workflow passes its config)")
    _arg(p, "--out-dir", required=True, help="metrics.json, per_class.csv, confusion.png, summary.md, summary.html",
         writes=_files_in("metrics.json", "per_class.csv", "confusion.png", "summary.md", "summary.html"))
    _add_config(p)


# (name, group, one-line help, arguments, implementation)
_COMMAND_TABLE = [
    ("predict", "use a trained model", "a trained model on a new video: top-k classes, or a --spot timeline",
     _p_predict, "cmd_predict"),
    ("test", "use a trained model", "multi-view scores of a checkpoint on val and test (also a workflow stage)",
     _p_test, "cmd_test"),
    ("export-checkpoint", "use a trained model", "an mgpipe model -> a pyskl / MMAction2 checkpoint "
     "({meta, state_dict}; meta.mmaction_model is the model config)", _p_export_checkpoint, "cmd_export_checkpoint"),
    ("export-pickle", "data and tools", "keypoint store + manifest -> pyskl/MMAction2 skeleton pickle",
     _p_export_pickle, "cmd_export_pickle"),
    ("heatmaps", "data and tools", "keypoints -> joint and limb heatmap volumes (HDF5) (settings: heatmaps)",
     _p_heatmaps, "cmd_heatmaps"),
    ("bench", "data and tools", "training throughput: networks alone and fed by the loaders", _p_bench, "cmd_bench"),
    ("demo-data", "data and tools", "generate the synthetic iMiGUE-shaped demo dataset (settings: seed, "
     "dataset.demo; also a workflow stage)", _p_demo_data, "cmd_demo_data"),
    ("photo-video", "data and tools", "a pan-and-zoom video of a real photo that ships in a package",
     _p_photo_video, "cmd_photo_video"),
    ("combine-skeletons", "workflow stages", "several skeleton pickles -> one, in pose.layout by joint name, "
     "labels side by side (dataset.skeletons as a list)", _p_combine_skeletons, "cmd_combine_skeletons"),
    ("clips", "workflow stages", "clip manifest from a label table (dataset.kind format) and a split",
     _p_clips, "cmd_clips"),
    ("decode", "workflow stages", "videos -> HDF5 store of JPEG frames per clip (settings: decode)",
     _p_decode, "cmd_decode"),
    ("pose", "workflow stages", "keypoints per clip (pose.backend) -> HDF5 keypoint store", _p_pose, "cmd_pose"),
    ("shard", "workflow stages", "clip manifest -> one slice of whole videos per shard (<out-dir>/<shard>.csv, "
     "rewritten only when it changes)", _p_shard, "cmd_shard"),
    ("gather", "workflow stages", "shard stores (frames or keypoints) -> one store, each clip copied as stored",
     _p_gather, "cmd_gather"),
    ("train", "workflow stages", "train one model: rgb, joint, limb, motion, swin or fused_<variant>",
     _p_train, "cmd_train"),
    ("pretrain", "workflow stages", "self-supervised pretraining of a pose model's pathway on the run's clips, "
     "labels unused (masked heatmap modelling; settings: pretrain)", _p_pretrain, "cmd_pretrain"),
    ("merge", "workflow stages", "pretrained rgb + pose checkpoints -> fused initial weights", _p_merge, "cmd_merge"),
    ("ensemble", "workflow stages", "score-level fusion, metrics, confusion matrix, summary", _p_ensemble,
     "cmd_ensemble"),
]

_COMMANDS: dict = {}   # command name -> its parser (filled by parser())


def version_text() -> str:
    from importlib import metadata

    from mgpipe import __version__

    def installed(name):
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "not installed"

    return (f"mgpipe {__version__} (Python {sys.version.split()[0]}, torch {installed('torch')}, "
            f"torchvision {installed('torchvision')}, snakemake {installed('snakemake')})")


def parser() -> argparse.ArgumentParser:
    groups: dict = {}
    for name, group, text, _, _ in _COMMAND_TABLE:
        groups.setdefault(group, []).append(f"  {name:<18}{text}")
    listing = "\n\n".join(f"{group}:\n" + "\n".join(lines) for group, lines in groups.items())
    ap = _Parser(prog="mgpipe", description=__doc__.splitlines()[0], formatter_class=_Help,
                 epilog=f"{listing}\n\n`mgpipe COMMAND --help` shows a command's options and their defaults.")
    ap.add_argument("--version", action="version", version=version_text())
    ap.add_argument("--log", help="also append log lines to this file")
    ap.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser,
                            help="one of the commands below")
    _COMMANDS.clear()
    module = sys.modules[__name__]
    for name, _, text, arguments, implementation in _COMMAND_TABLE:
        p = sub.add_parser(name, description=text, formatter_class=_Help)
        arguments(p)
        p.set_defaults(func=getattr(module, implementation))
        _COMMANDS[name] = p
    return ap


def main(argv=None) -> int:
    from mgpipe.runtime import setup_logging

    args = parser().parse_args(argv)
    if not sys.stderr.isatty():
        # In a rule's log file, a progress line every 15 s is progress; ten a second is noise.
        os.environ.setdefault("TQDM_MININTERVAL", "15")
    try:
        check_paths(args)
        setup_logging(args.log)
        args.func(args)
    except InputError as e:
        print(f"mgpipe {args.command}: error: {e}", file=sys.stderr)
        return 2
    except ComputationError as e:
        print(f"mgpipe {args.command}: error: {e}", file=sys.stderr)
        return 3
    except OutputError as e:
        print(f"mgpipe {args.command}: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        # The system refused a read or write (h5py's errors are OSErrors too): one line naming
        # the file and the reason, not a traceback through the library.
        log.debug("OSError", exc_info=True)
        print(f"mgpipe {args.command}: error: {describe_os_error(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
