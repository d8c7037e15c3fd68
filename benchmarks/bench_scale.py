"""iMiGUE at its real size, planned: the figures of docs/scale.md.

    python benchmarks/bench_scale.py [--work DIR] [--out results.json] [--parts ...]

The whole real label table (../shared/data/imigue_labels.csv: 18,498 segments of 359 videos)
with generated stand-ins where a stage needs more than the table:

- clips: the clip manifest stage on all 18,498 rows (wall time, peak RSS of the process). It
  reads each video's header and decodes its first frame; the stand-in videos are one generated
  H.264 video as long as the longest labelled video (35,047 frames, small frames: the header and
  one frame are what is read), linked under every video id, and an empty OpenPose folder per
  video (the stage checks that each exists).
- plan: `snakemake -n --profile profiles/slurm` with config/paper.yaml on that table, for
  data.shards 1 and 16 (and 64): planning time and jobs per rule. A dry run reads no video.
- loader: peak RSS of the joint model's training loader over a generated keypoint store with
  all 18,498 clips at their real lengths (coco17, as config/paper.yaml): a few batches, workers
  0 and 2. The store is read clip by clip, never whole.
- rates: decode and pose per video minute on one core, on a generated 10 s 1280x720 25 fps
  video (a pan and zoom over a real photo) and on real iMiGUE OpenPose frames (the three of
  ../shared/data/imigue_openpose_excerpt, repeated to 10 s), and the gather of 16 shard stores
  of the 18,498-clip keypoint store. Extrapolated to the table: decode reads every frame up to
  the last labelled one of each video and encodes the labelled ones; pose reads the labelled
  frames' JSON.

Each measurement runs in its own process (peak RSS from wait4). Prints one JSON object per part
and writes them all to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from mgpipe.stages.shards import shard_of  # noqa: E402
from mgpipe.tools.dry_run import jobs_per_rule  # noqa: E402

SHARED = REPO.parent / "shared" / "data"
TABLE = SHARED / "imigue_labels.csv"
OPENPOSE = SHARED / "imigue_openpose_excerpt" / "298"


def measured(argv, cwd=REPO) -> tuple[str, float, float]:
    """Run a command in the repository; (stdout, wall seconds, the process's own peak RSS in
    MiB, from wait4; Linux starts a child's peak at its parent's, so it is a true figure only while
    it is above this driver's own, ~0.1 GiB). A failure stops the benchmark with the command's output."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=err, text=True, env=env, cwd=cwd)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0), err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, argv))} failed:\n{stdout[-2000:]}\n{stderr[-3000:]}")
    return stdout, wall, usage.ru_maxrss / 1024


def child(argv) -> tuple[dict, float, float]:
    """measured(), with the command's last JSON line parsed."""
    stdout, wall, peak = measured(argv)
    lines = [x for x in stdout.splitlines() if x.startswith("{")]
    return json.loads(lines[-1]), wall, peak


# ---- stand-ins ---------------------------------------------------------------------------------

def standin_video(path: Path, frames: int, size=(128, 72)) -> None:
    import av

    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "35"}
        frame = av.VideoFrame.from_ndarray(np.full((size[1], size[0], 3), 100, np.uint8), format="rgb24")
        for _ in range(frames):
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def make_standins(work: Path, table: pd.DataFrame) -> dict:
    """Videos (one file, a link per video id) and empty OpenPose folders for every video."""
    videos, skeletons = work / "videos", work / "skeletons"
    longest = int(table.end_frame.max()) + 1
    master = work / "standin.mp4"
    if not master.exists():
        standin_video(master, longest)
    for folder in (videos, skeletons):
        folder.mkdir(parents=True, exist_ok=True)
    for video_id in table.video_id.unique():
        link = videos / f"{video_id}.mp4"
        if not link.exists():
            link.symlink_to(master)
        (skeletons / str(video_id)).mkdir(exist_ok=True)
    return {"videos": str(videos), "skeletons": str(skeletons), "frames_per_video": longest}


def standin_split(work: Path, table: pd.DataFrame) -> Path:
    """A stand-in for the 37/35 cross-subject protocol (whose subject list is not in the table):
    the first 37 subject ids train, the other 35 test."""
    subjects = sorted(table.subject_id.unique())
    path = work / "split.csv"
    pd.DataFrame({"subject_id": subjects, "split": ["train" if i < 37 else "test"
                                                    for i in range(len(subjects))]}).to_csv(path, index=False)
    return path


def imigue_config(work: Path, shards: int, results: str) -> Path:
    path = work / f"imigue_{shards}.yaml"
    path.write_text(f"results: {work}/{results}\ndataset:\n  kind: imigue\n"
                    f"  label_table: {work}/imigue_labels.csv\n  multi_class_segments: each\n"
                    f"  split: {work}/split.csv\n  videos: {work}/videos\n  skeletons: {work}/skeletons\n"
                    f"data: {{shards: {shards}}}\n")
    return path


# ---- parts (each in its own process) ---------------------------------------------------------

def whole_table(work: Path, table: pd.DataFrame) -> tuple[Path, int]:
    """The whole real table, and how many of its rows label a segment a second time (16, each
    with another class: dataset.multi_class_segments: each makes each class a sample)."""
    twice = table.duplicated(["video_id", "start_frame", "end_frame"])
    path = work / "imigue_labels.csv"
    table.to_csv(path, index=False)
    return path, int(twice.sum())


def part_clips(work: Path, table: pd.DataFrame) -> dict:
    from mgpipe import config as mgconfig

    labels, twice = whole_table(work, table)
    cfg = mgconfig.load([REPO / "config" / "paper.yaml", imigue_config(work, 1, "clips_run")])
    cfg_json = json.dumps({k: cfg[k] for k in ("seed", "mode", "dataset", "pose")})
    argv = [sys.executable, "-m", "mgpipe", "-q", "clips", "--labels", str(labels), "--split",
            str(standin_split(work, table)), "--videos",
            str(work / "videos"), "--skeletons", str(work / "skeletons"), "--config-json", cfg_json,
            "--out", str(work / "clips.csv"), "--classes-out", str(work / "classes.csv")]
    _, wall, peak = measured(argv)
    manifest = pd.read_csv(work / "clips.csv")
    return {"part": "clips", "rows": len(manifest), "segments_of_two_classes": twice,
            "videos": int(manifest.video_id.nunique()),
            "seconds": round(wall, 1), "peak_rss_mib": round(peak)}


def workflow_copy(work: Path) -> Path:
    """A fresh copy of the workflow to plan in: Snakemake's records (.snakemake) of other runs in
    the checkout must not decide what is up to date."""
    wf = work / "wf"
    shutil.rmtree(wf, ignore_errors=True)
    wf.mkdir(parents=True)
    for name in ("Snakefile", "config.yaml"):
        shutil.copy(REPO / name, wf / name)
    for name in ("workflow", "profiles", "config"):
        shutil.copytree(REPO / name, wf / name, ignore=shutil.ignore_patterns("__pycache__"))
    return wf


def plan(work: Path, shards: int, when="nothing run yet") -> dict:
    """Planning time of a SLURM dry run and its jobs per rule."""
    config = imigue_config(work, shards, f"plan_{shards}")
    argv = [sys.executable, "-m", "snakemake", "-n", "--profile", "profiles/slurm", "--configfile",
            "config/paper.yaml", str(config), "--default-resources", "slurm_account=bench",
            "slurm_partition=bench", "mem_mb=8000", "runtime=60"]
    runs = [measured(argv, cwd=work / "wf") for _ in range(2)]   # the better of two: the first may read cold files
    stdout, wall, peak = min(runs, key=lambda r: r[1])
    return {"part": "plan", "shards": shards, "profile": "profiles/slurm", "when": when,
            "seconds": round(wall, 1), "peak_rss_mib": round(peak), "jobs": jobs_per_rule(stdout)}


def plan_after_a_changed_row(work: Path, shards: int) -> list[dict]:
    """The clips stage and the slices run for real (locally); the shard and gathered stores stand
    in as empty files marked up to date (`snakemake --touch`): planned again. Then one label row
    changed and the slices brought up to date: planned again, only its shard's jobs."""
    config = imigue_config(work, shards, f"plan_{shards}")
    results = work / f"plan_{shards}"
    shutil.rmtree(results, ignore_errors=True)
    local = [sys.executable, "-m", "snakemake", "--cores", "2", "--configfile", "config/paper.yaml",
             str(config), "--"]
    measured([*local, f"{results}/shards/clips"], cwd=work / "wf")
    for kind in ("frames", "keypoints"):
        (results / "shards" / kind).mkdir(parents=True)
        for i in range(shards):
            (results / "shards" / kind / f"{i}.h5").touch()
    time.sleep(0.05)
    stores = [f"{results}/frames.h5", f"{results}/keypoints.h5"]
    for store in stores:
        Path(store).touch()
    measured([*local[:-1], "--touch", "--", *stores], cwd=work / "wf")
    out = [plan(work, shards, "data stages done (stand-in stores)")]
    labels = work / "imigue_labels_single.csv"
    original = labels.read_bytes()
    table = pd.read_csv(labels, dtype={"video_id": str})
    table.loc[100, "class"] = 99 if table.loc[100, "class"] != 99 else 31
    table.to_csv(labels, index=False)
    try:
        measured([*local, f"{results}/shards/clips"], cwd=work / "wf")
        out.append(plan(work, shards, f"label row 100 (video {table.video_id[100]}, shard "
                                      f"{shard_of(table.video_id[100], shards)}) changed, slices redone"))
    finally:
        labels.write_bytes(original)
    return out


def write_keypoints(work: Path, manifest: pd.DataFrame) -> Path:
    """A keypoint store with every clip of the manifest at its length (coco17, one person):
    a smooth random walk of a body-sized skeleton in a 1280x720 frame, scores 0.3..1."""
    from mgpipe.formats import keypoints as store
    from mgpipe.layouts import get_layout

    path = work / "keypoints.h5"
    if path.exists():
        return path
    rng = np.random.default_rng(0)
    body = rng.uniform([-120, -250], [120, 250], size=(17, 2)).astype(np.float32)
    with store.writer(path, get_layout("coco17"), source="bench_scale") as w:
        for cid, length in zip(manifest.clip_id, manifest.num_frames):
            walk = np.cumsum(rng.normal(0, 2, size=(int(length), 1, 2)), axis=0).astype(np.float32)
            xy = body[None] + walk + np.float32([640, 360])
            score = rng.uniform(0.3, 1.0, size=(int(length), 17, 1)).astype(np.float32)
            w.add(cid, np.concatenate([xy, score], -1)[None], 1280, 720)
    return path


def part_loader(work: Path, workers: int, batches: int) -> dict:
    import resource

    from mgpipe import config as mgconfig
    from mgpipe.learning import specs
    from mgpipe.learning.samples import make_loader, model_samples

    def rss():
        return int(Path("/proc/self/status").read_text().split("VmRSS:")[1].split()[0]) / 1024

    config = mgconfig.load([REPO / "config" / "paper.yaml"])
    # every clip a training clip: the loader walks all 18,498 of them
    manifest = pd.read_csv(work / "clips.csv", dtype={"video_id": str, "clip_id": str}).assign(split="train")
    store = work / "keypoints.h5"
    before = rss()
    data = model_samples(specs.get("joint"), config, manifest, "train", train=True, keypoints_h5=store)
    built = rss()
    loader = make_loader(data, config["pose_model"]["optim"]["batch_size"], device="cpu",
                         shuffle_seed=0, workers=workers)
    t0, seen, at_20, worker_rss = time.perf_counter(), 0, None, []
    for i, batch in enumerate(loader):
        seen += len(batch["label"])
        if i + 1 == 20:
            at_20 = rss()
            import psutil  # the loader's worker processes, alive while it iterates

            worker_rss = [round(c.memory_info().rss / 2**20) for c in psutil.Process().children()]
        if batches and i + 1 >= batches:
            break
    batches = i + 1
    return {"part": "loader", "workers": workers, "clips_in_store": len(manifest),
            "train_clips": len(data), "batches": batches, "samples": seen,
            "rss_after_20_batches_mib": round(at_20) if at_20 else None,
            "worker_rss_after_20_batches_mib": worker_rss,
            "store_mib": round(store.stat().st_size / 2**20), "rss_before_mib": round(before),
            "rss_dataset_mib": round(built), "rss_after_mib": round(rss()),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "seconds_per_batch": round((time.perf_counter() - t0) / batches, 3)}


def part_rates(work: Path) -> dict:
    """Per-frame costs on one core, and the gather of 16 shards of the keypoint store."""
    from mgpipe.stages.decode import decode_video
    from mgpipe.stages.pose import extract_video
    from mgpipe.stages.shards import gather, shard_of
    from mgpipe.tools.photo_video import pan_zoom_video, sample_photo

    video = work / "hd_10s.mp4"
    if not video.exists():
        pan_zoom_video(sample_photo("grace_hopper"), video, frames=250, size=(1280, 720), fps=25)
    out = {"part": "rates", "video": "1280x720, 25 fps, 10 s (250 frames), H.264"}
    for name, clips in (("decode_read_only", [("c", 249, 249)]), ("decode_read_and_store", [("c", 0, 249)])):
        t0 = time.perf_counter()
        decode_video((str(video), clips, 340, 90))
        out[f"{name}_ms_per_frame"] = round((time.perf_counter() - t0) / 250 * 1000, 2)

    # real iMiGUE OpenPose JSON, repeated to 250 frames of one video folder
    folder = work / "openpose" / "298"
    folder.mkdir(parents=True, exist_ok=True)
    real = sorted(OPENPOSE.glob("*_keypoints.json"))
    for f in range(250):
        target = folder / f"298_{f:012d}_keypoints.json"
        if not target.exists():
            shutil.copy(real[f % len(real)], target)
    t0 = time.perf_counter()
    extract_video((str(work / "openpose"), "298", [("c", 0, 249)], "coco17", 0.2))
    out["pose_openpose_ms_per_frame"] = round((time.perf_counter() - t0) / 250 * 1000, 2)

    # gather: the 18,498-clip keypoint store cut into 16 shard stores, then gathered
    import h5py

    manifest = pd.read_csv(work / "clips.csv", dtype={"video_id": str, "clip_id": str})
    shard_dir = work / "kp_shards"
    shard_dir.mkdir(exist_ok=True)
    of = {c: shard_of(v, 16) for c, v in zip(manifest.clip_id, manifest.video_id)}
    with h5py.File(work / "keypoints.h5", "r") as src:
        files = [h5py.File(shard_dir / f"{i}.h5", "w") for i in range(16)]
        for f in files:
            for k, v in src.attrs.items():
                f.attrs[k] = v
            f.create_group("clips")
        for cid in src["clips"]:
            src.copy(src[f"clips/{cid}"], files[of[cid]]["clips"], name=cid)
        for f in files:
            f.close()
    t0 = time.perf_counter()
    stats = gather("keypoints", [shard_dir / f"{i}.h5" for i in range(16)], work / "gathered.h5")
    out["gather_keypoints_16_shards_s"] = round(time.perf_counter() - t0, 2)
    out["gather_keypoints_mib"] = round((work / "gathered.h5").stat().st_size / 2**20)
    out["gather_clips"] = stats["clips"]

    # gather of frame stores: 4 shards of 100 clips x 65 frames of 15 KB (a 340 px JPEG's size)
    from mgpipe.formats import frames as frame_store

    rng = np.random.default_rng(0)
    blob = rng.integers(0, 256, 15000, dtype=np.uint8)
    shards = []
    for i in range(4):
        shards.append(shard_dir / f"frames_{i}.h5")
        with frame_store.writer(shards[-1], max_side=340, jpeg_quality=90) as w:
            for c in range(100):
                w.add(f"{i}_{c:04d}", [np.roll(blob, f) for f in range(65)], 340, 192, 340 / 1280)
    t0 = time.perf_counter()
    gather("frames", shards, work / "gathered_frames.h5")
    seconds = time.perf_counter() - t0
    size = (work / "gathered_frames.h5").stat().st_size / 2**20
    out["gather_frames_mib_per_s"] = round(size / seconds)
    out["gather_frames_frames_per_s"] = round(4 * 100 * 65 / seconds)
    return out


def estimate(rates: dict, table: pd.DataFrame, shard_counts=(1, 4, 16, 64),
             decode_threads=16, pose_threads=8) -> dict:
    """Stage times on iMiGUE from the per-frame rates: core-hours, and the wall time of the
    largest shard with the SLURM profile's threads per job (all shards running at once)."""
    from mgpipe.stages.shards import shard_of

    per_video = []
    for video_id, rows in table.groupby("video_id"):
        read = int(rows.end_frame.max()) + 1
        labelled = np.zeros(read, bool)
        for s, e in zip(rows.start_frame, rows.end_frame):
            labelled[int(s):int(e) + 1] = True
        per_video.append((str(video_id), read, int(labelled.sum()), int((rows.end_frame - rows.start_frame + 1).sum())))
    skip = rates["decode_read_only_ms_per_frame"] / 1000
    keep = rates["decode_read_and_store_ms_per_frame"] / 1000
    pose = rates["pose_openpose_ms_per_frame"] / 1000
    cost = {v: {"decode": r * skip + u * (keep - skip), "pose": c * pose} for v, r, u, c in per_video}
    out = {"video_frames_read": sum(r for _, r, _, _ in per_video),
           "labelled_frames": sum(u for _, _, u, _ in per_video),
           "clip_frames": sum(c for _, _, _, c in per_video),
           "decode_core_hours": round(sum(c["decode"] for c in cost.values()) / 3600, 2),
           "pose_core_hours": round(sum(c["pose"] for c in cost.values()) / 3600, 2), "shards": {}}
    for n in shard_counts:
        work = {}
        for v, c in cost.items():
            k = shard_of(v, n)
            w = work.setdefault(k, {"decode": 0.0, "pose": 0.0, "longest_decode": 0.0, "longest_pose": 0.0})
            w["decode"] += c["decode"]
            w["pose"] += c["pose"]
            w["longest_decode"] = max(w["longest_decode"], c["decode"])
            w["longest_pose"] = max(w["longest_pose"], c["pose"])
        # a job spreads its videos over its threads; no job ends before its longest video
        decode = max(max(w["decode"] / decode_threads, w["longest_decode"]) for w in work.values())
        pose_ = max(max(w["pose"] / pose_threads, w["longest_pose"]) for w in work.values())
        out["shards"][n] = {"decode_wall_min": round(decode / 60, 1), "pose_wall_min": round(pose_ / 60, 1),
                            "largest_shard_share": round(max(w["decode"] for w in work.values()) /
                                                         sum(w["decode"] for w in work.values()), 3)}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default="/tmp/mgpipe_bench_scale", help="scratch folder (kept)")
    ap.add_argument("--out", help="write the figures here as JSON")
    ap.add_argument("--parts", nargs="+", default=["clips", "plan", "loader", "rates"],
                    choices=["clips", "plan", "loader", "rates"])
    ap.add_argument("--batches", type=int, default=50, help="loader batches to time (and a whole "
                    "epoch with workers 0)")
    ap.add_argument("--part", help=argparse.SUPPRESS)   # run one part in this process
    ap.add_argument("--workers", type=int, default=0, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if not TABLE.is_file():
        raise SystemExit(f"{TABLE}: the real iMiGUE label table is needed (../shared/data)")
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    if a.part:   # a child process
        result = {"loader": lambda: part_loader(work, a.workers, a.batches),
                  "rates": lambda: part_rates(work)}[a.part]()
        print(json.dumps(result))
        return 0

    table = pd.read_csv(TABLE, dtype={"video_id": str})
    results = {"table": {"rows": len(table), "videos": int(table.video_id.nunique())}}
    results["standins"] = make_standins(work, table)
    me = [sys.executable, str(Path(__file__).resolve())]
    if "clips" in a.parts or not (work / "clips.csv").exists():
        results["clips"] = part_clips(work, table)
        print(json.dumps(results["clips"]), flush=True)
    if "plan" in a.parts:
        whole_table(work, table)
        standin_split(work, table)
        workflow_copy(work)
        results["plan"] = [plan(work, n) for n in (1, 16, 64)] + plan_after_a_changed_row(work, 16)
        for p in results["plan"]:
            print(json.dumps(p), flush=True)
    if "loader" in a.parts or "rates" in a.parts:
        write_keypoints(work, pd.read_csv(work / "clips.csv", dtype={"video_id": str, "clip_id": str}))
    if "loader" in a.parts:
        results["loader"] = []
        for workers, batches in ((0, a.batches), (2, a.batches), (0, 0)):   # 0: a whole epoch
            res, wall, peak = child([*me, "--work", str(work), "--part", "loader", "--workers",
                                     str(workers), "--batches", str(batches)])
            res["process_peak_rss_mib"] = round(peak)
            results["loader"].append(res)
            print(json.dumps(res), flush=True)
    if "rates" in a.parts:
        res, _, _ = child([*me, "--work", str(work), "--part", "rates"])
        results["rates"] = res
        results["estimate"] = estimate(res, table)
        print(json.dumps(res), flush=True)
        print(json.dumps(results["estimate"]), flush=True)
    if a.out:
        Path(a.out).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
