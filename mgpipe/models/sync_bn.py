"""Batch normalisation over the global batch of a data-parallel job (train.sync_bn).

Under DistributedDataParallel each process normalises with the statistics of its own share of
the batch, so a job of W processes trains another model than one process with the same global
batch. Synchronised statistics make the process layout (one process, G GPUs, N nodes) not matter.
CUDA uses torch's SyncBatchNorm; torch's has no CPU path, so on the CPU (gloo) the layers become
CpuSyncBatchNorm: the per-channel sums, sums of squares and counts are all-reduced with a
differentiable all-reduce, whose backward sums the gradients of all processes (with DDP's
averaging this is the gradient of the global batch's mean loss).
"""

from __future__ import annotations

import warnings

import torch
import torch.distributed as dist
from torch import nn


class CpuSyncBatchNorm(nn.BatchNorm3d):
    """BatchNorm3d with statistics over every process's batch (same parameters and buffers, so
    the state dict is a BatchNorm3d's)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized()
                and dist.get_world_size() > 1):
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        channels = x.shape[1]
        dims = [0, *range(2, x.dim())]
        xf = x.float()
        local = torch.cat([xf.sum(dims), (xf * xf).sum(dims),
                           xf.new_tensor([x.numel() // channels])])
        # The differentiable all-reduce of torch.distributed.nn is marked deprecated in favour of
        # a private module (torch.distributed._functional_collectives); it is still the public one
        # with a backward. Silenced for this call only: importing mgpipe changes no global filter.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"torch\.distributed\.nn\.functional\.all_reduce "
                                    r"is deprecated", category=FutureWarning)
            total = all_reduce(local)
        count = total[-1]
        mean = total[:channels] / count
        var = (total[channels:2 * channels] / count - mean * mean).clamp(min=0)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                factor = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - factor).add_(mean.detach() * factor)
                self.running_var.mul_(1 - factor).add_(var.detach() * (count / (count - 1)) * factor)
        shape = [1, channels] + [1] * (x.dim() - 2)
        y = (xf - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)


def synchronise_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """The model with every BatchNorm3d synchronised across the processes of the job."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    for module in model.modules():
        if type(module) is nn.BatchNorm3d:
            module.__class__ = CpuSyncBatchNorm  # same parameters and buffers: swap the forward only
    return model
