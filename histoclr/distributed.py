"""torch.distributed helpers and the guards both training loops share.

``init_distributed`` reads torchrun's ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` (and
``MASTER_ADDR``/``MASTER_PORT``) and starts the default process group: NCCL on CUDA, Gloo on
CPU. Without those variables it is a single process (world size 1, no process group).

Shared by ``ssl/trainer.py`` and ``seg/train.py``:

* ``check_sync_batchnorm(enabled, dist)``: HistoclrError for SyncBatchNorm on CPU under DDP;
* ``prepare_model(model, dist, sync_batchnorm=False)`` -> ``(model on its device, net)``: ``net`` is
  the DDP wrapper (or ``model`` itself in one process);
* ``check_finite_loss(loss, step, hint)``: TrainingDiverged naming the step and the hint;
* ``nonfinite_tensors(model, optimizer)``: names of non-finite parameters, buffers (BatchNorm
  running statistics) and optimizer state, checked before a checkpoint is written;
* ``any_rank(flag)`` / ``broadcast_object``: one decision on every rank (no rank left waiting).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.distributed as dist

from histoclr.errors import HistoclrError, TrainingDiverged


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(device: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto`` -> ``cuda:<local_rank>`` when CUDA is available, else ``cpu``."""
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"unknown device {device!r}; choose auto, cpu or cuda")
    if device == "cuda" and not torch.cuda.is_available():
        raise HistoclrError("train.device=cuda but no CUDA GPU is available; use train.device=cpu")
    if device == "cpu" or (device == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    return torch.device("cuda", local_rank % torch.cuda.device_count())


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the torchrun process group (if any) and pick this process's device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world_size > 1 and not dist.is_initialized():
        for var in ("MASTER_ADDR", "MASTER_PORT"):
            if var not in os.environ:
                raise HistoclrError(f"WORLD_SIZE={world_size} but {var} is not set; launch with torchrun")
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo", init_method="env://",
                                rank=rank, world_size=world_size,
                                device_id=dev if dev.type == "cuda" else None)
    if dist.is_initialized():
        rank, world_size = dist.get_rank(), dist.get_world_size()
    return DistInfo(rank, world_size, local_rank, dev)


def is_main_process() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    """The mean of ``t`` over all processes (``t`` itself in a single process)."""
    if not dist.is_initialized():
        return t
    t = t.detach().clone()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t / dist.get_world_size()


def broadcast_object(obj, src: int = 0):
    """``obj`` from rank ``src`` on every rank (picklable objects)."""
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_objects(obj) -> list:
    """``[obj of rank 0, obj of rank 1, ...]`` (picklable objects; ``[obj]`` in a single process)."""
    if not dist.is_initialized():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def cleanup() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


# --------------------------------------------------------------------------- shared training guards
def check_sync_batchnorm(enabled: bool, info: DistInfo) -> None:
    """SyncBatchNorm exists only for CUDA: refuse it for a multi-process CPU run."""
    if enabled and info.distributed and info.device.type != "cuda":
        raise HistoclrError("train.sync_batchnorm needs CUDA (torch has no CPU SyncBatchNorm); "
                            "set train.sync_batchnorm=false for CPU runs")


def prepare_model(model: torch.nn.Module, info: DistInfo, sync_batchnorm: bool = False
                  ) -> tuple[torch.nn.Module, torch.nn.Module]:
    """``(model, net)``: ``model`` (SyncBatchNorm when asked, under DDP) moved to the device, and
    ``net``, what the loop calls: the ``DistributedDataParallel`` wrapper, or ``model`` itself."""
    check_sync_batchnorm(sync_batchnorm, info)
    if sync_batchnorm and info.distributed:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model = model.to(info.device)
    net = model
    if info.distributed:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[info.device.index] if info.device.type == "cuda" else None)
    return model, net


def check_finite_loss(loss: torch.Tensor | float, step: int, hint: str) -> None:
    """Raise :class:`TrainingDiverged` ("training diverged at step N: loss is nan; <hint>")."""
    value = float(loss.item() if isinstance(loss, torch.Tensor) else loss)
    if not math.isfinite(value):
        raise TrainingDiverged(f"training diverged at step {step}: loss is {value}; {hint}", step)


def _walk(prefix: str, obj, out: list[str]) -> None:
    if isinstance(obj, torch.Tensor):
        if (obj.is_floating_point() or obj.is_complex()) and not bool(torch.isfinite(obj).all()):
            out.append(prefix)
    elif isinstance(obj, Mapping):
        for k, v in obj.items():
            _walk(f"{prefix}.{k}" if prefix else str(k), v, out)
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _walk(f"{prefix}.{i}" if prefix else str(i), v, out)


def nonfinite_tensors(model: torch.nn.Module | Mapping | None = None,
                      optimizer: torch.optim.Optimizer | Mapping | None = None) -> list[str]:
    """Names of the non-finite floating tensors of a model (parameters and buffers, e.g. BatchNorm
    ``running_var``) and of an optimizer's state (module/optimizer objects or their state dicts)."""
    out: list[str] = []
    if model is not None:
        _walk("", model.state_dict() if isinstance(model, torch.nn.Module) else model, out)
    if optimizer is not None:
        state = optimizer.state_dict() if isinstance(optimizer, torch.optim.Optimizer) else optimizer
        _walk("optimizer", state.get("state", {}), out)
    return out


def any_rank(flag: bool, device: torch.device | None = None) -> bool:
    """True on every rank when ``flag`` is true on at least one (``flag`` in a single process)."""
    if not dist.is_initialized():
        return bool(flag)
    t = torch.tensor([1.0 if flag else 0.0], device=device or "cpu")
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)
