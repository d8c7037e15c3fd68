"""Training and test samples: RGB frames from the frame store, pose heatmaps rendered per sample
from the keypoint store.

One dataset class serves every model: it yields the modalities a model needs ("rgb" frames,
"joint" or "limb" heatmaps) for one clip. Randomness is drawn from a generator seeded by
(seed, epoch, index), never from global state, so a sample is the same whichever worker builds
it, and a resumed run sees exactly the samples an uninterrupted one would.

Every sample looks at one *view*: a region of the frame derived from the clip's compact box
(the union box of its keypoints, grown and made square; owned by the keypoint store,
formats/keypoints.py). Training draws
a random crop of the box (area range, aspect 3/4..4/3), a random zoom and shift, and a random
horizontal mirror; testing looks at the whole box. RGB frames are cropped to the view and
resized. Pose heatmaps are not stored volumes cut and resized: the sampled frames' keypoints
are mapped into the view and every Gaussian is drawn exactly at the training resolution (sigma
in output pixels), and the mirror flips the keypoints' x and swaps left/right joints, so the
rendered channels and limbs follow (heatmaps.flip_volume's convention).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from PIL import Image

from .formats import frames as frame_store
from .formats import keypoints as keypoint_store
from .formats.frames import decode_jpeg
from .heatmaps import render_joints, render_limbs
from .io import InputError

POSE = ("joint", "limb")


def sample_indices(num_frames: int, length: int, rng: np.random.Generator) -> np.ndarray:
    """Split the clip into `length` equal segments and draw one frame from each; a clip shorter
    than `length` is looped from a random start (docs/method.md §8)."""
    if num_frames < length:
        start = rng.integers(num_frames)
        return (start + np.arange(length)) % num_frames
    edges = np.linspace(0, num_frames, length + 1)
    lo = np.floor(edges[:-1]).astype(int)
    hi = np.maximum(np.floor(edges[1:]).astype(int), lo + 1)
    return lo + (rng.random(length) * (hi - lo)).astype(int)


def random_crop(rng: np.random.Generator, area=(0.56, 1.0), ratio=(3 / 4, 4 / 3)):
    """A crop (x0, y0, w, h) in unit coordinates of the compact box, like RandomResizedCrop."""
    for _ in range(10):
        a = rng.uniform(*area)
        r = np.exp(rng.uniform(np.log(ratio[0]), np.log(ratio[1])))
        w, h = np.sqrt(a * r), np.sqrt(a / r)
        if w <= 1 and h <= 1:
            return rng.uniform(0, 1 - w), rng.uniform(0, 1 - h), w, h
    return 0.0, 0.0, 1.0, 1.0


def view_box(box, crop=(0.0, 0.0, 1.0, 1.0), zoom: float = 1.0, shift=(0.0, 0.0)) -> np.ndarray:
    """The frame region (x0, y0, x1, y1) a sample looks at: the crop (unit coordinates of the
    box), then zoomed and shifted so that a point at output coordinate u (of a W-wide grid over
    the crop) lands at W/2 + zoom * (u - W/2) + shift_x * W (likewise in y)."""
    x0, y0, x1, y1 = (float(v) for v in np.asarray(box, np.float64).reshape(4))
    cx, cy, cw, ch = (float(v) for v in crop)
    w, h = cw * (x1 - x0), ch * (y1 - y0)
    mx, my = x0 + cx * (x1 - x0) + w / 2, y0 + cy * (y1 - y0) + h / 2
    half_w, half_h = w / (2 * zoom), h / (2 * zoom)
    mx, my = mx - shift[0] * w / zoom, my - shift[1] * h / zoom
    return np.array([mx - half_w, my - half_h, mx + half_w, my + half_h], np.float64)


def mirror_keypoints(kp: np.ndarray, region, width: int, flip_index) -> np.ndarray:
    """Keypoints [M, T, V, 3] as seen in the horizontally mirrored view: x is reflected so that
    output pixel i becomes W-1-i on a `width`-wide grid over `region`, and joint j takes the
    values of joint flip_index[j]. Missing keypoints keep their zero score (they stay missing
    although their coordinates move)."""
    x0, _, x1, _ = (float(v) for v in region)
    out = np.array(kp, dtype=np.float64)
    out[..., 0] = 2 * x0 + (x1 - x0) * (width - 1) / width - out[..., 0]
    missing = (kp[..., 0] == 0) & (kp[..., 1] == 0)
    out[..., 2][missing] = 0.0
    return out[:, :, np.asarray(flip_index, np.int64)]


def keypoint_channels(keypoints_h5) -> tuple[int, int]:
    """(joint channels, limb channels) of the heatmaps rendered from a keypoint store."""
    return keypoint_store.channels(keypoints_h5)


class ClipDataset(torch.utils.data.Dataset):
    """Samples of one split for the given modalities.

    modalities: {"rgb": (frames, size)} and/or {"joint"|"limb": (frames, size)}.
    keypoints_h5: the keypoint store (formats/keypoints.py); it gives every modality its compact box and the
    pose modalities their keypoints (required for those; without it RGB uses the whole frame).
    Training samples: random segment offsets, a random crop of the box (crop_area), zoom in
    [zoom[0], zoom[1]] and shift in [-shift, shift] (fractions of the output side) and a random
    flip, one view shared by all modalities of a sample. Test samples: `views` seeded draws per
    clip, whole box, no flip unless flip=True doubles the views with mirrored copies.
    sigma (output pixels) and padding (of the compact box) follow the heatmap semantics; mean
    and std normalise RGB. The settings come from the config (model_samples); without
    augmentation arguments a sample is the whole box, unmirrored.
    """

    def __init__(self, manifest: pd.DataFrame, split: str, modalities: dict, *, frames_h5=None,
                 keypoints_h5=None, train: bool, sigma: float, padding: float, mean, std,
                 seed: int, views: int = 1, flip: bool = False, crop_area=(1.0, 1.0),
                 zoom=(1.0, 1.0), shift: float = 0.0):
        self.clips = manifest[manifest.split == split].reset_index(drop=True)
        if self.clips.empty:
            raise ValueError(f"no clips in split {split!r}")
        self.modalities = modalities
        self.train, self.seed, self.flip, self.crop_area = train, seed, flip, tuple(crop_area)
        self.zoom, self.shift = tuple(float(z) for z in zoom), float(shift)
        if not (0 < self.zoom[0] <= self.zoom[1]):
            raise ValueError(f"zoom range must satisfy 0 < lo <= hi, got {zoom!r}")
        if not sigma > 0:
            raise ValueError(f"sigma must be positive, got {sigma!r}")
        self.sigma, self.padding = float(sigma), float(padding)
        self.views = 1 if train else views * (2 if flip else 1)
        self.epoch = 0
        self.keypoints = keypoint_store.Reader(keypoints_h5) if keypoints_h5 is not None else None
        self.frames = frame_store.Reader(frames_h5) if frames_h5 is not None else None
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3)  # per channel, last axis
        self.std = torch.tensor(std, dtype=torch.float32).view(3)
        self.labels = self.clips.label.to_numpy()
        self.clip_ids = self.clips.clip_id.astype(str).tolist()
        self.layout = None
        if any(m in modalities for m in POSE):
            if keypoints_h5 is None:
                raise ValueError("pose modalities need the keypoint store (keypoints_h5)")
            self.layout = self.keypoints.layout
            if "limb" in modalities and self.layout.num_limbs == 0:
                raise InputError(f"{keypoints_h5}: layout {self.layout.name!r} has no limbs")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self):
        return len(self.clips) * self.views

    def _draw_view(self, clip_index: int, view: int):
        """(generator, crop, zoom, shift, mirror) of one sample; the generator goes on to draw
        the frame indices."""
        if not self.train:
            base_views = self.views // (2 if self.flip else 1)
            rng = np.random.default_rng([self.seed, clip_index, view % base_views])
            return rng, (0.0, 0.0, 1.0, 1.0), 1.0, (0.0, 0.0), view >= base_views
        rng = np.random.default_rng([self.seed, self.epoch, clip_index])
        # Crop and mirror are drawn first and zoom/shift only when enabled, so RGB and fused
        # samples (no zoom or shift) draw exactly what they drew before these existed.
        crop = (0.0, 0.0, 1.0, 1.0) if self.crop_area[0] >= 1 else random_crop(rng, area=self.crop_area)
        mirror = self.flip and rng.random() < 0.5
        zoom = 1.0
        if self.zoom != (1.0, 1.0):
            zoom = float(np.exp(rng.uniform(np.log(self.zoom[0]), np.log(self.zoom[1]))))
        shift = (0.0, 0.0)
        if self.shift > 0:
            shift = tuple(float(s) for s in rng.uniform(-self.shift, self.shift, 2))
        return rng, crop, zoom, shift, mirror

    def _keypoints(self, clip_id):
        """(keypoints [M, T, V, 3], compact box) of one clip."""
        clip = self.keypoints.clip(clip_id)
        return clip[0], self.keypoints.box(clip_id, self.padding, clip)

    def __getitem__(self, index):
        clip_index, view = divmod(index, self.views)
        clip_id = self.clip_ids[clip_index]
        rng, crop, zoom, shift, mirror = self._draw_view(clip_index, view)
        sample = {"label": int(self.labels[clip_index]), "index": clip_index}
        kp = box = None
        if self.keypoints is not None:
            kp, box = self._keypoints(clip_id)
        for name, (length, size) in self.modalities.items():
            if name == "rgb":
                sample["rgb"] = self._rgb(clip_id, box, length, size, crop, zoom, shift, mirror, rng)
            else:
                region = view_box(box, crop, zoom, shift)
                idx = sample_indices(kp.shape[1], length, rng)
                sample[name] = torch.from_numpy(self.render(name, kp[:, idx], region, size, mirror))
        return sample

    def render(self, kind: str, keypoints, region, size: int, mirror: bool) -> np.ndarray:
        """float32 [C, T, size, size] heatmaps of keypoints [M, T, V, 3] over the frame region
        (x0, y0, x1, y1), mirrored if asked."""
        if mirror:
            keypoints = mirror_keypoints(keypoints, region, size, self.layout.flip_index)
        if kind == "joint":
            return render_joints(keypoints, region, size, self.sigma, channels_first=True)
        return render_limbs(keypoints, region, size, self.sigma, self.layout.limbs, channels_first=True)

    def _rgb(self, clip_id, box, length, size, crop, zoom, shift, mirror, rng):
        ds, attrs = self.frames.clip(clip_id)
        idx = sample_indices(len(ds), length, rng)
        scale = attrs["scale"]
        if box is None:
            box = np.array([0, 0, attrs["width"] / scale, attrs["height"] / scale])
        region = view_box(box, crop, zoom, shift) * scale
        region = tuple(int(round(v)) for v in region.tolist())
        cache = {}
        frames = np.empty((len(idx), size, size, 3), np.uint8)
        for t, i in enumerate(idx):  # looped short clips repeat frames: decode each once
            if i not in cache:
                img = decode_jpeg(ds[int(i)]).crop(region).resize((size, size), Image.BILINEAR)
                if mirror:
                    img = img.transpose(Image.FLIP_LEFT_RIGHT)
                cache[i] = img
            frames[t] = cache[i]
        # uint8 frames, normalised as float32 in their own contiguous [T, H, W, 3] layout (the
        # same values as per-frame floats, without strided passes), then viewed as [3, T, H, W]
        x = torch.from_numpy(frames).float()
        return x.sub_(self.mean).div_(self.std).permute(3, 0, 1, 2)


def model_samples(spec, config: dict, manifest: pd.DataFrame, split: str, *, train: bool,
                  keypoints_h5, frames_h5=None, views: int = 1, flip: bool = False) -> "ClipDataset":
    """The samples model `spec` sees on one split: its inputs at the training or test size, the
    config's heatmap and colour settings, and its augmentation when training (test views and
    mirrored copies otherwise). The one place training, validation, testing, prediction and
    the benchmark set up their samples."""
    common = dict(frames_h5=frames_h5 if "frames" in spec.stores else None, keypoints_h5=keypoints_h5,
                  seed=config["seed"], sigma=config["heatmaps"]["sigma"],
                  padding=config["heatmaps"]["padding"], mean=config["rgb"]["mean"],
                  std=config["rgb"]["std"])
    if train:
        return ClipDataset(manifest, split, spec.modalities(config, True), train=True,
                           **spec.augment(config), **common)
    return ClipDataset(manifest, split, spec.modalities(config, False), train=False, views=views,
                       flip=flip, **common)


def make_loader(dataset, batch_size, *, shuffle_seed=None, workers=0, drop_last=False,
                rank=0, world=1):
    """A loader over a seeded permutation; under data parallelism each process takes every
    world-th index of the same permutation (an equal share, so all processes step together)."""
    sampler = None
    if shuffle_seed is not None:
        g = torch.Generator().manual_seed(shuffle_seed)
        order = torch.randperm(len(dataset), generator=g).tolist()
        sampler = order[: len(order) // world * world][rank::world]
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
        drop_last=drop_last, pin_memory=torch.cuda.is_available(),
        persistent_workers=False)
