import pandas as pd
import yaml

from mgpipe import config as mgconfig
from mgpipe.tools import bench


def test_bench_table_has_every_model_and_mode(demo_stores):
    cfg = mgconfig.validate(yaml.safe_load(open("tests/data/tiny.yaml")))
    manifest = pd.read_csv(demo_stores / "clips.csv", dtype={"clip_id": str, "video_id": str})
    table = bench.network_rates(models=("joint", "rgb", "fused_full"), modes=("fp32", "bf16"), size="config",
                      base_config=cfg, batch={"joint": 2, "rgb": 2, "fused_full": 2}, steps=1, warmup=1,
                      device="cpu", manifest=manifest, frames_h5=demo_stores / "frames.h5",
                      keypoints_h5=demo_stores / "keypoints.h5", workers=0)
    assert list(table.model) == ["joint", "joint", "rgb", "rgb", "fused_full", "fused_full"]
    assert (table["network clips/s"] > 0).all() and (table["full step clips/s"] > 0).all()
    assert (table[table["mode"] == "fp32"]["vs fp32"] == 1.0).all()


def test_bench_times_the_frame_members(demo_stores):
    """motion and swin read 3-channel frames like rgb (they were fed heatmap-shaped tensors)."""
    cfg = mgconfig.validate(yaml.safe_load(open("tests/data/tiny.yaml")))
    table = bench.network_rates(models=("motion", "swin"), modes=("fp32",), size="config", base_config=cfg,
                                batch={"motion": 2, "swin": 2}, steps=1, warmup=0, device="cpu")
    assert list(table.model) == ["motion", "swin"] and (table["network clips/s"] > 0).all()


def test_bench_reports_the_data_path(demo_stores):
    cfg = mgconfig.validate(yaml.safe_load(open("tests/data/tiny.yaml")))
    manifest = pd.read_csv(demo_stores / "clips.csv", dtype={"clip_id": str, "video_id": str})
    table = bench.data_path(manifest, frames_h5=demo_stores / "frames.h5",
                            keypoints_h5=demo_stores / "keypoints.h5", size="config",
                            base_config=cfg, samples=4)
    kinds = [row.split()[0] for row in table["data path"]]
    # each kind: the sample, then its batch step (rgb: the JPEG floor between them)
    assert kinds == ["joint", "joint", "limb", "limb", "rgb", "rgb", "rgb", "heatmap"]
    assert (table["ms/sample"] > 0).all() and (table["per second, one thread"] > 0).all()
    assert table["data path"].str.startswith("rgb floor").sum() == 1  # the sample beside its floor
    assert table["data path"].str.contains("batch step on the CPU").sum() == 3
