"""SimCLR's NT-Xent loss (optionally over the global batch of all ranks) and ranking metrics.

Views are laid out as in the paper: for ``z1, z2`` of shape ``(N, D)`` the ``2N`` views are
``[z1; z2]`` and the positive of view ``i`` is view ``(i + N) mod 2N``.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn


def _check_pair(z1: torch.Tensor, z2: torch.Tensor) -> None:
    if not isinstance(z1, torch.Tensor) or not isinstance(z2, torch.Tensor):
        raise TypeError("z1 and z2 must be tensors")
    if z1.dim() != 2 or z2.dim() != 2:
        raise ValueError(f"z1 and z2 must be 2-D (batch, dim), got shapes {tuple(z1.shape)} "
                         f"and {tuple(z2.shape)}")
    if z1.shape != z2.shape:
        raise ValueError(f"z1 and z2 must have the same shape, got {tuple(z1.shape)} and {tuple(z2.shape)}")
    if z1.shape[0] < 1 or z1.shape[1] < 1:
        raise ValueError(f"need batch >= 1 and dim >= 1, got shape {tuple(z1.shape)}")


def _compute_dtype(z: torch.Tensor) -> torch.dtype:
    """float64 stays float64 (reference tests); everything else (bf16, fp16, fp32) -> float32."""
    return torch.float64 if z.dtype == torch.float64 else torch.float32


def _no_autocast(device: torch.device):
    try:
        return torch.autocast(device_type=device.type, enabled=False)
    except RuntimeError:  # a device type without autocast support
        return contextlib.nullcontext()


def _gather_world() -> tuple[int, int]:
    """``(rank, world_size)`` of the default process group, ``(0, 1)`` when not initialised."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class NTXentLoss(nn.Module):
    """Normalised temperature-scaled cross entropy (SimCLR, Chen et al. 2020, eq. 1).

    ``forward(z1 (N, D), z2 (N, D)) -> scalar``: the mean over the ``2N`` views of
    ``-log(exp(sim(i, j)/t) / sum_{k != i} exp(sim(i, k)/t))`` with cosine similarity and
    ``j`` the positive of ``i``. Inputs of any float dtype (also under bf16/fp16 autocast) are
    computed in float32 (float64 stays float64): one ``(2N, 2N)`` logits matmul of the
    L2-normalised views, self-similarity masked with the dtype's most negative finite value,
    then ``F.cross_entropy``. Memory is O(N^2 + N*D), never O(N^2 * D).

    With ``gather_distributed=True`` and an initialised process group of ``world_size > 1``,
    the views of all ranks are all-gathered *with gradients*
    (``torch.distributed.nn.functional.all_gather``); each rank returns the mean loss of its
    own ``2N`` local views against all ``2 * N * world_size`` global candidates. Every rank
    must pass the same ``N``. Scaling: the mean of the ranks' losses equals the
    single-process loss on the concatenated batches (``cat(z1 of ranks)``,
    ``cat(z2 of ranks)``), and ``backward()`` on each rank gives its local inputs
    ``world_size`` times the corresponding slice of the single-process gradient (the
    all-gather backward sums over ranks). DDP's gradient *averaging* divides that by
    ``world_size`` again, so DDP parameter gradients equal the single-process ones.
    Without an initialised group (or ``world_size == 1``) this is the local loss.
    """

    def __init__(self, temperature: float = 0.5, gather_distributed: bool = False):
        super().__init__()
        if not float(temperature) > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)
        self.gather_distributed = bool(gather_distributed)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, gather_distributed={self.gather_distributed}"

    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        _check_pair(z1, z2)
        n = z1.shape[0]
        dtype = _compute_dtype(z1)
        with _no_autocast(z1.device):
            local = F.normalize(torch.cat([z1, z2], dim=0).to(dtype), dim=1)   # (2n, D)
            rank, world = _gather_world() if self.gather_distributed else (0, 1)
            if world > 1:
                from torch.distributed.nn.functional import all_gather

                parts = all_gather(local)                                       # W x (2n, D)
                keys = torch.cat([p[:n] for p in parts] + [p[n:] for p in parts], dim=0)
            else:
                keys = local                                                     # (2N, D)
            big_n = n * world
            logits = local @ keys.T / self.temperature                           # (2n, 2N)
            rows = torch.arange(2 * n, device=local.device)
            # global index of each local view: z1 row j -> rank*n + j; z2 row j -> N + rank*n + j
            own = torch.where(rows < n, rank * n + rows, big_n + rank * n + (rows - n))
            positive = (own + big_n) % (2 * big_n)
            logits = logits.scatter(1, own[:, None], torch.finfo(dtype).min)          # mask self-similarity
            return F.cross_entropy(logits, positive)


@torch.no_grad()
def ranking_metrics(z1: torch.Tensor, z2: torch.Tensor) -> dict[str, float]:
    """Rank of each view's positive among its ``2N - 1`` candidates (cosine similarity).

    ``z1, z2``: ``(N, D)`` with corresponding rows. Returns ``top1`` and ``top5`` (fractions of
    the ``2N`` views whose positive ranks 1st / within the first 5) and ``mean_rank``
    (1 = best). Ties count against the positive (rank = number of candidates at least as
    similar as it), so collapsed embeddings score badly rather than perfectly.
    """
    _check_pair(z1, z2)
    n = z1.shape[0]
    dtype = _compute_dtype(z1)
    with _no_autocast(z1.device):
        z = F.normalize(torch.cat([z1, z2], dim=0).to(dtype), dim=1)           # (2N, D)
        sim = z @ z.T                                                            # (2N, 2N)
        idx = torch.arange(2 * n, device=z.device)
        pos = sim[idx, (idx + n) % (2 * n)]                                      # (2N,)
        sim.fill_diagonal_(float("-inf"))
        rank = (sim >= pos[:, None]).sum(dim=1).to(torch.float64)               # >= 1 (itself)
    return {"top1": float((rank <= 1).double().mean()), "top5": float((rank <= 5).double().mean()),
            "mean_rank": float(rank.mean())}
