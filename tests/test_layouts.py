import numpy as np
import pytest

from mgpipe.layouts import (
    ALIASES,
    BODY25,
    BODY25_HANDS_FACE,
    COCO17,
    LAYOUTS,
    MEDIAPIPE33_HANDS,
    MICROGESTURE36,
    canonical_name,
    convert,
    get_layout,
)
from mgpipe.sources.skeleton_io import openpose_person

ALL = sorted(LAYOUTS.values(), key=lambda layout: layout.name)
ids = [layout.name for layout in ALL]


def test_registered_and_sizes():
    assert {"coco17", "body25", "body25_hands_face", "mediapipe33_hands", "microgesture36"} <= set(LAYOUTS)
    assert get_layout("microgesture36") is MICROGESTURE36
    assert BODY25_HANDS_FACE.num_joints == 25 + 21 + 21 + 70
    assert MEDIAPIPE33_HANDS.num_joints == 33 + 21 + 21
    assert MICROGESTURE36.num_joints == 36
    # the old layouts are what stored files rely on
    assert COCO17.joints[:3] == ("nose", "left_eye", "right_eye") and COCO17.num_limbs == 18
    assert BODY25.joints[:3] == ("nose", "neck", "right_shoulder") and BODY25.num_limbs == 24
    assert BODY25_HANDS_FACE.joints[:25] == BODY25.joints
    assert MICROGESTURE36.joints[:17] == COCO17.joints


@pytest.mark.parametrize("layout", ALL, ids=ids)
def test_flip_maps_are_involutions(layout):
    f = layout.flip_index
    assert sorted(f.tolist()) == list(range(layout.num_joints))
    np.testing.assert_array_equal(f[f], np.arange(layout.num_joints))
    lf = layout.limb_flip_index
    np.testing.assert_array_equal(lf[lf], np.arange(layout.num_limbs))
    for l, (a, b) in enumerate(layout.limbs):
        assert {int(f[a]), int(f[b])} == set(layout.limbs[lf[l]])


@pytest.mark.parametrize("layout", ALL, ids=ids)
def test_limbs_valid(layout):
    seen = set()
    for a, b in layout.limbs:
        assert 0 <= a < layout.num_joints and 0 <= b < layout.num_joints
        assert a != b
        assert frozenset((a, b)) not in seen, (layout.joints[a], layout.joints[b])
        seen.add(frozenset((a, b)))


@pytest.mark.parametrize("layout", ALL, ids=ids)
def test_names_unique_and_sides_paired(layout):
    names = layout.joints
    assert len(set(names)) == len(names)
    assert len({canonical_name(n) for n in names}) == len(names)  # convert is unambiguous
    for i, n in enumerate(names):
        for a, b in (("left_", "right_"), ("right_", "left_")):
            if n.startswith(a):
                partner = b + n[len(a):]
                assert partner in names, n
                assert names[layout.flip_index[i]] == partner
        if not n.startswith(("left_", "right_")):
            assert layout.flip_index[i] == i


def test_aliases_point_at_real_names():
    everywhere = {n for layout in ALL for n in layout.joints}
    for alias, target in ALIASES.items():
        assert target in everywhere and target not in ALIASES
        assert alias in everywhere  # an alias is used by some layout


# (depth-camera skeletons have no eyes, ears or nose: they are tested by name further down)
WITH_COCO = [l for l in ALL if l is not COCO17 and set(COCO17.joints) <= set(l.joints)]


@pytest.mark.parametrize("layout", WITH_COCO, ids=[l.name for l in WITH_COCO])
def test_coco17_round_trip_is_exact(layout):
    rng = np.random.default_rng(0)
    kp = rng.normal(size=(2, 5, 17, 3)).astype(np.float32) * 100
    there = convert(kp, COCO17, layout)
    assert there.shape == (2, 5, layout.num_joints, 3) and there.dtype == np.float32
    for j, n in enumerate(COCO17.joints):  # every COCO joint exists in every layout
        assert there[:, :, layout.joints.index(n)].tobytes() == kp[:, :, j].tobytes()
    shared = {layout.joints.index(n) for n in COCO17.joints}
    others = [j for j in range(layout.num_joints) if j not in shared]
    assert not there[:, :, others].any()  # joints COCO lacks are zero-filled
    back = convert(there, layout, COCO17)
    assert back.tobytes() == kp.tobytes()

    kp2 = rng.normal(size=(3, layout.num_joints, 3)).astype(np.float32)
    down = convert(kp2, layout, COCO17)
    for j, n in enumerate(COCO17.joints):
        assert down[:, j].tobytes() == kp2[:, layout.joints.index(n)].tobytes()


def _openpose_person():
    """An OpenPose JSON person whose every triple encodes (part, index)."""
    def part(code, n):
        return [v for i in range(n) for v in (code * 1000 + i, code * 1000 + i + 0.5, 0.9)]
    return {"person_id": [-1], "pose_keypoints_2d": part(1, 25), "hand_left_keypoints_2d": part(2, 21),
            "hand_right_keypoints_2d": part(3, 21), "face_keypoints_2d": part(4, 70)}


def test_openpose_whole_body_person_converts_by_name():
    kp = openpose_person(_openpose_person())
    assert kp.shape == (137, 3)
    bhf = BODY25_HANDS_FACE.joints
    assert kp[bhf.index("right_thumb_tip"), 0] == 3004  # right hand point 4
    assert kp[bhf.index("left_hand_wrist"), 0] == 2000
    mg = convert(kp[None, None], BODY25_HANDS_FACE, MICROGESTURE36)[0, 0]
    at = {n: mg[i, 0] for i, n in enumerate(MICROGESTURE36.joints)}
    assert at["right_thumb_tip"] == 3004 and mg[MICROGESTURE36.joints.index("right_thumb_tip"), 1] == 3004.5
    assert at["left_index_tip"] == 2008 and at["right_pinky_tip"] == 3020
    assert at["left_hand_wrist"] == 2000 and at["right_hand_wrist"] == 3000
    assert at["nose"] == 1000 and at["right_wrist"] == 1004 and at["left_wrist"] == 1007
    assert at["left_eye"] == 1016 and at["right_ankle"] == 1011
    assert at["chin"] == 4008 and at["right_brow"] == 4019 and at["left_brow"] == 4024
    assert at["right_mouth_corner"] == 4048 and at["left_mouth_corner"] == 4054
    assert at["right_eye_outer"] == 4036 and at["left_eye_outer"] == 4045
    assert (mg[:, 2] == np.float32(0.9)).all()  # every MG36 point exists in OpenPose whole-body


def test_mediapipe_to_microgesture36_and_body25():
    kp = np.zeros((75, 3), np.float32)
    kp[:, 0] = np.arange(75)
    kp[:, 2] = 1
    mg = convert(kp, MEDIAPIPE33_HANDS, MICROGESTURE36)
    at = {n: mg[i] for i, n in enumerate(MICROGESTURE36.joints)}
    assert at["right_thumb_tip"][0] == 54 + 4 and at["left_thumb_tip"][0] == 33 + 4
    assert at["left_index_tip"][0] == 33 + 8 and at["right_hand_wrist"][0] == 54
    assert at["left_mouth_corner"][0] == 9 and at["right_mouth_corner"][0] == 10
    assert at["left_eye_outer"][0] == 3 and at["right_wrist"][0] == 16
    assert not at["chin"].any() and not at["left_brow"].any()  # MediaPipe has neither
    b = convert(kp, MEDIAPIPE33_HANDS, BODY25)
    assert b[BODY25.joints.index("left_big_toe"), 0] == 31  # left_foot_index (alias)
    assert b[BODY25.joints.index("right_heel"), 0] == 30
    assert not b[BODY25.joints.index("neck")].any()


def _ibug70_template():
    """A symmetric frontal face in image coordinates (x right, centre 0, y down), laid out by the
    iBUG-68 numbering alone (contours from the image's left, eyes/lips clockwise), + 2 pupils."""
    p = np.zeros((70, 2))
    for i in range(17):
        p[i] = -np.cos(np.pi * i / 16), np.sin(np.pi * i / 16)
    for k in range(5):
        p[17 + k] = -0.8 + 0.15 * k, -0.5 - 0.05 * k
        p[22 + k] = 0.2 + 0.15 * k, -0.7 + 0.05 * k
    for k in range(4):
        p[27 + k] = 0, -0.3 + 0.1 * k
    for k in range(5):
        p[31 + k] = -0.2 + 0.1 * k, 0.15
    eye = [(-0.15, 0), (-0.05, -0.05), (0.05, -0.05), (0.15, 0), (0.05, 0.05), (-0.05, 0.05)]
    for k, (dx, dy) in enumerate(eye):
        p[36 + k] = -0.4 + dx, -0.2 + dy
        p[42 + k] = 0.4 + dx, -0.2 + dy
    outer = [(-0.3, 0.45), (-0.2, 0.4), (-0.1, 0.38), (0, 0.4), (0.1, 0.38), (0.2, 0.4), (0.3, 0.45),
             (0.2, 0.52), (0.1, 0.55), (0, 0.56), (-0.1, 0.55), (-0.2, 0.52)]
    inner = [(-0.25, 0.46), (-0.1, 0.44), (0, 0.44), (0.1, 0.44), (0.25, 0.46), (0.1, 0.48), (0, 0.48),
             (-0.1, 0.48)]
    p[48:60], p[60:68] = outer, inner
    p[68], p[69] = (-0.4, -0.2), (0.4, -0.2)
    return p


def test_symmetric_face_flips_onto_itself():
    face = _ibug70_template()
    # the template really is mirror-symmetric as a point set
    assert {tuple(np.round(q, 6)) for q in face * [-1, 1]} == {tuple(np.round(q, 6)) for q in face}
    names = BODY25_HANDS_FACE.joints[67:]
    flip = BODY25_HANDS_FACE.flip_index[67:] - 67
    assert sorted(flip.tolist()) == list(range(70))
    mirrored = face[flip] * [-1, 1]  # mirror the image, then relabel left <-> right
    np.testing.assert_allclose(mirrored, face, atol=1e-12)
    for q, n in zip(face, names):  # subject's left is on the image's right
        if n.startswith("left_"):
            assert q[0] > 1e-6, n
        elif n.startswith("right_"):
            assert q[0] < -1e-6, n
        else:
            assert abs(q[0]) < 1e-9, n
    assert {names[i] for i in (8, 27, 28, 29, 30, 33, 51, 57, 62, 66)} == {
        f"face_{i}" for i in (8, 27, 28, 29, 30, 33, 51, 57, 62, 66)}


@pytest.mark.parametrize("layout", ALL, ids=ids)
def test_flip_of_mirrored_whole_body(layout):
    """Mirror a random skeleton twice through flip_index: identity; once: left/right swap names."""
    rng = np.random.default_rng(1)
    kp = rng.normal(size=(layout.num_joints, 2))
    once = kp[layout.flip_index] * [-1, 1]
    np.testing.assert_array_equal(once[layout.flip_index] * [-1, 1], kp)
    for i, n in enumerate(layout.joints):
        if n.startswith("left_"):
            j = layout.joints.index("right_" + n[5:])
            np.testing.assert_array_equal(once[i], kp[j] * [-1, 1])


def test_convert_rejects_wrong_joint_count():
    with pytest.raises(ValueError, match="17"):
        convert(np.zeros((3, 25, 3), np.float32), COCO17, BODY25)


# --- depth-camera and whole-body layouts, layouts defined in a config ------------------------------

def test_depth_and_wholebody_layouts():
    from mgpipe.layouts import COCO_WHOLEBODY133, KINECT_V1_20, KINECT_V2_25, OPENNI15

    assert OPENNI15.joints[:5] == ("head", "neck", "right_shoulder", "right_elbow", "right_hand")
    assert OPENNI15.joints[8] == "spine_mid" and OPENNI15.joints[14] == "left_foot"
    assert (KINECT_V1_20.num_joints, KINECT_V2_25.num_joints) == (20, 25)
    assert KINECT_V2_25.joints[20] == "neck" and KINECT_V2_25.joints[24] == "right_thumb"
    assert KINECT_V1_20.joints[2] == "neck" and KINECT_V1_20.joints[0] == "mid_hip"
    assert COCO_WHOLEBODY133.num_joints == 17 + 6 + 68 + 21 + 21
    assert COCO_WHOLEBODY133.joints[17:23] == BODY25.joints[19:25]   # OpenPose's foot points
    assert COCO_WHOLEBODY133.joints[91] == "left_hand_wrist" and COCO_WHOLEBODY133.joints[112] == "right_hand_wrist"
    # the same point has the same name: whole-body -> OpenPose whole-body keeps body, feet, face
    # (but the pupils), hands
    rng = np.random.default_rng(2)
    kp = rng.normal(size=(133, 3)).astype(np.float32)
    out = convert(kp, COCO_WHOLEBODY133, BODY25_HANDS_FACE)
    filled = {BODY25_HANDS_FACE.joints[j] for j in np.flatnonzero(np.abs(out).sum(1))}
    assert filled == set(COCO_WHOLEBODY133.joints)
    mg = convert(kp, COCO_WHOLEBODY133, MICROGESTURE36)
    assert np.abs(mg).sum(1).all()             # every micro-gesture point has a whole-body source
    # a Kinect v2 skeleton -> COCO-17 keeps the arms and legs
    k2 = rng.normal(size=(25, 3)).astype(np.float32)
    coco = convert(k2, KINECT_V2_25, COCO17)
    assert coco[COCO17.joints.index("left_wrist")].tolist() == k2[6].tolist()
    assert not coco[COCO17.joints.index("nose")].any()


KARD_DEF = {"name": "kard15", "joints": list(get_layout("openni15").joints),
            "limbs": [["head", "neck"], [1, 2], ["right_shoulder", "right_elbow"], [1, 5],
                      ["left_shoulder", "left_elbow"]]}


def test_defined_layout_works_like_a_builtin():
    from mgpipe.layouts import layout_attrs, layout_from_attrs

    lay = get_layout(KARD_DEF)
    assert lay.name == "kard15" and lay.num_joints == 15
    assert lay.limbs == ((0, 1), (1, 2), (2, 3), (1, 5), (5, 6))
    assert lay.flip_index[2] == 5 and lay.limb_flip_index.tolist() == [0, 3, 4, 1, 2]
    attrs = layout_attrs(lay)
    assert set(attrs) == {"layout", "layout_joints", "layout_limbs"}
    assert layout_from_attrs(attrs) == lay
    assert layout_attrs(COCO17) == {"layout": "coco17"} and layout_from_attrs({"layout": "coco17"}) is COCO17
    kp = np.random.default_rng(3).normal(size=(2, 15, 3)).astype(np.float32)
    np.testing.assert_array_equal(convert(kp, lay, get_layout("openni15")), kp)


@pytest.mark.parametrize("change, pattern", [
    ({"joints": ["a", "a"]}, "joint 'a' is listed twice"),
    ({"joints": ["left_eye", "nose"], "limbs": []}, "joint 'left_eye' has no partner 'right_eye'"),
    ({"limbs": [["head", "tail"]]}, r"limb 0 \['head', 'tail'\]: 'tail' is not one of its 15 joints"),
    ({"limbs": [[0, 15]]}, r"limb 0 \[0, 15\]: 15 is not one of its 15 joints"),
    ({"limbs": [[0, 0]]}, "joins a joint to itself"),
    ({"limbs": [[0, 1], [1, 0]]}, "repeats a limb"),
    ({"limbs": [["neck", "right_shoulder"]]}, "limb neck-right_shoulder has no mirror limb neck-left_shoulder"),
    ({"name": "coco17"}, "'coco17' is a built-in layout"),
    ({"name": "my layout"}, "layout name 'my layout'"),
    ({"limbs": [[0]]}, r"limb 0 \[0\] is not a pair"),
])
def test_bad_layout_definitions_are_one_line_input_errors(change, pattern):
    from mgpipe.io import InputError

    with pytest.raises(InputError, match=pattern):
        get_layout({**KARD_DEF, **change})
    with pytest.raises(InputError, match="unknown keypoint layout 'openni16'"):
        get_layout("openni16")
