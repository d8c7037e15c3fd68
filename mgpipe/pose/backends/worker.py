"""Run an image pose backend over clips of an mgpipe frame store; one process, one model.

    python -m mgpipe.pose.backends.worker JOB.json

JOB.json: {"backend": name, "options": {...}, "frames": frames.h5, "clips": [clip ids],
"out": result.h5}. The result holds, per clip, every person the backend saw in every frame:
`clips/<id>/people` float32 [N, V, 3] (all frames' people stacked, x and y in pixels of the
ORIGINAL video, i.e. the frame store's resize undone) and `clips/<id>/counts` int32 [T] (people
per frame). Choosing the main person, layout conversion and the statistics happen in the caller
(mgpipe.stages.pose), which runs under the main interpreter.

Protocol on stdout, one JSON object a line: {"layout": ...} once the model is loaded, then
{"done": clip_id, "frames": T} per clip. A failure prints one line `error: ...` on stderr and
exits with status 3, so the caller can report it without a traceback from this process.

This module may run under an interpreter that has only numpy, h5py, Pillow and the backend's
own packages: keep its imports to those (mgpipe.formats.frames needs no more). Frames are read
through the frame store's checked reader and decoded as JPEG only, their size checked first.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time

import h5py
import numpy as np

from mgpipe.formats import frames as frame_store
from mgpipe.io import InputError

EXIT_ERROR = 3


class WorkerError(Exception):
    pass


def _emit(obj) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def load_estimator(backend: str, options: dict):
    # A dotted name is a module of the user's (tests use one); plain names are ours.
    name = backend if "." in backend else f"mgpipe.pose.backends.{backend}_backend"
    try:
        # Backends may import their library lazily, so a missing one surfaces in either call.
        return importlib.import_module(name).make_estimator(dict(options or {}))
    except ImportError as e:
        raise WorkerError(f"pose backend {backend!r} cannot be imported under {sys.executable} "
                          f"({type(e).__name__}: {e}); install it (scripts/install_{backend}.sh) "
                          "and point pose.python at that environment's interpreter") from None
    except (ValueError, FileNotFoundError, OSError) as e:
        raise WorkerError(f"pose backend {backend!r}: {e}") from None


def run_clip(estimator, store: frame_store.Reader, clip_id: str) -> tuple[np.ndarray, np.ndarray]:
    ds, attrs = store.clip(clip_id)
    scale = attrs["scale"]
    estimator.reset()
    people, counts = [], np.zeros(len(ds), np.int32)
    for t in range(len(ds)):
        image = store.decode(clip_id, t, store.read(f"clips/{clip_id}", t))
        found = np.asarray(estimator(np.asarray(image)), dtype=np.float32)
        if found.ndim != 3 or found.shape[-1] != 3:
            raise WorkerError(f"backend returned shape {found.shape}, expected [P, V, 3]")
        found = found.copy()
        found[~np.isfinite(found).all(axis=-1)] = 0  # a joint a model could not place is missing
        found[..., :2] /= scale  # back to original-video pixels
        counts[t] = len(found)
        people.append(found)
    v = people[0].shape[1] if people else 0
    stacked = np.concatenate(people) if people else np.zeros((0, v, 3), np.float32)
    return stacked, counts


def run(job: dict) -> None:
    estimator = load_estimator(job["backend"], job.get("options") or {})
    _emit({"layout": estimator.layout})
    out = job["out"]
    tmp = f"{out}.part{os.getpid()}"
    try:
        store = frame_store.Reader(job["frames"])
        with h5py.File(tmp, "w") as dst:
            dst.attrs.update(layout=estimator.layout, backend=job["backend"])
            for cid in job["clips"]:
                key = f"clips/{cid}"
                t0 = time.time()
                people, counts = run_clip(estimator, store, cid)
                g = dst.create_group(key)
                g.create_dataset("people", data=people)
                g.create_dataset("counts", data=counts)
                g.attrs["seconds"] = time.time() - t0
                _emit({"done": cid, "frames": int(len(counts))})
        os.replace(tmp, out)
        store.close()
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
        estimator.close()


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m mgpipe.pose.backends.worker JOB.json", file=sys.stderr)
        return 2
    try:
        with open(argv[0]) as f:
            job = json.load(f)
        run(job)
    except (WorkerError, InputError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_ERROR
    return 0


if __name__ == "__main__":
    sys.exit(main())
