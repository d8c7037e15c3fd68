"""The long-tail benchmark's split (benchmarks/bench_longtail.py) on KARD's real skeletons: the
training counts fall geometrically from 15 to 1 over the 18 classes, the test split is untouched,
the seed fixes the order of the classes; and its table's verdict, by hand."""

import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
KARD = ROOT.parent / "shared" / "data" / "kard2d.pkl"
sys.path.insert(0, str(ROOT))

from benchmarks.bench_common import prepare  # noqa: E402
from benchmarks.bench_longtail import longtail_counts, longtail_manifest, table  # noqa: E402


def test_counts_fall_geometrically_from_15_to_1():
    assert longtail_counts(15, 1, 18) == [15, 13, 11, 9, 8, 7, 6, 5, 4, 4, 3, 3, 2, 2, 2, 1, 1, 1]


@pytest.fixture(scope="module")
def kard(tmp_path_factory):
    if not KARD.is_file():
        pytest.skip(f"real data {KARD} not found (../shared/data beside the checkout)")
    return prepare(KARD, "openni15", {"xsub_train": "train", "xsub_val": "test"}, tmp_path_factory.mktemp("kard"))


def test_the_long_tail_of_kard(kard, tmp_path):
    _, manifest, _ = kard
    whole = pd.read_csv(manifest)
    cut_csv, counts = longtail_manifest(manifest, 15, 1, 0, tmp_path / "a.csv")
    cut = pd.read_csv(cut_csv)
    assert len(cut) == len(whole) == 540                       # every clip still listed (the store holds them)
    train = cut[cut.split == "train"].label.value_counts().to_dict()
    assert train == counts and sorted(train.values(), reverse=True) == longtail_counts(15, 1, 18)
    test = cut[cut.split == "test"]
    assert test.equals(whole[whole.split == "test"]) and (test.label.value_counts() == 15).all()
    assert set(cut[cut.split == "train"].clip_id) <= set(whole[whole.split == "train"].clip_id)
    again, _ = longtail_manifest(manifest, 15, 1, 0, tmp_path / "b.csv")
    other, other_counts = longtail_manifest(manifest, 15, 1, 1, tmp_path / "c.csv")
    assert pd.read_csv(again).equals(cut) and other_counts != counts


def test_the_verdict_needs_the_gain_and_top1_within_the_spread():
    def runs(top1, mca):
        return [{"top1": t, "mean_class_accuracy": m, "macro_f1": m} for t, m in zip(top1, mca)]

    results = {"plain": runs([0.60, 0.62, 0.64], [0.50, 0.52, 0.54]),
               "good": runs([0.59, 0.61, 0.63], [0.57, 0.58, 0.59]),      # +0.06, top-1 -0.01 (sd 0.02)
               "costly": runs([0.50, 0.52, 0.54], [0.60, 0.62, 0.64]),    # +0.10, top-1 -0.10
               "small": runs([0.60, 0.62, 0.64], [0.53, 0.55, 0.57])}     # +0.03
    text, met = table(results, 0.05)
    assert met == ["good"]
    assert "| good | 0.610 ± 0.020 | 0.580 ± 0.010 | 0.580 ± 0.010 | +0.060 | yes |" in text
