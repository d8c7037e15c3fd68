"""Pose on real footage, measured: what the pose stage found in a JHMDB run's keypoint store.

    python benchmarks/jhmdb_pose.py RESULTS [--pictures docs/jhmdb_pose] [--markdown out.md]

RESULTS is a results folder of benchmarks/jhmdb.yaml (clips.csv, frames.h5, keypoints.h5). It
prints, per class, the share of frames with a person found, and, by the tags HMDB51 gives every
clip in its name (`_<body>_<camera>_np<people>_<view>_<quality>_<n>`: visible body f(ull),
u(pper), l(ower), h(ead); number of people np1/np2/np3), the same share, how often the tracked
person jumps (a probable switch to another person), and the bodies cut by the frame: frames with
a joint outside the picture (or within 2 px of its edge) and joints under pose.low_score (0.3).
With --pictures it draws the tracked skeleton on the middle frame of one clip per class (the
first test clip of the class) into one grid image, the picture the pose models are fed.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import numpy as np
import pandas as pd

from mgpipe.formats import frames as frame_store
from mgpipe.formats import keypoints as keypoint_store
from mgpipe.layouts import get_layout

# HMDB51's clip name tags (its README): body part in view, camera motion, people, view, quality.
HMDB_TAGS = re.compile(r"_(?P<body>[fulh])_(?P<camera>cm|nm)_np(?P<people>\d)_(?P<view>fr|ba|le|ri)"
                       r"_(?P<quality>bad|med|goo)_\d+$")
BODY_NAMES = {"f": "full", "u": "upper", "l": "lower", "h": "head"}
LOW_SCORE = 0.3      # pose.low_score's default: the stage log counts joints under it
EDGE_PX = 2.0        # a joint this close to the border is at it (MediaPipe clamps nothing)
# A tracked centre moving by more than this share of the frame diagonal between two frames with
# a person (1/30 s apart) is no body's motion: the tracker has moved to someone else (or lost
# and re-found a person elsewhere).
JUMP_SHARE = 0.2


def hmdb_tags(video_id: str) -> dict:
    match = HMDB_TAGS.search(video_id)
    if not match:
        return {"body": "untagged", "people": "untagged"}
    return {"body": BODY_NAMES[match["body"]], "people": f"np{match['people']}"}


def clip_figures(kp: np.ndarray, width: int, height: int) -> dict:
    """Figures of one clip's tracked person kp [T, V, 3] in a width x height frame."""
    present = kp[..., 2] > 0                          # [T, V]
    found = present.any(1)                            # a person in the frame
    xy = kp[..., :2]
    outside = present & ((xy[..., 0] < EDGE_PX) | (xy[..., 0] > width - EDGE_PX)
                         | (xy[..., 1] < EDGE_PX) | (xy[..., 1] > height - EDGE_PX))
    centres = np.array([xy[t][present[t]].mean(0) for t in np.flatnonzero(found)]).reshape(-1, 2)
    steps = np.linalg.norm(np.diff(centres, axis=0), axis=1) if len(centres) > 1 else np.zeros(0)
    jumps = int((steps > JUMP_SHARE * np.hypot(width, height)).sum())
    return {
        "frames": len(kp),
        "found": int(found.sum()),
        "cut": int(outside.any(1)[found].sum()),
        "joints": int(found.sum() * kp.shape[1]),
        "low": int(((kp[..., 2] < LOW_SCORE) & found[:, None]).sum()),
        "jumps": jumps,
    }


def measure(results: Path) -> pd.DataFrame:
    """One row per clip: action (class name), split, HMDB tags and clip_figures()."""
    manifest = pd.read_csv(results / "clips.csv")
    store = keypoint_store.Reader(results / "keypoints.h5")
    rows = []
    for r in manifest.itertuples():
        kp, width, height = store.clip(r.clip_id)
        rows.append({"clip_id": r.clip_id, "video_id": r.video_id, "action": r.class_name,
                     "split": r.split, **hmdb_tags(str(r.video_id)),
                     **clip_figures(kp[0], width, height)})
    return pd.DataFrame(rows)


def summary(table: pd.DataFrame, by: str) -> pd.DataFrame:
    g = table.groupby(by, sort=True)
    out = pd.DataFrame({
        "clips": g.size(),
        "frames": g.frames.sum(),
        "person found": g.found.sum() / g.frames.sum(),
        "clips never found": g.apply(lambda d: int((d.found == 0).sum()), include_groups=False),
        "cut by frame": g.cut.sum() / g.found.sum().clip(lower=1),
        "joints < 0.3": g.low.sum() / g.joints.sum().clip(lower=1),
        "clips with a jump": g.apply(lambda d: int((d.jumps > 0).sum()), include_groups=False),
    })
    return out


def markdown(frame: pd.DataFrame, index_name: str) -> str:
    cols = [index_name, *frame.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for key, *row in frame.itertuples():
        cells = [str(key)] + [f"{v:.3f}" if isinstance(v, float) else str(v) for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def draw_grid(results: Path, table: pd.DataFrame, out: Path, tile=(200, 150), columns=7) -> Path:
    """The tracked skeleton on the middle frame of each class's first test clip, one grid PNG:
    joints red (score >= 0.3) or yellow (lower), limbs green or orange."""
    from PIL import Image, ImageDraw

    frames = frame_store.Reader(results / "frames.h5")
    store = keypoint_store.Reader(results / "keypoints.h5")
    layout = get_layout(store.layout) if not hasattr(store.layout, "limbs") else store.layout
    picks = (table[table.split == "test"].sort_values("clip_id").groupby("action", sort=True).head(1))
    rows = -(-len(picks) // columns)
    grid = Image.new("RGB", (tile[0] * columns, tile[1] * rows), "black")
    for i, r in enumerate(picks.itertuples()):
        kp, width, height = store.clip(r.clip_id)
        t = kp.shape[1] // 2
        image = frames.frames(r.clip_id, [t])[0].convert("RGB").resize((width, height))
        draw = ImageDraw.Draw(image)
        person = kp[0, t]
        ok = person[:, 2] > 0
        for a, b in layout.limbs:
            if ok[a] and ok[b]:
                good = min(person[a, 2], person[b, 2]) >= LOW_SCORE
                draw.line([tuple(person[a, :2]), tuple(person[b, :2])],
                          fill=(0, 255, 0) if good else (255, 160, 0), width=2)
        for x, y, s in person[ok]:
            colour = (255, 0, 0) if s >= LOW_SCORE else (255, 255, 0)
            draw.ellipse([x - 2.5, y - 2.5, x + 2.5, y + 2.5], fill=colour)
        draw.rectangle([0, 0, width, 18], fill=(0, 0, 0))
        draw.text((4, 3), f"{r.action}  person in {r.found}/{r.frames} frames", fill=(255, 255, 255))
        image = image.resize(tile, Image.BILINEAR)
        grid.paste(image, ((i % columns) * tile[0], (i // columns) * tile[1]))
    out.mkdir(parents=True, exist_ok=True)
    path = out / "classes_grid.png"
    grid.quantize(colors=128).save(path, optimize=True)
    return path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("results", type=Path, help="results folder of benchmarks/jhmdb.yaml")
    p.add_argument("--pictures", type=Path, help="folder for the per-class keypoint picture grid")
    p.add_argument("--markdown", type=Path, help="also write the tables to this Markdown file")
    args = p.parse_args(argv)
    table = measure(args.results)
    found = table.found.sum() / table.frames.sum()
    parts = [f"{len(table)} clips, {int(table.frames.sum())} frames: person found in "
             f"{found:.3f} of the frames; {int((table.found == 0).sum())} clips with nobody found",
             "### By class\n\n" + markdown(summary(table, "action"), "class"),
             "### By people in the clip (HMDB51 tag np)\n\n" + markdown(summary(table, "people"), "people"),
             "### By visible body (HMDB51 tag)\n\n" + markdown(summary(table, "body"), "body")]
    text = "\n\n".join(parts)
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n")
    if args.pictures:
        print(f"picture grid: {draw_grid(args.results, table, args.pictures)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
