import pandas as pd
import pytest
from conftest import build_manifest

from mgpipe.io import InputError


def test_manifest_from_imigue_layout(small_dataset):
    d = small_dataset
    manifest, classes = build_manifest(d / "labels.csv", d / "split.csv", d / "videos")
    assert len(manifest) == 8
    # iMiGUE always has its 32 outputs: class k -> k-1, 99 -> 31, named by the public list
    assert classes.label_id.tolist() == list(range(1, 32)) + [99]
    assert sorted(set(manifest.label)) == [2, 31]
    assert dict(zip(manifest.label_id, manifest.class_name)) == {3: "touch hat", 99: "illustrative"}
    assert set(manifest.split) == {"train", "val", "test"}
    row = manifest.iloc[0]
    assert (row.width, row.height, row.num_frames) == (64, 48, 10)
    assert manifest.groupby("subject_id").split.nunique().max() == 1   # cross-subject


def test_missing_video_names_the_file(small_dataset):
    d = small_dataset
    (d / "videos" / "b.mp4").unlink()
    with pytest.raises(InputError, match=r"b\.mp4: video not found"):
        build_manifest(d / "labels.csv", d / "split.csv", d / "videos")


def test_missing_video_can_be_skipped(small_dataset, caplog):
    d = small_dataset
    (d / "videos" / "b.mp4").unlink()
    manifest, _ = build_manifest(d / "labels.csv", d / "split.csv", d / "videos", on_missing="skip")
    assert set(manifest.video_id) == {"a", "c", "d"} and "b.mp4" in caplog.text


def test_unreadable_video_and_bad_rows(small_dataset):
    d = small_dataset
    (d / "videos" / "c.mp4").write_bytes(b"not a video")
    with pytest.raises(InputError, match=r"c\.mp4: not a readable video"):
        build_manifest(d / "labels.csv", d / "split.csv", d / "videos")
    table = pd.read_csv(d / "labels.csv", dtype=str)
    table.loc[1, "end_frame"] = "x"
    table.to_csv(d / "bad.csv", index=False)
    with pytest.raises(InputError, match=r"bad\.csv: row 3, column end_frame"):
        build_manifest(d / "bad.csv", d / "split.csv", d / "videos")


def test_segment_past_the_end_is_reported(small_dataset):
    d = small_dataset
    table = pd.read_csv(d / "labels.csv")
    table.loc[0, ["start_frame", "end_frame"]] = [40, 45]
    table.to_csv(d / "labels.csv", index=False)
    with pytest.raises(InputError, match="segment starts at frame 40 but the video has 30 frames"):
        build_manifest(d / "labels.csv", d / "split.csv", d / "videos")


def test_validation_subjects_are_carved_from_train(small_dataset):
    d = small_dataset
    pd.DataFrame({"subject_id": [1, 2, 3, 4], "split": ["train", "train", "train", "test"]}).to_csv(
        d / "split.csv", index=False)
    manifest, _ = build_manifest(d / "labels.csv", d / "split.csv", d / "videos", val_fraction=0.34)
    assert manifest.groupby("split").subject_id.nunique().to_dict() == {"test": 1, "train": 2, "val": 1}


def test_generic_csv_in_seconds_with_its_own_split(small_dataset):
    """kind csv: start/end in seconds become frames at the probed rate (25 fps); the split column
    is used as it is, no split file needed."""
    d = small_dataset
    pd.DataFrame({"video": ["a", "a", "b", "c", "d"], "start": [0.0, 0.48, 0.2, 0.0, 0.4],
                  "end": [0.36, 1.0, 0.6, 0.4, 0.8], "label": [7, 8, 7, 8, 7],
                  "subject": [1, 1, 2, 3, 4], "split": ["train", "train", "train", "val", "test"]}
                 ).to_csv(d / "generic.csv", index=False)
    manifest, classes = build_manifest(d / "generic.csv", None, d / "videos", kind="csv", time_unit="seconds")
    a = manifest[manifest.video_id == "a"]
    assert list(zip(a.start_frame, a.end_frame)) == [(0, 9), (12, 25)]
    assert list(manifest.split) == ["train", "train", "train", "val", "test"]
    assert classes.label_id.tolist() == [7, 8]


def test_ma52_lists_give_whole_clips_and_per_row_splits(small_dataset):
    d = small_dataset
    for split, videos in {"train": ["a", "b"], "val": ["c"], "test": ["d"]}.items():
        (d / f"{split}_list_videos.txt").write_text("".join(f"{v}.mp4 {i % 2}\n" for i, v in enumerate(videos)))
    manifest, _ = build_manifest(d, None, d / "videos", kind="ma52", subject_from="video")
    assert list(manifest.video_id) == ["a", "b", "c", "d"]
    assert (manifest.start_frame == 0).all() and (manifest.end_frame == 29).all()  # 30-frame videos
    assert list(manifest.split) == ["train", "train", "val", "test"]


def test_rows_without_any_split_are_an_error(small_dataset):
    d = small_dataset
    with pytest.raises(InputError, match=r"labels\.csv: row 2 has no split"):
        build_manifest(d / "labels.csv", None, d / "videos")


def test_pose_only_manifest_reads_no_video(small_dataset):
    """mode pose: videos are never opened (here: there are none); frame ranges come from the
    label table, whole-video clips from the keypoint folder."""
    d = small_dataset
    import shutil

    shutil.rmtree(d / "videos")
    skeletons = d / "openpose"
    for vid in "abcd":
        (skeletons / vid).mkdir(parents=True)
        for f in range(30):
            (skeletons / vid / f"{vid}_{f:012d}_keypoints.json").write_text('{"people": []}')
    manifest, _ = build_manifest(d / "labels.csv", d / "split.csv", None, mode="pose", skeletons_dir=skeletons)
    assert len(manifest) == 8 and manifest.width.isna().all() and (manifest.video == "").all()
    with pytest.raises(InputError, match="a videos folder is needed unless mode is pose"):
        build_manifest(d / "labels.csv", d / "split.csv", None, skeletons_dir=skeletons)


# --- ids, class outputs and splits (issue 8) -------------------------------------------------------

def _generic(d, rows, name="generic.csv"):
    """A kind-csv table over the fixture's 30-frame videos a-d (subjects 1-4)."""
    pd.DataFrame(rows, columns=["video", "start", "end", "label", "subject", "split", "class"]
                 ).to_csv(d / name, index=False)
    return d / name


GOOD_ROWS = [("a", 0, 9, 7, 1, "train", ""), ("b", 0, 9, 8, 2, "train", ""),
             ("c", 0, 9, 7, 3, "val", ""), ("d", 0, 9, 8, 4, "test", "")]


@pytest.mark.parametrize("row, pattern", [
    (("a/b", 0, 9, 7, 1, "train", ""), r"row 3, column video: video 'a/b' contains a path separator"),
    (("..", 0, 9, 7, 1, "train", ""), r"row 3, column video: video '\.\.' cannot be used as an id"),
    (("a\\b", 0, 9, 7, 1, "train", ""), r"row 3, column video: video 'a\\\\b' contains a path separator"),
    (("a\x1bb", 0, 9, 7, 1, "train", ""), r"row 3, column video: video 'a\\x1bb' contains a control"),
    (("a", "nan", 9, 7, 1, "train", ""), r"row 3, column start: 'nan' is not an integer"),
    (("a", -3, 9, 7, 1, "train", ""), r"row 3, column start: negative start frame"),
    (("a", 12, 4, 7, 1, "train", ""), r"row 3, column end: end < start"),
    (("a", 0, "ten", 7, 1, "train", ""), r"row 3, column end: 'ten' is not an integer"),
    (("a", 0, 9, "seven", 1, "train", ""), r"row 3, column label: 'seven' is not an integer"),
    (("a", 0, 9, 7, "NaN", "train", ""), r"row 3, column subject: 'NaN' is not an integer"),
    (("a", 0, 9, 7, 1, "holdout", ""), r"row 3, column split: unknown split 'holdout'"),
])
def test_hostile_label_rows_stop_the_clip_stage_in_one_line(small_dataset, row, pattern):
    d = small_dataset
    table = _generic(d, [GOOD_ROWS[0], row] + GOOD_ROWS[1:], "hostile.csv")
    with pytest.raises(InputError, match=r"hostile\.csv: " + pattern) as e:
        build_manifest(table, None, d / "videos", kind="csv")
    assert "\n" not in str(e.value)


def test_a_video_pattern_cannot_leave_the_videos_folder(small_dataset):
    d = small_dataset
    rows = [("a", 0, 9, 7, 1, "train", ""), ("../videos/b", 0, 9, 8, 2, "test", "")]
    with pytest.raises(InputError, match=r"generic\.csv: row 3, column video: video "
                                         r"'\.\./videos/b' contains a path separator"):
        build_manifest(_generic(d, rows), None, d / "videos", kind="csv", val_fraction=0)


def test_unnamed_ids_are_logged_and_never_borrow_a_name(small_dataset, caplog):
    d = small_dataset
    # id 7 is named "5" in the table; id 5 has no name: it must not become a second "5"
    rows = [("a", 0, 9, 7, 1, "train", "5"), ("b", 0, 9, 5, 2, "train", ""),
            ("c", 0, 9, 9, 3, "train", ""), ("d", 0, 9, 7, 4, "test", "5")]
    import logging

    with caplog.at_level(logging.INFO):
        manifest, classes = build_manifest(_generic(d, rows), None, d / "videos", kind="csv",
                                           val_fraction=0)
    assert classes.label_id.tolist() == [5, 7, 9]               # sorted ids
    assert classes.name.tolist() == ["class 5", "5", "9"]
    assert "[5, 9] have no class name" in caplog.text
    assert dict(zip(manifest.label_id, manifest.class_name)) == {7: "5", 5: "class 5", 9: "9"}
    # configured order is kept as given
    _, ordered = build_manifest(_generic(d, rows), None, d / "videos", kind="csv", val_fraction=0,
                                classes=[9, 7, 5])
    assert ordered.label_id.tolist() == [9, 7, 5] and ordered.name.tolist() == ["9", "5", "class 5"]


def test_one_id_with_two_names_or_one_name_for_two_ids_is_an_error(small_dataset):
    d = small_dataset
    rows = [("a", 0, 9, 7, 1, "train", "nod"), ("b", 0, 9, 7, 2, "train", "shrug"),
            ("d", 0, 9, 8, 4, "test", "")]
    with pytest.raises(InputError, match=r"generic\.csv: row 3: label id 7 is named 'shrug', but "
                                         r"'nod' at row 2"):
        build_manifest(_generic(d, rows), None, d / "videos", kind="csv", val_fraction=0)
    rows = [("a", 0, 9, 7, 1, "train", "nod"), ("d", 0, 9, 8, 4, "test", "nod")]
    with pytest.raises(InputError, match=r"generic\.csv: row 3: class name 'nod' is given to label "
                                         r"ids \[7, 8\]"):
        build_manifest(_generic(d, rows), None, d / "videos", kind="csv", val_fraction=0)
    rows = [("a", 0, 9, 7, 1, "train", ""), ("d", 0, 9, 8, 4, "test", "")]
    with pytest.raises(InputError, match="class_names has 1 names for 2 outputs"):
        build_manifest(_generic(d, rows), None, d / "videos", kind="csv", val_fraction=0,
                       class_names=["nod"])
    _, classes = build_manifest(_generic(d, rows), None, d / "videos", kind="csv", val_fraction=0,
                                class_names=["nod", "shrug"])
    assert classes.name.tolist() == ["nod", "shrug"]


def test_val_fraction_zero_gives_a_manifest_without_val(small_dataset, caplog):
    d = small_dataset
    pd.DataFrame({"subject_id": [1, 2, 3, 4], "split": ["train", "train", "train", "test"]}).to_csv(
        d / "split.csv", index=False)
    import logging

    with caplog.at_level(logging.INFO):
        manifest, _ = build_manifest(d / "labels.csv", d / "split.csv", d / "videos", val_fraction=0)
    assert set(manifest.split) == {"train", "test"} and len(manifest) == 8
    assert "no val split" in caplog.text
    # one training subject and a val share asked for: nobody to hold out, said in one line
    pd.DataFrame({"subject_id": [1, 2, 3, 4], "split": ["train", "test", "test", "test"]}).to_csv(
        d / "split.csv", index=False)
    with pytest.raises(InputError, match="no clips in the val split: only one training subject"):
        build_manifest(d / "labels.csv", d / "split.csv", d / "videos", val_fraction=0.2)
