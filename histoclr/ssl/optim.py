"""Optimizers and the learning-rate schedule for SimCLR pretraining.

* :class:`LARS`: layer-wise adaptive rate scaling, as in the SimCLR reference implementation
  (``tf`` ``LARSOptimizer``): per parameter ``g' = g + wd * w``, trust ratio
  ``eta * ||w|| / ||g'||``, heavy-ball momentum on ``lr * trust * g'``. Parameter groups with
  ``lars=False`` (BatchNorm and biases by default) get a plain momentum step without decay.
* :func:`build_optimizer`: LARS / AdamW / SGD with the base lr scaled by the global batch.
* :func:`build_schedule`: step-based linear warm-up then cosine decay (``LambdaLR``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

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


def param_groups(model: nn.Module, weight_decay: float, exclude_bn_bias: bool) -> list[dict]:
    """Two groups: weights (decay, LARS) and 1-d params = BatchNorm/bias (no decay, no LARS)."""
    decay, no_decay = [], []
    for p in model.parameters():
        if not p.requires_grad:
            continue
        (no_decay if exclude_bn_bias and p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay, "lars": True}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0, "lars": False})
    return groups


def build_optimizer(params_model: nn.Module, cfg: OptimConfig, global_batch: int) -> torch.optim.Optimizer:
    """The optimizer ``cfg.name`` over ``params_model``'s trainable parameters at the scaled lr."""
    lr = scaled_lr(cfg, global_batch)
    groups = param_groups(params_model, cfg.weight_decay, cfg.exclude_bn_bias_from_wd_and_lars)
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


def build_schedule(optimizer: torch.optim.Optimizer, cfg: OptimConfig,
                   max_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Warm-up + cosine ``LambdaLR``; call ``.step()`` once after every optimizer step."""
    warmup = min(warmup_steps(cfg, max_steps), max_steps)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, warmup, max_steps, cfg.min_lr_ratio))
