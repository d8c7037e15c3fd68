"""`mgpipe predict`: a trained model on a new video, and `--spot`: micro-gestures along a long one.

The video goes through the same stage code as training data (decode, pose with the configured
backend, the test-time sampler that renders the heatmaps), in a scratch folder, so a prediction sees exactly
what the model saw in training. With --spot, overlapping windows slide over the video; each is
classified, and runs of windows that agree on a confident class become timeline segments.
"""

from __future__ import annotations

import logging
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mgpipe.config import reads_frames
from mgpipe.formats import checkpoints
from mgpipe.io import InputError, atomic_path, write_json
from mgpipe.layouts import get_layout
from mgpipe.learning import imbalance, specs
from mgpipe.learning.inference import load_model, predict
from mgpipe.learning.samples import make_loader, model_samples
from mgpipe.runtime import pick_device, seed_everything, set_threads
from mgpipe.stages.clips import MANIFEST_COLUMNS, probe_video

log = logging.getLogger(__name__)


@dataclass
class Windows:
    starts: np.ndarray  # first frame of each window
    ends: np.ndarray    # last frame (inclusive)
    fps: float
    times: np.ndarray | None = None   # each frame's seconds (a variable-rate video); None: i / fps

    def seconds(self, frames) -> np.ndarray:
        """Seconds at which frame indexes begin (index len(times) = the end of the last frame)."""
        frames = np.asarray(frames)
        if self.times is None:
            return frames / self.fps
        ends = np.append(self.times, self.times[-1] + 1 / self.fps)
        return ends[np.clip(frames, 0, len(self.times))]


def windows(num_frames: int, fps: float, length_s: float | None, stride_s: float | None,
            times: np.ndarray | None = None) -> Windows:
    """One window over the whole video, or windows of length_s every stride_s seconds (the last
    one flush with the end, so every frame is covered). With `times` (a variable-rate video's
    frame times) a window holds the frames whose times fall in its seconds, not a fixed count."""
    if num_frames <= 0:
        raise ValueError("video has no frames")
    if times is not None:
        return _timed_windows(np.asarray(times, float), fps, length_s, stride_s)
    if length_s is None:
        return Windows(np.array([0]), np.array([num_frames - 1]), fps)
    length = max(1, int(round(length_s * fps)))
    stride = max(1, int(round((stride_s or length_s / 2) * fps)))
    if length >= num_frames:
        return Windows(np.array([0]), np.array([num_frames - 1]), fps)
    starts = list(range(0, num_frames - length + 1, stride))
    if starts[-1] + length < num_frames:
        starts.append(num_frames - length)
    starts = np.array(starts)
    return Windows(starts, starts + length - 1, fps)


def _timed_windows(times: np.ndarray, fps: float, length_s, stride_s) -> Windows:
    n = len(times)
    duration = times[-1] + 1 / fps
    if length_s is None or length_s >= duration:
        return Windows(np.array([0]), np.array([n - 1]), fps, times)
    stride_s = stride_s or length_s / 2
    begin = list(np.arange(0.0, duration - length_s + 1e-9, stride_s))
    if begin[-1] + length_s < duration - 1e-9:
        begin.append(duration - length_s)   # flush with the end
    begin = np.asarray(begin)
    starts = np.searchsorted(times, begin - 1e-9, side="left")
    ends = np.searchsorted(times, begin + length_s - 1e-9, side="left") - 1
    keep = ends >= starts   # a gap longer than a window holds no frame
    spans = np.unique(np.stack([starts[keep], ends[keep]], 1), axis=0)
    return Windows(spans[:, 0], spans[:, 1], fps, times)


def _manifest(video: Path, probe: dict, win: Windows) -> pd.DataFrame:
    vid = video.stem
    rows = [{"clip_id": f"{vid}_{s:06d}_{e:06d}", "video_id": vid, "video": str(video),
             "start_frame": int(s), "end_frame": int(e), "num_frames": int(e - s + 1),
             "label": 0, "label_id": 0, "class_name": "", "subject_id": 0, "split": "test",
             "width": probe["width"], "height": probe["height"], "fps": probe["fps"]}
            for s, e in zip(win.starts, win.ends)]
    return pd.DataFrame(rows, columns=MANIFEST_COLUMNS)


def _classes(checkpoint, ckpt: dict, classes_csv=None) -> pd.DataFrame:
    """The model's class table (its checkpoint's record); a --classes table must be the same."""
    classes = checkpoints.record(ckpt, checkpoint)["classes"]
    if classes_csv is not None:
        checkpoints.check_classes(ckpt, checkpoint, checkpoints.class_table(classes_csv), classes_csv)
    return pd.DataFrame({"label": range(len(classes)), "label_id": [int(c["label_id"]) for c in classes],
                         "name": [str(c["name"]) for c in classes]})


def check_options(*, k=5, window_s=None, stride_s=None, threshold=0.5) -> None:
    """predict's numbers, refused in one line where they mean nothing (NaN, infinite, <= 0)."""
    for flag, value in (("--window", window_s), ("--stride", stride_s)):
        if value is not None and not (math.isfinite(value) and value > 0):
            raise InputError(f"{flag} {value}: a length in seconds must be a positive finite number")
    if not (math.isfinite(threshold) and 0 <= threshold <= 1):
        raise InputError(f"--threshold {threshold}: a probability between 0 and 1 is expected")
    if not k >= 1:
        raise InputError(f"--top-k {k}: at least 1")


def _fit_inputs(checkpoint, ckpt, spec, config: dict, given) -> dict:
    """The config with the model's input settings and keypoint layout (see checkpoints.fit_config):
    a pose.layout the config sets must be the model's; left out, the model's is used."""
    config = checkpoints.fit_config(ckpt, checkpoint, config, given)
    if given is None or "pose.layout" in given:
        checkpoints.check_layout(ckpt, checkpoint, spec, get_layout(config["pose"]["layout"]),
                                 "the config's pose.layout")
    else:
        config["pose"]["layout"] = dict(checkpoints.record(ckpt, checkpoint)["layout"])
    return config


def video_probabilities(video, checkpoint, config: dict, *, skeletons=None, window_s=None,
                        stride_s=None, threads=1, work_dir=None, progress=True, given=None, loaded=None):
    """Class probabilities [W, K] of each window (one window = the whole video by default),
    the windows, and the model's name. The model's input settings and layout are used
    (`given`: the dotted keys the user's config sets; None: all, each held to the model's).
    `loaded`: the checkpoint's (model, checkpoint dict, spec) where the caller holds them."""
    from mgpipe.stages.decode import build_frame_store
    from mgpipe.stages.pose import build_keypoint_store

    video = Path(video)
    if not video.is_file():
        raise InputError(f"{video}: video not found")
    set_threads(threads)
    seed_everything(config["seed"])
    model, ckpt, spec = loaded or load_model(checkpoint)
    name = spec.name
    config = _fit_inputs(checkpoint, ckpt, spec, config, given)
    probe = probe_video(video)
    if not probe["frames"]:
        raise InputError(f"{video}: the container reports no frames")
    # a variable-rate video's windows hold the frames of their seconds (mgpipe.sources.video)
    if window_s is not None and "times" not in probe:
        probe = probe_video(video, timestamps=True)
    times = probe["times"] if probe.get("variable") else None
    win = windows(probe["frames"], probe["fps"], window_s, stride_s, times)
    manifest = _manifest(video, probe, win)
    pose = config["pose"]
    if pose["backend"] in ("openpose", "pickle") and skeletons is None:
        raise InputError(f"{video}: pose.backend is {pose['backend']}: give the video's keypoints "
                         "with --skeletons, or use a config whose pose.backend runs a pose model "
                         "(mediapipe, mmpose)")
    with tempfile.TemporaryDirectory(prefix="mgpipe-predict-", dir=work_dir) as tmp:
        tmp = Path(tmp)
        frames_h5 = tmp / "frames.h5"
        need_frames = spec.frame_input is not None or reads_frames(pose["backend"])
        if need_frames:
            build_frame_store(manifest, frames_h5, max_side=config["decode"]["max_side"],
                              quality=config["decode"]["jpeg_quality"], threads=1, progress=progress)
        build_keypoint_store(manifest, skeletons, tmp / "keypoints.h5", backend=pose["backend"],
                             frames_h5=frames_h5 if need_frames else None, layout=pose["layout"],
                             low_score=pose["low_score"], threads=threads, python=pose["python"],
                             options=pose["options"], pickle_layout=pose["pickle_layout"],
                             outlier_margin=pose["outlier_margin"], progress=progress)
        data = model_samples(spec, config, manifest, "test", train=False, frames_h5=frames_h5,
                             keypoints_h5=tmp / "keypoints.h5", views=config["test"]["views"],
                             flip=config["test"]["flip"])
        offset = imbalance.logit_offset(ckpt, checkpoint, config["test"]["logit_adjust"])
        probs = _model_probs(model, spec, data, config, progress, offset, source=checkpoint)
    return probs, win, name


def _model_probs(model, spec, data, config, progress, logit_offset=None, source="the model") -> np.ndarray:
    device = pick_device(config["train"]["device"])
    model.to(device)
    loader = make_loader(data, config["test"]["batch_size"], device=device, workers=0)
    streams = predict(model, spec, loader, device, progress=progress, desc=spec.name,
                      logit_offset=logit_offset, source=source)
    return specs.combine_streams(streams).numpy()  # a fused network's streams 1:1


def top_k(probs: np.ndarray, classes: pd.DataFrame, k: int) -> pd.DataFrame:
    order = np.argsort(-probs)[:k]
    return pd.DataFrame({"rank": range(1, len(order) + 1), "label_id": classes.label_id.to_numpy()[order],
                         "class": classes.name.to_numpy()[order], "probability": probs[order]})


def owned_spans(win: Windows) -> tuple[np.ndarray, np.ndarray]:
    """The stretch of video each window speaks for, in frames [start, end): from halfway to its
    left neighbour's centre to halfway to its right neighbour's (the first and last reach the
    video's ends). Overlapping windows thus give segments that do not overlap."""
    centres = (win.starts + win.ends + 1) / 2
    cuts = np.concatenate([[0], (centres[:-1] + centres[1:]) / 2, [win.ends.max() + 1]])
    cuts = np.round(cuts).astype(int)
    return cuts[:-1], cuts[1:]


def spot_segments(probs: np.ndarray, win: Windows, classes: pd.DataFrame, *, threshold=0.5,
                  ignore=()) -> pd.DataFrame:
    """Runs of consecutive windows whose top class is the same confident gesture -> segments
    (start and end in frames and seconds, class, mean probability, number of windows)."""
    top, conf = probs.argmax(1), probs.max(1)
    label_ids = classes.label_id.to_numpy()
    hit = (conf >= threshold) & ~np.isin(label_ids[top], list(ignore))
    lo, hi = owned_spans(win)
    rows, i = [], 0
    while i < len(top):
        if not hit[i]:
            i += 1
            continue
        j = i
        while j + 1 < len(top) and hit[j + 1] and top[j + 1] == top[i]:
            j += 1
        s, e = int(lo[i]), int(hi[j]) - 1
        rows.append({"start_frame": s, "end_frame": e, "start_s": round(float(win.seconds(s)), 3),
                     "end_s": round(float(win.seconds(e + 1)), 3), "label_id": int(label_ids[top[i]]),
                     "class": classes.name.iloc[top[i]], "probability": round(float(conf[i:j + 1].mean()), 4),
                     "windows": j - i + 1})
        i = j + 1
    return pd.DataFrame(rows, columns=["start_frame", "end_frame", "start_s", "end_s", "label_id",
                                       "class", "probability", "windows"])


def plot_timeline(probs: np.ndarray, win: Windows, classes: pd.DataFrame, segments: pd.DataFrame,
                  path, *, threshold: float, title: str, show: int = 5) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    centres = (win.seconds(win.starts) + win.seconds(win.ends + 1)) / 2
    shown = np.argsort(-probs.max(0))[:show]
    cmap = plt.get_cmap("tab20")
    colour = {k: cmap(k % 20) for k in range(len(classes))}  # fixed per class across plots
    fig, (ax, bar) = plt.subplots(2, 1, figsize=(10, 4.2), sharex=True,
                                  gridspec_kw={"height_ratios": [3, 1]})
    for k in shown:
        ax.plot(centres, probs[:, k], marker=".", color=colour[int(k)], label=str(classes.name.iloc[k]))
    ax.axhline(threshold, color="grey", ls="--", lw=0.8)
    ax.set_ylabel("probability")
    ax.set_ylim(0, 1.02)
    ax.set_title(title, parse_math=False)  # names and file names shown as written, not as mathtext
    for text in ax.legend(fontsize=7, ncol=min(show, 5), loc="upper right").get_texts():
        text.set_parse_math(False)
    label_index = {int(v): i for i, v in enumerate(classes.label_id)}
    for seg in segments.itertuples():
        k = label_index[int(seg.label_id)]
        bar.axvspan(seg.start_s, seg.end_s, color=colour[k], alpha=0.85)
        bar.text((seg.start_s + seg.end_s) / 2, 0.5, str(seg._6), ha="center", va="center",
                 fontsize=7, rotation=90 if seg.end_s - seg.start_s < 2.0 else 0, parse_math=False)
    duration = float(win.seconds(win.ends.max() + 1))
    bar.set_xlim(0, duration)
    bar.set_yticks([])
    bar.set_xlabel("time (s)")
    bar.set_ylabel("spotted", rotation=0, ha="right", va="center")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def predict_video(video, checkpoint, config: dict, *, classes_csv=None, skeletons=None, k=5, spot=False,
        window_s=2.0, stride_s=0.5, threshold=0.5, ignore=(), out_dir=None, threads=1,
        progress=True, given=None) -> dict:
    """Predict (top-k over the whole video) or spot (timeline). Writes into out_dir when given:
    prediction.json, and with spot timeline.csv, windows.csv, timeline.png. Classes are the
    model's (its checkpoint's record; classes_csv, if given, must be the same table)."""
    check_options(k=k, window_s=window_s if spot else None, stride_s=stride_s if spot else None,
                  threshold=threshold)
    classes = _classes(checkpoint, checkpoints.load(checkpoint), classes_csv)
    unknown = sorted(set(ignore) - set(classes.label_id))
    if unknown:
        raise InputError(f"--ignore {unknown[0]}: the model has no class of that label id "
                         f"(its ids: {', '.join(map(str, classes.label_id))})")
    probs, win, name = video_probabilities(
        video, checkpoint, config, skeletons=skeletons, window_s=window_s if spot else None,
        stride_s=stride_s, threads=threads, progress=progress, given=given)
    result = {"video": str(video), "model": name}
    if not spot:
        table = top_k(probs[0], classes, k)
        result["top_k"] = table.to_dict("records")
        if out_dir:
            write_json(Path(out_dir) / "prediction.json", _plain(result))
        return result | {"table": table}
    segments = spot_segments(probs, win, classes, threshold=threshold, ignore=ignore)
    per_window = pd.DataFrame({"start_frame": win.starts, "end_frame": win.ends,
                               "start_s": np.round(win.seconds(win.starts), 3),
                               "end_s": np.round(win.seconds(win.ends + 1), 3)})
    per_window = pd.concat([per_window, pd.DataFrame(probs, columns=[str(n) for n in classes.name])], axis=1)
    result.update(windows=len(per_window), segments=segments.to_dict("records"))
    if out_dir:
        out_dir = Path(out_dir)
        for frame, fname in ((segments, "timeline.csv"), (per_window, "windows.csv")):
            with atomic_path(out_dir / fname) as tmp:
                frame.to_csv(tmp, index=False, float_format="%.4f")
        plot_timeline(probs, win, classes, segments, out_dir / "timeline.png", threshold=threshold,
                      title=f"{Path(video).name}: {name}, {len(segments)} micro-gesture(s)")
        write_json(out_dir / "prediction.json", _plain(result))
    return result | {"table": segments}


def _plain(obj):
    """JSON-safe copy (numpy scalars -> Python)."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj
