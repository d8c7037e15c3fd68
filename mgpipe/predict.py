"""`mgpipe predict`: a trained model on a new video, and `--spot`: micro-gestures along a long one.

The video goes through the same stage code as training data (decode, pose with the configured
backend, the test-time sampler that renders the heatmaps), in a scratch folder, so a prediction sees exactly
what the model saw in training. With --spot, overlapping windows slide over the video; each is
classified, and runs of windows that agree on a confident class become timeline segments.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from . import specs
from .inference import load_model, predict
from .pose_backends import reads_frames
from .clips import MANIFEST_COLUMNS, probe_video, read_classes
from .samples import make_loader, model_samples
from .io import InputError, atomic_path, write_json
from .runtime import pick_device, seed_everything, set_threads

log = logging.getLogger(__name__)


@dataclass
class Windows:
    starts: np.ndarray  # first frame of each window
    ends: np.ndarray    # last frame (inclusive)
    fps: float


def windows(num_frames: int, fps: float, length_s: float | None, stride_s: float | None) -> Windows:
    """One window over the whole video, or windows of length_s every stride_s seconds (the last
    one flush with the end, so every frame is covered)."""
    if num_frames <= 0:
        raise ValueError("video has no frames")
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


def _manifest(video: Path, probe: dict, win: Windows) -> pd.DataFrame:
    vid = video.stem
    rows = [{"clip_id": f"{vid}_{s:06d}_{e:06d}", "video_id": vid, "video": str(video),
             "start_frame": int(s), "end_frame": int(e), "num_frames": int(e - s + 1),
             "label": 0, "label_id": 0, "class_name": "", "subject_id": 0, "split": "test",
             "width": probe["width"], "height": probe["height"], "fps": probe["fps"]}
            for s, e in zip(win.starts, win.ends)]
    return pd.DataFrame(rows, columns=MANIFEST_COLUMNS)


def _classes(path, num_classes: int) -> pd.DataFrame:
    if path is None:
        return pd.DataFrame({"label": range(num_classes), "label_id": range(num_classes),
                             "name": [str(k) for k in range(num_classes)]})
    if not Path(path).is_file():
        raise InputError(f"{path}: class table not found (give --classes)")
    classes = read_classes(path)
    if len(classes) != num_classes or not {"label_id", "name"} <= set(classes.columns):
        raise InputError(f"{path}: class table with columns label_id, name and {num_classes} rows "
                         f"expected (the model has {num_classes} outputs)")
    return classes


def default_classes(checkpoint) -> Path | None:
    """results/<name>/classes.csv for a model at results/<name>/models/<model>/model.pt."""
    candidate = Path(checkpoint).resolve().parent.parent.parent / "classes.csv"
    return candidate if candidate.is_file() else None


def video_probabilities(video, checkpoint, config: dict, *, skeletons=None, window_s=None,
                        stride_s=None, threads=1, work_dir=None, progress=True):
    """Class probabilities [W, K] of each window (one window = the whole video by default),
    the windows, and the model's name."""
    from .decode import build_frame_store
    from .pose import build_keypoint_store

    video = Path(video)
    if not video.is_file():
        raise InputError(f"{video}: video not found")
    set_threads(threads)
    seed_everything(config["seed"])
    model, ckpt, spec = load_model(checkpoint)
    name = spec.name
    probe = probe_video(video)
    if not probe["frames"]:
        raise InputError(f"{video}: the container reports no frames")
    win = windows(probe["frames"], probe["fps"], window_s, stride_s)
    manifest = _manifest(video, probe, win)
    pose = config["pose"]
    if pose["backend"] in ("openpose", "pickle") and skeletons is None:
        raise InputError(f"{video}: pose.backend is {pose['backend']}: give the video's keypoints "
                         "with --skeletons, or use a config whose pose.backend runs a pose model "
                         "(mediapipe, mmpose)")
    modalities = spec.modalities(config, False)
    with tempfile.TemporaryDirectory(prefix="mgpipe-predict-", dir=work_dir) as tmp:
        tmp = Path(tmp)
        frames_h5 = tmp / "frames.h5"
        need_frames = "rgb" in modalities or reads_frames(pose["backend"])
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
        probs = _model_probs(model, spec, data, config, progress)
    return probs, win, name


def _model_probs(model, spec, data, config, progress) -> np.ndarray:
    device = pick_device(config["train"]["device"])
    model.to(device)
    loader = make_loader(data, config["test"]["batch_size"], device=device, workers=0)
    streams = predict(model, spec, loader, device, progress=progress, desc=spec.name)
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
        rows.append({"start_frame": s, "end_frame": e, "start_s": round(s / win.fps, 3),
                     "end_s": round((e + 1) / win.fps, 3), "label_id": int(label_ids[top[i]]),
                     "class": classes.name.iloc[top[i]], "probability": round(float(conf[i:j + 1].mean()), 4),
                     "windows": j - i + 1})
        i = j + 1
    return pd.DataFrame(rows, columns=["start_frame", "end_frame", "start_s", "end_s", "label_id",
                                       "class", "probability", "windows"])


def spot_metrics(segments: pd.DataFrame, truth: pd.DataFrame, iou: float = 0.3) -> dict:
    """Spotting quality against labelled segments (start_frame, end_frame, label_id): a spotted
    segment is a hit when it has the label's class and a temporal IoU >= iou with a labelled
    segment not yet matched (best IoU first)."""
    used, tp = set(), 0
    for t in truth.itertuples():
        best = None
        for j, s in enumerate(segments.itertuples()):
            if j in used or s.label_id != t.label_id:
                continue
            inter = min(s.end_frame, t.end_frame) - max(s.start_frame, t.start_frame) + 1
            union = max(s.end_frame, t.end_frame) - min(s.start_frame, t.start_frame) + 1
            score = max(inter, 0) / union
            if score >= iou and (best is None or score > best[1]):
                best = (j, score)
        if best is not None:
            used.add(best[0])
            tp += 1
    return {"true_positives": tp, "spotted": len(segments), "labelled": len(truth),
            "precision": tp / len(segments) if len(segments) else 0.0,
            "recall": tp / len(truth) if len(truth) else 0.0}


def plot_timeline(probs: np.ndarray, win: Windows, classes: pd.DataFrame, segments: pd.DataFrame,
                  path, *, threshold: float, title: str, show: int = 5) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    centres = (win.starts + win.ends + 1) / 2 / win.fps
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
    ax.set_title(title)
    ax.legend(fontsize=7, ncol=min(show, 5), loc="upper right")
    label_index = {int(v): i for i, v in enumerate(classes.label_id)}
    for seg in segments.itertuples():
        k = label_index[int(seg.label_id)]
        bar.axvspan(seg.start_s, seg.end_s, color=colour[k], alpha=0.85)
        bar.text((seg.start_s + seg.end_s) / 2, 0.5, str(seg._6), ha="center", va="center",
                 fontsize=7, rotation=90 if seg.end_s - seg.start_s < 2.0 else 0)
    duration = (win.ends.max() + 1) / win.fps
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
        progress=True) -> dict:
    """Predict (top-k over the whole video) or spot (timeline). Writes into out_dir when given:
    prediction.json, and with spot timeline.csv, windows.csv, timeline.png."""
    probs, win, name = video_probabilities(
        video, checkpoint, config, skeletons=skeletons, window_s=window_s if spot else None,
        stride_s=stride_s, threads=threads, progress=progress)
    classes = _classes(classes_csv or default_classes(checkpoint), probs.shape[1])
    result = {"video": str(video), "model": name}
    if not spot:
        table = top_k(probs[0], classes, k)
        result["top_k"] = table.to_dict("records")
        if out_dir:
            write_json(Path(out_dir) / "prediction.json", _plain(result))
        return result | {"table": table}
    segments = spot_segments(probs, win, classes, threshold=threshold, ignore=ignore)
    per_window = pd.DataFrame({"start_frame": win.starts, "end_frame": win.ends,
                               "start_s": np.round(win.starts / win.fps, 3),
                               "end_s": np.round((win.ends + 1) / win.fps, 3)})
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
