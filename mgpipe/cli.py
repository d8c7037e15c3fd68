"""The `mgpipe` command: one subcommand per pipeline stage, usable without Snakemake.

Errors in user input end the command with one line naming the file and the problem (exit 2).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
from pathlib import Path

from .io import InputError, OutputError, describe_os_error, replaceable_problem

log = logging.getLogger("mgpipe")


def _config(args) -> dict:
    from . import config as cfg

    if args.config_json:
        try:
            data = json.loads(args.config_json)
        except json.JSONDecodeError as e:
            raise InputError(f"--config-json: not valid JSON ({e})") from None
        except RecursionError:
            raise InputError("--config-json: refused: nested too deeply") from None
        return cfg.validate(data, "--config-json", partial=True)
    return cfg.load(args.config)


def _given(args) -> set:
    """The dotted keys ("a", "a.b", "a.b.c") the user's config files or JSON set themselves, as
    opposed to schema defaults: predict and test take a model's own input settings for the rest."""
    from . import config as cfg

    if args.config_json:
        data = json.loads(args.config_json)
    else:
        data = {}
        for path in args.config:  # already read and validated by _config
            cfg._update(data, cfg.load_yaml(path) or {})
    keys, todo = set(), [("", data)]
    while todo:
        prefix, node = todo.pop()
        for k, v in node.items():
            keys.add(prefix + str(k))
            if isinstance(v, dict):
                todo.append((f"{prefix}{k}.", v))
    return keys


def cmd_photo_video(args):
    from .photo_video import pan_zoom_video, sample_photo

    pan_zoom_video(sample_photo(args.photo), args.out, frames=args.frames, size=(args.width, args.height),
                   fps=args.fps, seed=args.seed)
    log.info("wrote %s: %d frames of %s panned and zoomed", args.out, args.frames, args.photo)


def cmd_demo_data(args):
    from .demo_data import generate

    config = _config(args)
    stats = generate(args.out, seed=config["seed"], **config["dataset"]["demo"], progress=not args.quiet)
    log.info("demo data in %s: %s", args.out, stats)


def cmd_clips(args):
    from .clips import build_manifest, write_csv

    config = _config(args)
    if args.labels is None and config["dataset"]["kind"] != "pyskl":
        raise InputError(f"mgpipe clips: --labels is needed for dataset.kind {config['dataset']['kind']}")
    manifest, class_table = build_manifest(args.labels, args.split, args.videos, config,
                                           skeletons_dir=args.skeletons)
    write_csv(class_table, args.classes_out)
    write_csv(manifest, args.out)


def cmd_decode(args):
    from .clips import read_manifest
    from .decode import build_frame_store

    decode = _config(args)["decode"]
    build_frame_store(read_manifest(args.manifest), args.out, max_side=decode["max_side"],
                      quality=decode["jpeg_quality"], threads=args.threads, progress=not args.quiet)


def cmd_pose(args):
    from .clips import read_manifest
    from .pose import build_keypoint_store

    pose = _config(args)["pose"]
    build_keypoint_store(read_manifest(args.manifest), args.skeletons, args.out,
                         backend=pose["backend"], frames_h5=args.frames, layout=pose["layout"],
                         low_score=pose["low_score"], threads=pose["workers"] or args.threads,
                         python=pose["python"],
                         options=pose["options"], pickle_layout=pose["pickle_layout"],
                         outlier_margin=pose["outlier_margin"], progress=not args.quiet)


def cmd_shard(args):
    from .clips import read_manifest
    from .shards import write_slices

    manifest = read_manifest(args.manifest)
    videos = manifest.video_id.nunique() if "video_id" in manifest else None
    if videos is not None and args.shards > max(videos, 1):
        # a shard holds whole videos: the others would be empty jobs (each with its SLURM time)
        raise InputError(f"{args.manifest}: data.shards {args.shards} is more than the {videos} videos of "
                         f"the manifest (a shard holds whole videos); set data.shards to at most {max(videos, 1)}")
    write_slices(manifest, args.shards, args.out_dir, source=args.manifest)


def cmd_gather(args):
    from .shards import gather

    gather(args.kind, args.stores_in, args.out)


def cmd_export_pickle(args):
    from .clips import read_manifest
    from .skeleton_io import export_pickle

    data = export_pickle(args.keypoints, read_manifest(args.manifest), args.out)
    log.info("wrote %s: %d annotations, splits %s", args.out, len(data["annotations"]),
             {k: len(v) for k, v in data["split"].items()})


def cmd_export_checkpoint(args):
    from .transfer.mmaction import export

    summary = export(args.checkpoint, args.out)
    log.info("export-checkpoint: %s -> %s (MMAction2 format): %d tensors%s", args.checkpoint, args.out,
             summary["tensors"], f"; kept in meta only (no MMAction2 counterpart): {len(summary['not_in_mmaction'])}"
             if summary["not_in_mmaction"] else "")


def cmd_heatmaps(args):
    from .heatmaps import build_heatmap_store

    heatmaps = _config(args)["heatmaps"]
    stats = build_heatmap_store(args.keypoints, args.out, size=heatmaps["size"], sigma=heatmaps["sigma"],
                                padding=heatmaps["padding"], threads=args.threads,
                                progress=not args.quiet, log=log.info)
    log.info("heatmaps: %s", stats)


def cmd_train(args):
    from .train import run

    run(args.model, _config(args), manifest_csv=args.manifest, classes_csv=args.classes,
        frames_h5=args.frames, keypoints_h5=args.keypoints, out_dir=args.out_dir,
        state_dir=args.state_dir or Path(args.out_dir) / "state", init=args.init,
        threads=args.threads, progress=not args.quiet)


def cmd_merge(args):
    from .merge import merge_checkpoints

    merge_checkpoints(args.rgb, args.pose, _config(args), args.model, args.out)


def cmd_test(args):
    from .evaluate import score_model

    score_model(args.checkpoint, _config(args), manifest_csv=args.manifest, frames_h5=args.frames,
                keypoints_h5=args.keypoints, out_csv=args.out, threads=args.threads,
                progress=not args.quiet, classes_csv=args.classes, given=_given(args))


def cmd_predict(args):
    from .predict import predict_video

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
    from .ensemble import build_report

    config = _config(args)
    files = {}
    for item in args.scores:
        name, sep, path = item.partition("=")
        if not sep:
            raise InputError(f"--scores {item}: expected NAME=PATH")
        files[name] = path
    build_report(files, args.classes, args.out_dir, members=config["ensemble"]["members"],
        weights=config["ensemble"]["weights"], variants_order=config["fused"]["variants"])


def cmd_bench(args):
    from .bench import MODES, network_rates

    base, manifest = None, None
    if args.size == "config" or args.stores:
        base = _config(args)
    if args.stores:
        from .clips import read_manifest

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
        from .bench import data_path

        path_table = data_path(manifest, frames_h5=root / "frames.h5", keypoints_h5=root / "keypoints.h5",
                               size="paper" if args.size == "paper" else "config", base_config=base)
        print()
        print(path_table.to_string(index=False))
    if args.out:
        from .clips import write_csv

        write_csv(table, args.out)
        if args.stores:
            write_csv(path_table, Path(args.out).with_name(Path(args.out).stem + "_data_path.csv"))


# Which arguments of each command are read and which are written (a folder's entry: the files
# the command writes into it). No output may be an input or another output: `clips --out` equal
# to `--labels` would replace the user's label table.
_PATHS = {  # command: (inputs, outputs, {folder output: files written in it})
    "demo-data": ((), (), {"out": ("labels.csv", "split.csv", "README.txt", "videos", "skeletons")}),
    "clips": (("labels", "split", "videos", "skeletons"), ("out", "classes_out"), {}),
    "decode": (("manifest",), ("out",), {}),
    "pose": (("manifest", "skeletons", "frames"), ("out",), {}),
    "shard": (("manifest",), (), {}),
    "gather": ((), ("out",), {}),
    "predict": (("video", "model", "classes", "skeletons"), (),
                {"out_dir": ("prediction.json", "timeline.csv", "windows.csv", "timeline.png")}),
    "photo-video": ((), ("out",), {}),
    "export-pickle": (("keypoints", "manifest"), ("out",), {}),
    "export-checkpoint": (("checkpoint",), ("out",), {}),
    "heatmaps": (("keypoints",), ("out",), {}),
    "train": (("manifest", "frames", "keypoints", "classes", "init"), (),
              {"out_dir": ("model.pt", "log.csv", "curve.png"), "state_dir": ("last.pt", "best.pt", "lock")}),
    "merge": (("rgb", "pose"), ("out",), {}),
    "test": (("checkpoint", "manifest", "frames", "keypoints", "classes"), ("out",), {}),
    "ensemble": (("classes",), (), {"out_dir": ("metrics.json", "per_class.csv", "confusion.png", "summary.md",
                                                 "summary.html")}),
    "bench": (("stores",), ("out",), {}),
}


_POSITIONAL = {"demo-data": "out", "photo-video": "out", "predict": "video", "test": "checkpoint",
               "export-checkpoint": "checkpoint"}


def _flag(command: str, name: str) -> str:
    return name if _POSITIONAL.get(command) == name else "--" + name.replace("_", "-")


def _path_args(args) -> tuple[list, list]:
    """([(argument, path) read], [(argument, path) written]) of the parsed command line."""
    inputs, outputs, folders = _PATHS.get(args.command, ((), (), {}))
    read = [(_flag(args.command, n), getattr(args, n)) for n in inputs if getattr(args, n, None)]
    if getattr(args, "config_json", None) is None and getattr(args, "config", None):
        read += [("--config", c) for c in args.config]
    read += [("--scores", path) for _, _, path in (item.partition("=") for item in getattr(args, "scores", ()))
             if path]
    if getattr(args, "stores", None):   # bench reads these files of the results folder
        read += [("--stores", os.path.join(args.stores, f)) for f in ("clips.csv", "frames.h5", "keypoints.h5")]
    read += [("store", path) for path in getattr(args, "stores_in", None) or ()]   # gather
    written = [(_flag(args.command, n), getattr(args, n)) for n in outputs if getattr(args, n, None)]
    for name, files in folders.items():
        folder = getattr(args, name, None)
        if name == "state_dir" and not folder:
            folder = os.path.join(args.out_dir, "state")   # train's default
        if folder:
            written += [(_flag(args.command, name), os.path.join(folder, f)) for f in files]
    if args.command == "shard":   # the slices it writes (a bounded number of them)
        from .config import _schema_maximum

        most = _schema_maximum("data.shards")
        if not 1 <= args.shards <= most:
            raise InputError(f"--shards {args.shards}: data.shards is {args.shards}; use 1 to {most} "
                             "(and at most the manifest's videos)")
        written += [("--out-dir", os.path.join(args.out_dir, f"{i}.csv")) for i in range(args.shards)]
    if args.command == "bench" and args.out:
        written.append(("--out", str(Path(args.out).with_name(Path(args.out).stem + "_data_path.csv"))))
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


def _add_config(p):
    g = p.add_mutually_exclusive_group()
    g.add_argument("--config", nargs="+", default=["config.yaml"], metavar="YAML",
                   help="workflow config YAML(s), later ones updating earlier ones like "
                        "snakemake --configfile (default %(default)s)")
    g.add_argument("--config-json", help="config as a JSON string (what the workflow passes)")


class _Parser(argparse.ArgumentParser):
    """Bad arguments end in one line (`mgpipe predict: error: argument --window: ...`), as every
    other input error does; --help still shows the usage. Subcommand parsers are of this class."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


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


def parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="mgpipe", description=__doc__.splitlines()[0])
    ap.add_argument("--log", help="also append log lines to this file")
    ap.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo-data", help="generate the synthetic iMiGUE-shaped demo dataset "
                                         "(settings: seed, dataset.demo)")
    p.add_argument("out")
    _add_config(p)
    p.set_defaults(func=cmd_demo_data)

    p = sub.add_parser("clips", help="clip manifest from a label table (dataset.kind format) and a split")
    p.add_argument("--labels", help="label file or folder in the format of dataset.kind (none for "
                   "kind pyskl: the --skeletons pickle holds the labels)")
    p.add_argument("--split", help="CSV subject_id,split (unless the labels carry a split per row)")
    p.add_argument("--videos", help="folder of videos (not needed in pose-only mode)")
    p.add_argument("--skeletons", help="provided keypoints (OpenPose folder or pickle), checked per video")
    _add_config(p)
    p.add_argument("--out", required=True)
    p.add_argument("--classes-out", required=True)
    p.set_defaults(func=cmd_clips)

    p = sub.add_parser("decode", help="videos -> HDF5 store of JPEG frames per clip (settings: decode)")
    p.add_argument("--manifest", required=True)
    _add_config(p)
    p.add_argument("--out", required=True)
    p.add_argument("--threads", type=int, default=1)
    p.set_defaults(func=cmd_decode)

    p = sub.add_parser("pose", help="keypoints per clip (pose.backend) -> HDF5 keypoint store")
    p.add_argument("--manifest", required=True)
    p.add_argument("--skeletons", help="provided keypoints: OpenPose folder or skeleton pickle")
    p.add_argument("--frames", help="frame store, for the mediapipe and mmpose backends")
    _add_config(p)
    p.add_argument("--out", required=True)
    p.add_argument("--threads", type=int, default=1)
    p.set_defaults(func=cmd_pose)

    p = sub.add_parser("shard", help="clip manifest -> one slice of whole videos per shard "
                                     "(<out-dir>/<shard>.csv, rewritten only when it changes)")
    p.add_argument("--manifest", required=True)
    p.add_argument("--shards", type=int, required=True,
                   help="number of shards (data.shards; at most the manifest's videos)")
    p.add_argument("--out-dir", required=True)
    p.set_defaults(func=cmd_shard)

    p = sub.add_parser("gather", help="shard stores (frames or keypoints) -> one store, each "
                                      "clip copied as stored")
    p.add_argument("kind", choices=("frames", "keypoints"))
    p.add_argument("stores_in", nargs="+", metavar="STORE")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_gather)

    p = sub.add_parser("predict", help="a trained model on a new video: top-k classes, or a --spot timeline")
    p.add_argument("video")
    p.add_argument("--model", required=True, help="model.pt of a trained model (fused, rgb, joint, limb, motion or swin)")
    _add_config(p)
    p.add_argument("--classes", help="a class table to check against the model's own (which names the classes)")
    p.add_argument("--skeletons", help="provided keypoints of this video (OpenPose folder holding "
                   "<video name>/..., or a pickle) when pose.backend is openpose or pickle")
    p.add_argument("--top-k", type=_count, default=5)
    p.add_argument("--spot", action="store_true", help="slide a window over the video; write a timeline")
    p.add_argument("--window", type=_seconds, default=2.0, help="window length in seconds (--spot)")
    p.add_argument("--stride", type=_seconds, default=0.5, help="window step in seconds (--spot)")
    p.add_argument("--threshold", type=_probability, default=0.5, help="least probability of a spotted gesture")
    p.add_argument("--ignore", type=_label_ids, default=[],
                   help="comma-separated label ids never reported (e.g. a non-gesture class)")
    p.add_argument("--out-dir", help="write prediction.json (and timeline.csv/.png, windows.csv with --spot)")
    p.add_argument("--threads", type=_count, default=1)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("photo-video", help="a pan-and-zoom video of a real photo that ships in a package")
    p.add_argument("photo", choices=["grace_hopper", "astronaut"])
    p.add_argument("out")
    p.add_argument("--frames", type=int, default=48)
    p.add_argument("--width", type=int, default=320)
    p.add_argument("--height", type=int, default=240)
    p.add_argument("--fps", type=int, default=25)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_photo_video)

    p = sub.add_parser("export-pickle", help="keypoint store + manifest -> pyskl/MMAction2 skeleton pickle")
    p.add_argument("--keypoints", required=True)
    p.add_argument("--manifest", required=True)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_export_pickle)

    p = sub.add_parser("export-checkpoint", help="an mgpipe model -> a pyskl / MMAction2 checkpoint "
                                                 "({meta, state_dict}; meta.mmaction_model is the model config)")
    p.add_argument("checkpoint")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_export_checkpoint)

    p = sub.add_parser("heatmaps", help="keypoints -> joint and limb heatmap volumes (HDF5) "
                                        "(settings: heatmaps)")
    p.add_argument("--keypoints", required=True)
    _add_config(p)
    p.add_argument("--out", required=True)
    p.add_argument("--threads", type=int, default=1)
    p.set_defaults(func=cmd_heatmaps)

    data_args = [("--manifest", True), ("--frames", False), ("--keypoints", True)]

    p = sub.add_parser("train", help="train one model: rgb, joint, limb, motion, swin or fused_<variant>")
    p.add_argument("model")
    _add_config(p)
    for flag, req in data_args:
        p.add_argument(flag, required=req)
    p.add_argument("--classes", required=True)
    p.add_argument("--init", help="initial weights (the merged checkpoint for a fused model)")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--state-dir", help="resumable training state (default OUT_DIR/state)")
    p.add_argument("--threads", type=int, default=1)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("merge", help="pretrained rgb + pose checkpoints -> fused initial weights")
    p.add_argument("--rgb", required=True)
    p.add_argument("--pose", required=True)
    p.add_argument("--model", default="fused_full",
                   help="the model the weights are for: one that starts from merged weights")
    p.add_argument("--out", required=True)
    _add_config(p)
    p.set_defaults(func=cmd_merge)

    p = sub.add_parser("test", help="multi-view scores of a checkpoint on val and test")
    p.add_argument("checkpoint")
    _add_config(p)
    for flag, req in data_args:
        p.add_argument(flag, required=req)
    p.add_argument("--classes", help="the run's classes.csv: refused unless it is the model's class table")
    p.add_argument("--out", required=True)
    p.add_argument("--threads", type=int, default=1)
    p.set_defaults(func=cmd_test)

    p = sub.add_parser("ensemble", help="score-level fusion, metrics, confusion matrix, summary")
    p.add_argument("--scores", nargs="+", required=True, metavar="NAME=PATH")
    p.add_argument("--classes", required=True)
    p.add_argument("--out-dir", required=True)
    _add_config(p)
    p.set_defaults(func=cmd_ensemble)

    p = sub.add_parser("bench", help="training throughput: networks alone and fed by the loaders")
    p.add_argument("--size", choices=["paper", "config"], default="paper",
                   help="paper-size networks, or the pathways of --config")
    p.add_argument("--models", default="joint,rgb,fused_full")
    p.add_argument("--modes", default="fp32,bf16,bf16+cl",
                   help="comma list of fp32, bf16, bf16+cl, bf16+cl+compile")
    p.add_argument("--stores", help="a results folder with clips.csv, frames.h5, keypoints.h5: also time "
                                    "the full step fed by the real loaders")
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--batch-pose", type=int, default=32)
    p.add_argument("--batch-rgb", type=int, default=16)
    p.add_argument("--batch-fused", type=int, default=16)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--out", help="also write the table as CSV")
    _add_config(p)
    p.set_defaults(func=cmd_bench)
    return ap


def main(argv=None) -> int:
    from .runtime import setup_logging

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
