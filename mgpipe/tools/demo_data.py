"""Seeded generator of the bundled demo data set, shaped like iMiGUE.

Nothing binary is committed: `generate()` renders one long H.264 video per synthetic subject
(a seated upper body drawn with Pillow, making micro-gestures separated by idle gaps), writes
per-frame OpenPose BODY_25 JSON with realistic detector noise, an iMiGUE-style label table, a
cross-subject split and a class table. The output is a pure function of the arguments: every
video draws from its own random streams derived from (seed, video index), so the result does
not depend on the order in which the videos are made or on the size of the process pool.

Coordinates. Poses are built in "body units" (1.0 = frame height at body scale 1), with the
origin at the mid hip, x to the image right and y down. The subject faces the camera, so the
subject's RIGHT side is on the image LEFT (negative x), as in OpenPose output. Body coordinates
are mapped to pixels by a per-subject scale and offset plus a small whole-body sway rotation.
"""

from __future__ import annotations

import colorsys
import csv
import io
import json
import math
import multiprocessing
import os
import re
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from mgpipe.io import atomic_path, write_text
from mgpipe.layouts import BODY25
from mgpipe.sources.skeleton_io import OPENPOSE_SUFFIX, openpose_frame_path

# class id -> class name (iMiGUE keeps 99 for the non-gesture class). The classes come in
# near pairs, as real micro-gestures do: nose / mouth / chin are hand spots a few pixels apart
# whose hand shapes differ (a fingertip, a flat palm, a fist under the chin), the ear sits just
# below where the head is scratched, and folded hands rest where rubbing hands move. Keypoints
# alone (no fingers) confuse the spots; a few RGB frames cannot see the motion.
CLASSES: dict[int, str] = {
    1: "scratching head",
    2: "touching nose",
    3: "touching chin",
    4: "crossing arms",
    5: "shrugging",
    6: "rubbing hands",
    7: "covering mouth",
    8: "touching ear",
    9: "folding hands",
    99: "non-gesture",
}
# Segments of each class per video, as a multiple of `segments_per_class`: as uneven as
# iMiGUE's counts, where the non-gesture class is the largest and some gestures are rare.
CLASS_SHARE: dict[int, float] = {1: 1.5, 2: 1.0, 3: 1.0, 4: 1.0, 5: 0.5, 6: 1.0, 7: 1.0, 8: 0.5,
                                 9: 0.5, 99: 2.0}
LABEL_COLUMNS = [
    "video_id", "label_id", "start_time", "start_frame", "end_time", "end_frame", "class",
    "subject_id", "subject_gender", "subject_nationality", "win_or_lose",
]
J = {name: i for i, name in enumerate(BODY25.joints)}
# Joints the renderer produces (everything above the thighs); legs and feet stay (0, 0, 0).
UPPER_JOINTS = tuple(J[n] for n in (
    "nose", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder",
    "left_elbow", "left_wrist", "mid_hip", "right_hip", "left_hip", "right_eye", "left_eye",
    "right_ear", "left_ear",
))

# Detector-noise model of the keypoint files.
P_EMPTY_FRAME = 0.02
P_MISSING_JOINT = 0.03
P_LOW_CONF_JOINT = 0.06

SKIN_TONES = ((255, 224, 196), (241, 194, 125), (224, 172, 105), (198, 134, 66),
              (161, 102, 52), (111, 72, 42))
HAIR_COLOURS = ((30, 24, 20), (60, 40, 25), (100, 70, 40), (150, 110, 60), (200, 170, 110),
                (90, 90, 90))
NATIONALITIES = ("Spain", "Serbia", "Switzerland", "USA", "Russia", "France", "Germany",
                 "Japan", "China", "Australia", "UK", "Italy", "Argentina", "Canada", "Croatia")
PATTERNS = ("plain", "vstripes", "hstripes", "sponsors", "gradient")


# --------------------------------------------------------------------------- subjects


@dataclass(frozen=True)
class Appearance:
    """Colours and static scenery of one subject (hashable: the background is cached on it)."""

    skin: tuple[int, int, int]
    shirt: tuple[int, int, int]
    hair: tuple[int, int, int]
    long_hair: bool
    background: tuple[int, int, int]
    background2: tuple[int, int, int]
    pattern: str
    pattern_step: float  # fraction of the frame height
    pattern_offset: float  # fraction of one step
    chair: tuple[int, int, int]
    chair_box: tuple[float, float, float, float]  # x0, y0, x1, y1 as fractions of width/height
    # A press-conference microphone in front of the body (it hides what moves behind it):
    # (x, top y, head radius) as fractions of width/height/height, or None.
    microphone: tuple[float, float, float] | None = None


@dataclass(frozen=True)
class Body:
    """Geometry and motion style of one subject."""

    unit: float  # pixels per body unit (scale * frame height)
    cx: float  # pixel x of the mid hip
    hip_y: float  # pixel y of the mid hip
    shoulder_f: float  # shoulder/hip width factor
    head_f: float  # head size factor
    speed: float  # motion tempo (1 = nominal; 1.4 = 40 % faster)
    right_handed: float  # probability that a one-hand gesture uses the right hand
    breath_hz: float
    breath_phase: float
    sway_hz: float
    sway_phase: float
    sway_deg: float
    head_hz: float
    head_phase: float
    rest_elbow: tuple[float, float]  # right arm, body units (left arm mirrored)
    rest_wrist: tuple[float, float]


def _colour_dist(a, b) -> float:
    return float(np.linalg.norm(np.asarray(a, float) - np.asarray(b, float)))


def _hsv(h, s, v) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, s, v)
    return int(round(r * 255)), int(round(g * 255)), int(round(b * 255))


def make_subject(rng: np.random.Generator, width: int, height: int) -> tuple[Appearance, Body]:
    """Draw one subject's appearance and body from `rng`."""
    base = SKIN_TONES[int(rng.integers(len(SKIN_TONES)))]
    skin = tuple(int(np.clip(c + rng.integers(-10, 11), 0, 255)) for c in base)
    # Shirt and background must stand apart from the skin (hands are read against them).
    for _ in range(100):
        shirt = _hsv(rng.random(), rng.uniform(0.35, 0.9), rng.uniform(0.25, 0.9))
        if _colour_dist(shirt, skin) > 110:
            break
    for _ in range(100):
        bg = _hsv(rng.random(), rng.uniform(0.05, 0.45), rng.uniform(0.35, 0.9))
        if _colour_dist(bg, skin) > 90 and _colour_dist(bg, shirt) > 70:
            break
    shade = rng.uniform(0.75, 0.9) if rng.random() < 0.5 else rng.uniform(1.1, 1.25)
    bg2 = tuple(int(np.clip(c * shade, 0, 255)) for c in bg)
    scale = rng.uniform(0.6, 1.05)  # camera distance
    unit = scale * height
    cx = width * (0.5 + rng.uniform(-0.12, 0.12))
    hip_y = height * rng.uniform(0.93, 0.985)
    chair_w = 0.55 * unit
    chair_top = hip_y - 0.62 * unit
    appearance = Appearance(
        skin=skin,
        shirt=shirt,
        hair=HAIR_COLOURS[int(rng.integers(len(HAIR_COLOURS)))],
        long_hair=bool(rng.random() < 0.35),
        background=bg,
        background2=bg2,
        pattern=PATTERNS[int(rng.integers(len(PATTERNS)))],
        pattern_step=float(rng.uniform(0.08, 0.2)),
        pattern_offset=float(rng.random()),
        chair=_hsv(rng.random(), rng.uniform(0.1, 0.4), rng.uniform(0.12, 0.3)),
        chair_box=((cx - chair_w / 2) / width, chair_top / height, (cx + chair_w / 2) / width, 1.0),
        microphone=((float((cx + rng.uniform(-0.2, 0.2) * unit) / width),
                     float((hip_y - rng.uniform(0.28, 0.4) * unit) / height), float(0.03 * unit / height))
                    if rng.random() < 0.6 else None),
    )
    body = Body(
        unit=float(unit),
        cx=float(cx),
        hip_y=float(hip_y),
        shoulder_f=float(rng.uniform(0.92, 1.08)),
        head_f=float(rng.uniform(0.92, 1.08)),
        speed=float(rng.uniform(0.7, 1.4)),
        right_handed=float(0.85 if rng.random() < 0.8 else 0.15),
        breath_hz=float(rng.uniform(0.2, 0.35)),
        breath_phase=float(rng.uniform(0, 2 * np.pi)),
        sway_hz=float(rng.uniform(0.05, 0.15)),
        sway_phase=float(rng.uniform(0, 2 * np.pi)),
        sway_deg=float(rng.uniform(0.5, 1.5)),
        head_hz=float(rng.uniform(0.08, 0.2)),
        head_phase=float(rng.uniform(0, 2 * np.pi)),
        rest_elbow=(float(-0.22 + rng.uniform(-0.015, 0.015)), float(-0.21 + rng.uniform(-0.02, 0.02))),
        rest_wrist=(float(-0.11 + rng.uniform(-0.02, 0.02)), float(-0.06 + rng.uniform(-0.02, 0.02))),
    )
    return appearance, body


# --------------------------------------------------------------------------- trajectories


def smoothstep(x: float) -> float:
    x = min(max(x, 0.0), 1.0)
    return x * x * (3.0 - 2.0 * x)


def envelope(u: float, attack: float, release: float) -> float:
    """Approach / hold / retreat weight in [0, 1] at segment phase u in [0, 1]."""
    if u < attack:
        return smoothstep(u / attack)
    if u > 1.0 - release:
        return smoothstep((1.0 - u) / release)
    return 1.0


@dataclass
class ArmTarget:
    """Where one arm goes during a gesture (right-arm coordinates; mirrored for the left arm).

    anchor "body": relative to the mid hip; "head": relative to the head centre (the hand
    follows the head when it moves)."""

    elbow: tuple[float, float]
    wrist: tuple[float, float]
    wrist_anchor: str = "body"
    weight: float = 0.0


@dataclass
class Controls:
    """Everything a segment sets on top of the idle pose at one frame."""

    right: ArmTarget | None = None
    left: ArmTarget | None = None
    lift: float = 0.0  # shoulder lift (body units, up)
    pitch: float = 0.0  # head nod, +1 = down
    yaw: float = 0.0  # head turn, +1 = towards image right
    roll: float = 0.0  # head tilt, radians
    lean: float = 0.0  # extra whole-body rotation, radians
    shift: float = 0.0  # lateral body shift, body units
    front: str = "right"  # arm drawn last
    hands: dict = field(default_factory=dict)  # side -> hand shape ("point", "palm", "folded"; else a fist)


# Gesture poses of the RIGHT arm (image left); the left arm uses the mirror image.
_SCRATCH = ((-0.28, -0.58), (-0.085, -0.045), "head")
_NOSE = ((-0.19, -0.38), (-0.045, 0.085), "head")
_CHIN = ((-0.18, -0.29), (-0.04, 0.185), "head")
_CROSS_A = ((-0.13, -0.23), (0.08, -0.28), "body")
_CROSS_B = ((-0.13, -0.25), (0.08, -0.31), "body")
_SHRUG = ((-0.21, -0.25), (-0.37, -0.19), "body")
_RUB = ((-0.21, -0.22), (-0.065, -0.31), "body")
_MOUTH = ((-0.2, -0.35), (-0.06, 0.115), "head")  # the wrist 0.03 below touching the nose
_EAR = ((-0.28, -0.53), (-0.105, 0.01), "head")  # just below and outside the scratching hand
_FOLD = ((-0.2, -0.2), (-0.05, -0.285), "body")  # where the hands rub, a little lower and closer


def segment_params(rng: np.random.Generator, label: int, right_handed: float = 0.5) -> dict:
    """Per-segment random variation (hand, timing, amplitude, phase, target jitter); a one-hand
    gesture uses the right hand with probability `right_handed` (the subject's handedness)."""
    return {
        "hand": "right" if rng.random() < right_handed else "left",
        "attack": float(rng.uniform(0.15, 0.27)),
        "release": float(rng.uniform(0.15, 0.27)),
        "amp": float(rng.uniform(0.6, 1.1)),  # micro-gestures are small
        "freq": float(rng.uniform(0.8, 1.2)),
        "phase": float(rng.uniform(0, 2 * np.pi)),
        "jitter": [float(v) for v in rng.uniform(-0.012, 0.012, 8)],
        "sign": 1.0 if rng.random() < 0.5 else -1.0,
        "variant": int(rng.integers(4)),
    }


def _target(spec, jitter, weight, k=0) -> ArmTarget:
    (ex, ey), (wx, wy), anchor = spec
    j = jitter[4 * k: 4 * k + 4]
    return ArmTarget((ex + j[0], ey + j[1]), (wx + j[2], wy + j[3]), anchor, weight)


def _shift(t: ArmTarget, dx=0.0, dy=0.0, elbow_frac=0.4) -> ArmTarget:
    t.wrist = (t.wrist[0] + dx, t.wrist[1] + dy)
    t.elbow = (t.elbow[0] + elbow_frac * dx, t.elbow[1] + elbow_frac * dy)
    return t


def gesture_controls(label: int, u: float, t: float, p: dict) -> Controls:
    """Controls of class `label` at segment phase u in [0, 1] and segment time t (seconds,
    already multiplied by the subject's tempo), with per-segment parameters p."""
    e = envelope(u, p["attack"], p["release"])
    hold = e * e  # oscillations only near the hold
    w = 2 * np.pi * p["freq"] * t + p["phase"]
    a = p["amp"]
    jit = p["jitter"]
    c = Controls()
    active = p["hand"]
    if label == 1:  # scratching head: hand on top of the head, rubbing back and forth
        arm = _shift(_target(_SCRATCH, jit, e), 0.022 * a * hold * math.sin(2.6 * w),
                     0.008 * a * hold * math.sin(5.2 * w))
        setattr(c, active, arm)
        c.roll = math.radians(4.0) * e * (1 if active == "right" else -1)
        c.pitch = 0.25 * e
    elif label == 2:  # touching nose: fingertips at the nose, small rub
        arm = _shift(_target(_NOSE, jit, e), 0.006 * a * hold * math.sin(3.0 * w),
                     0.006 * a * hold * math.cos(3.0 * w), elbow_frac=0.2)
        setattr(c, active, arm)
        c.pitch = 0.1 * e
        c.hands[active] = "point"
    elif label == 3:  # hand on chin: the chin rests on the hand, slow thinking nod
        arm = _shift(_target(_CHIN, jit, e), 0.0, 0.005 * a * hold * math.sin(1.2 * w), elbow_frac=0.2)
        setattr(c, active, arm)
        c.pitch = (0.3 + 0.1 * hold * math.sin(1.2 * w)) * e
        c.roll = math.radians(3.0) * e * (1 if active == "right" else -1)
    elif label == 4:  # crossing arms: both forearms across the belly, hands at the other side
        first, second = (_CROSS_A, _CROSS_B) if p["sign"] > 0 else (_CROSS_B, _CROSS_A)
        c.right = _target(first, jit, e, 0)
        c.left = _target(second, jit, e, 1)
        c.front = "right" if p["sign"] > 0 else "left"
        c.lean = math.radians(1.0) * e * p["sign"]
    elif label == 5:  # shrugging: shoulders up, forearms open outwards, back down
        lift_env = envelope(u, p["attack"] * 1.2, p["release"] * 1.2)
        c.right = _target(_SHRUG, jit, e, 0)
        c.left = _target(_SHRUG, jit, e, 1)
        c.lift = 0.045 * a * lift_env
        c.roll = math.radians(4.0) * lift_env * p["sign"]
        c.pitch = -0.15 * lift_env
    elif label == 6:  # rubbing hands in front of the chest
        s = 0.022 * a * hold * math.sin(3.0 * w)
        c.right = _shift(_target(_RUB, jit, e, 0), 0.004 * a * hold * math.cos(3.0 * w), s, 0.3)
        c.left = _shift(_target(_RUB, jit, e, 1), 0.004 * a * hold * math.cos(3.0 * w), -s, 0.3)
    elif label == 7:  # covering mouth: a flat palm over the mouth, held still
        arm = _shift(_target(_MOUTH, jit, e), 0.003 * a * hold * math.sin(1.5 * w), 0.0, elbow_frac=0.2)
        setattr(c, active, arm)
        c.pitch = 0.15 * e
        c.hands[active] = "palm"
    elif label == 8:  # touching ear: fingertips at the ear lobe, a small tug
        arm = _shift(_target(_EAR, jit, e), 0.0, 0.005 * a * hold * math.sin(2.0 * w), elbow_frac=0.2)
        setattr(c, active, arm)
        c.roll = math.radians(2.0) * e * (1 if active == "right" else -1)
        c.hands[active] = "point"
    elif label == 9:  # folding hands: fingers interlaced in front of the belly, still
        c.right = _target(_FOLD, jit, e, 0)
        c.left = _target(_FOLD, jit, e, 1)
        c.hands = {"right": "folded", "left": "folded"}
    elif label == 99:  # non-gesture: nod, posture shift, hand adjustment on the lap, look aside
        v = p["variant"]
        if v == 0:
            c.pitch = 0.5 * a * e * math.sin(2 * np.pi * 1.5 * u * (1 + p["freq"]))
        elif v == 1:
            c.lean = math.radians(3.0) * a * e * p["sign"]
            c.shift = 0.02 * a * e * p["sign"]
            c.roll = -math.radians(2.0) * e * p["sign"]
        elif v == 2:
            arm = ArmTarget((-0.20 + jit[0], -0.20 + jit[1]), (-0.03 + jit[2], -0.09 + jit[3]), "body", e)
            setattr(c, active, arm)
        else:
            c.yaw = 0.6 * a * e * p["sign"]
            c.roll = math.radians(2.0) * e * p["sign"]
    else:
        raise ValueError(f"unknown class {label}")
    return c


# --------------------------------------------------------------------------- pose


@dataclass
class Pose:
    """One frame's figure in pixels: BODY_25 joints (NaN where not rendered) plus what the
    renderer needs beyond keypoints."""

    joints: np.ndarray  # [25, 2] float
    head_center: np.ndarray  # [2]
    head_radii: tuple[float, float]  # pixels (x, y) before roll
    head_roll: float  # radians
    mouth: np.ndarray  # [2]
    unit: float  # pixels per body unit
    front: str = "right"
    extra: dict = field(default_factory=dict)


def _rot(v, ang):
    c, s = math.cos(ang), math.sin(ang)
    return np.array([c * v[0] - s * v[1], s * v[0] + c * v[1]])


def body_pose(body: Body, controls: Controls, t: float) -> Pose:
    """The subject's pose at global time t (seconds) under `controls` (idle motion added)."""
    sf, hf = body.shoulder_f, body.head_f
    breath = 0.004 * math.sin(2 * np.pi * body.breath_hz * t + body.breath_phase)
    up = breath + controls.lift
    neck = np.array([0.0, -0.46 - up])
    shoulders = {"right": np.array([-0.16 * sf, -0.44 - up]), "left": np.array([0.16 * sf, -0.44 - up])}
    hips = {"right": np.array([-0.10 * sf, 0.0]), "left": np.array([0.10 * sf, 0.0])}
    # Head: roll about the top of the neck, nod (pitch) and turn (yaw) move the face features.
    rx, ry = 0.075 * hf, 0.095 * hf
    idle = math.sin(2 * np.pi * body.head_hz * t + body.head_phase)
    roll = controls.roll + math.radians(1.5) * idle
    pitch, yaw = controls.pitch, controls.yaw + 0.08 * idle
    neck_top = neck + np.array([0.0, -0.085])
    hc = neck_top + _rot(np.array([0.0, -ry]), roll)

    def head_pt(x, y):
        return hc + _rot(np.array([x, y]), roll)

    fy = 0.025 * pitch
    nose = head_pt(0.035 * yaw * hf, (0.015 + fy) * hf)
    eyes = {"right": head_pt((-0.03 + 0.03 * yaw) * hf, (-0.015 + fy) * hf),
            "left": head_pt((0.03 + 0.03 * yaw) * hf, (-0.015 + fy) * hf)}
    ears = {"right": head_pt((-0.075 + 0.012 * max(yaw, 0)) * hf, (-0.005 - 0.4 * fy) * hf),
            "left": head_pt((0.075 + 0.012 * min(yaw, 0)) * hf, (-0.005 - 0.4 * fy) * hf)}
    mouth = head_pt(0.03 * yaw * hf, (0.05 + 0.8 * fy) * hf)

    arms = {}
    for side, mirror in (("right", 1.0), ("left", -1.0)):
        rest_e = np.array([mirror * body.rest_elbow[0] * sf, body.rest_elbow[1]])
        rest_w = np.array([mirror * body.rest_wrist[0] * sf, body.rest_wrist[1]])
        drift = 0.005 * math.sin(2 * np.pi * body.breath_hz * 0.7 * t + (1 if mirror > 0 else 2))
        rest_w = rest_w + np.array([drift, 0.5 * drift])
        elbow, wrist = rest_e, rest_w
        tgt = getattr(controls, side)
        if tgt is not None and tgt.weight > 0:
            te = np.array([mirror * tgt.elbow[0] * sf, tgt.elbow[1] - up])
            if tgt.wrist_anchor == "head":
                tw = hc + np.array([mirror * tgt.wrist[0] * hf, tgt.wrist[1] * hf])
            else:
                tw = np.array([mirror * tgt.wrist[0] * sf, tgt.wrist[1]])
            elbow = rest_e + tgt.weight * (te - rest_e)
            wrist = rest_w + tgt.weight * (tw - rest_w)
        arms[side] = (elbow, wrist)

    pts = {
        "nose": nose, "neck": neck, "mid_hip": np.zeros(2),
        "right_shoulder": shoulders["right"], "left_shoulder": shoulders["left"],
        "right_elbow": arms["right"][0], "right_wrist": arms["right"][1],
        "left_elbow": arms["left"][0], "left_wrist": arms["left"][1],
        "right_hip": hips["right"], "left_hip": hips["left"],
        "right_eye": eyes["right"], "left_eye": eyes["left"],
        "right_ear": ears["right"], "left_ear": ears["left"],
        "head_center": hc, "mouth": mouth,
    }
    sway = math.radians(body.sway_deg) * math.sin(2 * np.pi * body.sway_hz * t + body.sway_phase)
    ang = sway + controls.lean
    c, s = math.cos(ang), math.sin(ang)
    origin = np.array([body.cx, body.hip_y])

    def to_px(p):
        x, y = p[0] + controls.shift, p[1]
        return origin + body.unit * np.array([c * x - s * y, s * x + c * y])

    joints = np.full((BODY25.num_joints, 2), np.nan)
    for name, p in pts.items():
        if name in J:
            joints[J[name]] = to_px(p)
    return Pose(
        joints=joints,
        head_center=to_px(hc),
        head_radii=(rx * body.unit, ry * body.unit),
        head_roll=roll + ang,
        mouth=to_px(mouth),
        unit=body.unit,
        front=controls.front,
        extra={"hands": dict(controls.hands)},
    )


# --------------------------------------------------------------------------- rendering


def _darker(c, f=0.7):
    return tuple(int(v * f) for v in c)


@lru_cache(maxsize=16)
def _background(appearance: Appearance, width: int, height: int) -> Image.Image:
    img = Image.new("RGB", (width, height), appearance.background)
    d = ImageDraw.Draw(img)
    step = max(4, int(round(appearance.pattern_step * height)))
    off = int(appearance.pattern_offset * step)
    c2 = appearance.background2
    if appearance.pattern == "vstripes":
        for x in range(-step + off, width, step):
            d.rectangle([x, 0, x + step // 2 - 1, height], fill=c2)
    elif appearance.pattern == "hstripes":
        for y in range(-step + off, height, step):
            d.rectangle([0, y, width, y + step // 3], fill=c2)
    elif appearance.pattern == "sponsors":  # press-conference backdrop: a grid of logos
        for row, y in enumerate(range(-step + off, height, step)):
            for x in range(-step + off + (row % 2) * step // 2, width, step):
                d.rounded_rectangle([x, y + step // 4, x + step * 2 // 3, y + step * 3 // 4],
                                    radius=max(1, step // 8), fill=c2)
    elif appearance.pattern == "gradient":
        a = np.asarray(appearance.background, float)
        b = np.asarray(c2, float)
        ramp = np.linspace(0.0, 1.0, height)[:, None, None]
        arr = (a + (b - a) * ramp) * np.ones((1, width, 1))
        img = Image.fromarray(arr.round().astype(np.uint8), "RGB")
        d = ImageDraw.Draw(img)
    x0, y0, x1, y1 = appearance.chair_box
    d.rounded_rectangle([x0 * width, y0 * height, x1 * width, y1 * height + 20],
                        radius=max(2, int(0.05 * height)), fill=appearance.chair)
    return img


def _ellipse_poly(center, rx, ry, ang, n=24, scale=1.0, keep=None):
    pts = []
    c, s = math.cos(ang), math.sin(ang)
    for k in range(n):
        th = 2 * math.pi * k / n
        x, y = rx * scale * math.cos(th), ry * scale * math.sin(th)
        if keep is not None and not keep(x / rx, y / ry):
            continue
        pts.append((center[0] + c * x - s * y, center[1] + s * x + c * y))
    return pts


def _limb(d: ImageDraw.ImageDraw, a, b, width: float, colour):
    w = max(1, int(round(width)))
    d.line([tuple(a), tuple(b)], fill=colour, width=w)
    r = w / 2
    for p in (a, b):
        d.ellipse([p[0] - r, p[1] - r, p[0] + r, p[1] + r], fill=colour)


def _hand(d: ImageDraw.ImageDraw, elbow, wrist, unit, skin, shape: str = "fist"):
    """One hand beyond the wrist, along the forearm: a fist, a pointing finger, a flat palm
    or interlaced fingers. The shape is what keypoints without fingers cannot see."""
    v = np.asarray(wrist) - np.asarray(elbow)
    n = float(np.linalg.norm(v))
    v = v / n if n > 1e-6 else np.array([0.0, 1.0])
    w = np.asarray(wrist)
    ang = math.atan2(v[1], v[0])
    dark = _darker(skin, 0.72)
    if shape == "point":
        d.polygon(_ellipse_poly(w + 0.025 * unit * v, 0.035 * unit, 0.026 * unit, ang, n=16),
                  fill=skin, outline=dark)
        _limb(d, w + 0.04 * unit * v, w + 0.085 * unit * v, 0.014 * unit, skin)
    elif shape == "palm":
        d.polygon(_ellipse_poly(w + 0.05 * unit * v, 0.068 * unit, 0.043 * unit, ang, n=20),
                  fill=skin, outline=dark)
    else:
        centre = w + 0.035 * unit * v
        d.polygon(_ellipse_poly(centre, 0.05 * unit, 0.03 * unit, ang, n=16), fill=skin, outline=dark)
        if shape == "folded":
            across = np.array([-v[1], v[0]]) * 0.022 * unit
            for k in (-1, 0, 1):
                c = centre + k * 0.014 * unit * v
                d.line([tuple(c - across), tuple(c + across)], fill=dark, width=max(1, int(0.006 * unit)))


def render_frame(pose: Pose, appearance: Appearance, width: int, height: int) -> Image.Image:
    """Draw the seated upper body `pose` over the subject's background."""
    img = _background(appearance, width, height).copy()
    d = ImageDraw.Draw(img)
    jt = pose.joints
    u = pose.unit
    skin, shirt = appearance.skin, appearance.shirt
    skin_dark = _darker(skin, 0.72)
    hc, (rx, ry), roll = pose.head_center, pose.head_radii, pose.head_roll

    # Long hair falls behind the head onto the shoulders.
    if appearance.long_hair:
        d.polygon(_ellipse_poly(hc + _rot(np.array([0.0, 0.45 * ry]), roll), rx * 1.2, ry * 1.5, roll,
                                n=20), fill=appearance.hair)
    # Torso: shirt polygon from the shoulders down past the hips, rounded shoulders.
    rs, ls = jt[J["right_shoulder"]], jt[J["left_shoulder"]]
    rh, lh = jt[J["right_hip"]], jt[J["left_hip"]]
    neck = jt[J["neck"]]
    down = np.array([0.0, 0.2 * u])
    side = 0.035 * u
    torso = [tuple(rs + [-side * 0.6, 0.02 * u]), tuple(neck + [-0.05 * u, -0.012 * u]),
             tuple(neck + [0.05 * u, -0.012 * u]), tuple(ls + [side * 0.6, 0.02 * u]),
             tuple(lh + [side, 0]), tuple(lh + [side, 0] + down), tuple(rh + [-side, 0] + down),
             tuple(rh + [-side, 0])]
    d.polygon(torso, fill=shirt)
    for p in (rs, ls):
        r = 0.036 * u
        d.ellipse([p[0] - r, p[1] - r + 0.02 * u, p[0] + r, p[1] + r + 0.02 * u], fill=shirt)
    # Neck, collar opening.
    neck_top = hc + _rot(np.array([0.0, ry * 0.8]), roll)
    _limb(d, neck, neck_top, 0.06 * u, skin)
    d.polygon([tuple(neck + [-0.035 * u, -0.01 * u]), tuple(neck + [0.035 * u, -0.01 * u]),
               tuple(neck + [0.0, 0.04 * u])], fill=skin)
    # Ears, head, hair, face.
    for name in ("right_ear", "left_ear"):
        p = jt[J[name]]
        d.ellipse([p[0] - 0.015 * u, p[1] - 0.025 * u, p[0] + 0.015 * u, p[1] + 0.022 * u],
                  fill=skin, outline=skin_dark)
    d.polygon(_ellipse_poly(hc, rx, ry, roll), fill=skin, outline=skin_dark)
    d.polygon(_ellipse_poly(hc, rx, ry, roll, scale=1.08, keep=lambda x, y: y < -0.3),
              fill=appearance.hair)
    er = max(1.0, 0.01 * u)
    for name in ("right_eye", "left_eye"):
        p = jt[J[name]]
        d.ellipse([p[0] - er * 1.3, p[1] - er, p[0] + er * 1.3, p[1] + er], fill=(35, 30, 30))
    nose = jt[J["nose"]]
    bridge = (jt[J["right_eye"]] + jt[J["left_eye"]]) / 2
    d.line([tuple(bridge + 0.3 * (nose - bridge)), tuple(nose)], fill=skin_dark,
           width=max(1, int(round(0.014 * u))))
    d.ellipse([nose[0] - er, nose[1] - er * 0.7, nose[0] + er, nose[1] + er * 0.7], fill=skin_dark)
    m = pose.mouth
    mv = _rot(np.array([0.022 * u, 0.0]), roll)
    d.line([tuple(m - mv), tuple(m + mv)], fill=(150, 60, 60), width=max(1, int(round(0.01 * u))))
    # Arms: short sleeves (shirt upper arm, skin forearm); the front arm last; hands on top.
    order = ("left", "right") if pose.front == "right" else ("right", "left")
    for s in order:
        sh, el, wr = jt[J[f"{s}_shoulder"]], jt[J[f"{s}_elbow"]], jt[J[f"{s}_wrist"]]
        _limb(d, el, wr, 0.05 * u, skin)
        mid = sh + 0.6 * (el - sh)
        _limb(d, sh, mid, 0.07 * u, shirt)
        _limb(d, mid, el, 0.06 * u, skin)
        _limb(d, sh, mid, 0.07 * u, shirt)
    hands = pose.extra.get("hands", {})
    for s in order:
        _hand(d, jt[J[f"{s}_elbow"]], jt[J[f"{s}_wrist"]], u, skin, hands.get(s, "fist"))
    if appearance.microphone is not None:  # in front of everything
        mx, my, mr = appearance.microphone
        mx, my, mr = mx * width, my * height, mr * height
        d.rectangle([mx - 0.25 * mr, my, mx + 0.25 * mr, height], fill=(40, 40, 44))
        d.ellipse([mx - mr, my - 1.4 * mr, mx + mr, my + 0.6 * mr], fill=(25, 25, 28))
    return img


# --------------------------------------------------------------------------- keypoints


def noisy_keypoints(pose: Pose, rng: np.random.Generator, width: int, height: int,
                    jitter_px: float = 1.5) -> tuple[list[float] | None, int, int]:
    """OpenPose-like detection of `pose`: (75 floats or None for an empty frame, missing, low).

    The same number of random values is drawn on every call, so the stream stays aligned."""
    n = len(UPPER_JOINTS)
    empty = rng.random() < P_EMPTY_FRAME
    kind = rng.random(n)
    c_hi = rng.uniform(0.6, 0.95, n)
    c_lo = rng.uniform(0.05, 0.3, n)
    noise = rng.normal(size=(n, 2))
    if empty:
        return None, 0, 0
    kp = np.zeros((BODY25.num_joints, 3))
    missing = low = 0
    for k, j in enumerate(UPPER_JOINTS):
        x, y = pose.joints[j]
        if kind[k] < P_MISSING_JOINT:
            missing += 1
            continue
        is_low = kind[k] < P_MISSING_JOINT + P_LOW_CONF_JOINT
        conf, sd = (c_lo[k], 3.5 * jitter_px) if is_low else (c_hi[k], jitter_px)
        x, y = x + sd * noise[k, 0], y + sd * noise[k, 1]
        if not (0 <= x < width and 0 <= y < height):  # off-frame: not detected
            missing += 1
            continue
        low += int(is_low)
        kp[j] = (round(float(x), 3), round(float(y), 3), round(float(conf), 6))
    return [float(v) for v in kp.reshape(-1)], missing, low


def openpose_json(keypoints: list[float] | None) -> str:
    people = []
    if keypoints is not None:
        people.append({
            "person_id": [-1], "pose_keypoints_2d": keypoints, "face_keypoints_2d": [],
            "hand_left_keypoints_2d": [], "hand_right_keypoints_2d": [], "pose_keypoints_3d": [],
            "face_keypoints_3d": [], "hand_left_keypoints_3d": [], "hand_right_keypoints_3d": [],
        })
    return json.dumps({"version": 1.3, "people": people}, separators=(",", ":"))


# --------------------------------------------------------------------------- videos


def frame_time(frame: int, fps: int) -> str:
    """Seconds of a frame index at fps as a decimal number with 4 places, as the real iMiGUE
    table writes them (6.8553)."""
    return f"{frame / fps:.4f}"


def class_counts(segments_per_class: int) -> dict[int, int]:
    """Segments of each class in one video (CLASS_SHARE; every class at least once)."""
    return {lab: max(1, int(round(segments_per_class * CLASS_SHARE[lab]))) for lab in CLASSES}


def plan_video(rng: np.random.Generator, body: Body, segments_per_class: int) -> tuple[list[dict], int]:
    """Seeded order and timing of the labelled segments: (segments, total frames)."""
    labels = [lab for lab, n in class_counts(segments_per_class).items() for _ in range(n)]
    order = rng.permutation(len(labels))
    frame = int(rng.integers(6, 21))
    segments = []
    for i in order:
        label = labels[int(i)]
        n = max(8, int(round(int(rng.integers(32, 65)) / body.speed)))
        segments.append({"label": label, "start": frame, "end": frame + n - 1,
                         "params": segment_params(rng, label, body.right_handed)})
        frame += n + int(rng.integers(6, 21))
    return segments, frame


def video_poses(body: Body, segments: list[dict], total: int, fps: int):
    """Yield the Pose of every frame of a planned video."""
    by_frame = {}
    for seg in segments:
        for f in range(seg["start"], seg["end"] + 1):
            by_frame[f] = seg
    for f in range(total):
        seg = by_frame.get(f)
        if seg is None:
            controls = Controls()
        else:
            n = seg["end"] - seg["start"] + 1
            i = f - seg["start"]
            controls = gesture_controls(seg["label"], i / max(1, n - 1), i / fps * body.speed, seg["params"])
        yield body_pose(body, controls, f / fps)


def _subject_meta(rng: np.random.Generator) -> dict:
    return {
        "subject_gender": "female" if rng.random() < 0.5 else "male",
        "subject_nationality": NATIONALITIES[int(rng.integers(len(NATIONALITIES)))],
        "win_or_lose": "win" if rng.random() < 0.5 else "lose",
    }


def _video_rngs(seed: int, index: int):
    ss = np.random.SeedSequence([seed, index])
    plan_ss, noise_ss, meta_ss = ss.spawn(3)
    return np.random.default_rng(plan_ss), np.random.default_rng(noise_ss), np.random.default_rng(meta_ss)


def _make_video(job: dict) -> dict:
    """Render, encode and annotate one subject's video (runs in a worker process)."""
    import av  # imported here: workers only

    seed, index, fps = job["seed"], job["index"], job["fps"]
    width, height = job["width"], job["height"]
    out = Path(job["out_dir"])
    vid = f"v{index:03d}"
    plan_rng, noise_rng, meta_rng = _video_rngs(seed, index)
    appearance, body = make_subject(plan_rng, width, height)
    segments, total = plan_video(plan_rng, body, job["segments_per_class"])
    meta = _subject_meta(meta_rng)
    jitter_px = float(noise_rng.uniform(1.0, 2.0))

    skel_dir = out / "skeletons" / vid
    skel_dir.mkdir(parents=True, exist_ok=True)
    written = set()
    missing = low = empty = 0
    video_path = out / "videos" / f"{vid}.mp4"
    with atomic_path(video_path) as tmp:
        with av.open(str(tmp), "w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=fps, options={
                "crf": "23", "preset": "veryfast", "threads": "1", "x264-params": "threads=1:sliced-threads=0"})
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.codec_context.thread_count = 1
            for f, pose in enumerate(video_poses(body, segments, total, fps)):
                img = render_frame(pose, appearance, width, height)
                frame = av.VideoFrame.from_ndarray(np.asarray(img), format="rgb24")
                for packet in stream.encode(frame):
                    container.mux(packet)
                kp, m, lo = noisy_keypoints(pose, noise_rng, width, height, jitter_px)
                empty += kp is None
                missing += m
                low += lo
                name = openpose_frame_path(skel_dir.parent, vid, f).name
                with atomic_path(skel_dir / name) as jtmp:
                    jtmp.write_text(openpose_json(kp))
                written.add(name)
            for packet in stream.encode():
                container.mux(packet)
    for stale in skel_dir.glob(f"*{OPENPOSE_SUFFIX}"):  # left by an earlier, longer run
        if stale.name not in written:
            stale.unlink()

    # The real iMiGUE layout: `class` is the class id, label_id the running number of the
    # segment within its video.
    rows = []
    for number, seg in enumerate(sorted(segments, key=lambda g: g["start"]), start=1):
        rows.append({
            "video_id": vid, "label_id": number,
            "start_time": frame_time(seg["start"], fps), "start_frame": seg["start"],
            "end_time": frame_time(seg["end"], fps), "end_frame": seg["end"],
            "class": seg["label"], "subject_id": index + 1, **meta,
        })
    return {"video_id": vid, "frames": total, "rows": rows, "empty": empty, "missing": missing,
            "low": low}


def cross_subject_split(subject_ids: list[int], seed: int) -> dict[int, str]:
    """Seeded cross-subject split: about 1/4 test, 1/8 validation, the rest training."""
    n = len(subject_ids)
    n_test = max(1, round(n / 4)) if n >= 2 else 0
    n_val = max(1, round(n / 8)) if n >= 3 else 0
    rng = np.random.default_rng(np.random.SeedSequence([seed, 2**31 - 1]))
    perm = [subject_ids[int(i)] for i in rng.permutation(n)]
    out = {s: "test" for s in perm[:n_test]}
    out.update({s: "val" for s in perm[n_test:n_test + n_val]})
    out.update({s: "train" for s in perm[n_test + n_val:]})
    return out


def _csv_text(columns: list[str], rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def generate(out_dir, *, seed: int, num_subjects: int, segments_per_class: int, width: int,
             height: int, fps: int, progress: bool = True, processes: int | None = None) -> dict:
    """Write the demo data set into out_dir and return counts (see the module docstring).

    seed is the config's seed, the other settings those of dataset.demo."""
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if num_subjects < 1 or segments_per_class < 1:
        raise ValueError("num_subjects and segments_per_class must be at least 1")
    if width < 64 or height < 48 or width % 2 or height % 2:
        raise ValueError(f"width and height must be even and at least 64x48, got {width}x{height}")
    if not isinstance(fps, (int, np.integer)) or fps < 1:
        raise ValueError(f"fps must be a positive integer, got {fps!r}")
    from mgpipe.runtime import progress as progress_bar

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ids = [f"v{i:03d}" for i in range(num_subjects)]
    # Remove videos and skeleton folders of an earlier run with more subjects.
    for sub, pattern in (("videos", "*.mp4"), ("skeletons", "*")):
        for p in (out / sub).glob(pattern) if (out / sub).is_dir() else ():
            stem = p.stem if p.suffix == ".mp4" else p.name
            if re.fullmatch(r"v\d{3,}", stem) and stem not in ids:
                shutil.rmtree(p) if p.is_dir() else p.unlink()
    jobs = [{"seed": int(seed), "index": i, "out_dir": str(out), "segments_per_class": segments_per_class,
             "width": width, "height": height, "fps": int(fps)} for i in range(num_subjects)]
    if processes is None:
        processes = min(4, os.cpu_count() or 1)
    processes = max(1, min(processes, num_subjects))
    results = []
    with progress_bar(total=num_subjects, desc="demo videos", unit="video", enabled=progress) as bar:
        if processes == 1:
            for job in jobs:
                results.append(_make_video(job))
                bar.update()
        else:
            ctx = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=processes, mp_context=ctx) as pool:
                for r in pool.map(_make_video, jobs):
                    results.append(r)
                    bar.update()
    results.sort(key=lambda r: r["video_id"])

    rows = [row for r in results for row in r["rows"]]
    split = cross_subject_split(list(range(1, num_subjects + 1)), int(seed))
    write_text(out / "classes.csv", _csv_text(["label_id", "name"],
                                              [{"label_id": k, "name": v} for k, v in CLASSES.items()]))
    write_text(out / "split.csv", _csv_text(["subject_id", "split"],
                                            [{"subject_id": s, "split": split[s]} for s in sorted(split)]))
    write_text(out / "labels.csv", _csv_text(LABEL_COLUMNS, rows))
    counts = {
        "videos": len(results),
        "frames": sum(r["frames"] for r in results),
        "segments": len(rows),
        "empty_pose_frames": sum(r["empty"] for r in results),
        "missing_joints": sum(r["missing"] for r in results),
        "low_confidence_joints": sum(r["low"] for r in results),
    }
    n_split = {k: sum(v == k for v in split.values()) for k in ("train", "val", "test")}
    write_text(out / "README.txt", (
        "Synthetic micro-gesture demo data for mgpipe, shaped like the iMiGUE data set. It was "
        f"generated by mgpipe.tools.demo_data.generate(seed={int(seed)}, num_subjects={num_subjects}, "
        f"segments_per_class={segments_per_class}, width={width}, height={height}, fps={int(fps)}) "
        "and is a pure function of those arguments: nothing here was recorded from real people. "
        f"It holds {counts['videos']} H.264 videos (one rendered seated subject each, "
        f"{counts['frames']} frames in all) in videos/, per-frame OpenPose BODY_25 JSON with "
        f"simulated detector noise in skeletons/ ({counts['empty_pose_frames']} frames with nobody "
        f"detected, {counts['missing_joints']} missing and {counts['low_confidence_joints']} "
        f"low-confidence joints), {counts['segments']} labelled segments of {len(CLASSES)} classes "
        "in labels.csv (iMiGUE columns, inclusive frame ranges), the class table in classes.csv and "
        f"a cross-subject split in split.csv ({n_split['train']} train, {n_split['val']} val, "
        f"{n_split['test']} test subjects).\n"))
    return counts
