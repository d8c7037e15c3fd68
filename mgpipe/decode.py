"""Stage 2: decode videos into an HDF5 frame store of JPEG-compressed frames, one dataset per clip.

Frames are read sequentially with PyAV (frame-exact, no seeking) and only the frames inside a
labelled segment are kept. JPEG at quality 90 is ~10x smaller than raw pixels and decodes in well
under a millisecond per frame, so loaders get random access to any frame of any clip cheaply.
"""

from __future__ import annotations

import io
import logging
import time
from multiprocessing import get_context
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm

from .io import InputError, atomic_h5

log = logging.getLogger(__name__)
FORMAT_VERSION = 1


def _resize(img: Image.Image, max_side: int) -> Image.Image:
    w, h = img.size
    if max_side <= 0 or max(w, h) <= max_side:
        return img
    s = max_side / max(w, h)
    return img.resize((max(1, round(w * s)), max(1, round(h * s))), Image.BILINEAR)


def encode_jpeg(img: Image.Image, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return np.frombuffer(buf.getvalue(), dtype=np.uint8)


def decode_jpeg(data) -> Image.Image:
    img = Image.open(io.BytesIO(data.tobytes() if hasattr(data, "tobytes") else data))
    img.draft("RGB", img.size)
    return img.convert("RGB")


def decode_video(job):
    """Decode one video; return {clip_id: [jpeg arrays]} and the stored frame size.

    job = (video path, [(clip_id, start, end)], max_side, quality). Runs in a worker process.
    A damaged video (truncated, corrupt) is refused, naming the file; one that is sound but
    ends before a clip does is returned short (the caller warns).
    """
    import av

    path, clips, max_side, quality = job
    last = max(end for _, _, end in clips)
    out = {cid: [] for cid, _, _ in clips}
    size, decoded, header_frames = None, 0, 0
    try:
        if Path(path).stat().st_size == 0:
            raise InputError(f"{path}: not a video (empty file)")
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise InputError(f"{path}: not a video (no video stream)")
            stream = container.streams.video[0]
            # No frame threads: with them FFmpeg reports a damaged stream only on its log (a
            # truncated video just ends, and hooking the log deadlocks PyAV), while a decoder
            # without them raises. The worker pool already decodes videos in parallel.
            stream.thread_type = "SLICE"
            header_frames = stream.frames
            for index, frame in enumerate(container.decode(stream)):
                if index > last:
                    break
                decoded = index + 1
                wanted = [cid for cid, start, end in clips if start <= index <= end]
                if not wanted:
                    continue
                img = _resize(frame.to_image(), max_side)
                size = img.size
                data = encode_jpeg(img, quality)
                for cid in wanted:
                    out[cid].append(data)
    except av.error.FFmpegError as e:
        cause = f"{type(e).__name__}: {getattr(e, 'strerror', None) or e}"
        if decoded:
            listed = f" of the {header_frames} its header lists" if header_frames else ""
            raise InputError(f"{path}: damaged video: decoding failed after {decoded} frame(s)"
                             f"{listed} ({cause})") from None
        raise InputError(f"{path}: damaged or not a video ({cause})") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read the video ({e.strerror or e})") from None
    return str(path), out, size


def build_frame_store(manifest: pd.DataFrame, out_h5, *, max_side: int, quality: int, threads=1,
                      progress=True) -> dict:
    """Frames of every manifest clip into a JPEG frame store at out_h5 (atomically).

    max_side, quality: the config's decode.max_side and decode.jpeg_quality (required: the
    schema holds their defaults).
    """
    jobs = []
    for video, group in manifest.groupby("video", sort=True):
        clips = [(r.clip_id, int(r.start_frame), int(r.end_frame)) for r in group.itertuples()]
        jobs.append((video, clips, max_side, quality))
    expected = dict(zip(manifest.clip_id, manifest.num_frames))
    original = {r.clip_id: (int(r.width), int(r.height)) for r in manifest.itertuples()}

    t0, n_frames, n_bytes, short = time.time(), 0, 0, 0
    with atomic_h5(out_h5) as h5:
        h5.attrs.update(format_version=FORMAT_VERSION, max_side=max_side, jpeg_quality=quality)
        clips_group = h5.create_group("clips")
        vlen = h5py.vlen_dtype(np.uint8)
        ctx = get_context("fork")
        pool = ctx.Pool(threads) if threads > 1 else None
        results = pool.imap(decode_video, jobs) if pool else map(decode_video, jobs)
        try:
            for path, clips, size in tqdm(results, total=len(jobs), desc="decode", unit="video",
                                          disable=not progress):
                for cid, frames in clips.items():
                    if not frames:
                        raise InputError(f"{path}: no frames decoded for clip {cid}")
                    if len(frames) < expected[cid]:
                        short += 1
                        log.warning("%s: clip %s has %d of %d frames (video ends early)",
                                    path, cid, len(frames), expected[cid])
                    ds = clips_group.create_dataset(cid, (len(frames),), dtype=vlen)
                    for i, f in enumerate(frames):
                        ds[i] = f
                    ow, oh = original[cid]
                    ds.attrs.update(width=size[0], height=size[1], scale=size[0] / ow)
                    n_frames += len(frames)
                    n_bytes += sum(f.nbytes for f in frames)
        finally:
            if pool:
                pool.terminate()
    stats = {"videos": len(jobs), "clips": len(manifest), "frames": n_frames,
             "short_clips": short, "megabytes": round(n_bytes / 2**20, 2),
             "seconds": round(time.time() - t0, 2)}
    log.info("decode: %s", stats)
    return stats


def read_frames(h5: h5py.File, clip_id: str, indices) -> list[Image.Image]:
    """Decode only the requested frames of a clip (the store holds each frame separately)."""
    ds = h5["clips"][clip_id]
    return [decode_jpeg(ds[int(i)]) for i in indices]
