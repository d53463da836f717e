"""The SimCLR trainer shared by `histoclr pretrain` (histology tiles) and the STL-10 pipeline.

Reads top to bottom as a recipe: distributed init, seeding, data, model, optimizer + schedule,
mixed precision, loss, resume, then the training loop with checkpoints and MLflow tracking.

Reproducibility: every sample's augmentation is seeded from ``(seed, epoch, index)`` and the
epoch's order from ``(seed, epoch)``, so the views do not depend on the number of DataLoader
workers, on the number of processes, or on where a run was resumed: on CPU, N steps in one go
and N/2 steps + resume + N/2 steps give bit-identical weights.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from histoclr import distributed as dist_utils
from histoclr.config.loader import config_to_dict, flatten, save_config
from histoclr.config.ssl import SSLConfig
from histoclr.errors import HistoclrError, InputFileError, OutputFileError, TrainingDiverged
from histoclr.images import IMAGENET_MEAN, IMAGENET_STD
from histoclr.io import ensure_output_dir, load_tagged, save_tagged
from histoclr.optim import build_optimizer, build_schedule
from histoclr.precision import autocast, check_precision
from histoclr.progress import progress_bar
from histoclr.ssl.augment import (
    augment_worker_init_fn,
    build_views,
    normalize_views,
    save_view_preview,
    seed_transforms,
)
from histoclr.ssl.loss import NTXentLoss, ranking_metrics
from histoclr.ssl.model import SimCLRModel, load_state_dict_strict, save_backbone
from histoclr.tracking import NO_RUN, Run, git_commit, resolve_tracking_uri, run_exists, start_run

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "histoclr-ssl-checkpoint"
CHECKPOINT_VERSION = 1

# config keys that do not change what is trained (compared on resume: everything else)
RESUME_IGNORED = ("tracking.", "out_dir", "diagnostics.", "snapshots.", "train.num_workers",
                  "train.pin_memory", "train.persistent_workers", "train.prefetch_factor",
                  "train.log_every", "train.checkpoint_every", "train.device")


@dataclass
class TrainResult:
    """What :meth:`SimCLRTrainer.fit` returns (on every rank; ``run_id`` is rank 0's run)."""

    metrics: dict
    backbone_path: Path
    checkpoint_path: Path
    run_id: str | None
    model: SimCLRModel


# --------------------------------------------------------------------------- data helpers
def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The augmentation seed of dataset item ``index`` in ``epoch`` (uint32)."""
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1)[0])


class EpochSampler(DistributedSampler):
    """``DistributedSampler`` (shuffle, drop_last) that yields ``(index, sample_seed)`` pairs
    and can start mid-epoch.

    The epoch's permutation depends only on ``(seed, epoch)``; rank ``r`` takes every
    ``world_size``-th item, so the union of the ranks' batches at step ``k`` is the same set of
    items as batch ``k`` of a single process with the global batch size.
    """

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int, seed: int, batch_size: int):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed,
                         drop_last=True)
        self.batch_size = batch_size
        self.start_batch = 0

    @property
    def batches_per_epoch(self) -> int:
        return self.num_samples // self.batch_size

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        super().set_epoch(epoch)
        self.start_batch = start_batch

    def __iter__(self) -> Iterator[tuple[int, int]]:
        indices = list(super().__iter__())[self.start_batch * self.batch_size:]
        return iter([(i, sample_seed(self.seed, self.epoch, i)) for i in indices])

    def __len__(self) -> int:
        return self.num_samples - self.start_batch * self.batch_size


class SeededDataset(Dataset):
    """``dataset[index]`` computed with every RNG seeded from the sampler's per-item seed.

    Seeds Python ``random``, NumPy, torch, and the albumentations pipelines of the dataset
    (via :func:`histoclr.ssl.augment.seed_transforms`). In the main process (``num_workers=0``)
    the global RNG states are restored afterwards.
    """

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]):
        index, seed = key
        in_main = torch.utils.data.get_worker_info() is None
        saved = _rng_state() if in_main else None
        try:
            _seed_everything(seed)
            _seed_transforms(self.dataset, seed)
            # a dataset that draws its item from the seed (dense crops) gets it explicitly
            seeded = getattr(self.dataset, "getitem_seeded", None)
            return seeded(index, seed) if seeded is not None else self.dataset[index]
        finally:
            if saved is not None:
                _set_rng_state(saved)


def _seed_transforms(dataset: Any, seed: int) -> None:
    seed_transforms(dataset, seed)


def split_views(batch) -> list[torch.Tensor]:
    """The collated views ``[(B, 3, S, S)] * n_views`` of a batch of ``views`` or ``(views, x)``."""
    if isinstance(batch, (list, tuple)) and batch and isinstance(batch[0], torch.Tensor):
        return list(batch)
    if isinstance(batch, (list, tuple)) and len(batch) == 2 and isinstance(batch[0], (list, tuple)):
        return list(batch[0])
    raise ValueError("a dataset item must be a list of view tensors (3, S, S) or a tuple (views, anything)")


# --------------------------------------------------------------------------- RNG helpers
def _seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch's CPU generator (the views run on the CPU). Not
    ``torch.manual_seed``: without CUDA initialised, its CUDA part records a stack trace on every
    call, about 1 ms per item, a fifth of a 224 px view pair's cost."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.default_generator.manual_seed(seed)


def _rng_state() -> dict:
    """All global RNG states, as tensors/ints only (loadable with ``weights_only=True``)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": (name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached))}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_to_tuple(state["python"]))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _to_tuple(x):
    return tuple(_to_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x


# --------------------------------------------------------------------------- the trainer
class SimCLRTrainer:
    """Pretrain a :class:`SimCLRModel` on ``dataset`` with NT-Xent (one process or DDP).

    Args:
        cfg: the run's configuration (validated here).
        dataset: item ``i`` is a list of ``n_views`` tensors ``(3, S, S)`` or ``(views, anything)``.
        extra_params: logged as MLflow params besides the flattened config.
        extra_tags: MLflow tags.
        on_end: ``on_end(trainer, run) -> dict | None``, called on rank 0 after training inside
            the MLflow run (a :class:`histoclr.tracking.Run`, a no-op one when tracking is off); a
            returned dict is logged as metrics.
        preview_images: HWC uint8 images drawn through the view recipe into ``views_preview.png``.
        model: start from this model instead of a fresh ``SimCLRModel(cfg.model...)``.
        on_step: ``on_step(trainer, run)``, called on every rank after each
            optimizer step, before that step's checkpoint (e.g. backbone snapshots).
    """

    def __init__(self, cfg: SSLConfig, dataset: Dataset, *, extra_params: dict | None = None,
                 extra_tags: dict | None = None,
                 on_end: Callable[[SimCLRTrainer, Any], dict | None] | None = None,
                 preview_images: list[np.ndarray] | None = None, model: SimCLRModel | None = None,
                 on_step: Callable[[SimCLRTrainer, Any], None] | None = None):
        cfg.validate()
        self.cfg = cfg
        self.git_commit = _git_commit()   # the code this process runs, even if the checkout moves on
        self.dataset = dataset
        self.extra_params = dict(extra_params or {})
        self.extra_tags = dict(extra_tags or {})
        self.on_end = on_end
        self.on_step = on_step
        self.preview_images = preview_images
        self.out_dir = Path(cfg.out_dir)
        self.checkpoint_path = self.out_dir / "checkpoints" / "last.pt"
        self.backbone_path = self.out_dir / "backbone.pt"
        self.model: SimCLRModel | None = model      # unwrapped model (set in fit)
        self.step = 0
        self.epoch = 0
        self.run_id: str | None = None
        self.last_logged: dict = {}
        self.dist: dist_utils.DistInfo | None = None
        self.run: Run = NO_RUN
        self.config_changes: list[str] = []         # accepted with allow_new_config
        self._last_good: tuple[Path, int] | None = None   # the newest finite checkpoint on disk

    # ------------------------------------------------------------------ fit
    def fit(self, resume: str | Path | None = None, allow_new_config: bool = False) -> TrainResult:
        """Train to ``cfg.train.max_steps``; ``resume`` is a checkpoint path or ``"auto"``.

        Resuming with a configuration that differs from the checkpoint's (learning rate, schedule,
        steps, ...) raises InputFileError listing the changed keys, unless ``allow_new_config``:
        then the new values apply from the checkpoint's step on and the change is logged.
        """
        cfg, tc = self.cfg, self.cfg.train
        owns_group = not torch.distributed.is_initialized()

        # ============ distributed ============
        self.dist = dist = dist_utils.init_distributed(tc.device)
        device = dist.device
        try:
            check_precision(device.type, tc.precision)     # before any work, not at the first step
            dist_utils.check_sync_batchnorm(tc.sync_batchnorm, dist)
            ckpt = self._read_checkpoint(resume, allow_new_config)
            if dist.is_main:
                ensure_output_dir(self.out_dir)

            # ============ seeding ============
            _seed_everything(tc.seed)
            if tc.deterministic:
                os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
                torch.use_deterministic_algorithms(True)
                torch.backends.cudnn.deterministic = True
                torch.backends.cudnn.benchmark = False
            elif device.type == "cuda":
                torch.backends.cudnn.benchmark = True

            # ============ data ============
            global_batch = tc.batch_size * dist.world_size
            if len(self.dataset) < global_batch:  # type: ignore[arg-type]
                raise HistoclrError(f"the dataset has {len(self.dataset)} images, fewer than one global "
                                    f"batch ({global_batch}); lower train.batch_size")
            sampler = EpochSampler(self.dataset, dist.world_size, dist.rank, tc.seed, tc.batch_size)
            loader = self._build_loader(sampler, device)

            # ============ model ============
            model = self.model if self.model is not None else SimCLRModel(
                cfg.model.arch, cfg.model.proj_hidden_dim, cfg.model.proj_out_dim, cfg.model.proj_layers)
            if tc.channels_last:
                model = model.to(memory_format=torch.channels_last)
            model, net = dist_utils.prepare_model(model, dist, tc.sync_batchnorm)
            self.model = model
            if tc.compile:
                net = torch.compile(net)

            # ============ optimizer & schedule ============

            self.optimizer = build_optimizer(model, cfg.optim, global_batch)
            self.scheduler = build_schedule(self.optimizer, cfg.optim, tc.max_steps)

            # ============ mixed precision ============
            self.autocast = functools.partial(autocast, device.type, str(tc.precision))
            self.scaler = torch.amp.GradScaler(device.type, enabled=tc.precision == "fp16")

            # ============ loss ============

            self.criterion = NTXentLoss(cfg.loss.temperature, gather_distributed=dist.distributed)

            # ============ resume ============
            self.step, self.epoch, self._batch_in_epoch, self._saved_step = 0, 0, 0, None
            if ckpt is not None:
                self._restore(ckpt, sampler.batches_per_epoch)

            # ============ train ============
            with self._tracking(ckpt) as run:
                metrics = self._train(net, loader, sampler, global_batch, run)
                result = self._finish(metrics, run)
            return result
        finally:
            if owns_group:
                dist_utils.cleanup()

    # ------------------------------------------------------------------ building blocks
    def _build_loader(self, sampler: EpochSampler, device: torch.device) -> DataLoader:
        tc = self.cfg.train
        workers = tc.num_workers
        return DataLoader(
            SeededDataset(self.dataset), batch_size=tc.batch_size, sampler=sampler, drop_last=True,
            num_workers=workers, pin_memory=tc.pin_memory and device.type == "cuda",
            worker_init_fn=augment_worker_init_fn if workers else None,
            persistent_workers=tc.persistent_workers and workers > 0,
            prefetch_factor=tc.prefetch_factor if workers else None,
            # the workers' base seed comes from here, not from the global torch RNG
            generator=torch.Generator().manual_seed(tc.seed))

    def train_one_epoch(self, net: torch.nn.Module, loader: DataLoader, global_batch: int,
                        run: Run, pbar: Any) -> dict:
        """Train over ``loader`` (or until ``max_steps``); returns the epoch's mean metrics.

        Each step: views ``[(B, 3, S, S)] * 2`` -> ``z (2B, D)`` -> NT-Xent -> update.
        """

        tc, device = self.cfg.train, self.dist.device
        mean, std = self._view_mean_std()
        net.train()
        images_per_step = 2 * global_batch
        losses: list[float] = []
        window_t0, window_steps = time.perf_counter(), 0
        epoch_t0 = window_t0
        last: dict = {}
        for batch in loader:
            views = split_views(batch)
            x = torch.cat(views[:2]).to(device, non_blocking=True)
            x = normalize_views(x, mean, std)  # uint8 views (recipe normalize=False) are normalised here
            if tc.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with self.autocast():
                _, z = net(x)
            z1, z2 = z.float().chunk(2)
            loss = self.criterion(z1, z2)
            loss_global = dist_utils.all_reduce_mean(loss.detach()).item()
            dist_utils.check_finite_loss(loss_global, self.step + 1, self.divergence_hint())
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            if tc.grad_clip > 0:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(net.parameters(), tc.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            lr = self.scheduler.get_last_lr()[0]
            self.scheduler.step()
            self.step += 1
            self._batch_in_epoch += 1
            losses.append(loss_global)
            window_steps += 1

            if self.step % tc.log_every == 0 or self.step == tc.max_steps:
                with torch.no_grad():
                    top1 = ranking_metrics(z1.detach(), z2.detach())["top1"]
                top1 = float(dist_utils.all_reduce_mean(torch.tensor(float(top1), device=device)))
                elapsed = time.perf_counter() - window_t0
                last = {"loss": loss_global, "top1": top1, "lr": lr,
                        "images_per_s": images_per_step * window_steps / max(elapsed, 1e-9)}
                self.last_logged = dict(last)
                run.log_metrics(last, step=self.step)
                window_t0, window_steps = time.perf_counter(), 0
            if pbar is not None:
                pbar.update(1)
                if last:
                    pbar.set_postfix(loss=f"{loss_global:.4f}", img_s=f"{last['images_per_s']:.1f}")
            if self.on_step is not None:
                self.on_step(self, run)
            if tc.checkpoint_every and self.step % tc.checkpoint_every == 0 and self.step < tc.max_steps:
                self.save_checkpoint()
            if self.step >= tc.max_steps:
                break
        epoch_s = time.perf_counter() - epoch_t0
        return {"loss": float(np.mean(losses)) if losses else float("nan"), "steps": len(losses),
                "images_per_s": images_per_step * len(losses) / max(epoch_s, 1e-9), **(
                    {"top1": last["top1"]} if last else {})}

    def _train(self, net, loader, sampler: EpochSampler, global_batch: int, run: Run) -> dict:
        tc = self.cfg.train
        pbar = None
        if self.dist.is_main:
            pbar = progress_bar(total=tc.max_steps, initial=self.step, desc="pretrain", unit="step",
                                dynamic_ncols=True)
        t0, steps0 = time.perf_counter(), self.step
        epoch_metrics: dict = {}
        try:
            while self.step < tc.max_steps:
                sampler.set_epoch(self.epoch, self._batch_in_epoch)
                epoch_metrics = self.train_one_epoch(net, loader, global_batch, run, pbar)
                if self._batch_in_epoch >= sampler.batches_per_epoch:
                    self.epoch, self._batch_in_epoch = self.epoch + 1, 0
        finally:
            if pbar is not None:
                pbar.close()
        start_batch = self._batch_in_epoch
        elapsed = time.perf_counter() - t0
        out = {"steps": self.step, "epochs": self.epoch + start_batch / max(1, sampler.batches_per_epoch),
               "train_time_s": elapsed,
               "images_per_s_mean": 2 * global_batch * (self.step - steps0) / max(elapsed, 1e-9)}
        out.update(self.last_logged)   # loss, top1, lr, images_per_s of the last log window
        out["epoch_loss"] = epoch_metrics.get("loss", float("nan"))
        return out

    def _finish(self, metrics: dict, run: Run) -> TrainResult:
        dist = self.dist
        if self._saved_step != self.step:
            self.save_checkpoint()
        if dist.is_main:
            meta = {"config": config_to_dict(self.cfg), "run_id": self.run_id, "step": self.step,
                    "git_commit": self.git_commit}
            save_backbone(self.backbone_path, self.model.encoder, self.cfg.model.arch, metadata=meta)
            run.log_metrics({f"final_{k}": float(v) for k, v in metrics.items()}, step=self.step)
            run.log_artifact(self.backbone_path)
            run.log_artifact(self.checkpoint_path, "checkpoints")
            if self.on_end is not None:
                extra = self.on_end(self, run) or {}
                run.log_metrics({k: float(v) for k, v in extra.items()}, step=self.step)
                metrics.update(extra)
        dist_utils.barrier()
        metrics = dist_utils.broadcast_object(metrics)
        run_id = dist_utils.broadcast_object(self.run_id)
        return TrainResult(metrics, self.backbone_path, self.checkpoint_path, run_id, self.model)

    # ------------------------------------------------------------------ checkpoints
    def divergence_hint(self, lr: float | None = None) -> str:
        """What to do after a divergence: the last finite checkpoint and how to restart from it."""
        lr = self.scheduler.get_last_lr()[0] if lr is None else lr
        fix = "lower optim.lr" + (" or use train.precision=32" if str(self.cfg.train.precision) != "32" else "")
        if self._last_good is None:
            return f"lr {lr:.3g}; no checkpoint was written: {fix} and start again"
        path, step = self._last_good
        return (f"lr {lr:.3g}; the last finite checkpoint is {path} (step {step}): {fix} and restart "
                f"from it with --resume {path} --resume-with-new-config")

    def save_checkpoint(self) -> Path:
        """Write ``<out_dir>/checkpoints/last.pt`` (rank 0; every rank takes part in gathering).

        Only finite state is written: non-finite parameters, buffers (BatchNorm running
        statistics) or optimizer state raise TrainingDiverged and keep the previous checkpoint.
        """
        epoch, start_batch = self.epoch, self._batch_in_epoch
        bad = dist_utils.nonfinite_tensors(self.model, self.optimizer)
        if dist_utils.any_rank(bool(bad), self.dist.device):
            what = f"{len(bad)} tensor(s), e.g. {', '.join(bad[:3])}" if bad else "another process's state"
            raise TrainingDiverged(f"training diverged by step {self.step}: non-finite values in "
                                   f"{what}; not saved as a checkpoint; {self.divergence_hint()}", self.step)
        rng = [_rng_state()]
        if self.dist.distributed:
            rng = [None] * self.dist.world_size
            torch.distributed.all_gather_object(rng, _rng_state())
        error = None
        if self.dist.is_main:
            state = {
                "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                "step": self.step, "epoch": epoch,
                "sampler": {"seed": self.cfg.train.seed, "epoch": epoch, "batch_in_epoch": start_batch,
                            "world_size": self.dist.world_size, "batch_size": self.cfg.train.batch_size},
                "rng": rng, "config": config_to_dict(self.cfg), "git_commit": self.git_commit,
                "run_id": self.run_id,
            }
            try:
                save_tagged(self.checkpoint_path, CHECKPOINT_FORMAT, CHECKPOINT_VERSION, state)
            except OutputFileError as e:
                kept = (f"; {self._last_good[0]} (step {self._last_good[1]}) is kept: free some space "
                        f"and resume from it with --resume {self._last_good[0]}" if self._last_good
                        else "; free some space and run again")
                error = f"cannot write the checkpoint of step {self.step} ({e.cause or e.reason}){kept}"
        error = dist_utils.broadcast_object(error)
        if error is not None:
            raise OutputFileError(self.checkpoint_path, error)
        self._saved_step = self.step
        self._last_good = (self.checkpoint_path, self.step)
        dist_utils.barrier()
        return self.checkpoint_path

    def _read_checkpoint(self, resume: str | Path | None, allow_new_config: bool = False) -> dict | None:
        if resume is None:
            return None
        if str(resume) == "auto":
            if not self.checkpoint_path.is_file():
                return None
            resume = self.checkpoint_path
        path = Path(resume)
        ckpt = load_checkpoint(path)
        saved = ckpt["sampler"]
        if (saved["world_size"], saved["batch_size"]) != (self.dist.world_size, self.cfg.train.batch_size):
            raise InputFileError(path, f"written with {saved['world_size']} process(es) x batch "
                                       f"{saved['batch_size']}; this run has {self.dist.world_size} x "
                                       f"{self.cfg.train.batch_size} (exact resume needs the same data order)")
        bad = dist_utils.nonfinite_tensors(ckpt["model"], ckpt["optimizer"])
        if bad:
            raise InputFileError(path, f"holds non-finite values ({len(bad)} tensor(s), e.g. "
                                       f"{', '.join(bad[:3])}): the run had diverged when it was written; "
                                       "resume from an earlier checkpoint or start again with a lower optim.lr")
        changes = config_changes(ckpt.get("config", {}), config_to_dict(self.cfg))
        if changes and not allow_new_config:
            raise InputFileError(path, f"written with another configuration ({'; '.join(changes)}); "
                                       "resume with the checkpoint's settings, or pass "
                                       "--resume-with-new-config to continue with the new ones")
        self.config_changes = changes
        self._resume_path = path
        return ckpt

    def _restore(self, ckpt: dict, batches_per_epoch: int) -> None:
        path = self._resume_path
        try:
            load_state_dict_strict(self.model, ckpt["model"], source=str(path))
        except ValueError as e:
            raise InputFileError(path, str(e)) from None
        new_groups = [{k: v for k, v in g.items() if k != "params"} for g in self.optimizer.param_groups]
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scaler.load_state_dict(ckpt["scaler"])
        self.step, self.epoch = int(ckpt["step"]), int(ckpt["epoch"])
        if self.config_changes:
            # the new hyper-parameters and schedule apply from this step on (optimizer state kept)
            for group, new in zip(self.optimizer.param_groups, new_groups):
                group.update(new)
            sched = self.scheduler
            sched.last_epoch = self.step
            lrs = [base * lam(self.step) for base, lam in zip(sched.base_lrs, sched.lr_lambdas)]
            for group, lr in zip(self.optimizer.param_groups, lrs):
                group["lr"] = lr
            sched._last_lr = lrs
            log.warning("resuming %s at step %d with a changed configuration: %s", path, self.step,
                        "; ".join(self.config_changes))
        else:
            self.scheduler.load_state_dict(ckpt["scheduler"])
        start_batch = int(ckpt["sampler"]["batch_in_epoch"])
        if start_batch >= batches_per_epoch:
            self.epoch, start_batch = self.epoch + 1, 0
        rng = ckpt["rng"]
        _set_rng_state(rng[self.dist.rank] if self.dist.rank < len(rng) else rng[0])
        self.run_id = ckpt.get("run_id")
        self._batch_in_epoch = start_batch
        self._last_good = (path, self.step)
        if path.resolve() == self.checkpoint_path.resolve():
            self._saved_step = self.step

    # ------------------------------------------------------------------ tracking
    @contextlib.contextmanager
    def _tracking(self, ckpt: dict | None):
        """The MLflow run on rank 0 with tracking enabled (the checkpoint's run when it still
        exists), a no-op :class:`Run` otherwise; writes ``config.yaml``."""
        tr = self.cfg.tracking
        enabled = self.dist.is_main and tr.enabled
        uri = resolve_tracking_uri(tr.tracking_uri)
        run_id = self.run_id if ckpt is not None and enabled and run_exists(self.run_id, uri) else None
        params = flatten(config_to_dict(self.cfg))
        params.update(self.extra_params)
        params.update({"global_batch": self.cfg.train.batch_size * self.dist.world_size,
                       "world_size": self.dist.world_size})
        tags = {"stage": "pretrain", **self.extra_tags}
        with start_run(tr.experiment, tr.run_name, tracking_uri=uri, params=params, tags=tags,
                       run_id=run_id, enabled=enabled) as run:
            self.run = run
            self.run_id = run.run_id if enabled else None
            if self.dist.is_main:
                save_config(self.cfg, self.out_dir / "config.yaml")
                run.log_artifact(self.out_dir / "config.yaml")
            if self.config_changes:
                run.set_tags({f"resumed_with_new_config.step{self.step}": "; ".join(self.config_changes)})
                run.log_artifact(self.out_dir / "config.yaml", f"config_from_step{self.step}")
            if self.preview_images and ckpt is None and enabled:
                run.log_artifact(self.save_preview())
            yield run

    def _view_mean_std(self) -> tuple:
        """The normalisation ``(mean, std)`` of the configured views (the recipes' ImageNet default)."""
        p = self.cfg.views.params
        return tuple(p.get("mean", IMAGENET_MEAN)), tuple(p.get("std", IMAGENET_STD))

    def save_preview(self) -> Path:
        """``<out_dir>/views_preview.png``: ``preview_images`` through the configured view recipe."""

        v = self.cfg.views
        transform = build_views(v.recipe, image_size=v.image_size, **v.params)
        path = self.out_dir / "views_preview.png"
        mean, std = self._view_mean_std()
        save_view_preview(list(self.preview_images), transform, path, mean=mean, std=std)
        return path


def config_changes(saved: dict, current: dict, ignored=RESUME_IGNORED) -> list[str]:
    """``["optim.lr 0.001 -> 0.1", ...]``: keys of both configs whose values differ (sorted),
    except ``ignored`` prefixes (logging, workers, where files go)."""
    old, new = flatten(saved), flatten(current)
    out = []
    for key in sorted(set(old) & set(new)):
        if any(key == p or key.startswith(p) for p in ignored):
            continue
        if old[key] != new[key]:
            out.append(f"{key} {old[key]!r} -> {new[key]!r}")
    return out


def load_checkpoint(path: str | Path) -> dict:
    """Read a trainer checkpoint; InputFileError naming the file when it is not one."""
    return load_tagged(path, CHECKPOINT_FORMAT, CHECKPOINT_VERSION, "SimCLR checkpoint",
                       "give a checkpoints/last.pt written by `histoclr pretrain`; delete a damaged one to start over")


def _git_commit() -> str:
    return git_commit() or "unknown"
