"""Real photos of people that ship inside installed packages, and videos with known motion.

`pan_zoom_video` films a still photo with a smooth virtual camera (pan + zoom) and returns, per
frame, the affine map from photo pixels to frame pixels. Keypoints found on the still photo,
mapped through it, say where a pose estimator must find them in every frame: a ground truth for
tracking on real images without any annotated video.

Pixel coordinates are continuous: pixel (i, j) covers [i, i + 1) x [j, j + 1), so its centre is
(i + 0.5, j + 0.5), as in MediaPipe's normalised coordinates times the image size.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from mgpipe.io import atomic_path

PHOTOS = ("grace_hopper", "astronaut")


def sample_photo(name: str) -> np.ndarray:
    """H x W x 3 uint8 RGB photo of a person from an installed package (never downloaded).

    grace_hopper: matplotlib's sample data (512 x 600, head and shoulders, no hands in view).
    astronaut: scikit-image's data.astronaut() (512 x 512, upper body); needs scikit-image,
    which mgpipe does not depend on.
    """
    if name == "grace_hopper":
        from matplotlib import cbook

        try:
            path = cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
        except (OSError, ValueError) as e:
            raise FileNotFoundError(f"matplotlib's sample photo grace_hopper.jpg is missing "
                                    f"from this matplotlib installation ({e})") from None
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))
    if name == "astronaut":
        try:
            from skimage import data
        except ImportError:
            raise ModuleNotFoundError("sample photo 'astronaut' comes from scikit-image, which "
                                      "is not installed (pip install scikit-image)") from None
        return np.ascontiguousarray(data.astronaut()[..., :3], dtype=np.uint8)
    raise ValueError(f"unknown sample photo {name!r}; known: {', '.join(PHOTOS)}")


def _camera_path(frames: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Smooth zoom u in [0, 1] and pan (px, py) in [-1, 1]^2 per frame (random phases/rates)."""
    t = np.arange(frames) / max(frames - 1, 1)
    zoom_cycles, zoom_phase = rng.uniform(0.6, 1.0), rng.uniform(0, 2 * np.pi)
    u = 0.5 - 0.5 * np.cos(2 * np.pi * zoom_cycles * t + zoom_phase)
    pan = np.stack([
        rng.uniform(0.6, 0.9) * np.sin(2 * np.pi * rng.uniform(0.5, 1.0) * t + rng.uniform(0, 2 * np.pi))
        for _ in range(2)], axis=1)
    return u, pan


def pan_zoom_video(photo: np.ndarray, out_path, *, frames: int = 48, size=(320, 240), fps: int = 25,
                   seed: int = 0, region=None, max_zoom: float = 1.5, crf: int = 18,
                   fill: int = 128, display_rotation: int = 0) -> np.ndarray:
    """Write an H.264 mp4 of a smooth pan + zoom over `photo`; return float64 [T, 2, 3] affines.

    affines[t] @ (x, y, 1) is where photo point (x, y) appears in frame t (continuous pixel
    coordinates, see the module docstring). size is (width, height), both even (yuv420p).

    region (x0, y0, x1, y1), photo pixels, default the whole photo, is the person: it stays fully
    in view in every frame. The widest view (zoom 1) is max_zoom times the tightest frame-shaped
    crop around the region, the narrowest is that tight crop, and the pan moves the crop only as
    far as keeps the region inside it. Areas beyond the photo's edges are grey (`fill`).

    display_rotation (0, 90, -90, 180; counterclockwise degrees as PyAV's frame.rotation reads
    them) films as a phone does: the frames are stored turned the other way, with a display
    matrix that turns them back, so players (and mgpipe) show `size` and the affines hold for
    what they show. -90 is a phone held upright: frames stored sideways, shown turned clockwise.
    """
    import av

    photo = np.asarray(photo)
    if photo.ndim != 3 or photo.shape[2] != 3 or photo.dtype != np.uint8:
        raise ValueError(f"photo must be H x W x 3 uint8 RGB, got shape {photo.shape} {photo.dtype}")
    width, height = (int(v) for v in size)
    if width <= 0 or height <= 0 or width % 2 or height % 2:
        raise ValueError(f"size {size}: width and height must be positive and even")
    if display_rotation not in (0, 90, -90, 180):
        raise ValueError(f"display_rotation={display_rotation}: use 0, 90, -90 or 180")
    if frames < 1 or max_zoom < 1:
        raise ValueError(f"frames={frames} must be >= 1 and max_zoom={max_zoom} >= 1")
    ph, pw = photo.shape[:2]
    x0, y0, x1, y1 = (0.0, 0.0, float(pw), float(ph)) if region is None else map(float, region)
    if not (x1 > x0 and y1 > y0):
        raise ValueError(f"region {region} is empty")

    aspect = width / height
    tight_w = max(x1 - x0, (y1 - y0) * aspect)
    centre = np.array([(x0 + x1) / 2, (y0 + y1) / 2])
    slack = np.array([tight_w - (x1 - x0), tight_w / aspect - (y1 - y0)])  # region margin at zoom max

    u, pan = _camera_path(frames, np.random.default_rng(seed))
    crop_w = tight_w * max_zoom / (1 + (max_zoom - 1) * u)        # zoom 1 .. max_zoom
    crop_h = crop_w / aspect
    margin = np.stack([crop_w - tight_w, crop_h - tight_w / aspect], axis=1) + slack
    centres = centre + pan * margin / 2
    left, top = centres[:, 0] - crop_w / 2, centres[:, 1] - crop_h / 2

    # Pad once so that every crop box lies inside the image (Image.resize needs that).
    pad = int(np.ceil(max(0.0, -left.min(), -top.min(), (left + crop_w).max() - pw,
                          (top + crop_h).max() - ph))) + 2
    padded = np.full((ph + 2 * pad, pw + 2 * pad, 3), fill, np.uint8)
    padded[pad:pad + ph, pad:pad + pw] = photo
    canvas = Image.fromarray(padded)

    scale = width / crop_w
    affines = np.zeros((frames, 2, 3))
    affines[:, 0, 0] = affines[:, 1, 1] = scale
    affines[:, 0, 2] = -scale * left
    affines[:, 1, 2] = -scale * top

    with atomic_path(out_path) as tmp, av.open(str(tmp), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        quarter = display_rotation in (90, -90)
        stream.width, stream.height = (height, width) if quarter else (width, height)
        stream.pix_fmt, stream.options = "yuv420p", {"crf": str(crf)}
        if display_rotation:
            stream.set_display_rotation(display_rotation)
        for t in range(frames):
            # resize() with a float box samples exactly that rectangle and filters the
            # downscale (Image.transform would alias).
            box = (left[t] + pad, top[t] + pad, left[t] + pad + crop_w[t], top[t] + pad + crop_h[t])
            frame = canvas.resize((width, height), Image.Resampling.LANCZOS, box=box)
            # players turn the stored frame counterclockwise by display_rotation: store it turned back
            stored = np.ascontiguousarray(np.rot90(np.asarray(frame), -display_rotation // 90))
            for packet in stream.encode(av.VideoFrame.from_ndarray(stored, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return affines
