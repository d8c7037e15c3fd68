"""Training and test samples read from the HDF5 stores.

One dataset class serves every model: it yields the modalities a model needs ("rgb" frames,
"joint" or "limb" heatmaps) for one clip. Randomness is drawn from a generator seeded by
(seed, epoch, index), never from global state, so a sample is the same whichever worker builds
it, and a resumed run sees exactly the samples an uninterrupted one would.
"""

from __future__ import annotations

import os

import h5py
import hdf5plugin  # noqa: F401  (registers the zstd filter the heatmap store uses)
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image

from .decode import decode_jpeg
from .layouts import get_layout


def sample_indices(num_frames: int, length: int, rng: np.random.Generator) -> np.ndarray:
    """Split the clip into `length` equal segments and draw one frame from each; a clip shorter
    than `length` is looped from a random start (model.md section 8)."""
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


class _Stores:
    """h5py handles opened lazily per process: forked DataLoader workers must not share them."""

    def __init__(self, paths: dict):
        self.paths = paths
        self._pid, self._files = None, {}

    def __getitem__(self, name) -> h5py.File:
        if self._pid != os.getpid():
            self._pid, self._files = os.getpid(), {}
        if name not in self._files:
            self._files[name] = h5py.File(self.paths[name], "r")
        return self._files[name]

    def __getstate__(self):
        return {"paths": self.paths, "_pid": None, "_files": {}}


class ClipDataset(torch.utils.data.Dataset):
    """Samples of one split for the given modalities.

    modalities: {"rgb": (frames, size)} and/or {"joint"|"limb": (frames, size)}.
    Training samples: random segment offsets, random resized crop, random flip (shared by all
    modalities of a sample). Test samples: `views` seeded draws per clip, whole box, no flip
    unless flip=True doubles the views with mirrored copies.
    """

    def __init__(self, manifest: pd.DataFrame, split: str, modalities: dict, *, frames_h5=None,
                 heatmaps_h5=None, train: bool, seed: int = 0, views: int = 1, flip: bool = True,
                 crop_area=(0.56, 1.0), mean=(123.675, 116.28, 103.53), std=(58.395, 57.12, 57.375)):
        self.clips = manifest[manifest.split == split].reset_index(drop=True)
        if self.clips.empty:
            raise ValueError(f"no clips in split {split!r}")
        self.modalities = modalities
        self.train, self.seed, self.flip, self.crop_area = train, seed, flip, tuple(crop_area)
        self.views = 1 if train else views * (2 if flip else 1)
        self.epoch = 0
        self.stores = _Stores({"frames": frames_h5, "heatmaps": heatmaps_h5})
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1, 1)
        self.labels = self.clips.label.to_numpy()
        self._flip_maps = None
        if "joint" in modalities or "limb" in modalities:
            with h5py.File(heatmaps_h5, "r") as h5:
                layout = get_layout(h5.attrs["layout"])
            self._flip_maps = {"joint": layout.flip_index, "limb": layout.limb_flip_index}

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self):
        return len(self.clips) * self.views

    def __getitem__(self, index):
        clip_index, view = divmod(index, self.views)
        row = self.clips.iloc[clip_index]
        if self.train:
            rng = np.random.default_rng([self.seed, self.epoch, clip_index])
            crop = random_crop(rng, area=self.crop_area)
            mirror = self.flip and rng.random() < 0.5
        else:
            base_views = self.views // (2 if self.flip else 1)
            rng = np.random.default_rng([self.seed, clip_index, view % base_views])
            crop, mirror = (0.0, 0.0, 1.0, 1.0), view >= base_views
        sample = {"label": int(row.label), "index": clip_index}
        box = self.stores["heatmaps"][f"box/{row.clip_id}"][()] if self.stores.paths["heatmaps"] else None
        for name, (length, size) in self.modalities.items():
            if name == "rgb":
                sample["rgb"] = self._rgb(row.clip_id, box, length, size, crop, mirror, rng)
            else:
                sample[name] = self._heatmap(name, row.clip_id, length, size, crop, mirror, rng)
        return sample

    def _rgb(self, clip_id, box, length, size, crop, mirror, rng):
        ds = self.stores["frames"]["clips"][clip_id]
        idx = sample_indices(len(ds), length, rng)
        scale = float(ds.attrs["scale"])
        if box is None:
            box = np.array([0, 0, ds.attrs["width"] / scale, ds.attrs["height"] / scale])
        x0, y0, x1, y1 = (np.asarray(box, np.float64) * scale).tolist()
        cx, cy, cw, ch = crop
        region = (x0 + cx * (x1 - x0), y0 + cy * (y1 - y0),
                  x0 + (cx + cw) * (x1 - x0), y0 + (cy + ch) * (y1 - y0))
        region = tuple(int(round(v)) for v in region)
        cache, frames = {}, []
        for i in idx:  # looped short clips repeat frames: decode each once
            if i not in cache:
                img = decode_jpeg(ds[int(i)]).crop(region).resize((size, size), Image.BILINEAR)
                if mirror:
                    img = img.transpose(Image.FLIP_LEFT_RIGHT)
                cache[i] = torch.from_numpy(np.asarray(img, dtype=np.float32).copy())
            frames.append(cache[i])
        x = torch.stack(frames).permute(3, 0, 1, 2)  # [3, T, H, W]
        return (x - self.mean) / self.std

    def _heatmap(self, kind, clip_id, length, size, crop, mirror, rng):
        volume = self.stores["heatmaps"][f"{kind}/{clip_id}"][()]  # whole clip: [T, C, H, W]
        idx = sample_indices(len(volume), length, rng)
        x = torch.from_numpy(volume[idx]).float().div_(255.0)
        H, W = x.shape[-2:]
        cx, cy, cw, ch = crop
        xa, xb = int(round(cx * W)), max(int(round((cx + cw) * W)), int(round(cx * W)) + 1)
        ya, yb = int(round(cy * H)), max(int(round((cy + ch) * H)), int(round(cy * H)) + 1)
        x = x[:, :, ya:yb, xa:xb]
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        if mirror:
            x = x.flip(-1)[:, torch.from_numpy(self._flip_maps[kind])]
        return x.permute(1, 0, 2, 3).contiguous()  # [C, T, H, W]
