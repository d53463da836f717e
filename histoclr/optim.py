"""Optimisers, parameter groups and the one learning-rate schedule of both training stages.

* :class:`LARS`: layer-wise adaptive rate scaling, as in the SimCLR reference implementation
  (``tf`` ``LARSOptimizer``): per parameter ``g' = g + wd * w``, trust ratio
  ``eta * ||w|| / ||g'||``, heavy-ball momentum on ``lr * trust * g'``. Parameter groups with
  ``lars=False`` (BatchNorm and biases by default) get a plain momentum step without decay.
* :func:`param_groups`: decay / no-decay groups (1-D tensors: biases and norms), optionally split
  into named parts with their own learning-rate multipliers (the segmentation encoder vs decoder).
* :func:`lr_factor` / :func:`warmup_cosine`: step-based linear warm-up then cosine decay to a floor,
  as torch's ``LambdaLR`` (one multiplier for every group, so group lr ratios are kept).
* :func:`build_optimizer`: SimCLR's LARS / AdamW / SGD with the base lr scaled by the global batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping

import torch
from torch import nn

from histoclr.config.ssl import OptimConfig, warmup_steps


class LARS(torch.optim.Optimizer):
    """LARS (You et al. 2017) as used by SimCLR.

    For each parameter ``w`` with gradient ``g`` in a group with ``lars=True``::

        g' = g + weight_decay * w
        trust = eta * ||w|| / ||g'||      (1 when either norm is 0)
        v = momentum * v + lr * trust * g'
        w = w - v

    Groups with ``lars=False`` skip the trust ratio (their ``weight_decay`` is usually 0).
    """

    def __init__(self, params: Iterable, lr: float, momentum: float = 0.9, weight_decay: float = 0.0,
                 eta: float = 0.001, lars: bool = True):
        if lr < 0 or not 0 <= momentum < 1 or weight_decay < 0 or eta <= 0:
            raise ValueError(f"invalid LARS arguments: lr={lr}, momentum={momentum}, "
                             f"weight_decay={weight_decay}, eta={eta}")
        super().__init__(params, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay,
                                  "eta": eta, "lars": lars})

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if group["weight_decay"]:
                    g = g.add(p, alpha=group["weight_decay"])
                if group["lars"]:
                    w_norm = torch.linalg.vector_norm(p)
                    g_norm = torch.linalg.vector_norm(g)
                    trust = torch.where((w_norm > 0) & (g_norm > 0),
                                        group["eta"] * w_norm / g_norm, torch.ones_like(w_norm))
                    g = g * trust
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p)
                buf = state["momentum_buffer"]
                buf.mul_(group["momentum"]).add_(g, alpha=group["lr"])
                p.sub_(buf)
        return loss


def scaled_lr(cfg: OptimConfig, global_batch: int) -> float:
    """Peak lr: ``lr * B/256`` (linear), ``lr * sqrt(B)`` (sqrt) or ``lr`` (none)."""
    if global_batch < 1:
        raise ValueError(f"global_batch must be >= 1, got {global_batch}")
    if cfg.lr_scaling == "linear":
        return cfg.lr * global_batch / 256
    if cfg.lr_scaling == "sqrt":
        return cfg.lr * math.sqrt(global_batch)
    if cfg.lr_scaling == "none":
        return cfg.lr
    raise ValueError(f"unknown lr_scaling {cfg.lr_scaling!r}")


def param_groups(model: nn.Module, weight_decay: float, exclude_1d: bool = True, *, lr: float | None = None,
                 part_of: Callable[[str], str] | None = None, mult: Mapping[str, float] | None = None) -> list[dict]:
    """Optimizer groups over ``model``'s trainable parameters.

    Each parameter goes to the group ``(part, decays)``: ``part = part_of(name)`` (default: one part,
    ``"all"``), ``decays`` = not (``exclude_1d`` and a 1-D tensor, i.e. a bias or norm parameter).
    Decaying groups get ``weight_decay`` and ``lars=True``; the others 0 and ``lars=False``. With
    ``lr``, a group's lr is ``lr * mult.get(part, 1.0)``. Groups are named ``part`` /
    ``part_no_decay``, ordered by part, decaying first; empty groups are left out.
    """
    mult = dict(mult or {})
    buckets: dict[tuple[str, bool], list] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        part = part_of(name) if part_of else "all"
        buckets.setdefault((part, not (exclude_1d and p.ndim <= 1)), []).append(p)
    groups = []
    for (part, decays), params in sorted(buckets.items(), key=lambda kv: (kv[0][0], not kv[0][1])):
        g = {"name": part if decays else f"{part}_no_decay", "params": params,
             "weight_decay": weight_decay if decays else 0.0, "lars": decays}
        if lr is not None:
            g["lr"] = lr * mult.get(part, 1.0)
        groups.append(g)
    return groups


def build_optimizer(params_model: nn.Module, cfg: OptimConfig, global_batch: int) -> torch.optim.Optimizer:
    """The optimizer ``cfg.name`` over ``params_model``'s trainable parameters at the scaled lr."""
    lr = scaled_lr(cfg, global_batch)
    groups = param_groups(params_model, cfg.weight_decay, cfg.exclude_bn_bias_from_wd_and_lars)
    for g in groups:
        g.pop("name")
    if cfg.name == "lars":
        return LARS(groups, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, eta=cfg.lars_eta)
    for g in groups:
        g.pop("lars")
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=(cfg.momentum, 0.999), weight_decay=cfg.weight_decay)
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer {cfg.name!r}")


def lr_factor(step: int, warmup: int, max_steps: int, min_lr_ratio: float = 0.0) -> float:
    """Multiplier of the peak lr for the update at 0-based ``step``.

    Linear warm-up ``(step + 1) / warmup`` for ``step < warmup``, then cosine from 1 down to
    ``min_lr_ratio`` at ``max_steps``.
    """
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, max_steps - warmup))
    return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def warmup_cosine(optimizer: torch.optim.Optimizer, warmup: int, max_steps: int,
                  min_lr_ratio: float = 0.0) -> torch.optim.lr_scheduler.LambdaLR:
    """:func:`lr_factor` as a ``LambdaLR``; call ``.step()`` once after every optimizer step."""
    if max_steps < 1 or warmup < 0 or not 0 <= min_lr_ratio <= 1:
        raise ValueError(f"need max_steps >= 1, warmup >= 0, 0 <= min_lr_ratio <= 1; got {max_steps}, {warmup}, "
                         f"{min_lr_ratio}")
    warmup = min(warmup, max_steps)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, warmup, max_steps, min_lr_ratio))


def build_schedule(optimizer: torch.optim.Optimizer, cfg: OptimConfig,
                   max_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """SimCLR's warm-up (``optim.warmup_steps`` or ``warmup_fraction``) + cosine schedule."""
    return warmup_cosine(optimizer, warmup_steps(cfg, max_steps), max_steps, cfg.min_lr_ratio)
