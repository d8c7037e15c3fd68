"""The whole method on real footage: ten JHMDB clips (../shared/data/jhmdb, two actions, five
sources each: one trains, three validate, one tests) decoded, posed by MediaPipe in its side environment, one training
step of every member (joint, limb, rgb, motion, swin, the fused variants of benchmarks/jhmdb.yaml),
their scores and the ensemble with weights searched on the validation clips. Skips where the data
or the mediapipe side environment is absent (fails in CI: MGPIPE_REQUIRE_BACKENDS=1)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import build_manifest, decode_settings, mediapipe_python, pose_settings

from mgpipe import config as mgconfig
from mgpipe.formats import keypoints as keypoint_store
from mgpipe.learning import specs

REPO = Path(__file__).resolve().parents[1]
JHMDB = REPO.parent / "shared" / "data" / "jhmdb"
# The shortest clip of five sources of two actions (18-38 frames, 247 in all): clap and walk.
# Six validation clips: the ensemble's weight search needs five (ensemble.SEARCH_MIN_VAL_CLIPS).
CLIPS = {
    "clap": ["The_Slow_Clap_clap_u_nm_np1_fr_bad_20",
             "Deutscher_Klatsch_-_The_Clap_-_Lexy_clap_f_cm_np1_fr_med_5",
             "Martin_klatscht_in_die_h_nde_und_FURZT_clap_u_cm_np1_fr_med_0",
             "boom_snap_clap_(challenge)_clap_u_nm_np1_fr_med_1",
             "_Boom_Snap_Clap__challenge_clap_u_nm_np1_fr_med_1"],
    "walk": ["The_Fugitive_2_walk_u_cm_np1_fr_med_13",
             "NOVA_ELEGANTUNIVERSE2_walk_f_nm_np1_ba_med_0",
             "Veoh_Alpha_Dog_2_walk_f_cm_np2_ri_med_10",
             "AmericanGangster_walk_f_nm_np1_fr_med_38",
             "Veoh_Alpha_Dog_1_walk_f_nm_np1_ri_med_24"],
}
SPLITS = ("train", "val", "val", "val", "test")


def test_the_recipes_pass_the_config_checks():
    """benchmarks/jhmdb.yaml, alone and under jhmdb_gpu.yaml, passes every config check (the fused
    network's shape rules among them), which the one-step run below, on the demo's networks,
    cannot see: its first recipe strided the pose pathway in time and its fused training failed
    after an hour of member trainings."""
    recipe, gpu = REPO / "benchmarks/jhmdb.yaml", REPO / "benchmarks/jhmdb_gpu.yaml"
    for files in ([recipe], [recipe, gpu]):
        cfg = mgconfig.load(files)
        assert cfg["pose_model"]["network"]["temporal_strides"] == [1, 1, 1], files


def tiny_config() -> dict:
    """benchmarks/jhmdb.yaml shrunk to one step per member: the recipe's data, pose and member
    settings, the demo's smallest networks (tests/data/tiny.yaml), one epoch of batch 2."""
    cfg = yaml.safe_load((REPO / "benchmarks/jhmdb.yaml").read_text())
    tiny = yaml.safe_load((REPO / "tests/data/tiny.yaml").read_text())
    for section in ("rgb", "pose_model", "motion", "swin"):
        for key in ("frames", "size", "network", "input", "variant"):
            if key in tiny[section]:
                cfg[section][key] = tiny[section][key]
    cfg["fused"].update(fusion=tiny["fused"]["fusion"], prototype=tiny["fused"]["prototype"])
    for section in ("rgb", "pose_model", "motion", "swin", "fused"):
        cfg[section]["optim"] = {"epochs": 1, "batch_size": 2, "lr": 0.01, "warmup_epochs": 0}
    cfg["heatmaps"]["sigma"] = 0.6
    cfg["test"] = {"views": 1, "flip": False, "batch_size": 4}
    cfg["train"]["threads"] = 1
    cfg["pose"]["python"] = mediapipe_python()
    return mgconfig.validate(cfg)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    if not (JHMDB / "labels.csv").exists():
        pytest.skip(f"real data {JHMDB} not found (../shared/data beside the checkout)")
    from mgpipe.stages.clips import write_csv
    from mgpipe.stages.decode import build_frame_store
    from mgpipe.stages.pose import build_keypoint_store

    cfg = tiny_config()
    root = tmp_path_factory.mktemp("jhmdb")
    labels = pd.read_csv(JHMDB / "labels.csv")
    chosen = [v for videos in CLIPS.values() for v in videos]
    table = labels[labels.video.isin(chosen)]
    assert len(table) == 10
    table.to_csv(root / "labels.csv", index=False)
    split = {int(table[table.video == v].subject.iloc[0]): SPLITS[i]
             for videos in CLIPS.values() for i, v in enumerate(videos)}
    pd.DataFrame({"subject_id": list(split), "split": list(split.values())}).to_csv(
        root / "split.csv", index=False)
    manifest, classes = build_manifest(root / "labels.csv", root / "split.csv", JHMDB / "videos",
                                       kind="csv", video_pattern="{video_id}.avi", val_fraction=0)
    write_csv(manifest, root / "clips.csv")
    write_csv(classes, root / "classes.csv")
    decoded = build_frame_store(manifest, root / "frames.h5", **decode_settings(max_side=320),
                                progress=False)
    posed = build_keypoint_store(manifest, None, root / "keypoints.h5", frames_h5=root / "frames.h5",
                                 **pose_settings(**{k: v for k, v in cfg["pose"].items() if k != "workers"}),
                                 threads=2, progress=False)
    return {"root": root, "config": cfg, "manifest": manifest, "decoded": decoded, "posed": posed}


@pytest.mark.slow
def test_real_clips_decode_and_pose(run):
    manifest = run["manifest"]
    assert sorted(manifest.class_name.unique()) == ["clap", "walk"]
    assert manifest.split.value_counts().to_dict() == {"val": 6, "train": 2, "test": 2}
    # every frame the AVIs hold (18-38 per clip), none short
    assert run["decoded"]["frames"] == int(manifest.num_frames.sum()) == 247
    assert run["decoded"]["short_clips"] == 0
    store = keypoint_store.Reader(run["root"] / "keypoints.h5")
    assert store.layout.name == "coco17" and store.source == "mediapipe"
    found = {}
    for r in manifest.itertuples():
        kp, width, height = store.clip(r.clip_id)
        assert (width, height) == (320, 240) and kp.shape == (1, r.num_frames, 17, 3)
        found[r.video_id] = float((kp[0, :, :, 2] > 0).any(1).mean())
    # MediaPipe finds the person in most frames of 8 of these 10 clips (measured: 0.57-1.0 of
    # their frames); in both Veoh_Alpha_Dog walk clips (a small walker in a street) it finds nobody
    assert sum(share > 0.5 for share in found.values()) >= 8, found
    assert run["posed"]["frames"] == 247


@pytest.mark.slow
def test_one_step_of_every_member_and_the_ensemble(run, tmp_path):
    from mgpipe.learning.weights import init_source
    from mgpipe.stages import train
    from mgpipe.stages.ensemble import build_report
    from mgpipe.stages.merge import merge_checkpoints
    from mgpipe.stages.score import score_model

    root, cfg = run["root"], run["config"]
    stores = {"manifest_csv": root / "clips.csv", "frames_h5": root / "frames.h5",
              "keypoints_h5": root / "keypoints.h5"}
    models = specs.trained_models(cfg)
    assert models == ["rgb", "joint", "limb", "motion", "swin", "fused_full", "fused_nofusion",
                      "fused_noproto"]
    scores = {}
    for name in models:
        out = tmp_path / "models" / name
        init = None
        if specs.get(name).is_fused:   # the merge of the rgb and joint models, as the workflow
            merged = tmp_path / "merged" / f"{name}.pt"
            merge_checkpoints(tmp_path / "models/rgb/model.pt", tmp_path / "models/joint/model.pt",
                              cfg, name, merged)
            init = init_source.given(merged)
        train.run(name, cfg, classes_csv=root / "classes.csv", out_dir=out, state_dir=tmp_path / "state" / name,
                  init=init, progress=False, **stores)
        history = pd.read_csv(out / "log.csv")
        assert len(history) == 1 and np.isfinite(history.filter(like="loss").to_numpy()).all(), name
        scores[name] = tmp_path / "scores" / f"{name}.csv"
        score_model(out / "model.pt", cfg, out_csv=scores[name], progress=False, **stores)
        assert set(pd.read_csv(scores[name]).split) == {"val", "test"}
    report = build_report(scores, root / "classes.csv", tmp_path / "ensemble",
                          members=cfg["ensemble"]["members"], weights="search")
    metrics = json.loads((tmp_path / "ensemble" / "metrics.json").read_text())
    assert set(report["models"]) == set(models) and metrics["num_test_clips"] == 2
    # the weights were searched on the six validation clips, then applied to the two test clips
    assert report["ensemble"]["searched_on_val"] is True
    assert set(report["ensemble"]["weights"]) == {"fused_full", "joint", "limb", "rgb", "motion", "swin"}
    assert 0.0 <= report["ensemble"]["top1"] <= 1.0


def test_accuracy_table_gives_each_member_per_seed_and_mean_sd(tmp_path):
    """benchmarks/jhmdb_table.py reads each seed's ensemble/metrics.json: the fused models by
    their 1:1 stream average, a member a seed lacks left empty, the sd over the seeds it has."""
    from benchmarks.jhmdb_table import table

    def row(top1, mca):
        return {"top1": top1, "mean_class_accuracy": mca}

    for seed, (a, b) in enumerate([(0.5, 0.4), (0.7, 0.6)]):
        models = {"joint": {"joint": row(a, b)},
                  "fused_full": {"rgb": row(0.1, 0.1), "pose": row(0.2, 0.2), "rgb:pose 1:1": row(a + 0.1, b)}}
        if seed == 0:
            models["swin"] = {"swin": row(0.3, 0.2)}
        folder = tmp_path / f"seed{seed}" / "ensemble"
        folder.mkdir(parents=True)
        (folder / "metrics.json").write_text(json.dumps({"models": models, "ensemble": row(a + 0.2, b + 0.2)}))
    frame, done = table(tmp_path, [0, 1, 2])
    assert done == [0, 1]
    rows = frame.set_index("member")
    assert rows.loc["joint", "top-1 s1"] == 0.7 and rows.loc["joint", "top-1 mean ± sd"] == "0.600 ± 0.141"
    assert rows.loc["fused_full", "top-1 mean ± sd"] == "0.700 ± 0.141"
    assert rows.loc["fused_full (pose pathway)", "mca s0"] == 0.2
    assert rows.loc["swin", "top-1 mean ± sd"] == "0.300" and np.isnan(rows.loc["swin", "top-1 s1"])
    assert rows.loc["ensemble", "mca mean ± sd"] == "0.700 ± 0.141"
    assert rows.loc["motion", "top-1 mean ± sd"] == ""
