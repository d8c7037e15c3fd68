import os
from pathlib import Path

import av
import numpy as np
import pandas as pd
import pytest

from mgpipe.config import defaults

# The longest files first (CI's `--durations`: the quick start's demo run ~12 min, the SLURM
# runs ~7 min, the rerun and shard runs several minutes each). Under `--dist loadfile` a file runs
# on one worker from its first test to its last; one collected last ran alone at the end of CI.
# (xdist would reorder the files by their number of tests: pyproject.toml turns that off.)
LONGEST_FIRST = ("test_quickstart.py", "test_slurm.py", "test_reruns.py", "test_shards.py", "test_kard_chain.py")


def pytest_collection_modifyitems(items):
    items.sort(key=lambda item: LONGEST_FIRST.index(item.path.name) if item.path.name in LONGEST_FIRST
               else len(LONGEST_FIRST))   # (a stable sort: every other file keeps its order)


# The stages' library functions take every setting as a required argument (the schema holds the
# defaults); these give the schema defaults in each function's argument names.
def pose_settings(**overrides) -> dict:
    """build_keypoint_store's settings: the config's pose section, less workers (the stage's
    threads)."""
    pose = defaults()["pose"]
    del pose["workers"]
    return {**pose, **overrides}


def heatmap_settings(**overrides) -> dict:
    """build_heatmap_store's settings: the config's heatmaps section."""
    return {**defaults()["heatmaps"], **overrides}


def decode_settings(**overrides) -> dict:
    """build_frame_store's settings: decode.max_side and decode.jpeg_quality (as quality)."""
    decode = defaults()["decode"]
    return {"max_side": decode["max_side"], "quality": decode["jpeg_quality"], **overrides}


class Finished:
    """A ClipDataset whose items are what the network sees: each sample collated alone and
    finished on the CPU (RGB views resampled, heatmaps scattered into volumes), batch axis
    dropped. Everything else is the dataset's."""

    def __init__(self, data):
        self.data = data

    def __len__(self):
        return len(self.data)

    def __getattr__(self, name):
        return getattr(self.data, name)

    def __getitem__(self, index):
        from mgpipe.learning.samples import collate

        batch = self.data.to_device(collate([self.data[index]]), "cpu")
        return {k: v[0] for k, v in batch.items()}


def build_manifest(label_table, split_file, videos_dir, *, skeletons_dir=None, kind="imigue",
                   seed=None, mode=None, pose_backend=None, pickle_layout=None, **dataset):
    """The clips stage with the schema's settings, except those given (dataset.<key> by name;
    kind imigue unless given, as most tests read iMiGUE-layout tables)."""
    from mgpipe.stages.clips import build_manifest as build

    config = defaults()
    config["dataset"].update(kind=kind, **dataset)
    for key, value in (("seed", seed), ("mode", mode)):
        if value is not None:
            config[key] = value
    if pose_backend is not None:
        config["pose"]["backend"] = pose_backend
    if pickle_layout is not None:
        config["pose"]["pickle_layout"] = pickle_layout
    return build(label_table, split_file, videos_dir, config, skeletons_dir=skeletons_dir)


def side_environment(name: str, env_var: str) -> str:
    """The interpreter of side environment `name` (scripts/install_<name>.sh): $env_var, else
    <repo>/.venvs/<name>/bin/python. Without it the calling test skips, or fails where
    MGPIPE_REQUIRE_BACKENDS=1 (CI, which installs every side environment)."""
    python = os.environ.get(env_var) or str(Path(__file__).resolve().parents[1] / ".venvs" / name / "bin" / "python")
    if Path(python).is_file():
        return python
    msg = (f"the {name} side environment not found at {python} (make it with scripts/install_{name}.sh, "
           f"or point {env_var} at its interpreter)")
    if os.environ.get("MGPIPE_REQUIRE_BACKENDS") == "1":
        pytest.fail(msg)
    pytest.skip(msg)


def kill_in_epoch_two(monkeypatch):
    """Makes the training loop's second validation (epoch 2's) raise KeyboardInterrupt, as a kill
    mid-run would; returns what undoes it."""
    from mgpipe.stages import train as train_mod

    real_predict, calls = train_mod.predict, {"n": 0}

    def dies_in_epoch_two(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real_predict(*a, **k)

    monkeypatch.setattr(train_mod, "predict", dies_in_epoch_two)
    return lambda: monkeypatch.setattr(train_mod, "predict", real_predict)


def run_cli(capsys, *argv):
    """`mgpipe -q ARGV` in this process: (exit code, stderr)."""
    import logging

    from mgpipe.cli import main

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    capsys.readouterr()
    try:
        rc = main(["-q", *map(str, argv)])
    finally:  # main() points the root logger at this test's stderr: put it back
        root.handlers[:], root.level = handlers, level
    return rc, capsys.readouterr().err


def mediapipe_python() -> str:
    """The mediapipe side environment's interpreter (side_environment)."""
    return side_environment("mediapipe", "MGPIPE_MEDIAPIPE_PYTHON")


def write_video(path, frames=20, width=64, height=48, fps=25):
    """A real H.264 mp4 with a moving square (frame-exact decoding is checked against it)."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(frames):
            img = np.full((height, width, 3), 40, np.uint8)
            img[10:20, (2 * i) % (width - 10):(2 * i) % (width - 10) + 10] = 220
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


@pytest.fixture
def small_dataset(tmp_path):
    """Four subjects, one video each, iMiGUE label-table layout, a cross-subject split."""
    videos = tmp_path / "videos"
    videos.mkdir()
    rows = []
    for s, vid in enumerate(["a", "b", "c", "d"], start=1):
        write_video(videos / f"{vid}.mp4", frames=30)
        for k, (start, end) in enumerate([(0, 9), (12, 25)]):
            rows.append({"video_id": vid, "label_id": k + 1, "start_time": "", "start_frame": start,
                         "end_time": "", "end_frame": end, "class": [3, 99][k],
                         "subject_id": s, "subject_gender": "f", "subject_nationality": "x",
                         "win_or_lose": "win"})
    pd.DataFrame(rows).to_csv(tmp_path / "labels.csv", index=False)
    pd.DataFrame({"subject_id": [1, 2, 3, 4], "split": ["train", "train", "val", "test"]}).to_csv(
        tmp_path / "split.csv", index=False)
    return tmp_path


@pytest.fixture(scope="session")
def demo_stores(tmp_path_factory):
    """Tiny demo data run through stages 1-4 with the library functions (no Snakemake)."""
    from mgpipe.pose.heatmap_render import build_heatmap_store
    from mgpipe.stages.clips import write_csv
    from mgpipe.stages.decode import build_frame_store
    from mgpipe.stages.pose import build_keypoint_store
    from mgpipe.tools.demo_data import generate

    root = tmp_path_factory.mktemp("stores")
    demo = root / "demo"
    generate(demo, seed=0, num_subjects=4, segments_per_class=1, width=160, height=120, fps=25,
             progress=False)
    # dataset.kind demo: the demo's own classes and names
    manifest, classes = build_manifest(demo / "labels.csv", demo / "split.csv", demo / "videos",
                                       skeletons_dir=demo / "skeletons", kind="demo")
    write_csv(manifest, root / "clips.csv")
    write_csv(classes, root / "classes.csv")
    build_frame_store(manifest, root / "frames.h5", **decode_settings(max_side=160), progress=False)
    build_keypoint_store(manifest, demo / "skeletons", root / "keypoints.h5", **pose_settings(),
                         progress=False)
    build_heatmap_store(root / "keypoints.h5", root / "heatmaps.h5", **heatmap_settings(size=16),
                        progress=False)
    return root
