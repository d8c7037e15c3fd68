import numpy as np
import pytest

from mgpipe.layouts import (
    ALIASES, BODY25, BODY25_HANDS_FACE, COCO17, LAYOUTS, MEDIAPIPE33_HANDS, MICROGESTURE36,
    canonical_name, convert, get_layout,
)
from mgpipe.skeleton_io import openpose_person

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


@pytest.mark.parametrize("layout", [l for l in ALL if l is not COCO17], ids=[i for i in ids if i != "coco17"])
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
