"""Pose backends that look at frames (mediapipe, mmpose).

Each lives in `<name>_backend.py` and exposes `make_estimator(options) -> Estimator`:

    estimator.layout          mgpipe layout name of the rows it returns
    estimator.reset()         start of a new clip (drop tracking state)
    estimator(image)          H x W x 3 uint8 RGB -> float32 [P, V, 3] (x, y pixels, score 0..1)
    estimator.close()

They run in `worker.py`, often under another interpreter (mediapipe needs numpy < 2, mmpose
its own packages), so this package imports nothing beyond numpy, h5py and Pillow.
"""

IMAGE_BACKENDS = ("mediapipe", "mmpose")


def reads_frames(backend: str) -> bool:
    """Whether a pose backend runs a model on the frames (a built-in one, or a user's module
    given by its dotted name) rather than reading provided keypoints."""
    return backend in IMAGE_BACKENDS or "." in backend
