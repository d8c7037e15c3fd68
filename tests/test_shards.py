"""Sharded data stages (data.shards, mgpipe/stages/shards.py, workflow/rules/shards.smk): shards of
whole videos, stable under edits of other videos; gathered stores equal to an unsharded run's
clip by clip (every dataset, its storage and every attribute), on the demo data and on the real
KARD pickle; the whole real iMiGUE table planned as 16 shards; a tiny real sharded run."""

from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from conftest import decode_settings, pose_settings

from mgpipe.io import InputError
from mgpipe.stages.clips import read_manifest, write_csv
from mgpipe.stages.decode import build_frame_store
from mgpipe.stages.pose import build_keypoint_store
from mgpipe.stages.shards import gather, shard_of, slice_path, slices, write_slices

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
KARD = SHARED / "kard2d.pkl"
IMIGUE = SHARED / "imigue_labels.csv"


def need(path: Path) -> Path:
    if not path.is_file():
        pytest.skip(f"real data {path} not found (../shared/data beside the checkout)")
    return path


# ---- comparing stores ------------------------------------------------------------------------

def _attrs(obj) -> dict:
    return {name: (obj.attrs.get_id(name).dtype, np.asarray(obj.attrs[name]).tolist()) for name in obj.attrs}


def _dataset(ds) -> tuple:
    plist = ds.id.get_create_plist()
    storage = (ds.dtype, ds.shape, ds.chunks, ds.compression, plist.get_layout())
    if h5py.check_vlen_dtype(ds.dtype) is not None:
        values = [bytes(np.asarray(v).tobytes()) for v in ds[()]]
    else:
        values = ds[()].tobytes()
    return storage, values, _attrs(ds)


def clip_objects(store: Path) -> dict:
    """{object path under clips/: (kind, storage, raw values, attributes)} of a whole store,
    and the root attributes under ""."""
    out = {}
    with h5py.File(store, "r") as h5:
        out[""] = _attrs(h5)

        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                out[name] = ("dataset", *_dataset(obj))
            else:
                out[name] = ("group", _attrs(obj))

        h5["clips"].visititems(visit)
    return out


def assert_same_clips(sharded: Path, plain: Path) -> int:
    a, b = clip_objects(sharded), clip_objects(plain)
    assert a[""] == b[""], "root attributes differ"
    assert sorted(a) == sorted(b), set(a) ^ set(b)
    for name in b:
        assert a[name] == b[name], f"clips/{name} differs"
    return len(b) - 1


def sharded_stores(manifest: pd.DataFrame, shards: int, folder: Path, build) -> list[Path]:
    """Each shard's store built from its slice as the workflow does (slice file, read back)."""
    write_slices(manifest, shards, folder / "slices")
    stores = []
    for i in range(shards):
        part = read_manifest(slice_path(folder / "slices", i))
        stores.append(build(part, folder / f"{i}.h5"))
    return stores


# ---- shard assignment and slices -------------------------------------------------------------

def test_a_videos_shard_is_fixed_by_its_id_alone():
    # Pinned values: another assignment would rerun every shard of every existing results folder.
    assert [shard_of(v, 16) for v in ("371", "298", "1", "v000")] == [0, 1, 1, 14]
    assert [shard_of(v, 2) for v in ("371", "298", "1", "v000")] == [0, 1, 1, 0]
    assert shard_of(371, 16) == shard_of("371", 16)   # an id read as a number is the same video
    assert {shard_of(str(v), 7) for v in range(200)} == set(range(7))


def test_whole_imigue_table_in_16_shards_of_whole_videos():
    table = pd.read_csv(need(IMIGUE), dtype={"video_id": str})
    parts = slices(table, 16)
    assert sum(len(p) for p in parts) == 18498
    owners = {}
    for i, part in enumerate(parts):
        for video in set(part.video_id):
            assert owners.setdefault(video, i) == i     # a video never spans two shards
    assert len(owners) == 359 and all(len(p) for p in parts)
    # Hashing balances videos, not frames: the largest shard holds well under twice the mean.
    frames = [int((p.end_frame - p.start_frame + 1).sum()) for p in parts]
    assert max(frames) < 2 * np.mean(frames)


def test_changed_row_rewrites_only_its_shards_slice(tmp_path):
    table = pd.read_csv(need(IMIGUE), dtype={"video_id": str})
    first = write_slices(table, 16, tmp_path)
    assert first["rewritten"] == list(range(16)) and sum(first["clips"]) == 18498
    stamps = {i: slice_path(tmp_path, i).stat().st_mtime_ns for i in range(16)}
    changed = table.copy()
    changed.loc[100, "class"] = 99 if changed.loc[100, "class"] != 99 else 31
    second = write_slices(changed, 16, tmp_path)
    k = shard_of(table.video_id[100], 16)
    assert second["rewritten"] == [k] and second["unchanged"] == 15
    assert all(slice_path(tmp_path, i).stat().st_mtime_ns == stamps[i] for i in range(16) if i != k)
    assert (read_manifest(slice_path(tmp_path, k))["class"] == changed.loc[100, "class"]).any()
    # fewer shards: the slices of shards that no longer exist go
    third = write_slices(changed, 4, tmp_path)
    assert third["removed"] == sorted(f"{i}.csv" for i in range(4, 16))
    assert sorted(p.name for p in tmp_path.glob("*.csv")) == sorted(f"{i}.csv" for i in range(4))


# ---- gathered stores equal the unsharded run's -----------------------------------------------

@pytest.mark.parametrize("shards", [3, 9])   # of the 4 demo videos: 9 is more shards than videos
def test_sharded_demo_stores_equal_unsharded_clip_by_clip(demo_stores, tmp_path, shards):
    manifest = read_manifest(demo_stores / "clips.csv")
    skeletons = demo_stores / "demo" / "skeletons"
    sizes = [len(part) for part in slices(manifest, shards)]
    assert sum(n > 0 for n in sizes) >= 2 and 0 in sizes   # several shards gathered, one empty

    def frames(part, out):
        build_frame_store(part, out, **decode_settings(max_side=160), progress=False)
        return out

    def keypoints(part, out):
        build_keypoint_store(part, skeletons, out, **pose_settings(), progress=False)
        return out

    frame_shards = sharded_stores(manifest, shards, tmp_path / "f", frames)
    gather("frames", frame_shards, tmp_path / "frames.h5")
    assert assert_same_clips(tmp_path / "frames.h5", demo_stores / "frames.h5") == len(manifest)
    kp_shards = sharded_stores(manifest, shards, tmp_path / "k", keypoints)
    gather("keypoints", kp_shards, tmp_path / "keypoints.h5")
    assert assert_same_clips(tmp_path / "keypoints.h5", demo_stores / "keypoints.h5") == 2 * len(manifest)


def test_sharded_import_of_the_real_kard_pickle_equals_unsharded(tmp_path):
    from mgpipe.config import defaults
    from mgpipe.stages.clips import build_manifest as build

    config = defaults()
    config.update(mode="pose")
    config["dataset"].update(kind="pyskl", subject_from=r"_s(\d+)_",
                             split_map={"xsub_train": "train", "xsub_val": "test"})
    config["pose"].update(backend="pickle", pickle_layout="openni15", layout="openni15")
    manifest, _ = build(None, None, None, config, skeletons_dir=need(KARD))
    write_csv(manifest, tmp_path / "clips.csv")
    manifest = read_manifest(tmp_path / "clips.csv")
    settings = pose_settings(backend="pickle", pickle_layout="openni15", layout="openni15")

    def keypoints(part, out):
        build_keypoint_store(part, KARD, out, **settings, progress=False)
        return out

    keypoints(manifest, tmp_path / "plain.h5")
    gather("keypoints", sharded_stores(manifest, 4, tmp_path / "k", keypoints), tmp_path / "gathered.h5")
    assert assert_same_clips(tmp_path / "gathered.h5", tmp_path / "plain.h5") == 2 * 540


# ---- hostile shard stores --------------------------------------------------------------------

def _frame_shards(demo_stores, tmp_path, **settings):
    manifest = read_manifest(demo_stores / "clips.csv")
    first = manifest[manifest.video_id == manifest.video_id.iloc[0]]
    rest = manifest[manifest.video_id != manifest.video_id.iloc[0]]
    build_frame_store(first, tmp_path / "a.h5", **decode_settings(max_side=160), progress=False)
    build_frame_store(rest, tmp_path / "b.h5", **decode_settings(**{"max_side": 160, **settings}),
                      progress=False)
    return tmp_path / "a.h5", tmp_path / "b.h5"


def test_gather_refuses_shards_written_with_other_settings(demo_stores, tmp_path):
    a, b = _frame_shards(demo_stores, tmp_path, quality=50)
    with pytest.raises(InputError, match=r"b\.h5: attribute 'jpeg_quality' is 50, but 90 in .*a\.h5") as e:
        gather("frames", [a, b], tmp_path / "out.h5")
    assert "\n" not in str(e.value) and not (tmp_path / "out.h5").exists()


def test_gather_refuses_a_clip_in_two_shards_and_foreign_files(demo_stores, tmp_path):
    a, _ = _frame_shards(demo_stores, tmp_path)
    with pytest.raises(InputError, match=r"a\.h5: clip '.*' is also in another shard store"):
        gather("frames", [a, a], tmp_path / "out.h5")
    with pytest.raises(InputError, match=r"a keypoints store, not a frame store"):
        gather("frames", [a, demo_stores / "keypoints.h5"], tmp_path / "out.h5")
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not hdf5 at all")
    with pytest.raises(InputError, match=r"junk\.h5: not a readable frame store"):
        gather("frames", [junk], tmp_path / "out.h5")
    assert not (tmp_path / "out.h5").exists()


# ---- the workflow --------------------------------------------------------------------------

def _imigue_config(tmp_path: Path, shards: int) -> Path:
    """The whole real iMiGUE table with stand-ins for its videos and OpenPose folders: a dry run
    reads neither (the clips stage, which would probe them, is only planned)."""
    for name in ("videos", "skeletons"):
        (tmp_path / name).mkdir(exist_ok=True)
    config = tmp_path / "imigue.yaml"
    config.write_text(f"results: {tmp_path}/results\ndataset:\n  kind: imigue\n"
                      f"  label_table: {need(IMIGUE)}\n  videos: {tmp_path}/videos\n"
                      f"  skeletons: {tmp_path}/skeletons\n  split: null\ndata: {{shards: {shards}}}\n"
                      # (paper.yaml's Kinetics weights for Video Swin are not in torch's cache here)
                      "swin: {weights: null}\n"
                      # (and trains on CUDA, which a local plan without a GPU refuses)
                      "train: {device: auto}\n")
    return config


def shards_of(proc, rule: str) -> list[str]:
    """The shard wildcards of one rule's jobs in a dry run's plan."""
    out, current = [], None
    for line in proc.stdout.splitlines():
        if line.startswith(("rule ", "checkpoint ")):
            current = line.split(" ", 1)[1].rstrip(":")
        elif current == rule and line.strip().startswith("wildcards: shard="):
            out.append(line.strip().split("=", 1)[1])
    return sorted(out)


@pytest.mark.slow
def test_whole_imigue_table_plans_16_shard_jobs_per_data_stage(tmp_path):
    from workflow_runs import make_workdir, planned, smk

    workdir = make_workdir(tmp_path / "wf")
    config = _imigue_config(tmp_path, 16)
    proc = smk(workdir, "-n", "--cores", "2", "--configfile", "config/paper.yaml", str(config))
    jobs = planned(proc)
    assert {k: jobs[k] for k in ("clips", "shard_clips", "decode_shard", "pose_shard",
                                 "gather_frames", "gather_keypoints")} == {
        "clips": 1, "shard_clips": 1, "decode_shard": 16, "pose_shard": 16,
        "gather_frames": 1, "gather_keypoints": 1}
    assert shards_of(proc, "decode_shard") == sorted(str(i) for i in range(16))
    assert "decode" not in jobs and "pose" not in jobs
    # a pose model reads the frames of its own shard, not the gathered store
    image = tmp_path / "image_pose.yaml"
    image.write_text("pose: {backend: mediapipe}\n")
    lines = smk(workdir, "-n", "--cores", "2", "--configfile", "config/paper.yaml", str(config),
                str(image)).stdout.splitlines()
    inputs = [lines[i + 1] for i, line in enumerate(lines) if line == "rule pose_shard:"]
    assert len(inputs) == 16 and all("/shards/frames/" in x and "/frames.h5" not in x for x in inputs)
    # data.shards 1 (the default) is the plain DAG
    plain = planned(smk(workdir, "-n", "--cores", "2", "--configfile", "config/paper.yaml",
                        str(_imigue_config(tmp_path, 1))))
    assert plain["decode"] == 1 and plain["pose"] == 1 and "shard_clips" not in plain
    assert {k: v for k, v in plain.items() if k not in ("decode", "pose", "clips")} == {
        k: v for k, v in jobs.items() if k not in ("clips", "shard_clips", "decode_shard", "pose_shard",
                                                 "gather_frames", "gather_keypoints")}


def sharded_tiny_config(workdir: Path) -> str:
    """The tiny demo as 2 shards, the whole method lean (workflow_runs.lean_config), so that the
    run shows what reaches training."""
    from workflow_runs import lean_config

    return lean_config(workdir, data={"shards": 2})


def jobs_run(proc) -> dict:
    """{rule: [wildcards line of each job]} of the jobs a real run executed (its log)."""
    out, current = {}, None
    for line in (proc.stdout + proc.stderr).splitlines():
        if line.startswith(("rule ", "checkpoint ", "localrule ", "localcheckpoint ")):
            current = line.split(" ", 1)[1].rstrip(":")
            out.setdefault(current, []).append("")
        elif current and line.strip().startswith("wildcards:"):
            out[current][-1] = line.split(":", 1)[1].strip()
    return out


@pytest.mark.slow
def test_tiny_sharded_run_settles_after_a_changed_row(tmp_path, monkeypatch):
    """The tiny demo end to end with 2 shards: the gathered stores equal the library's unsharded
    ones; a second run has nothing to do; after a changed label row ONE run reruns only that
    row's shard of the data stages (and the models, which all read the manifest), and the next
    dry run of `all` has nothing to do (Snakemake once kept the slicing checkpoint's first-pass
    reason on the gather jobs, so the workflow regathered on every run)."""
    from workflow_runs import make_workdir, planned, smk

    workdir = make_workdir(tmp_path / "wf")
    r = workdir / "results" / "tiny"
    args = ["--cores", "2", "--configfile", sharded_tiny_config(workdir)]
    smk(workdir, *args)
    manifest = read_manifest(r / "clips.csv")
    assert {shard_of(v, 2) for v in manifest.video_id} == {0, 1}   # both shards hold videos
    monkeypatch.chdir(workdir)   # the manifest's video paths are the workflow's
    build_frame_store(manifest, tmp_path / "frames.h5", **decode_settings(max_side=160), progress=False)
    build_keypoint_store(manifest, r / "demo_data" / "skeletons", tmp_path / "keypoints.h5",
                         **pose_settings(), progress=False)
    assert assert_same_clips(r / "frames.h5", tmp_path / "frames.h5") == len(manifest)
    assert assert_same_clips(r / "keypoints.h5", tmp_path / "keypoints.h5") == 2 * len(manifest)
    assert "Nothing to be done" in smk(workdir, "-n", *args).stdout

    labels = r / "demo_data" / "labels.csv"
    table = pd.read_csv(labels, dtype={"video_id": str})
    table.loc[0, "end_frame"] -= 2
    table.to_csv(labels, index=False)
    changed = shard_of(table.video_id[0], 2)
    untouched = {kind: (r / "shards" / kind / f"{1 - changed}.h5").stat().st_mtime_ns
                 for kind in ("frames", "keypoints")}
    before = {m: (r / "models" / m / "model.pt").stat().st_mtime_ns for m in ("rgb", "joint", "limb", "fused_full")}
    proc = smk(workdir, *args)   # one run
    ran = jobs_run(proc)
    print("jobs of the one run after the changed row:", {rule: jobs for rule, jobs in sorted(ran.items())})
    assert ran["decode_shard"] == ran["pose_shard"] == [f"shard={changed}"], ran
    assert len(ran["gather_frames"]) == len(ran["gather_keypoints"]) == 1
    assert sorted(ran["train"]) == ["model=fused_full", "model=joint", "model=limb", "model=rgb"], ran
    for kind, mtime in untouched.items():
        assert (r / "shards" / kind / f"{1 - changed}.h5").stat().st_mtime_ns == mtime
    assert all((r / "models" / m / "model.pt").stat().st_mtime_ns > t for m, t in before.items())
    plan = smk(workdir, "-n", *args)
    assert "Nothing to be done" in plan.stdout, plan.stdout[-3000:]
    assert planned(plan) == {}


def test_gather_and_shard_commands_refuse_to_write_over_their_inputs(tmp_path, capsys):
    from mgpipe.cli import main

    store = tmp_path / "0.h5"
    store.write_bytes(b"")
    assert main(["gather", "frames", str(store), "--out", str(store)]) == 2
    manifest = tmp_path / "1.csv"
    manifest.write_text("clip_id,video_id\n")
    assert main(["shard", "--manifest", str(manifest), "--shards", "2", "--out-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all("is the same file as" in line for line in err), err
    assert store.read_bytes() == b"" and manifest.read_text() == "clip_id,video_id\n"


def test_shard_command_refuses_a_file_that_is_no_manifest(tmp_path, capsys):
    from mgpipe.cli import main

    table = tmp_path / "labels.csv"
    table.write_text("clip,label\na,1\n")
    assert main(["shard", "--manifest", str(table), "--shards", "2", "--out-dir", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"mgpipe shard: error: {table}: not a clip manifest (no video_id column)"]
    assert main(["shard", "--manifest", str(table), "--shards", "0", "--out-dir", str(tmp_path / "s")]) == 2
    assert "data.shards is 0" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()
