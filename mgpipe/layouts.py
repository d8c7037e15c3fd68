"""Keypoint layouts: joint names, limbs (skeleton edges) and left/right flip maps.

Flip maps are derived from the names (left_* <-> right_*), so a new layout only lists
names and limbs and cannot get its flip pairs wrong.

Besides the built-in layouts (LAYOUTS), a config may define its own wherever a layout name is
taken (`pose.layout`, `pose.pickle_layout`): a mapping {name, joints: [...], limbs: [[a, b], ...]}
whose limbs name two joints by index or by name (see `define_layout`). The keypoint store
carries such a layout's joints and limbs (`layout_attrs`), so later stages rebuild it from the
file (`layout_from_attrs`) without the config.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from mgpipe.io import InputError


class LayoutError(InputError, ValueError):
    """An unknown layout name or a bad layout definition (user input: one line, CLI exit 2)."""


@dataclass(frozen=True)
class Layout:
    name: str
    joints: tuple[str, ...]
    limbs: tuple[tuple[int, int], ...]

    @property
    def num_joints(self) -> int:
        return len(self.joints)

    @property
    def num_limbs(self) -> int:
        return len(self.limbs)

    @cached_property
    def flip_index(self) -> np.ndarray:
        """flip_index[j] = the joint that j becomes under a horizontal mirror."""
        pos = {n: i for i, n in enumerate(self.joints)}
        out = np.arange(self.num_joints)
        for i, n in enumerate(self.joints):
            for a, b in (("left_", "right_"), ("right_", "left_")):
                if n.startswith(a):
                    out[i] = pos[b + n[len(a):]]
        return out

    @cached_property
    def limb_flip_index(self) -> np.ndarray:
        """limb_flip_index[l] = the limb that l becomes under a horizontal mirror."""
        pos = {frozenset(e): i for i, e in enumerate(self.limbs)}
        f = self.flip_index
        return np.array([pos[frozenset((int(f[a]), int(f[b])))] for a, b in self.limbs])


COCO17 = Layout(
    "coco17",
    (
        "nose", "left_eye", "right_eye", "left_ear", "right_ear",
        "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
        "left_wrist", "right_wrist", "left_hip", "right_hip",
        "left_knee", "right_knee", "left_ankle", "right_ankle",
    ),
    (
        (0, 1), (0, 2), (1, 3), (2, 4), (0, 5), (0, 6), (5, 6),
        (5, 7), (7, 9), (6, 8), (8, 10), (5, 11), (6, 12), (11, 12),
        (11, 13), (13, 15), (12, 14), (14, 16),
    ),
)

BODY25 = Layout(
    "body25",
    (
        "nose", "neck", "right_shoulder", "right_elbow", "right_wrist",
        "left_shoulder", "left_elbow", "left_wrist", "mid_hip", "right_hip",
        "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle",
        "right_eye", "left_eye", "right_ear", "left_ear", "left_big_toe",
        "left_small_toe", "left_heel", "right_big_toe", "right_small_toe", "right_heel",
    ),
    (
        (0, 1), (1, 2), (2, 3), (3, 4), (1, 5), (5, 6), (6, 7), (1, 8),
        (8, 9), (9, 10), (10, 11), (8, 12), (12, 13), (13, 14), (0, 15),
        (15, 17), (0, 16), (16, 18), (14, 19), (19, 20), (14, 21),
        (11, 22), (22, 23), (11, 24),
    ),
)

LAYOUTS = {layout.name: layout for layout in (COCO17, BODY25)}


def get_layout(spec) -> Layout:
    """A built-in layout by name, or a layout defined by a mapping {name, joints, limbs} (a config's
    own layout; see define_layout). A Layout is returned as it is."""
    if isinstance(spec, Layout):
        return spec
    if isinstance(spec, dict):
        return define_layout(spec)
    try:
        return LAYOUTS[spec]
    except (KeyError, TypeError):
        raise LayoutError(f"unknown keypoint layout {spec!r}; known: {sorted(LAYOUTS)}, or define "
                         "one as {name, joints, limbs}") from None


def convert(keypoints: np.ndarray, src: Layout, dst: Layout) -> np.ndarray:
    """Map [..., src.num_joints, C] keypoints to dst by joint name; joints dst has and src lacks
    come out as zeros (missing: zero coordinates and zero score). Names are matched through
    ALIASES (see canonical_name); shared joints keep their values exactly."""
    keypoints = np.asarray(keypoints)
    if keypoints.ndim < 2 or keypoints.shape[-2] != src.num_joints:
        raise ValueError(f"keypoints of shape {keypoints.shape} do not have {src.num_joints} "
                         f"joints of layout {src.name!r} on axis -2")
    out = np.zeros(keypoints.shape[:-2] + (dst.num_joints, keypoints.shape[-1]), keypoints.dtype)
    for j, i in joint_mapping(src, dst):
        out[..., j, :] = keypoints[..., i, :]
    return out


# --------------------------------------------------------------------------------------------
# Hands, face and whole-body layouts.
#
# Side prefixes always mean the subject's side (a subject facing the camera has its left side on
# the image's right), as in COCO. Joint names are shared between layouts wherever they denote the
# same body point, so `convert` maps between any two layouts by name; ALIASES covers the few
# points that two layouts name differently.

FINGERS = ("thumb", "index", "middle", "ring", "pinky")
# Both OpenPose's hand model and MediaPipe Hands use the same 21-point hand: the wrist, then per
# finger four points from the palm outwards (thumb: CMC, MCP, IP, tip; others: MCP, PIP, DIP, tip).
_FINGER_POINTS = {"thumb": ("cmc", "mcp", "ip", "tip")}
HAND21 = ("hand_wrist",) + tuple(
    f"{finger}_{point}" for finger in FINGERS
    for point in _FINGER_POINTS.get(finger, ("mcp", "pip", "dip", "tip")))
# wrist -> each finger's chain (OpenPose's hand skeleton)
HAND21_CHAINS = tuple(
    (a, b) for f in range(5) for a, b in zip((0, 1 + 4 * f, 2 + 4 * f, 3 + 4 * f),
                                             (1 + 4 * f, 2 + 4 * f, 3 + 4 * f, 4 + 4 * f)))
# MediaPipe's HAND_CONNECTIONS: finger chains plus the palm outline (not wrist -> every MCP)
MEDIAPIPE_HAND_CONNECTIONS = (
    (0, 1), (1, 2), (2, 3), (3, 4), (0, 5), (5, 6), (6, 7), (7, 8), (5, 9), (9, 10), (10, 11),
    (11, 12), (9, 13), (13, 14), (14, 15), (15, 16), (13, 17), (0, 17), (17, 18), (18, 19),
    (19, 20),
)


def _face70_names() -> tuple[str, ...]:
    """OpenPose's 70-point face: the iBUG-68 points plus the two pupils (68 right, 69 left).

    In iBUG-68, point 0 is on the image's left (the subject's right) and each contour runs left to
    right across the image (eye and lip contours clockwise from their leftmost point), so point i
    of a mirrored pair is the subject's right one. Points with a mirror partner get
    right_<part>/left_<part> names; centre-line points are face_<i>.
    """
    names = [f"face_{i}" for i in range(70)]

    def pair(right: int, left: int, part: str):
        names[right], names[left] = f"right_{part}", f"left_{part}"

    for k in range(1, 9):          # jaw line: 0..16, centre 8; k counts from the chin upwards
        pair(8 - k, 8 + k, f"jaw_{k}")
    for k in range(5):             # brows: 17..21 (outer -> inner) <-> 26..22
        pair(17 + k, 26 - k, f"brow_{k + 1}")
    pair(31, 35, "nose_2")         # nose bottom 31..35, centre 33; 1 = next to the centre
    pair(32, 34, "nose_1")
    eye = {36: "eye_outer", 37: "eye_upper_outer", 38: "eye_upper_inner", 39: "eye_inner",
           40: "eye_lower_inner", 41: "eye_lower_outer"}
    eye_mirror = {36: 45, 37: 44, 38: 43, 39: 42, 40: 47, 41: 46}
    for r, part in eye.items():
        pair(r, eye_mirror[r], part)
    pair(48, 54, "mouth_corner")   # outer lip: 48..54 upper (centre 51), 55..59 lower (centre 57)
    pair(49, 53, "upper_lip_2")
    pair(50, 52, "upper_lip_1")
    pair(59, 55, "lower_lip_2")
    pair(58, 56, "lower_lip_1")
    pair(60, 64, "inner_mouth_corner")  # inner lip: 60..64 upper (centre 62), 65..67 lower (66)
    pair(61, 63, "inner_upper_lip")
    pair(67, 65, "inner_lower_lip")
    pair(68, 69, "pupil")
    return tuple(names)


FACE70 = _face70_names()


def _chain(*idx: int) -> list[tuple[int, int]]:
    return list(zip(idx[:-1], idx[1:]))


FACE70_CONTOURS = tuple(
    _chain(*range(0, 17))                                  # jaw
    + _chain(*range(17, 22)) + _chain(*range(22, 27))      # brows
    + _chain(*range(27, 31)) + _chain(*range(31, 36))      # nose bridge, nose bottom
    + _chain(*range(36, 42), 36) + _chain(*range(42, 48), 42)  # eyes (closed)
    + _chain(*range(48, 60), 48) + _chain(*range(60, 68), 60)  # outer and inner lips (closed)
)


def _offset(limbs, by: int) -> list[tuple[int, int]]:
    return [(a + by, b + by) for a, b in limbs]


def _sided(side: str, names) -> tuple[str, ...]:
    return tuple(f"{side}_{n}" for n in names)


# OpenPose JSON order: pose_keypoints_2d (BODY_25), hand_left, hand_right, face (70).
BODY25_HANDS_FACE = Layout(
    "body25_hands_face",
    BODY25.joints + _sided("left", HAND21) + _sided("right", HAND21) + FACE70,
    tuple(
        list(BODY25.limbs)
        + [(7, 25), (4, 46)]                # body wrist -> hand wrist
        + _offset(HAND21_CHAINS, 25) + _offset(HAND21_CHAINS, 46)
        + _offset(FACE70_CONTOURS, 67)
    ),
)

MEDIAPIPE_POSE33 = (
    "nose", "left_eye_inner", "left_eye", "left_eye_outer", "right_eye_inner", "right_eye",
    "right_eye_outer", "left_ear", "right_ear",
    "left_mouth_corner", "right_mouth_corner",  # MediaPipe's mouth_left / mouth_right
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
    "left_pinky", "right_pinky", "left_index", "right_index", "left_thumb", "right_thumb",
    "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
    "left_heel", "right_heel", "left_foot_index", "right_foot_index",
)
MEDIAPIPE_POSE_CONNECTIONS = (
    (0, 1), (1, 2), (2, 3), (3, 7), (0, 4), (4, 5), (5, 6), (6, 8), (9, 10), (11, 12), (11, 13),
    (13, 15), (15, 17), (15, 19), (15, 21), (17, 19), (12, 14), (14, 16), (16, 18), (16, 20),
    (16, 22), (18, 20), (11, 23), (12, 24), (23, 24), (23, 25), (24, 26), (25, 27), (26, 28),
    (27, 29), (28, 30), (29, 31), (30, 32), (27, 31), (28, 32),
)

# MediaPipe Holistic: 33 pose landmarks, then the left and the right hand (21 each).
MEDIAPIPE33_HANDS = Layout(
    "mediapipe33_hands",
    MEDIAPIPE_POSE33 + _sided("left", HAND21) + _sided("right", HAND21),
    tuple(
        list(MEDIAPIPE_POSE_CONNECTIONS)
        + [(15, 33), (16, 54)]              # pose wrist -> hand wrist
        + _offset(MEDIAPIPE_HAND_CONNECTIONS, 33) + _offset(MEDIAPIPE_HAND_CONNECTIONS, 54)
    ),
)

# Micro-gestures live in the hands and the face: COCO-17 body, 7 face points (brows, outer eye
# corners, mouth corners, chin: the spots hands touch in iMiGUE/SMG classes) and per hand the
# wrist and the five fingertips. The eye corners and mouth corners exist in both OpenPose-face and
# MediaPipe sources; brows and chin only in the OpenPose face (missing after MediaPipe conversion).
MG36_FACE = ("left_brow", "right_brow", "left_eye_outer", "right_eye_outer",
             "left_mouth_corner", "right_mouth_corner", "chin")
MG36_HAND = ("hand_wrist",) + tuple(f"{f}_tip" for f in FINGERS)


def _microgesture36() -> Layout:
    joints = COCO17.joints + MG36_FACE + _sided("left", MG36_HAND) + _sided("right", MG36_HAND)
    at = {n: i for i, n in enumerate(joints)}.__getitem__
    face = [("chin", "left_mouth_corner"), ("left_mouth_corner", "left_eye_outer"),
            ("left_eye_outer", "left_brow"), ("left_brow", "right_brow"),
            ("right_brow", "right_eye_outer"), ("right_eye_outer", "right_mouth_corner"),
            ("right_mouth_corner", "chin")]
    hands = []
    for side in ("left", "right"):
        hands.append((f"{side}_elbow", f"{side}_hand_wrist"))
        hands += [(f"{side}_hand_wrist", f"{side}_{f}_tip") for f in FINGERS]
    limbs = list(COCO17.limbs) + [(at(a), at(b)) for a, b in face + hands]
    return Layout("microgesture36", joints, tuple(limbs))


MICROGESTURE36 = _microgesture36()

# Other names for points that some layout calls differently: alias -> the name used in the other
# layouts. `convert` matches joints by canonical_name, so e.g. MICROGESTURE36's "chin" is filled
# from BODY25_HANDS_FACE's face_8.
ALIASES = {
    "chin": "face_8",
    "left_brow": "left_brow_3",  # the brow's middle point (iBUG 24 / 19)
    "right_brow": "right_brow_3",
    "left_foot_index": "left_big_toe",  # MediaPipe's foot index = the big toe's tip
    "right_foot_index": "right_big_toe",
}


def canonical_name(name: str) -> str:
    return ALIASES.get(name, name)


LAYOUTS.update({layout.name: layout for layout in (BODY25_HANDS_FACE, MEDIAPIPE33_HANDS,
                                                   MICROGESTURE36)})


def joint_mapping(src: Layout, dst: Layout) -> list[tuple[int, int]]:
    """(dst joint, src joint) pairs of the same body point, matched by canonical name."""
    pos = {}
    for i, n in enumerate(src.joints):
        pos.setdefault(canonical_name(n), i)
    return [(j, pos[canonical_name(n)]) for j, n in enumerate(dst.joints)
            if canonical_name(n) in pos]


# --------------------------------------------------------------------------------------------
# Depth-camera skeletons and COCO-WholeBody.
#
# Points shared with the layouts above keep their names ("left_shoulder", "left_wrist", ...).
# "neck" is the centre between the shoulders in every layout (OpenPose's neck, OpenNI's neck,
# Kinect v1's shoulder centre, Kinect v2's spine_shoulder); "mid_hip" is the centre between the
# hips (OpenPose's mid hip, Kinect's hip centre / spine base). A depth camera's "hand" joint is
# the middle of the hand, not the wrist, so it keeps its own name (left_hand).

# OpenNI / NiTE 15 joints, as in KARD: 0 head, 1 neck, 2-4 right shoulder/elbow/hand, 5-7 left,
# 8 torso, 9-11 right hip/knee/foot, 12-14 left.
OPENNI15 = Layout(
    "openni15",
    ("head", "neck", "right_shoulder", "right_elbow", "right_hand", "left_shoulder",
     "left_elbow", "left_hand", "spine_mid", "right_hip", "right_knee", "right_foot",
     "left_hip", "left_knee", "left_foot"),
    ((0, 1), (1, 2), (2, 3), (3, 4), (1, 5), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10),
     (10, 11), (8, 12), (12, 13), (13, 14)),
)

# Kinect v1 SDK (NUI_SKELETON_POSITION_*): hip centre, spine, shoulder centre, head, then per arm
# (left first) shoulder, elbow, wrist, hand, then per leg hip, knee, ankle, foot.
KINECT_V1_20 = Layout(
    "kinect_v1_20",
    ("mid_hip", "spine_mid", "neck", "head",
     "left_shoulder", "left_elbow", "left_wrist", "left_hand",
     "right_shoulder", "right_elbow", "right_wrist", "right_hand",
     "left_hip", "left_knee", "left_ankle", "left_foot",
     "right_hip", "right_knee", "right_ankle", "right_foot"),
    ((0, 1), (1, 2), (2, 3), (2, 4), (4, 5), (5, 6), (6, 7), (2, 8), (8, 9), (9, 10),
     (10, 11), (0, 12), (12, 13), (13, 14), (14, 15), (0, 16), (16, 17), (17, 18), (18, 19)),
)

# Kinect v2 SDK (JointType), the order of NTU RGB+D's 25 joints: 0 spine base, 1 spine mid,
# 2 neck (above the shoulders: "upper_neck" here), 3 head, 4-7 left shoulder/elbow/wrist/hand,
# 8-11 right, 12-15 left hip/knee/ankle/foot, 16-19 right, 20 spine shoulder, 21 left hand tip,
# 22 left thumb, 23 right hand tip, 24 right thumb. Limbs: the ST-GCN / pyskl NTU graph.
KINECT_V2_25 = Layout(
    "kinect_v2_25",
    ("mid_hip", "spine_mid", "upper_neck", "head",
     "left_shoulder", "left_elbow", "left_wrist", "left_hand",
     "right_shoulder", "right_elbow", "right_wrist", "right_hand",
     "left_hip", "left_knee", "left_ankle", "left_foot",
     "right_hip", "right_knee", "right_ankle", "right_foot",
     "neck", "left_hand_tip", "left_thumb", "right_hand_tip", "right_thumb"),
    tuple((a - 1, b - 1) for a, b in (
        (1, 2), (2, 21), (3, 21), (4, 3), (5, 21), (6, 5), (7, 6), (8, 7), (9, 21), (10, 9),
        (11, 10), (12, 11), (13, 1), (14, 13), (15, 14), (16, 15), (17, 1), (18, 17), (19, 18),
        (20, 19), (22, 8), (23, 8), (24, 12), (25, 12))),
)

# COCO-WholeBody (mmpose's whole-body models): 17 COCO body points, 6 foot points (left big toe,
# small toe, heel, then right), the 68 iBUG face points (OpenPose's face without the pupils),
# 21 left-hand and 21 right-hand points in OpenPose's hand order.
COCO_WHOLEBODY133 = Layout(
    "coco_wholebody133",
    COCO17.joints
    + ("left_big_toe", "left_small_toe", "left_heel", "right_big_toe", "right_small_toe",
       "right_heel")
    + FACE70[:68] + _sided("left", HAND21) + _sided("right", HAND21),
    tuple(
        list(COCO17.limbs)
        + [(15, 17), (15, 18), (15, 19), (16, 20), (16, 21), (16, 22)]   # ankle -> foot points
        + _offset(FACE70_CONTOURS, 23)
        + [(9, 91), (10, 112)]                                            # wrist -> hand root
        + _offset(HAND21_CHAINS, 91) + _offset(HAND21_CHAINS, 112)
    ),
)

LAYOUTS.update({layout.name: layout for layout in (OPENNI15, KINECT_V1_20, KINECT_V2_25,
                                                   COCO_WHOLEBODY133)})


# --------------------------------------------------------------------------------------------
# Layouts defined in a config, and layouts carried by a keypoint store.

_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


def define_layout(spec: dict, where: str = "pose layout") -> Layout:
    """A Layout from a mapping {name, joints: [names], limbs: [[a, b], ...]} (a, b: joint indices
    or joint names). Raises ValueError (one line naming `where`) for unknown or repeated joints,
    a left_/right_ joint without its partner (flips are derived from the names), a limb whose
    mirror image is not a limb, or a name that a built-in layout already has with other joints."""
    if not isinstance(spec, dict) or set(spec) - {"name", "joints", "limbs"} \
            or not {"name", "joints", "limbs"} <= set(spec):
        raise LayoutError(f"{where}: a layout definition is a mapping with keys name, joints, limbs")
    name, joints, limbs = spec["name"], spec["joints"], spec["limbs"]
    if not isinstance(name, str) or not _NAME.match(name):
        raise LayoutError(f"{where}: layout name {name!r}: use letters, digits, _ . -")
    if not isinstance(joints, (list, tuple)) or not joints \
            or not all(isinstance(j, str) and j.strip() for j in joints):
        raise LayoutError(f"{where}: layout {name!r}: joints must be a non-empty list of names")
    joints = tuple(joints)
    repeated = sorted({j for j in joints if joints.count(j) > 1})
    if repeated:
        raise LayoutError(f"{where}: layout {name!r}: joint {repeated[0]!r} is listed twice")
    pos = {j: i for i, j in enumerate(joints)}
    for j in joints:
        for a, b in (("left_", "right_"), ("right_", "left_")):
            if j.startswith(a) and b + j[len(a):] not in pos:
                raise LayoutError(f"{where}: layout {name!r}: joint {j!r} has no partner "
                                 f"{b + j[len(a):]!r} (needed to mirror the skeleton)")
    if not isinstance(limbs, (list, tuple)):
        raise LayoutError(f"{where}: layout {name!r}: limbs must be a list of [a, b] pairs")
    edges = []
    for k, limb in enumerate(limbs):
        if not isinstance(limb, (list, tuple)) or len(limb) != 2:
            raise LayoutError(f"{where}: layout {name!r}: limb {k} {limb!r} is not a pair [a, b]")
        ends = []
        for end in limb:
            if isinstance(end, str) and end in pos:
                ends.append(pos[end])
            elif isinstance(end, (int, np.integer)) and not isinstance(end, bool) \
                    and 0 <= end < len(joints):
                ends.append(int(end))
            else:
                raise LayoutError(f"{where}: layout {name!r}: limb {k} {list(limb)!r}: {end!r} is "
                                 f"not one of its {len(joints)} joints (index or name)")
        if ends[0] == ends[1] or frozenset(ends) in {frozenset(e) for e in edges}:
            raise LayoutError(f"{where}: layout {name!r}: limb {k} {list(limb)!r} joins a joint to "
                             "itself or repeats a limb")
        edges.append(tuple(ends))
    layout = Layout(name, joints, tuple(edges))
    try:
        layout.limb_flip_index
    except KeyError:
        flip = layout.flip_index
        for a, b in edges:
            if frozenset((int(flip[a]), int(flip[b]))) not in {frozenset(e) for e in edges}:
                raise LayoutError(f"{where}: layout {name!r}: limb {joints[a]}-{joints[b]} has no "
                                 f"mirror limb {joints[flip[a]]}-{joints[flip[b]]}") from None
    builtin = LAYOUTS.get(name)
    if builtin is not None and (builtin.joints, builtin.limbs) != (layout.joints, layout.limbs):
        raise LayoutError(f"{where}: layout name {name!r} is a built-in layout; give yours "
                         "another name")
    return layout


def layout_attrs(layout: Layout) -> dict:
    """Attributes that let a store's reader rebuild its layout: the name, plus joints and limbs
    (JSON) for a layout that is not built in."""
    out = {"layout": layout.name}
    if LAYOUTS.get(layout.name) != layout:
        out["layout_joints"] = json.dumps(list(layout.joints))
        out["layout_limbs"] = json.dumps([list(e) for e in layout.limbs])
    return out


def layout_from_attrs(attrs, source="store") -> Layout:
    """The layout of an HDF5 store from its attributes (see layout_attrs)."""
    def text(value):
        return value.decode() if isinstance(value, bytes) else str(value)

    if "layout" not in attrs:
        raise LayoutError(f"{source}: missing attribute 'layout'")
    name = text(attrs["layout"])
    if "layout_joints" not in attrs:
        return get_layout(name)
    try:
        spec = {"name": name, "joints": json.loads(text(attrs["layout_joints"])),
                "limbs": json.loads(text(attrs.get("layout_limbs", "[]")))}
    except json.JSONDecodeError as e:
        raise LayoutError(f"{source}: layout attributes are not valid JSON ({e})") from None
    return define_layout(spec, source)
