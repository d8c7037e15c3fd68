"""Pose backends that look at frames (mediapipe, mmpose).

Each lives in `<name>_backend.py` and exposes `make_estimator(options) -> Estimator`:

    estimator.layout          mgpipe layout name of the rows it returns
    estimator.reset()         start of a new clip (drop tracking state)
    estimator(image)          H x W x 3 uint8 RGB -> float32 [P, V, 3] (x, y pixels, score 0..1)
    estimator.close()

They run in `worker.py`, often under another interpreter (mediapipe needs numpy < 2, mmpose
its own packages), so this package imports nothing beyond numpy, h5py and Pillow.
"""
