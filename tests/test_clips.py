import pandas as pd
import pytest

from mgpipe.clips import build_manifest
from mgpipe.io import InputError


def test_manifest_from_imigue_layout(small_dataset):
    d = small_dataset
    manifest, classes = build_manifest(d / "labels.csv", d / "split.csv", d / "videos")
    assert len(manifest) == 8
    assert classes.label_id.tolist() == [3, 99]                # sorted ids -> 0..K-1 like iMiGUE
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
