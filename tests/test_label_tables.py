"""Label importers on small files written in each dataset's real on-disk layout (see the format notes
at the top of mgpipe/sources/label_tables.py for where each layout was found)."""

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mgpipe.io import InputError
from mgpipe.sources.label_tables import (
    COLUMNS,
    SOURCE_COLUMNS,
    SYNTHETIC_SUBJECT_BASE,
    LabelSet,
    ma52_body_part,
    read_labels,
    read_split_file,
)

IMIGUE_HEADER = ("video_id,label_id,start_time,start_frame,end_time,end_frame,class,subject_id,"
                 "subject_gender,subject_nationality,win_or_lose\n")


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def imigue(tmp_path):
    """The real layout: class = class id, label_id = segment number in its video, seconds."""
    labels = write(tmp_path / "imigue_labels.csv", IMIGUE_HEADER +
                   "0001,1,1.2,30,2.0,50,3,1,male,ESP,win\n"
                   "0001,2,4.0,100,5.0,125,99,1,male,ESP,win\n"
                   "0002,1,0.0,0,0.4,10,31,2,female,USA,lose\n"
                   "0003,1,10.0,250,11.0,275,3,3,female,FRA,win\n")
    split = write(tmp_path / "split.csv", "subject_id,split\n1,train\n2,train\n3,test\n")
    return labels, split


def smg_tree(root, samples):
    """MiGA redistribution: <split folder>/SampleNNNN/SampleNNNN_finelabels.csv (no header)."""
    for folder, n, rows in samples:
        d = root / folder / f"Sample{n:04d}"
        write(d / f"Sample{n:04d}_finelabels.csv", "".join(f"{a},{b},{c}\n" for a, b, c in rows))
        write(d / f"Sample{n:04d}_data.csv", "24000,30,4500\n")   # frames, fps, depth: ignored
    return root


@pytest.fixture
def ma52(tmp_path):
    """MA-52 as in the official repo and the MAC starter kit: annotations/<split>_list_videos.txt."""
    ann = tmp_path / "MA-52" / "annotations"
    write(ann / "train_list_videos.txt",
          "0003_01_0001.mp4 9\n0003_01_0002.mp4 9\n0003_02_0003.mp4 17\n0004_00_0002.mp4 2\n"
          "0004_05_0002.mp4 47\n")
    write(ann / "val_list_videos.txt", "0003_01_0005.mp4 8\n0004_03_0004.mp4 24\n")
    write(ann / "test_list_videos.txt", "".join(f"test{i:04d}.mp4 0\n" for i in range(25)))
    write(ann / "label_name.txt", "".join(f"{k}\t{n}\n" for k, n in [
        (0, "shaking body"), (2, "shrugging"), (8, "turning head"), (9, "nodding"),
        (17, "stretching arms"), (24, "shaking legs"), (47, "pushing glasses")]))
    return tmp_path / "MA-52"


def check_canonical(ls: LabelSet):
    t = ls.table
    assert list(t.columns) == COLUMNS + SOURCE_COLUMNS
    assert t.start_frame.dtype == "Int64" and t.end_frame.dtype == "Int64"
    assert t.label_id.dtype == np.int64 and t.subject_id.dtype == np.int64
    assert t.video_id.map(type).eq(str).all() and t["class"].map(type).eq(str).all()


# --- iMiGUE ---------------------------------------------------------------------------------------

def test_imigue_label_table_round_trip(imigue):
    labels, split = imigue
    ls = read_labels("imigue", labels, split=split)
    check_canonical(ls)
    t = ls.table
    assert t.video_id.tolist() == ["0001", "0001", "0002", "0003"]     # ids keep leading zeros
    assert t.label_id.tolist() == [3, 99, 31, 3]
    assert t["class"].tolist() == ["touch hat", "illustrative", "shake shoulder", "touch hat"]
    assert t.start_frame.tolist() == [30, 100, 0, 250] and t.end_frame.tolist() == [50, 125, 10, 275]
    assert t.start_time.tolist() == [1.2, 4.0, 0.0, 10.0]               # kept beside the frames
    assert (t.split == "").all()
    assert ls.split.to_dict("list") == {"subject_id": [1, 2, 3], "split": ["train", "train", "test"]}
    assert ls.row_splits().tolist() == ["train", "train", "train", "test"]
    # sorted ids reproduce the public mapping k -> k-1, 99 -> 31
    ids = sorted(set(range(1, 32)) | {99})
    assert {k: ids.index(k) for k in (1, 31, 99)} == {1: 0, 31: 30, 99: 31}


def test_imigue_without_split_and_bad_columns(imigue, tmp_path):
    labels, split = imigue
    ls = read_labels("imigue", labels)               # the caller decides what a missing split means
    assert ls.split is None and (ls.row_splits() == "").all()
    assert ls.table.source_row.tolist() == [2, 3, 4, 5]
    assert ls.table.source_file.str.endswith("imigue_labels.csv").all()
    table = pd.read_csv(labels, dtype=str)
    table.drop(columns="end_frame").to_csv(tmp_path / "cut.csv", index=False)
    with pytest.raises(InputError, match=r"cut\.csv: row 1 \(header\) lacks column\(s\) end_frame"):
        read_labels("imigue", tmp_path / "cut.csv", split=split)
    table.loc[2, "subject_id"] = "two"
    table.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(InputError, match=r"bad\.csv: row 4, column subject_id: 'two' is not an integer"):
        read_labels("imigue", tmp_path / "bad.csv", split=split)


def test_imigue_miga_sample_folders(tmp_path, caplog):
    """MiGA skeleton release: <split folder>/<id>/<id>_label.csv, rows label,start,end."""
    root = tmp_path / "imigue"
    write(root / "imigue_skeleton_train" / "0012" / "0012_label.csv", "99,10,40\n5,60,90\n")
    write(root / "imigue_skeleton_validate" / "0340" / "0340_label.csv", "12,0,33\n")
    with caplog.at_level(logging.WARNING):
        ls = read_labels("imigue", root)
    check_canonical(ls)
    t = ls.table.sort_values("video_id")
    assert t.split.tolist() == ["train", "train", "val"]
    assert t.subject_id.min() >= SYNTHETIC_SUBJECT_BASE and t.subject_id.nunique() == 2
    assert "own subject" in caplog.text
    assert ls.split.split.tolist() == ["train", "val"]


# --- SMG ------------------------------------------------------------------------------------------

def test_smg_split_folders(tmp_path):
    root = smg_tree(tmp_path / "smg_data_phase1", [
        ("smg_skeleton_train", 1, [(1, 120, 170), (17, 300, 345), (5, 1200, 1251)]),
        ("smg_skeleton_train", 2, [(16, 40, 80)]),
        ("smg_skeleton_validate", 31, [(3, 10, 60)]),
    ])
    ls = read_labels("smg", root)
    check_canonical(ls)
    t = ls.table.sort_values(["subject_id", "start_frame"])
    assert t.video_id.tolist() == ["Sample0001"] * 3 + ["Sample0002", "Sample0031"]
    assert t.subject_id.tolist() == [1, 1, 1, 2, 31]
    assert t.label_id.tolist() == [1, 17, 5, 16, 3] and t["class"].tolist() == ["1", "17", "5", "16", "3"]
    assert t[["start_frame", "end_frame"]].values.tolist()[0] == [120, 170]
    assert t.split.tolist() == ["train"] * 4 + ["val"]
    assert dict(zip(ls.split.subject_id, ls.split.split)) == {1: "train", 2: "train", 31: "val"}


def test_smg_plain_layout_uses_authors_protocol(tmp_path):
    root = smg_tree(tmp_path / "experimentWell", [
        ("", 1, [(1, 10, 20)]), ("", 35, [(2, 10, 20)]), ("", 36, [(3, 10, 20)]), ("", 40, [(4, 5, 9)])])
    ls = read_labels("smg", root, classes={1: "a", 2: "b", 3: "c", 4: "d", 17: "non-MG"})
    assert dict(zip(ls.split.subject_id, ls.split.split)) == {1: "train", 35: "train", 36: "test", 40: "test"}
    assert (ls.table.split == "").all()
    assert ls.table.sort_values("subject_id")["class"].tolist() == ["a", "b", "c", "d"]  # names from config


def test_smg_single_file_and_split_file(tmp_path):
    f = write(tmp_path / "Sample0007" / "Sample0007_finelabels.csv", "4,100,140\n")
    split = write(tmp_path / "split.csv", "subject_id,split\n7,test\n")
    ls = read_labels("smg", f, split=split)
    assert ls.table.subject_id.tolist() == [7] and ls.row_splits().tolist() == ["test"]


def test_smg_bad_rows(tmp_path):
    f = write(tmp_path / "Sample0001" / "Sample0001_finelabels.csv", "1,10,20\n2,30\n")
    with pytest.raises(InputError, match=r"Sample0001_finelabels\.csv: row 2: expected 3 fields"):
        read_labels("smg", tmp_path)
    f.write_text("1,10,20\n2,30,25\n")
    with pytest.raises(InputError, match=r"Sample0001_finelabels\.csv: row 2, column end: end < start"):
        read_labels("smg", tmp_path)
    f.write_text("1,10,20\n2,x,25\n")
    with pytest.raises(InputError, match=r"finelabels\.csv: row 2, column start: 'x' is not an integer"):
        read_labels("smg", tmp_path)
    f.write_text("1,10,20\n")
    write(tmp_path / "Sample0002" / "Sample0002_finelabels.csv", "\n")
    assert read_labels("smg", tmp_path).table.video_id.tolist() == ["Sample0001"]   # empty: skipped
    f.write_text("")
    with pytest.raises(InputError, match=r"every \*_finelabels\.csv file is empty"):
        read_labels("smg", tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"empty: no \*_finelabels\.csv files found"):
        read_labels("smg", tmp_path / "empty")


# --- MA-52 ----------------------------------------------------------------------------------------

def test_ma52_lists(ma52, caplog):
    with caplog.at_level(logging.WARNING):
        ls = read_labels("ma52", ma52)
    check_canonical(ls)
    t = ls.table
    train = t[t.split == "train"]
    assert train.video_id.tolist() == ["0003_01_0001", "0003_01_0002", "0003_02_0003", "0004_00_0002",
                                       "0004_05_0002"]
    assert train.subject_id.tolist() == [3, 3, 3, 4, 4]
    assert train["class"].tolist() == ["nodding", "nodding", "stretching arms", "shrugging",
                                       "pushing glasses"]
    assert (t.start_frame == 0).all() and (t.end_frame == -1).all() and t.start_time.isna().all()
    assert t.split.value_counts().to_dict() == {"test": 25, "train": 5, "val": 2}
    test = t[t.split == "test"]
    assert (test.subject_id >= SYNTHETIC_SUBJECT_BASE).all() and test.subject_id.nunique() == 25
    assert ls.split is None                        # participants 3 and 4 are in train and in val
    assert ls.row_splits().equals(t.split)
    assert "test_list_videos.txt: all 25 labels are 0: placeholders?" in caplog.text
    assert "own subject" in caplog.text and caplog.text.count("placeholders") == 1
    assert "body-part field disagrees" not in caplog.text


def test_ma52_single_list_and_body_parts(ma52, caplog):
    f = ma52 / "annotations" / "val_list_videos.txt"
    split = write(ma52 / "split.csv", "subject_id,split\n3,train\n4,test\n")
    ls = read_labels("ma52", f, split=split)         # the list's own split wins
    assert ls.row_splits().tolist() == ["val", "val"]
    mine = write(ma52 / "my_clips.txt", f.read_text())  # a name that says no split: the file decides
    ls = read_labels("ma52", mine, split=split)
    assert ls.table.split.tolist() == ["", ""] and ls.row_splits().tolist() == ["train", "test"]
    write(split, "subject_id,split\n3,train\n")
    with pytest.raises(InputError, match=r"my_clips\.txt: row 2: subject 4 has no split in .*split\.csv"):
        read_labels("ma52", mine, split=split)
    assert ma52_body_part(np.array([0, 4, 5, 10, 11, 23, 24, 31, 32, 37, 38, 47, 48, 51])).tolist() == \
        [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6]
    write(f, "0003_01_0005.mp4 9\n0003_02_0001.mp4 18\n0003_03_0001.mp4 31\n0003_01_0009.mp4 4\n")
    with caplog.at_level(logging.WARNING):
        read_labels("ma52", f, subject_from="video")
    assert "1 video(s) whose name's body-part field disagrees" in caplog.text


def test_ma52_bad_lines(ma52):
    f = ma52 / "annotations" / "train_list_videos.txt"
    write(f, "0003_01_0001.mp4 9\n0003_01_0002.mp4\n")
    with pytest.raises(InputError, match=r"train_list_videos\.txt: row 2: no label"):
        read_labels("ma52", ma52)
    write(f, "0003_01_0001.mp4 9\n0003_01_0002.mp4 9 10\n")
    with pytest.raises(InputError, match=r"train_list_videos\.txt: row 2: more than one label"):
        read_labels("ma52", ma52)
    write(f, "0003_01_0001.mp4 9\n\n0003_01_0005.mp4 8\n")        # also listed in val
    with pytest.raises(InputError, match=r"val_list_videos\.txt: row 1: segment 0003_01_0005 \(whole video\) "
                                         r"is labelled twice \(first at .*train_list_videos\.txt row 3\)"):
        read_labels("ma52", ma52)
    write(f, "\n \n")
    with pytest.raises(InputError, match=r"train_list_videos\.txt: annotation list is empty"):
        read_labels("ma52", ma52)
    (ma52.parent / "other").mkdir()
    with pytest.raises(InputError, match=r"other: no train/val/test_list_videos\.txt"):
        read_labels("ma52", ma52.parent / "other")


# --- generic CSV ----------------------------------------------------------------------------------

def test_generic_csv_frames(tmp_path):
    f = write(tmp_path / "my_labels.csv",
              "video,start,end,label,subject,split,class,notes\n"
              "clipA,0,9,2,10,train,wave,ok\n"
              "clipA,20,29,5,10,train,nod,\n"
              "clipB,5,14,2,11,Validation,wave,\n"
              "clipC,0,-1,5,12,test,nod,whole video\n")
    ls = read_labels("csv", f)
    check_canonical(ls)
    t = ls.table
    assert t.split.tolist() == ["train", "train", "val", "test"]
    assert t.end_frame.tolist() == [9, 29, 14, -1] and t["class"].tolist() == ["wave", "nod", "wave", "nod"]
    assert dict(zip(ls.split.subject_id, ls.split.split)) == {10: "train", 11: "val", 12: "test"}


def test_generic_csv_seconds_semicolons_and_split_file(tmp_path):
    f = write(tmp_path / "labels.csv", "video_id;start;end;label_id;subject_id\n"
                                       "v1;1.5;2.25;0;1\nv2;00:01:02.5;00:01:04;1;2\n")
    split = write(tmp_path / "split.csv", "subject_id,split\n1,train\n2,test\n")
    ls = read_labels("csv", f, split=split, time_unit="seconds")
    check_canonical(ls)
    t = ls.table
    assert t.start_time.tolist() == [1.5, 62.5] and t.end_time.tolist() == [2.25, 64.0]
    assert t.start_frame.isna().all() and t.end_frame.isna().all()
    assert t["class"].tolist() == ["0", "1"] and ls.row_splits().tolist() == ["train", "test"]
    g = read_labels("csv", write(tmp_path / "g.csv", GOOD.replace("split\n", "split,class\n")
                                 .replace("train\n", "train,wave\n").replace("test\n", "test,\n")))
    assert g.table["class"].tolist() == ["wave", "2"]          # a blank name falls back to the id
    assert read_labels("csv", f, time_unit="seconds").split is None


def test_subject_from_regex(tmp_path):
    f = write(tmp_path / "l.csv", "video,start,end,label,split\nP07_take1,0,5,1,train\nP08_x,0,5,1,test\n")
    ls = read_labels("csv", f, subject_from=r"^P(\d+)_")
    assert ls.table.subject_id.tolist() == [7, 8]
    with pytest.raises(InputError, match=r"not a column of .*l\.csv, and .* exactly one \(group\)"):
        read_labels("csv", f, subject_from=r"^P\d+_")


# --- errors common to every format ----------------------------------------------------------------

GOOD = "video,start,end,label,subject,split\nv1,0,9,1,1,train\nv2,0,9,2,2,test\n"


@pytest.mark.parametrize("body, pattern", [
    ("video,start,end,label\nv1,0,9,1\n", r"bad\.csv: row 1 \(header\) lacks column\(s\) subject"),
    ("video,start,end,label,subject,split\nv1,0,9,1,1,train\nv2,0,nine,2,2,test\n",
     r"bad\.csv: row 3, column end: 'nine' is not an integer"),
    ("video,start,end,label,subject,split\nv1,0,9,1.5,1,train\n", r"bad\.csv: row 2, column label: '1\.5'"),
    ("video,start,end,label,subject,split\nv1,0,9,1,1,train\nv2,9,3,2,2,test\n",
     r"bad\.csv: row 3, column end: end < start"),
    ("video,start,end,label,subject,split\nv1,0,9,1,1,train\nv2,0,9,2,2,holdout\n",
     r"bad\.csv: row 3, column split: unknown split 'holdout'"),
    ("video,start,end,label,subject,split\nv1,0,9,1,1,train\nv1,0,9,2,1,train\n",
     r"bad\.csv: row 3: segment v1 frames 0-9 is labelled twice \(first at .*bad\.csv row 2\)"),
    ("video,start,end,label,subject,split\nv1,0,9,1,1,train\n\nv2,0,9,1,1,test\n",
     r"bad\.csv: row 4: subject 1 is in both train \(.*bad\.csv row 2\) and test"),
    ("video,start,end,label,subject,split\n", r"bad\.csv: label CSV has a header but no rows"),
    ("", r"bad\.csv: label CSV is empty"),
])
def test_generic_csv_errors_name_file_and_row(tmp_path, body, pattern):
    with pytest.raises(InputError, match=pattern):
        read_labels("csv", write(tmp_path / "bad.csv", body))


def test_classes_missing_file_and_arguments(tmp_path, imigue):
    f = write(tmp_path / "l.csv", GOOD)
    with pytest.raises(InputError, match=r"l\.csv: row 3: label id 2 is not among the configured classes"):
        read_labels("csv", f, classes=[1])
    labels, split = imigue
    with pytest.raises(InputError, match=r"imigue_labels\.csv: row 3: label id 99 is not among"):
        read_labels("imigue", labels, split=split, classes=range(1, 32))
    with pytest.raises(InputError, match=r"nowhere\.csv: csv annotations not found"):
        read_labels("csv", tmp_path / "nowhere.csv")
    with pytest.raises(InputError, match=r"missing_split\.csv: split file not found"):
        read_labels("csv", f, split=tmp_path / "missing_split.csv")
    with pytest.raises(InputError, match="unknown dataset kind 'ntu'"):
        read_labels("ntu", f)
    with pytest.raises(InputError, match="time_unit"):
        read_labels("smg", f, time_unit="seconds")


def test_split_file_errors(tmp_path):
    f = write(tmp_path / "l.csv", "video,start,end,label,subject\nv1,0,9,1,1\nv2,0,9,2,2\n")
    cases = [
        ("subject_id,split\n1,train\n2,tset\n", r"split\.csv: row 3, column split: unknown split 'tset'"),
        ("subject_id,split\n1,train\n2,test\n1,test\n",
         r"split\.csv: row 4: subject 1 is in both train and test"),
        ("subject_id,split\n1,train\n1,train\n2,test\n", r"split\.csv: row 3: subject 1 is listed twice"),
        ("subject,fold\n1,train\n", r"split\.csv: row 1 \(header\) needs columns subject_id, split"),
        ("subject_id,split\n1,train\n", r"l\.csv: row 3: subject 2 has no split in .*split\.csv"),
    ]
    for body, pattern in cases:
        with pytest.raises(InputError, match=pattern):
            read_labels("csv", f, split=write(tmp_path / "split.csv", body))
    ok = read_split_file(write(tmp_path / "split.csv", "subject_id,split\n1,train\n2,Test\n"))
    assert ok.split.tolist() == ["train", "test"]


REAL_IMIGUE = Path(__file__).resolve().parents[2] / "shared" / "data" / "imigue_labels.csv"


@pytest.mark.skipif(not REAL_IMIGUE.is_file(), reason="../shared/data/imigue_labels.csv not found")
def test_real_imigue_segments_of_two_classes_are_refused_or_each_a_sample():
    """The whole real iMiGUE table labels 16 segments with two classes (video 197, frames
    2204-2229: classes 29 and 31, ...): one line naming the setting, or one sample per class."""
    with pytest.raises(InputError, match=r"imigue_labels\.csv: row 816: segment 197 frames 2204-2229 is "
                                         r"labelled twice \(first at .* row 815\), with another class: "
                                         r"set dataset\.multi_class_segments: each"):
        read_labels("imigue", REAL_IMIGUE)
    table = read_labels("imigue", REAL_IMIGUE, multi_class_segments="each").table
    assert len(table) == 18498
    seg = table[(table.video_id == "197") & (table.start_frame == 2204)]
    assert sorted(seg.label_id) == [29, 31]


def test_segment_of_two_classes_gives_one_clip_per_class(small_dataset):
    from conftest import build_manifest

    labels = pd.read_csv(small_dataset / "labels.csv", dtype=str, keep_default_na=False)
    twin = labels.iloc[[0]].assign(**{"class": "99", "label_id": "9"})   # same frames, another class
    pd.concat([labels, twin]).to_csv(small_dataset / "labels.csv", index=False)
    args = (small_dataset / "labels.csv", small_dataset / "split.csv", small_dataset / "videos")
    with pytest.raises(InputError, match="labelled twice .*with another class"):
        build_manifest(*args)
    manifest, _ = build_manifest(*args, multi_class_segments="each")
    a = manifest[manifest.video_id == "a"].sort_values("clip_id")
    assert list(a.clip_id) == ["a_000000_000009_c3", "a_000000_000009_c99", "a_000012_000025"]
    assert list(a.label_id) == [3, 99, 99]
    # the same class twice is a copied row: refused whatever the setting
    pd.concat([labels, labels.iloc[[0]]]).to_csv(small_dataset / "labels.csv", index=False)
    with pytest.raises(InputError, match="labelled twice .*with the same class"):
        build_manifest(*args, multi_class_segments="each")
