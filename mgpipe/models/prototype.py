"""Prototypical refinement loss, FR-Head style (docs/method.md §6).

Per stream: z = proj(pooled features). From the detached argmax of the logits, each sample is a
TP (predicted its label), or else an FN of its label class and an FP of its predicted class.
Per class k we take the mean z over its TP, FN and FP samples (an empty set contributes nothing).

Prototype bank (a registered buffer ``prototypes`` [K, D], saved in checkpoints):
    P_k <- momentum * P_k(previous, detached) + (1 - momentum) * mu_TP_k
only for classes with a TP in the batch, and only in training mode. As in the reference, the
loss of the current step uses the updated P, which keeps the gradient through mu_TP; the value
stored in the buffer is detached.

All-zero prototypes: like the reference, we keep the EMA from zero (no special first-update
rule, no "initialised" flag). Because everything downstream is a cosine similarity, the first
update P = (1 - m) * mu_TP already has exactly the direction of mu_TP, so the choice only
changes how quickly early batches are averaged out, and the bank state stays one tensor that
matches the reference's behaviour. A class that has never had a TP keeps a zero row, whose
normalised vector is zero, so its similarity to every sample is 0.

Calibration (true class y_i only), a_i = alpha * (1 - p_i,y), p = softmax of the detached
logits (a weighting, not a path for gradients):
    FN logit: S[i, y] + a_i * [y has FN] * (cos(mu_FN_y, z_i) - 1)
    FP logit: S[i, y] + a_i * [y has FP] * (-cos(mu_FP_y, z_i) - 1)
with S[i, k] = cos(P_k, z_i). By default every sample of class y is calibrated (the
reference); ``tp_only=True`` calibrates only samples that are TPs. mu_FN and mu_FP keep their
gradient (they are means of z in this batch). Loss = mean CE(FN logits / tau) + mean
CE(FP logits / tau).

Multi-process: under an initialised torch.distributed group, the per-class sums and counts of
the TP features are all-reduced before the EMA, so every process stores the same bank. The
value used in the loss is this global EMA; its gradient flows only through the local TP mean.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


def _dist_active() -> bool:
    return dist.is_available() and dist.is_initialized()


class PrototypeLoss(nn.Module):
    def __init__(
        self,
        num_classes: int,
        in_dim: int,
        *,
        dim: int,
        momentum: float,
        alpha: float,
        tau: float,
        tp_only: bool,
    ) -> None:
        super().__init__()
        if num_classes <= 0 or in_dim <= 0 or dim <= 0:
            raise ValueError("num_classes, in_dim and dim must be positive")
        if not 0.0 <= momentum <= 1.0:
            raise ValueError("momentum must be in [0, 1]")
        if tau <= 0:
            raise ValueError("tau must be positive")
        self.num_classes = int(num_classes)
        self.in_dim = int(in_dim)
        self.dim = int(dim)
        self.momentum = float(momentum)
        self.alpha = float(alpha)
        self.tau = float(tau)
        self.tp_only = bool(tp_only)
        self.proj = nn.Linear(self.in_dim, self.dim)
        self.register_buffer("prototypes", torch.zeros(self.num_classes, self.dim))

    def extra_repr(self) -> str:
        return (f"num_classes={self.num_classes}, momentum={self.momentum}, "
                f"alpha={self.alpha}, tau={self.tau}, tp_only={self.tp_only}")

    def forward(self, features: torch.Tensor, logits: torch.Tensor,
                labels: torch.Tensor, class_weights: torch.Tensor | None = None) -> torch.Tensor:
        """Scalar loss; in training mode also updates the prototype bank. class_weights [K]: the
        class-balanced loss's weights of its two cross-entropy terms (None: unweighted)."""
        return self.details(features, logits, labels, class_weights)["loss"]

    def details(self, features: torch.Tensor, logits: torch.Tensor,
                labels: torch.Tensor, class_weights: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Like forward, but returns the intermediate tensors too (for tests and diagnostics):
        loss, sim [N, K], fn_logits [N, K], fp_logits [N, K], prototypes used [K, D],
        z [N, D], tp [N] (bool), pred [N], a [N]."""
        if features.dim() != 2 or logits.dim() != 2 or labels.dim() != 1:
            raise ValueError("expected features [N, C], logits [N, K], labels [N]")
        n, k = logits.shape
        if k != self.num_classes:
            raise ValueError(f"logits have {k} classes, prototype bank has {self.num_classes}")
        if features.shape[0] != n or labels.shape[0] != n:
            raise ValueError("features, logits and labels disagree on the batch size")
        labels = labels.long()

        z = self.proj(features)  # [N, D]
        if z.dtype in (torch.float16, torch.bfloat16):
            z = z.float()
        with torch.no_grad():
            lg = logits.detach().to(z.dtype)
            pred = lg.argmax(dim=1)
            prob_y = torch.softmax(lg, dim=1).gather(1, labels[:, None]).squeeze(1)
            tp = pred == labels
            y1 = F.one_hot(labels, k).to(z.dtype)          # [N, K]
            p1 = F.one_hot(pred, k).to(z.dtype)
            wrong = (~tp).to(z.dtype)[:, None]
            m_tp = y1 * tp.to(z.dtype)[:, None]
            m_fn = y1 * wrong                                # FN of class label
            m_fp = p1 * wrong                                # FP of class pred
            n_tp, n_fn, n_fp = m_tp.sum(0), m_fn.sum(0), m_fp.sum(0)

        mu_tp = (m_tp.t() @ z) / n_tp.clamp(min=1)[:, None]  # [K, D], zero rows where empty
        mu_fn = (m_fn.t() @ z) / n_fn.clamp(min=1)[:, None]
        mu_fp = (m_fp.t() @ z) / n_fp.clamp(min=1)[:, None]

        prev = self.prototypes.detach().clone().to(z.dtype)
        if self.training:
            if _dist_active():
                with torch.no_grad():
                    g_sum = m_tp.t() @ z.detach()
                    g_cnt = n_tp.clone()
                    dist.all_reduce(g_sum)
                    dist.all_reduce(g_cnt)
                    g_mu = g_sum / g_cnt.clamp(min=1)[:, None]
                # global value, gradient through the local TP mean only
                mu_used = g_mu + (mu_tp - mu_tp.detach())
                has_tp = g_cnt > 0
            else:
                mu_used = mu_tp
                has_tp = n_tp > 0
            m = self.momentum
            protos = torch.where(has_tp[:, None], m * prev + (1.0 - m) * mu_used, prev)
            with torch.no_grad():
                self.prototypes.copy_(protos.detach().to(self.prototypes.dtype))
        else:
            protos = prev

        zn = F.normalize(z, dim=1)
        sim = zn @ F.normalize(protos, dim=1).t()  # [N, K] cosine similarities
        cos_fn = (zn * F.normalize(mu_fn, dim=1)[labels]).sum(1)
        cos_fp = (zn * F.normalize(mu_fp, dim=1)[labels]).sum(1)
        has_fn = (n_fn > 0)[labels].to(z.dtype)
        has_fp = (n_fp > 0)[labels].to(z.dtype)
        a = self.alpha * (1.0 - prob_y)
        if self.tp_only:
            a = a * tp.to(z.dtype)

        s_y = sim.gather(1, labels[:, None]).squeeze(1)
        fn_y = s_y + a * has_fn * (cos_fn - 1.0)
        fp_y = s_y + a * has_fp * (-cos_fp - 1.0)
        idx = labels[:, None]
        fn_logits = sim.scatter(1, idx, fn_y[:, None])
        fp_logits = sim.scatter(1, idx, fp_y[:, None])
        weight = None if class_weights is None else class_weights.to(z.dtype)
        loss = (F.cross_entropy(fn_logits / self.tau, labels, weight=weight)
                + F.cross_entropy(fp_logits / self.tau, labels, weight=weight))
        return {"loss": loss, "sim": sim, "fn_logits": fn_logits, "fp_logits": fp_logits,
                "prototypes": protos, "z": z, "tp": tp, "pred": pred, "a": a}
