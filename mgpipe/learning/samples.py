"""Training and test samples: RGB frames from the frame store, pose heatmaps rendered per sample
from the keypoint store.

One dataset class serves every model: it yields the modalities a model needs (one frame input:
"rgb" or "swin" frames, or "motion", their temporal differences; "joint" or "limb" heatmaps)
for one clip. Randomness is drawn from a generator seeded by
(seed, epoch, index), never from global state, so a sample is the same whichever worker builds
it, and a resumed run sees exactly the samples an uninterrupted one would.

Every sample looks at one *view*: a region of the frame derived from the clip's compact box
(the union box of its keypoints, grown and made square; owned by the keypoint store,
formats/keypoints.py). Training draws
a random crop of the box (area range, aspect 3/4..4/3), a random zoom and shift, and a random
horizontal mirror; testing looks at the whole box. For RGB the worker only reads and decodes
the sampled frames (at 1/2, 1/4 or 1/8 size when the view is that much larger than the
output) and cuts out the pixels the view can touch; resampling to the output size, the mirror
and normalisation run per batch where the model runs (rgb_views: one grid_sample, uint8 bytes
cross to the device). Pose heatmaps are not stored volumes cut and resized: the sampled frames' keypoints
are mapped into the view and every Gaussian is drawn exactly at the training resolution (sigma
in output pixels), and the mirror flips the keypoints' x and swaps left/right joints, so the
rendered channels and limbs follow (heatmaps.flip_volume's convention).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from mgpipe.formats import frames as frame_store
from mgpipe.formats import keypoints as keypoint_store
from mgpipe.io import InputError
from mgpipe.pose.heatmap_render import render_joints, render_limbs

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


def window_indices(num_frames: int, length: int, stride: int, rng: np.random.Generator) -> np.ndarray:
    """`length` frames `stride` apart from a random start (one window of (length - 1) * stride + 1
    frames, like MMAction2's SampleFrames for Video Swin); a clip shorter than the window is
    sampled in equal segments (sample_indices), so it is still seen whole."""
    span = (length - 1) * stride + 1
    if num_frames < span:
        return sample_indices(num_frames, length, rng)
    return int(rng.integers(num_frames - span + 1)) + stride * np.arange(length)


def difference_indices(num_frames: int, length: int, gap: int, rng: np.random.Generator) -> np.ndarray:
    """2 x `length` frame indices for `length` temporal differences (TSN's RGB-diff): one frame
    per equal segment of the first num_frames - gap frames, then the frames `gap` later (the
    clip's last frame at most; a one-frame clip differs by nothing)."""
    first = sample_indices(max(num_frames - gap, 1), length, rng)
    return np.concatenate([first, np.minimum(first + gap, num_frames - 1)])


def check_frame_gap(gap: int, lengths: dict, source, key: str = "motion.gap") -> None:
    """Refuse a temporal difference `gap` frames apart on clips of at most `gap` frames
    ({clip id: frames}): there every segment would take the same pair (the first and the last
    frame), or a one-frame clip none, and the model would learn from a constant input without a
    word. Names the shortest clip and how many are that short."""
    short = {c: n for c, n in lengths.items() if n <= gap}
    if short:
        clip = min(short, key=lambda c: (short[c], c))
        raise InputError(f"{source}: config key {key} is {gap}, but clip {clip!r} has only {short[clip]} "
                         f"frame(s) ({len(short)} clip(s) have at most {gap}): a difference needs a clip "
                         f"longer than the gap; set {key} below {short[clip]} or drop the short clips")


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

    modalities: {"joint"|"limb": (frames, size)} and/or one frame input {name: (frames, size)}
    (any other name: "rgb", "motion", "swin"; read from the frame store).
    keypoints_h5: the keypoint store (formats/keypoints.py); it gives every modality its compact box and the
    pose modalities their keypoints (required for those; without it RGB uses the whole frame).
    Training samples: random segment offsets, a random crop of the box (crop_area), zoom in
    [zoom[0], zoom[1]] and shift in [-shift, shift] (fractions of the output side) and a random
    flip, one view shared by all modalities of a sample. Test samples: `views` seeded draws per
    clip, whole box, no flip unless flip=True doubles the views with mirrored copies.
    sigma (output pixels) and padding (of the compact box) follow the heatmap semantics; mean
    and std normalise the frames. Frames are taken one per equal segment of the clip, or with
    frame_stride > 0 from one window, frame_stride apart (window_indices); with gap > 0 the
    input is the difference of each frame and the frame `gap` later, in the same view, over std
    (frame_differences). The settings come from the config (model_samples); without
    augmentation arguments a sample is the whole box, unmirrored.
    """

    def __init__(self, manifest: pd.DataFrame, split: str, modalities: dict, *, frames_h5=None,
                 keypoints_h5=None, train: bool, sigma: float, padding: float, mean, std,
                 seed: int, views: int = 1, flip: bool = False, crop_area=(1.0, 1.0),
                 zoom=(1.0, 1.0), shift: float = 0.0, frame_stride: int = 0, gap: int = 0):
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
        self.frame_stride, self.gap = int(frame_stride), int(gap)
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
        # the stores are untrusted: every clip of the split is there, no longer than the
        # manifest says, with the dtypes and shapes of its format (metadata only, once)
        for store in (self.keypoints, self.frames):
            if store is not None:
                store.check_manifest(self.clips)
        if self.gap and self.frames is not None:
            check_frame_gap(self.gap, {c: self.frames.clip_length(c) for c in self.clip_ids}, frames_h5)

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
            if name not in POSE:  # the frame input
                sample[name], sample[f"{name}_view"] = self._rgb(clip_id, box, length, size, crop, zoom, shift,
                                                                 mirror, rng)
            else:
                region = view_box(box, crop, zoom, shift)
                idx = sample_indices(kp.shape[1], length, rng)
                sample.update(self.heatmaps(name, kp[:, idx], region, size, mirror))
        return sample

    def heatmaps(self, kind: str, keypoints, region, size: int, mirror: bool) -> dict:
        """The sample's entries for the [C, T, size, size] heatmaps of keypoints [M, T, V, 3]
        over the frame region (x0, y0, x1, y1), mirrored if asked: the drawn pixels as
        `<kind>_idx` (int32 flat index) and `<kind>_val` (float32), a few percent of the dense
        volume; to_device scatters them into volumes on the device."""
        if mirror:
            keypoints = mirror_keypoints(keypoints, region, size, self.layout.flip_index)
        if kind == "joint":
            idx, val = render_joints(keypoints, region, size, self.sigma, channels_first=True, sparse=True)
        else:
            idx, val = render_limbs(keypoints, region, size, self.sigma, self.layout.limbs,
                                    channels_first=True, sparse=True)
        return {f"{kind}_idx": torch.from_numpy(idx), f"{kind}_val": torch.from_numpy(val)}

    def volume_shape(self, kind: str) -> tuple[int, int, int, int]:
        """[C, T, H, W] of one sample's heatmaps of `kind`."""
        frames, size = self.modalities[kind]
        channels = self.layout.num_joints if kind == "joint" else self.layout.num_limbs
        return channels, frames, size, size

    def _rgb(self, clip_id, box, length, size, crop, zoom, shift, mirror, rng):
        """(uint8 [T, h, w, 3]: the sampled frames cut to the pixels the view can touch,
        float32 [5]: the view x0, y0, x1, y1 in those pixels' edge coordinates and the mirror
        flag). Resampling to size x size, the mirror and normalisation happen per batch on the
        device (rgb_views): the worker only decodes and cuts."""
        ds, attrs = self.frames.clip(clip_id)
        if self.gap:
            idx = difference_indices(len(ds), length, self.gap, rng)
        elif self.frame_stride:
            idx = window_indices(len(ds), length, self.frame_stride, rng)
        else:
            idx = sample_indices(len(ds), length, rng)
        scale = attrs["scale"]
        if box is None:
            box = np.array([0, 0, attrs["width"] / scale, attrs["height"] / scale])
        region = view_box(box, crop, zoom, shift) * scale
        # Decode at 1/2, 1/4 or 1/8 size (JPEG's DCT scaling: a proper low-pass, and cheaper
        # than the full decode) as far as the view keeps at least 0.8 `size` pixels a side: the
        # bilinear step then shrinks by at most 1.6x (bilinear taps skip pixels beyond that:
        # aliasing; at ~2x it measurably hurt the demo's RGB model) and enlarges by at most 1.25x.
        side = min(region[2] - region[0], region[3] - region[1])
        reduce = next((k for k in (8, 4, 2) if side / k >= 0.8 * size), 1)
        region = region / reduce
        width, height = -(-attrs["width"] // reduce), -(-attrs["height"] // reduce)
        # the pixels bilinear taps can reach: the region and one pixel around it, inside the
        # frame (taps outside the frame read the zeros the batch is padded with: black)
        x0 = int(np.clip(np.floor(region[0]) - 1, 0, width))
        x1 = int(np.clip(np.ceil(region[2]) + 1, x0, width))
        y0 = int(np.clip(np.floor(region[1]) - 1, 0, height))
        y1 = int(np.clip(np.ceil(region[3]) + 1, y0, height))
        frames = np.zeros((len(idx), max(y1 - y0, 1), max(x1 - x0, 1), 3), np.uint8)
        # looped short clips repeat frames: read and decode each once
        distinct, where = np.unique(idx, return_inverse=True)
        for u, data in enumerate(self.frames.jpegs(clip_id, distinct)):
            img = self.frames.decode(clip_id, int(distinct[u]), data, reduce)  # JPEG only, size checked
            if img.size != (width, height):
                raise InputError(f"{self.frames.path}: clip {clip_id!r} frame {distinct[u]} is not the "
                                 f"{attrs['width']}x{attrs['height']} its attributes say (decoded at 1/{reduce}: "
                                 f"{img.width}x{img.height})")
            if y1 > y0 and x1 > x0:
                frames[where == u] = np.asarray(img.crop((x0, y0, x1, y1)))
        view = np.array([region[0] - x0, region[1] - y0, region[2] - x0, region[3] - y0, float(mirror)],
                        np.float32)
        return torch.from_numpy(frames), torch.from_numpy(view)

    def to_device(self, batch: dict, device, pose_dtype=torch.float32) -> dict:
        """A collated batch on the device: frame views resampled and normalised (or their
        differences taken), heatmaps scattered into volumes in pose_dtype (the step's compute
        dtype: written once in it, never converted after), there."""
        # the pixel counts stay on the host: scatter_volumes builds the sample offsets there
        out = {k: v.to(device, non_blocking=True) for k, v in batch.items() if not k.endswith("_count")}
        for name in [k for k in batch if f"{k}_view" in batch]:
            mean, std = self.mean.to(device), self.std.to(device)
            size = self.modalities[name][1]
            if self.gap:
                out[name] = frame_differences(rgb_views(out[name], out.pop(f"{name}_view"), size,
                                                        torch.zeros_like(mean), std), mean / std)
            else:
                out[name] = rgb_views(out[name], out.pop(f"{name}_view"), size, mean, std)
        for kind in POSE:
            if f"{kind}_idx" in out:
                out[kind] = scatter_volumes(out.pop(f"{kind}_idx"), out.pop(f"{kind}_val"),
                                            batch[f"{kind}_count"], self.volume_shape(kind), pose_dtype)
        return out


def rgb_views(frames: torch.Tensor, views: torch.Tensor, size: int, mean, std) -> torch.Tensor:
    """float32 [B, 3, T, size, size] network input from uint8 frames [B, T, H, W, 3] and views
    [B, 5] (x0, y0, x1, y1 in pixel-edge coordinates of the frames, mirror flag): bilinear
    sampling at the output pixel centres mapped into the view (outside the frames reads 0,
    black), the mirror as a negated x axis, then (x - mean) / std per channel.

    One grid_sample per batch: a view is an axis-aligned scale and shift shared by all frames
    of a sample, so the frames ride in the channel axis (channel c * T + t) and one grid per
    sample, built from its two 1-D axes, serves them all; the result is already [B, 3, T]."""
    B, T, H, W, _ = frames.shape
    x0, y0, x1, y1, mirror = views.float().unbind(1)
    # grid_sample's normalised coordinates (align_corners=False): -1 and 1 are the outer pixel
    # edges, so edge coordinate u of a W-wide frame is 2u/W - 1; output pixel i's centre is
    # (i + 0.5) / size of the way across the view (from the right edge when mirrored)
    steps = (torch.arange(size, device=frames.device, dtype=torch.float32) + 0.5) / size
    across = torch.where(mirror[:, None] > 0, 1 - steps, steps)
    gx = (x0[:, None] + across * (x1 - x0)[:, None]) * (2 / W) - 1
    gy = (y0[:, None] + steps * (y1 - y0)[:, None]) * (2 / H) - 1
    grid = torch.empty(B, size, size, 2, device=frames.device)
    grid[..., 0] = gx[:, None, :]
    grid[..., 1] = gy[:, :, None]
    x = torch.empty(B, 3, T, H, W, device=frames.device)
    x.copy_(frames.permute(0, 4, 1, 2, 3))  # one pass: uint8 -> float and channels first
    out = F.grid_sample(x.view(B, 3 * T, H, W), grid, mode="bilinear", padding_mode="zeros",
                        align_corners=False)
    return out.view(B, 3, T, size, size).sub_(mean.view(1, 3, 1, 1, 1)).div_(std.view(1, 3, 1, 1, 1))


def frame_differences(x: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """[B, 3, T, H, W] differences from views [B, 3, 2T, H, W] of frames (first T) and the frames
    `gap` later (last T), each already over std: later minus earlier, less offset (mean / std)
    per channel. Both halves share the sample's view (crop, mirror), so a still pixel gives 0."""
    T = x.shape[2] // 2
    return (x[:, :, T:] - x[:, :, :T]).sub_(offset.view(1, 3, 1, 1, 1))


def scatter_volumes(idx: torch.Tensor, val: torch.Tensor, counts, shape, dtype=torch.float32) -> torch.Tensor:
    """[B, *shape] volumes in `dtype` (the step's compute dtype: bfloat16 under bf16 autocast)
    from the batch's drawn pixels: idx (int32 flat index within a sample's volume) and val,
    `counts[b]` of them for sample b, every index of a sample once (persons already combined by
    their maximum in the worker, heatmap_render._sparse), so one plain copy writes them.

    The volume is written once: on the CPU its zeros are the kernel's fresh pages
    (_zeroed_host), which the copy's first touch faults in, not a fill pass before it; on a
    GPU a zero fill at device bandwidth."""
    n = math.prod(shape)
    counts = torch.as_tensor(counts)
    base = torch.arange(len(counts), dtype=torch.int64) * n
    # the sample offsets are built on the host: repeat_interleave on the device would wait for it
    offsets = torch.repeat_interleave(base, counts, output_size=int(idx.shape[0])).to(idx.device, non_blocking=True)
    if idx.device.type == "cpu":
        flat = _zeroed_host(len(counts) * n, dtype)
    else:
        flat = torch.zeros(len(counts) * n, dtype=dtype, device=idx.device)
    flat.index_copy_(0, offsets.add_(idx), val.to(dtype))
    return flat.view(len(counts), *shape)


def _zeroed_host(numel: int, dtype) -> torch.Tensor:
    """A zero tensor of `numel` elements in host memory, from numpy's calloc: fresh pages that
    the kernel zeroes when first touched (no separate fill pass over them), advised as huge
    pages (numpy does so for large arrays), which spares most of the page faults that torch's
    own allocation of a volume this large costs (measured: benchmarks/bench_data_path.py)."""
    if dtype == torch.bfloat16:  # numpy has no bfloat16: the same two bytes, viewed
        return torch.from_numpy(np.zeros(numel, np.uint16)).view(torch.bfloat16)
    return torch.from_numpy(np.zeros(numel, torch.empty(0, dtype=dtype).numpy().dtype))


def collate(samples: list[dict]) -> dict:
    """torch's default collation, with RGB cuts of different sizes padded with zeros (black)
    at the bottom and right to the largest of the batch, and the drawn pixels of heatmaps
    concatenated (`<kind>_count` per sample)."""
    frame_inputs = [k for k in samples[0] if f"{k}_view" in samples[0]]
    ragged = {*frame_inputs, *(f"{k}_{part}" for k in POSE for part in ("idx", "val"))}
    rest = torch.utils.data.default_collate([{k: v for k, v in s.items() if k not in ragged} for s in samples])
    for kind in POSE:
        if f"{kind}_idx" in samples[0]:
            rest[f"{kind}_idx"] = torch.cat([s[f"{kind}_idx"] for s in samples])
            rest[f"{kind}_val"] = torch.cat([s[f"{kind}_val"] for s in samples])
            rest[f"{kind}_count"] = torch.tensor([len(s[f"{kind}_idx"]) for s in samples], dtype=torch.int64)
    for name in frame_inputs:
        cuts = [s[name] for s in samples]
        T = cuts[0].shape[0]
        frames = torch.zeros(len(cuts), T, max(c.shape[1] for c in cuts), max(c.shape[2] for c in cuts), 3,
                             dtype=torch.uint8)
        for b, c in enumerate(cuts):
            frames[b, :, :c.shape[1], :c.shape[2]] = c
        rest[name] = frames
    return rest


class DeviceLoader:
    """Batches of a DataLoader delivered on the device (ClipDataset.to_device), heatmap volumes
    in pose_dtype."""

    def __init__(self, loader, device, pose_dtype=torch.float32):
        self.loader, self.dataset, self.device = loader, loader.dataset, torch.device(device)
        self.pose_dtype = pose_dtype

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        for batch in self.loader:
            yield self.dataset.to_device(batch, self.device, pose_dtype=self.pose_dtype)


def check_stores(spec, manifest: pd.DataFrame, *, keypoints_h5, frames_h5=None) -> None:
    """Refuse stores that do not hold exactly the stage's manifest clips (no longer than its
    num_frames): a store built from another manifest would train or test on other clips
    without a word. Metadata only; the samples' readers then skip clips checked here."""
    stores = [keypoint_store.Reader(keypoints_h5)]
    if frames_h5 is not None and "frames" in spec.stores:
        stores.append(frame_store.Reader(frames_h5))
    for store in stores:
        try:
            if isinstance(store, keypoint_store.Reader):
                store.layout  # noqa: B018 (the shapes are checked against it)
            store.check_manifest(manifest, whole=True)
        finally:
            store.close()


def model_samples(spec, config: dict, manifest: pd.DataFrame, split: str, *, train: bool,
                  keypoints_h5, frames_h5=None, views: int = 1, flip: bool = False) -> ClipDataset:
    """The samples model `spec` sees on one split: its inputs at the training or test size, the
    config's heatmap and colour settings, and its augmentation when training (test views and
    mirrored copies otherwise). The one place training, validation, testing, prediction and
    the benchmark set up their samples."""
    # the frame input's own section (rgb, motion, swin) shapes and normalises its frames
    frames = config[spec.frame_input or "rgb"]
    common = dict(frames_h5=frames_h5 if "frames" in spec.stores else None, keypoints_h5=keypoints_h5,
                  seed=config["seed"], sigma=config["heatmaps"]["sigma"],
                  padding=config["heatmaps"]["padding"], mean=frames["mean"], std=frames["std"],
                  frame_stride=frames.get("stride", 0), gap=frames.get("gap", 0))
    if train:
        return ClipDataset(manifest, split, spec.modalities(config, True), train=True,
                           **spec.augment(config), **common)
    return ClipDataset(manifest, split, spec.modalities(config, False), train=False, views=views,
                       flip=flip, **common)


def make_loader(dataset, batch_size, *, device, shuffle_seed=None, workers=0, drop_last=False,
                rank=0, world=1, sample_weights=None, pose_dtype=torch.float32) -> DeviceLoader:
    """Batches on `device` over a seeded permutation; under data parallelism each process takes
    every world-th index of the same permutation (an equal share, so all processes step
    together). sample_weights ([len(dataset)], with shuffle_seed): instead of the permutation,
    len(dataset) indices drawn with replacement in proportion to the weights, with the same
    seed (class-aware sampling, mgpipe/learning/imbalance.py). pose_dtype: the heatmap volumes'
    dtype, the step's compute dtype (torch.bfloat16 under bf16 autocast: step_dtype)."""
    sampler = None
    if shuffle_seed is not None:
        g = torch.Generator().manual_seed(shuffle_seed)
        if sample_weights is None:
            order = torch.randperm(len(dataset), generator=g).tolist()
        else:
            order = torch.multinomial(torch.as_tensor(sample_weights, dtype=torch.float64), len(dataset),
                                      replacement=True, generator=g).tolist()
        sampler = order[: len(order) // world * world][rank::world]
    return DeviceLoader(torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, num_workers=workers, collate_fn=collate,
        drop_last=drop_last, pin_memory=torch.cuda.is_available(),
        persistent_workers=False), device, pose_dtype)
