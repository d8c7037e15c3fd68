"""One training step (forward, backward, SGD update) of a pose model on the CPU in fp32, in
channels_last_3d, and in channels_last_3d under bf16 autocast: what train.channels_last and
train.amp buy on this CPU.

    python benchmarks/bench_cpu_step.py                # the KARD joint model (benchmarks/kard.yaml)
    python benchmarks/bench_cpu_step.py --threads 2 --batch 8
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mgpipe.config import load_yaml  # noqa: E402
from mgpipe.models.single import build_single  # noqa: E402
from mgpipe.runtime import cpu_has_bf16  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "benchmarks" / "kard.yaml"))
    ap.add_argument("--channels", type=int, default=15, help="heatmap channels (KARD: 15 joints)")
    ap.add_argument("--classes", type=int, default=18)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    pose = load_yaml(args.config)["pose_model"]
    frames, size = pose["input"]["frames"], pose["input"]["size"]
    model = build_single("pose", args.channels, args.classes, pose["network"])
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    torch.manual_seed(0)
    x = torch.rand(args.batch, args.channels, frames, size, size)
    y = torch.randint(0, args.classes, (args.batch,))

    def step(channels_last: bool, bf16: bool) -> None:
        xx = x.contiguous(memory_format=torch.channels_last_3d) if channels_last else x
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model.loss(model(xx), y)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    print(f"pose model {pose['network']}, input {args.batch}x{args.channels}x{frames}x{size}x{size}, "
          f"{args.threads} thread(s), native bf16: {cpu_has_bf16()}")
    base = None
    for name, channels_last, bf16 in (("fp32", False, False), ("channels_last_3d", True, False),
                                      ("channels_last_3d + bf16", True, True)):
        model.to(memory_format=torch.channels_last_3d if channels_last else torch.contiguous_format)
        for _ in range(2):
            step(channels_last, bf16)
        best = float("inf")
        for _ in range(args.steps):
            t = time.perf_counter()
            step(channels_last, bf16)
            best = min(best, time.perf_counter() - t)
        base = base or best
        print(f"{name:26s} {best * 1000:7.0f} ms/step  {base / best:4.2f}x")


if __name__ == "__main__":
    main()
