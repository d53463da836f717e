"""NTXentLoss(gather_distributed=True) on 2 CPU processes (gloo) equals the one-process loss.

The ranks are started with ``torch.multiprocessing.spawn`` (fresh interpreters; forking a
pytest process that already ran torch ops can deadlock). The children import this module by
the name pytest gave it, so its folder and the repository root go on ``PYTHONPATH``.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from histoclr.ssl.loss import NTXentLoss

WORLD, N, D, T = 2, 3, 5, 0.2


def _rank_main(rank: int, port: int, z1: torch.Tensor, z2: torch.Tensor, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        a = z1[rank * N:(rank + 1) * N].clone().requires_grad_()
        b = z2[rank * N:(rank + 1) * N].clone().requires_grad_()
        loss = NTXentLoss(T, gather_distributed=True)(a, b)
        loss.backward()
        torch.save({"loss": loss.detach(), "g1": a.grad, "g2": b.grad}, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_gathered_loss_and_gradients_match_single_process(tmp_path, monkeypatch, free_port):
    g = torch.Generator().manual_seed(0)
    z1 = torch.randn(WORLD * N, D, generator=g, dtype=torch.float64)
    z2 = torch.randn(WORLD * N, D, generator=g, dtype=torch.float64)
    here = Path(__file__).resolve().parent
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(here), str(here.parents[1]), os.environ.get("PYTHONPATH", "")]))
    mp.spawn(_rank_main, args=(free_port(), z1, z2, str(tmp_path)), nprocs=WORLD, join=True)

    # single process on the concatenated batch
    a, b = z1.clone().requires_grad_(), z2.clone().requires_grad_()
    ref = NTXentLoss(T)(a, b)
    ref.backward()

    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    # the ranks' losses differ (each covers its own rows) and their mean is the global loss
    assert abs(ranks[0]["loss"].item() - ranks[1]["loss"].item()) > 1e-6
    mean_loss = sum(r["loss"] for r in ranks) / WORLD
    torch.testing.assert_close(mean_loss, ref.detach(), rtol=0, atol=1e-10)
    # each rank's local gradient is WORLD x its slice of the global gradient (the all-gather
    # backward sums over ranks); DDP's averaging over ranks then restores the global gradient
    for r, res in enumerate(ranks):
        rows = slice(r * N, (r + 1) * N)
        torch.testing.assert_close(res["g1"] / WORLD, a.grad[rows], rtol=0, atol=1e-10)
        torch.testing.assert_close(res["g2"] / WORLD, b.grad[rows], rtol=0, atol=1e-10)
