"""Stage 2: decode videos into the frame store (formats/frames.py), JPEG frames per clip.

Frames are read sequentially with PyAV (frame-exact, no seeking) and only the frames inside a
labelled segment are kept. Frame k is the k-th in presentation order (the manifest's frame numbers,
seconds already mapped by timestamps in the clips stage) and is stored as players show it: turned
by the video's display matrix (mgpipe.sources.video).
"""

from __future__ import annotations

import logging
import time
from multiprocessing import get_context
from pathlib import Path

import pandas as pd
from PIL import Image

from mgpipe.formats import frames as frame_store
from mgpipe.formats.frames import encode_jpeg
from mgpipe.io import InputError
from mgpipe.runtime import progress as progress_bar
from mgpipe.sources.video import orientation, upright

log = logging.getLogger(__name__)


def _resize(img: Image.Image, max_side: int) -> Image.Image:
    w, h = img.size
    if max_side <= 0 or max(w, h) <= max_side:
        return img
    s = max_side / max(w, h)
    return img.resize((max(1, round(w * s)), max(1, round(h * s))), Image.BILINEAR)


def decode_video(job):
    """Decode one video; return its path, {clip_id: [jpeg arrays]}, the stored frame size and
    the turn applied from its rotation metadata ("" when none).

    job = (video path, [(clip_id, start, end)], max_side, quality). Runs in a worker process.
    A damaged video (truncated, corrupt) is refused, naming the file; one that is sound but
    ends before a clip does is returned short (the caller warns).
    """
    import av

    path, clips, max_side, quality = job
    last = max(end for _, _, end in clips)
    out = {cid: [] for cid, _, _ in clips}
    size, decoded, header_frames, ops, turned = None, 0, 0, (), ""
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
                if index == 0:
                    ops, turned = orientation(frame, path)
                wanted = [cid for cid, start, end in clips if start <= index <= end]
                if not wanted:
                    continue
                img = _resize(upright(frame.to_image(), ops), max_side)
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
    return str(path), out, size, turned


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
    with frame_store.writer(out_h5, max_side=max_side, jpeg_quality=quality) as store:
        ctx = get_context("fork")
        pool = ctx.Pool(threads) if threads > 1 else None
        results = pool.imap(decode_video, jobs) if pool else map(decode_video, jobs)
        try:
            for path, clips, size, turned in progress_bar(results, total=len(jobs), desc="decode",
                                                          unit="video", enabled=progress):
                if turned:
                    log.info("%s: %s (stored as players show it)", path, turned)
                for cid, frames in clips.items():
                    if not frames:
                        raise InputError(f"{path}: no frames decoded for clip {cid}")
                    if len(frames) < expected[cid]:
                        short += 1
                        log.warning("%s: clip %s has %d of %d frames (video ends early)",
                                    path, cid, len(frames), expected[cid])
                    ow, oh = original[cid]
                    store.add(cid, frames, size[0], size[1], scale=size[0] / ow)
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
