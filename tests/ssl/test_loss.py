"""NT-Xent loss against the paper's formula, closed forms, gradients, dtypes, memory; ranking metrics."""

from __future__ import annotations

import math

import pytest
import torch

from histoclr.ssl.loss import NTXentLoss, ranking_metrics


def reference_ntxent(z1: torch.Tensor, z2: torch.Tensor, t: float) -> float:
    """SimCLR eq. 1 written out with Python loops (float64)."""
    views = [v for v in torch.cat([z1, z2]).double()]
    n2 = len(views)
    n = n2 // 2

    def sim(a, b):
        return float(a @ b) / (float(a.norm()) * float(b.norm()))

    total = 0.0
    for i in range(n2):
        j = (i + n) % n2
        denom = sum(math.exp(sim(views[i], views[k]) / t) for k in range(n2) if k != i)
        total += -math.log(math.exp(sim(views[i], views[j]) / t) / denom)
    return total / n2


@pytest.mark.parametrize("n,d,t", [(1, 4, 0.5), (2, 3, 0.1), (5, 8, 0.5), (8, 16, 0.07), (13, 2, 1.0)])
def test_matches_reference_loop(n, d, t):
    g = torch.Generator().manual_seed(n * 100 + d)
    z1 = torch.randn(n, d, generator=g, dtype=torch.float64)
    z2 = torch.randn(n, d, generator=g, dtype=torch.float64)
    loss = NTXentLoss(temperature=t)(z1, z2)
    assert loss.dtype == torch.float64
    assert loss.item() == pytest.approx(reference_ntxent(z1, z2, t), abs=1e-6)


def test_float32_close_to_reference():
    g = torch.Generator().manual_seed(1)
    z1, z2 = torch.randn(6, 10, generator=g), torch.randn(6, 10, generator=g)
    assert NTXentLoss(0.2)(z1, z2).item() == pytest.approx(reference_ntxent(z1, z2, 0.2), abs=1e-5)


def test_batch_one_is_zero():
    # a single pair: the positive is the only candidate
    assert NTXentLoss()(torch.randn(1, 5), torch.randn(1, 5)).item() == pytest.approx(0.0, abs=1e-7)


@pytest.mark.parametrize("n", [2, 7])
def test_identical_embeddings_give_log_2n_minus_1(n):
    z = torch.ones(n, 4)
    assert NTXentLoss(0.3)(z, z).item() == pytest.approx(math.log(2 * n - 1), abs=1e-6)


def test_orthogonal_pairs_closed_form():
    # pair k = basis vector e_k in both views: positive sim 1, 2N-2 negatives with sim 0
    n, t = 4, 0.5
    z = torch.eye(n)
    expected = -math.log(math.exp(1 / t) / (math.exp(1 / t) + (2 * n - 2)))
    assert NTXentLoss(t)(z, z.clone()).item() == pytest.approx(expected, abs=1e-6)


def test_scale_invariant_and_symmetric():
    g = torch.Generator().manual_seed(2)
    z1, z2 = torch.randn(9, 12, generator=g), torch.randn(9, 12, generator=g)
    loss = NTXentLoss(0.5)
    assert loss(z2, z1).item() == pytest.approx(loss(z1, z2).item(), abs=1e-6)
    assert loss(3.0 * z1, 0.1 * z2).item() == pytest.approx(loss(z1, z2).item(), abs=1e-5)


def test_gradients_flow_to_both_inputs():
    g = torch.Generator().manual_seed(3)
    z1 = torch.randn(6, 8, generator=g, requires_grad=True)
    z2 = torch.randn(6, 8, generator=g, requires_grad=True)
    NTXentLoss(0.1)(z1, z2).backward()
    for grad in (z1.grad, z2.grad):
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_gradcheck_float64():
    g = torch.Generator().manual_seed(4)
    z1 = torch.randn(3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    z2 = torch.randn(3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: NTXentLoss(0.5)(a, b), (z1, z2))


@pytest.mark.parametrize("kwargs", [{"temperature": 0.0}, {"temperature": -1.0},
                                    {"temperature": float("nan")}])
def test_bad_temperature(kwargs):
    with pytest.raises(ValueError, match="temperature"):
        NTXentLoss(**kwargs)


@pytest.mark.parametrize("a,b,match", [
    (torch.randn(4), torch.randn(4), "2-D"),
    (torch.randn(2, 3, 4), torch.randn(2, 3, 4), "2-D"),
    (torch.randn(4, 3), torch.randn(5, 3), "same shape"),
    (torch.randn(4, 3), torch.randn(4, 2), "same shape"),
    (torch.randn(0, 3), torch.randn(0, 3), "batch >= 1"),
])
def test_bad_inputs(a, b, match):
    with pytest.raises(ValueError, match=match):
        NTXentLoss()(a, b)
    with pytest.raises(ValueError, match=match):
        ranking_metrics(a, b)


def test_bf16_autocast_gives_float32_loss():
    g = torch.Generator().manual_seed(5)
    z1, z2 = torch.randn(16, 32, generator=g), torch.randn(16, 32, generator=g)
    ref = NTXentLoss(0.1)(z1, z2)
    a, b = z1.bfloat16().requires_grad_(), z2.bfloat16().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = NTXentLoss(0.1)(a, b)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert loss.item() == pytest.approx(ref.item(), rel=2e-2)  # only the bf16 rounding of the inputs
    loss.backward()
    assert a.grad.dtype == torch.bfloat16 and torch.isfinite(a.grad.float()).all()


def test_no_n2_times_dim_tensor():
    # the broadcast cosine matrix (2N, 2N, D) would need 1024*1024*16384*4 B = 64 GiB here
    n, d = 512, 16384
    z1 = torch.randn(n, d)
    z2 = z1 + 0.01 * torch.randn(n, d)
    loss = NTXentLoss(0.5)(z1, z2)
    assert torch.isfinite(loss) and loss.item() < math.log(2 * n - 1)


def test_without_process_group_gather_is_local():
    g = torch.Generator().manual_seed(6)
    z1, z2 = torch.randn(5, 7, generator=g), torch.randn(5, 7, generator=g)
    assert NTXentLoss(0.5, gather_distributed=True)(z1, z2).item() == pytest.approx(
        NTXentLoss(0.5)(z1, z2).item(), abs=1e-7)


# --------------------------------------------------------------------------- ranking metrics
def test_ranking_perfect_pairs():
    z = torch.eye(6)
    m = ranking_metrics(z, z.clone())
    assert m == {"top1": 1.0, "top5": 1.0, "mean_rank": 1.0}


def test_ranking_constructed_case():
    # N = 3 pairs in 2-D. View 0 = (1, 0) has positive view 3 = (0.6, 0.8) (sim 0.6) but
    # views 1 = (0.8, 0.6) (sim 0.8) and 4 = (0.8, 0.6) are closer: its rank is 3.
    z1 = torch.tensor([[1.0, 0.0], [0.8, 0.6], [-1.0, 0.0]])
    z2 = torch.tensor([[0.6, 0.8], [0.8, 0.6], [-1.0, 0.0]])
    views = torch.cat([z1, z2])
    sims = views @ views.T  # unit vectors already
    expected = []
    for i in range(6):
        j = (i + 3) % 6
        expected.append(sum(1 for k in range(6) if k != i and sims[i, k] >= sims[i, j]))
    assert expected[0] == 3
    m = ranking_metrics(z1, z2)
    assert m["mean_rank"] == pytest.approx(sum(expected) / 6)
    assert m["top1"] == pytest.approx(sum(r == 1 for r in expected) / 6)
    assert m["top5"] == pytest.approx(sum(r <= 5 for r in expected) / 6)


def test_ranking_collapse_scores_worst():
    z = torch.ones(4, 3)
    m = ranking_metrics(z, z)
    assert m["top1"] == 0.0 and m["mean_rank"] == 7.0  # ties count against the positive


def test_ranking_no_grad():
    z1 = torch.randn(4, 3, requires_grad=True)
    m = ranking_metrics(z1, z1 * 2)
    assert set(m) == {"top1", "top5", "mean_rank"} and all(isinstance(v, float) for v in m.values())


def test_non_tensor_input():
    with pytest.raises(TypeError, match="tensors"):
        NTXentLoss()([[1.0, 0.0]], torch.ones(1, 2))
