"""Run an image pose backend (mgpipe/pose/backends) in worker processes and collect its output.

The workers may use another Python environment (`pose.python`): mediapipe needs numpy < 2,
mmpose its own packages. They get the mgpipe package through a private PYTHONPATH entry that
holds only a link to it, so nothing of this environment leaks into theirs.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import h5py
import numpy as np

from mgpipe.io import InputError
from mgpipe.runtime import progress as progress_bar

log = logging.getLogger(__name__)


def _package_path(tmp: Path) -> str:
    """A folder holding only a link named mgpipe to this package."""
    link = tmp / "mgpipe"
    link.symlink_to(Path(__file__).resolve().parent.parent, target_is_directory=True)
    return str(tmp)


def _shards(items: list, n: int) -> list[list]:
    """n contiguous, near-equal shards (contiguous keeps a video's clips in one worker)."""
    n = max(1, min(n, len(items)))
    bounds = np.linspace(0, len(items), n + 1).round().astype(int)
    return [items[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def _pump(stream, tag: int, out: queue.Queue) -> None:
    for line in stream:
        out.put((tag, line))
    out.put((tag, None))


def run_image_backend(clip_ids: list[str], frames_h5, backend: str, *, options=None, python=None,
                      workers: int = 1, progress: bool = True, extra_path=()):
    """Yield (clip_id, layout name, [people [P, V, 3] per frame]) for every clip, in order.

    extra_path: more PYTHONPATH entries for the workers, where a backend given as a dotted
    module name lives (also taken from the MGPIPE_BACKEND_PATH environment variable).
    """
    extra_path = [*extra_path, *filter(None, os.environ.get("MGPIPE_BACKEND_PATH", "").split(os.pathsep))]
    python = str(python or sys.executable)
    if not Path(python).exists() and "/" in python:
        raise InputError(f"{python}: pose.python interpreter not found (install the backend's "
                         f"environment with scripts/install_{backend}.sh)")
    shards = _shards(list(clip_ids), workers)
    with tempfile.TemporaryDirectory(prefix="mgpipe-pose-") as tmp:
        tmp = Path(tmp)
        env = dict(os.environ, PYTHONNOUSERSITE="1",
                   PYTHONPATH=os.pathsep.join([_package_path(tmp), *map(str, extra_path)]))
        # Several model processes share the cores; one thread each avoids oversubscription.
        if len(shards) > 1:
            env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
        procs, outs, logs = [], [], []
        lines: queue.Queue = queue.Queue()
        for i, shard in enumerate(shards):
            job = {"backend": backend, "options": options or {}, "frames": str(Path(frames_h5).resolve()),
                   "clips": shard, "out": str(tmp / f"part{i}.h5")}
            (tmp / f"job{i}.json").write_text(json.dumps(job))
            logs.append(open(tmp / f"worker{i}.log", "w+"))
            try:
                p = subprocess.Popen([python, "-m", "mgpipe.pose.backends.worker", str(tmp / f"job{i}.json")],
                                     stdout=subprocess.PIPE, stderr=logs[-1], text=True, env=env)
            except OSError as e:
                raise InputError(f"{python}: cannot run the pose.python interpreter ({e})") from None
            procs.append(p)
            outs.append(job["out"])
            threading.Thread(target=_pump, args=(p.stdout, i, lines), daemon=True).start()
        try:
            _watch(procs, lines, logs, backend, python, sum(map(len, shards)), progress)
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
            for f in logs:
                f.close()
        for out, shard in zip(outs, shards):
            with h5py.File(out, "r") as h5:
                layout = str(h5.attrs["layout"])
                for cid in shard:
                    g = h5[f"clips/{cid}"]
                    people, counts = g["people"][()], g["counts"][()]
                    yield cid, layout, np.split(people, np.cumsum(counts)[:-1])


def _watch(procs, lines, logs, backend, python, total, progress) -> None:
    open_streams = len(procs)
    bar = progress_bar(total=total, desc=f"pose ({backend})", unit="clip", enabled=progress)
    with bar:
        while open_streams:
            tag, line = lines.get()
            if line is None:
                open_streams -= 1
                continue
            try:
                msg = json.loads(line)
            except json.JSONDecodeError:
                log.info("pose worker %d: %s", tag, line.rstrip())
                continue
            if "layout" in msg:
                log.info("pose worker %d: %s model loaded, layout %s", tag, backend, msg["layout"])
            elif "done" in msg:
                bar.update(1)
    for i, p in enumerate(procs):
        if p.wait() != 0:
            logs[i].seek(0)
            text = logs[i].read().strip().splitlines()
            errors = [t[len("error: "):] for t in text if t.startswith("error: ")]
            if errors:
                raise InputError(errors[-1])
            tail = "\n".join(text[-15:])
            raise RuntimeError(f"pose worker {i} ({backend} under {python}) failed with exit "
                               f"status {p.returncode}:\n{tail}")
