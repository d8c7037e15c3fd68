import copy
import math
import os

import pytest
import torch
import torch.nn.functional as F

from mgpipe.models.prototype import PrototypeLoss

ALPHA, TAU, MOM = 0.125, 0.125, 0.9


def identity_loss(k=3, d=3, tp_only=False):
    m = PrototypeLoss(k, d, dim=d, momentum=MOM, alpha=ALPHA, tau=TAU, tp_only=tp_only)
    with torch.no_grad():
        m.proj.weight.copy_(torch.eye(d))
        m.proj.bias.zero_()
    return m


# Hand-made batch, K = 3:
#   sample 0: label 0, pred 0 -> TP of 0
#   sample 1: label 0, pred 1 -> FN of 0, FP of 1
#   sample 2: label 1, pred 1 -> TP of 1
#   sample 3: label 2, pred 0 -> FN of 2, FP of 0
LABELS = torch.tensor([0, 0, 1, 2])
PREDS = torch.tensor([0, 1, 1, 0])
FEATS = torch.tensor([[1.0, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 1]])
LOGITS = 2.0 * F.one_hot(PREDS, 3).float()
P0 = torch.tensor([[1.0, 1, 0], [0, 1, 0], [0, 0, 2]])
# EMA on classes 0 and 1 only (class 2 has no TP)
P_NEW = torch.tensor([[1.0, 0.9, 0], [0.1, 1.0, 0], [0, 0, 2]])


def run_hand(tp_only=False, train=True, bank=P0):
    m = identity_loss(tp_only=tp_only)
    m.prototypes.copy_(bank)
    m.train(train)
    return m, m.details(FEATS, LOGITS, LABELS)


def cos(a, b):
    return float(torch.dot(a, b) / (a.norm() * b.norm()))


def test_ema_only_rows_with_tp():
    m, d = run_hand()
    assert torch.allclose(m.prototypes, P_NEW, atol=1e-6)
    assert torch.equal(m.prototypes[2], P0[2])
    assert d["tp"].tolist() == [True, False, True, False]
    # from a zero bank: class 2 stays exactly zero, TP classes get (1 - m) * mu_TP
    m, _ = run_hand(bank=torch.zeros(3, 3))
    assert torch.all(m.prototypes[2] == 0)
    assert torch.allclose(m.prototypes[0], 0.1 * FEATS[0])
    assert torch.allclose(m.prototypes[1], 0.1 * FEATS[2])
    assert not m.prototypes.requires_grad


def expected_logits(tp_only):
    p = torch.softmax(LOGITS, 1)
    a = [ALPHA * (1 - p[i, LABELS[i]].item()) for i in range(4)]
    S = torch.tensor([[cos(P_NEW[k], FEATS[i]) for k in range(3)] for i in range(4)])
    fn, fp = S.clone(), S.clone()
    # sample 0 (class 0 has FN {1}: mu = e1, FP {3}: mu = e2): both cosines 0
    fn[0, 0] = S[0, 0] - a[0]
    fp[0, 0] = S[0, 0] - a[0]
    # sample 1 (class 0): cos(mu_FN, z1) = 1 -> no change; cos(mu_FP, z1) = 0 -> -a1
    fn[1, 0] = S[1, 0]
    fp[1, 0] = S[1, 0] - (0 if tp_only else a[1])
    # sample 2 (class 1): no FN; FP {1}: cos(e1, [1,1,0]) = 1/sqrt2
    fp[2, 1] = S[2, 1] + a[2] * (-1 / math.sqrt(2) - 1)
    # sample 3 (class 2): FN {3}: cos = 1 -> no change; no FP -> no change
    return S, fn, fp, a


@pytest.mark.parametrize("tp_only", [False, True])
def test_calibrated_logits_by_hand(tp_only):
    _, d = run_hand(tp_only=tp_only)
    S, fn, fp, a = expected_logits(tp_only)
    assert torch.allclose(d["sim"], S, atol=1e-6)
    assert torch.allclose(d["fn_logits"], fn, atol=1e-6)
    assert torch.allclose(d["fp_logits"], fp, atol=1e-6)
    # sign and size: the calibrations only lower the true-class logit, by at most 2 a_i
    assert torch.all(d["fn_logits"] <= d["sim"] + 1e-7)
    assert torch.all(d["fp_logits"] <= d["sim"] + 1e-7)
    assert abs((d["sim"][0, 0] - d["fp_logits"][0, 0]).item() - a[0]) < 1e-6
    loss = (F.cross_entropy(fn / TAU, LABELS) + F.cross_entropy(fp / TAU, LABELS))
    assert torch.allclose(d["loss"], loss, atol=1e-5)


def test_tp_only_switch_changes_calibrated_samples():
    _, d_all = run_hand(tp_only=False)
    _, d_tp = run_hand(tp_only=True)
    # FN sample 1 is calibrated only without tp_only
    assert d_all["fp_logits"][1, 0] < d_all["sim"][1, 0]
    assert d_tp["fp_logits"][1, 0] == d_tp["sim"][1, 0]
    # TP samples are calibrated either way
    assert torch.allclose(d_all["fp_logits"][0], d_tp["fp_logits"][0])
    assert torch.allclose(d_all["fp_logits"][2], d_tp["fp_logits"][2])
    assert not torch.allclose(d_all["loss"], d_tp["loss"])


def test_eval_mode_does_not_update_bank():
    m, d = run_hand(train=False)
    assert torch.equal(m.prototypes, P0)
    assert torch.equal(d["prototypes"], P0)


def test_bank_in_state_dict_and_restored():
    m, _ = run_hand()
    sd = m.state_dict()
    assert "prototypes" in sd and torch.allclose(sd["prototypes"], P_NEW)
    m2 = identity_loss()
    assert torch.all(m2.prototypes == 0)
    m2.load_state_dict(sd)
    assert torch.equal(m2.prototypes, m.prototypes)


def test_loss_decreases_toward_prototype():
    torch.manual_seed(0)
    k, d, n = 4, 8, 12
    m = identity_loss(k, d).eval()
    m.prototypes.copy_(torch.randn(k, d))
    labels = torch.arange(n) % k
    logits = torch.randn(n, k)
    z = torch.randn(n, d)
    target = m.prototypes[labels]
    losses = [m(z + t * (target - z), logits, labels).item() for t in (0.0, 0.3, 0.6, 0.9)]
    assert all(b < a for a, b in zip(losses, losses[1:])), losses


def test_gradient_through_mu_tp_and_finite_differences():
    torch.manual_seed(0)
    k, d_in, n = 3, 5, 6
    base = PrototypeLoss(k, d_in, dim=4, momentum=MOM, alpha=ALPHA, tau=TAU, tp_only=False).double()
    base.prototypes.copy_(torch.randn(k, 4, dtype=torch.float64))
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    logits = F.one_hot(torch.tensor([0, 1, 1, 0, 2, 0]), k).double() * 3
    feats = torch.randn(n, d_in, dtype=torch.float64, requires_grad=True)

    def f(x):
        return copy.deepcopy(base).train()(x, logits, labels)

    assert torch.autograd.gradcheck(f, (feats,), eps=1e-6, atol=1e-5)

    # train mode keeps the gradient through mu_TP: same values as eval mode with the bank set
    # to the updated prototypes, but different gradients for TP samples.
    m_train = copy.deepcopy(base).train()
    g_train, = torch.autograd.grad(m_train(feats, logits, labels), feats)
    m_eval = copy.deepcopy(base).eval()
    m_eval.prototypes.copy_(m_train.prototypes)
    loss_eval = m_eval(feats, logits, labels)
    g_eval, = torch.autograd.grad(loss_eval, feats)
    assert torch.allclose(f(feats), loss_eval)
    assert not torch.allclose(g_train, g_eval)


# ------------------------------------------------------------------ distributed
N_DIST, K_DIST, IN_DIST, D_DIST = 6, 4, 5, 3


def _batch(rank):
    g = torch.Generator().manual_seed(100 + rank)
    feats = torch.randn(N_DIST, IN_DIST, generator=g)
    labels = torch.randint(0, K_DIST, (N_DIST,), generator=g)
    logits = torch.randn(N_DIST, K_DIST, generator=g)
    logits[: N_DIST // 2] += 10 * F.one_hot(labels[: N_DIST // 2], K_DIST)  # some TPs
    return feats, logits, labels


def _make():
    torch.manual_seed(0)
    return PrototypeLoss(K_DIST, IN_DIST, dim=D_DIST, momentum=MOM, alpha=ALPHA, tau=TAU, tp_only=False)


def _dist_worker(rank, world, init_file, out_dir):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world)
    try:
        m = _make().train()
        loss = m(*_batch(rank))
        loss.backward()
        torch.save(m.prototypes.clone(), os.path.join(out_dir, f"bank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_distributed_banks_agree(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_dist_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2,
             join=True)
    b0 = torch.load(tmp_path / "bank0.pt", weights_only=True)
    b1 = torch.load(tmp_path / "bank1.pt", weights_only=True)
    assert torch.equal(b0, b1)
    # equal to one process seeing both batches
    both = [torch.cat(t) for t in zip(_batch(0), _batch(1))]
    m = _make().train()
    m(*both)
    assert torch.allclose(b0, m.prototypes, atol=1e-6)
    # and different from what either process would hold on its own (the test can fail)
    local = _make().train()
    local(*_batch(0))
    assert not torch.allclose(local.prototypes, b0)
