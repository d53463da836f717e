"""Fine-tune DeepLabV3 for nucleus segmentation on a few labelled images, tracked in MLflow.

``run_finetune(cfg)`` trains on random augmented crops of the selected training images, validates
every epoch on the whole validation images (sliding window), keeps the best checkpoint by
validation Dice (``best.pt``, the file ``histoclr predict`` reads), writes ``last.pt`` every epoch
(resumable), and logs params, per-epoch metrics, the best model and overlay PNGs to MLflow.

Under ``torchrun`` it is data-parallel (DDP; Gloo on CPU, NCCL on GPUs): every process takes its
``train.batch_size`` share of the global batch (the ``DistributedSampler`` shards the crop indices,
and a crop depends only on ``(seed, epoch, index)``), the validation images are shared out between
the processes, and only rank 0 writes checkpoints and overlays and opens the MLflow run. The Dice
term of the loss is computed on each process's share of the batch (like BatchNorm statistics,
unless ``train.sync_batchnorm``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch

from histoclr.config.seg import FinetuneConfig
from histoclr.errors import HistoclrError, InputFileError

LAST = "last.pt"
BEST = "best.pt"
STATE_FORMAT = "histoclr-finetune-state"


# --------------------------------------------------------------------------- pieces
def select_pairs(cfg: FinetuneConfig):
    """``(labelled training pairs, validation pairs, size of the training pool)`` from the manifest."""
    from histoclr.seg.pairs import read_pairs_manifest, select_labeled

    pairs = read_pairs_manifest(cfg.pairs, cfg.data_root)
    pool = [p for p in pairs if p.split in ("train", "")]
    val = [p for p in pairs if p.split == "val"]
    if not pool:
        raise InputFileError(cfg.pairs, "no training pairs (split 'train' or empty)")
    if not val:
        raise InputFileError(cfg.pairs, "no validation pairs (split 'val'); fine-tuning validates "
                             "every epoch on them")
    if cfg.num_labeled is None and cfg.label_fraction is None:
        chosen = sorted(pool, key=lambda p: p.image_id)
    else:
        try:
            chosen = select_labeled(pool, num_labeled=cfg.num_labeled, label_fraction=cfg.label_fraction,
                                    seed=cfg.seed)
        except ValueError as e:
            raise HistoclrError(f"{cfg.pairs}: {e}") from None
    return chosen, val, len(pool)


def build_loss(classes: int, dice_weight: float) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``loss(logits (B, C, H, W), mask (B, H, W) int64 in {0, 1}) -> scalar``.

    C = 2: cross-entropy + ``dice_weight`` * multiclass Dice; C = 1: BCE + ``dice_weight`` * binary Dice.
    """
    from segmentation_models_pytorch.losses import DiceLoss

    if classes == 2:
        ce, dice = torch.nn.CrossEntropyLoss(), DiceLoss(mode="multiclass", from_logits=True)
        return lambda logits, y: ce(logits, y) + dice_weight * dice(logits, y)
    if classes == 1:
        bce, dice = torch.nn.BCEWithLogitsLoss(), DiceLoss(mode="binary", from_logits=True)
        return lambda logits, y: bce(logits[:, 0], y.float()) + dice_weight * dice(logits, y[:, None])
    raise ValueError(f"classes must be 1 or 2, got {classes}")


def cosine_lambda(total_steps: int, warmup_steps: int, min_lr_ratio: float) -> Callable[[int], float]:
    """LR multiplier at ``step``: linear warm-up, then cosine decay to ``min_lr_ratio``."""
    def f(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        t = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t))
    return f


def build_optimizer(model, cfg: FinetuneConfig) -> torch.optim.Optimizer:
    from histoclr.seg.freeze import param_groups

    t = cfg.train
    groups = param_groups(model, t.lr, cfg.encoder_lr_mult, t.weight_decay)
    if t.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=t.lr)
    return torch.optim.SGD(groups, lr=t.lr, momentum=0.9, nesterov=True)


def evaluate(model, loaded_pairs, window: int, overlap: float, batch_size: int, device,
             keep_preds: int | None = None) -> tuple[dict, list, list]:
    """Whole-image sliding-window evaluation: ``(mean {dice, iou, pixel_acc, aji}, binary predictions,
    per-image metric dicts)``.

    Under torch.distributed each process evaluates every ``world_size``-th image and all of them get
    every result; ``keep_preds``: return only the first that many predictions (None: all).
    """
    from histoclr import distributed as dist_utils
    from histoclr.seg.dataset import normalize_image
    from histoclr.seg.metrics import segmentation_metrics
    from histoclr.seg.predict import foreground, sliding_window_predict

    rank, world = (torch.distributed.get_rank(), torch.distributed.get_world_size()) \
        if torch.distributed.is_initialized() else (0, 1)
    keep = len(loaded_pairs) if keep_preds is None else keep_preds
    mine = {}
    for i in range(rank, len(loaded_pairs), world):
        lp = loaded_pairs[i]
        probs = sliding_window_predict(model, normalize_image(lp.image), window, overlap, batch_size, device)
        pred = foreground(probs)
        mine[i] = ({k: float(v) for k, v in segmentation_metrics(pred, lp.mask, lp.instances).items()},
                   pred if i < keep else None)
    results = {}
    for part in dist_utils.all_gather_objects(mine):
        results.update(part)
    per_image = [results[i][0] for i in range(len(loaded_pairs))]
    preds = [results[i][1] for i in range(min(keep, len(loaded_pairs)))]
    mean = {k: float(np.mean([m[k] for m in per_image])) for k in per_image[0]}
    return mean, preds, per_image


def config_key(cfg: FinetuneConfig) -> str:
    """Hash of everything that changes the training (not where it logs, nor ``train.resume``)."""
    from histoclr.config.loader import config_to_dict

    d = config_to_dict(cfg)
    for k in ("tracking", "out_dir"):
        d.pop(k, None)
    for k in ("resume", "threads"):
        d["train"].pop(k, None)
    return hashlib.sha1(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()


class _Tracker:
    """MLflow logging that does nothing when tracking is disabled."""

    def __init__(self, enabled: bool):
        self.enabled = enabled

    def metrics(self, values: Mapping[str, float], step: int | None = None) -> None:
        if self.enabled:
            import mlflow

            mlflow.log_metrics({k: float(v) for k, v in values.items()}, step=step)

    def artifact(self, path: Path, artifact_path: str | None = None) -> None:
        if self.enabled:
            import mlflow

            (mlflow.log_artifacts if path.is_dir() else mlflow.log_artifact)(str(path), artifact_path)


def _existing_run(run_id: str | None, tracking_uri: str | None) -> str | None:
    if not run_id:
        return None
    from mlflow.tracking import MlflowClient

    from histoclr.tracking import resolve_tracking_uri

    try:
        MlflowClient(resolve_tracking_uri(tracking_uri)).get_run(run_id)
        return run_id
    except Exception:
        return None


# --------------------------------------------------------------------------- the run
def run_finetune(cfg: FinetuneConfig, *, parent_run_id: str | None = None,
                 extra_tags: Mapping[str, str] | None = None, progress: bool = True,
                 echo: Callable[[str], None] | None = None,
                 model_hook: Callable[[torch.nn.Module], None] | None = None,
                 on_epoch_end: Callable[[dict], None] | None = None) -> dict[str, Any]:
    """Fine-tune, validate, checkpoint and log one configuration; returns the final metrics.

    Returns ``{run_id, best_val_dice, val_iou, val_aji, val_pixel_acc, best_epoch, train_time_s,
    num_labeled, epochs_run, checkpoint, out_dir}`` (metrics at the best epoch). Raises on failure
    (the MLflow run is then marked FAILED); ``HistoclrError`` for bad input or a non-finite loss.
    Under torchrun every process calls it; only rank 0 writes files and logs (``run_id`` is None
    on the others). ``model_hook(model)``: called on the initialised model before freezing (tests
    use it to swap norm layers); ``on_epoch_end(row)``: called with each epoch's metrics row after
    ``last.pt`` is written.
    """
    from histoclr import distributed as dist_utils

    owns_group = not torch.distributed.is_initialized()
    dist = dist_utils.init_distributed(cfg.train.device)
    try:
        return _run_finetune(cfg, dist, parent_run_id=parent_run_id, extra_tags=extra_tags, progress=progress,
                             echo=echo, model_hook=model_hook, on_epoch_end=on_epoch_end)
    finally:
        if owns_group:
            dist_utils.cleanup()


def _run_finetune(cfg: FinetuneConfig, dist, *, parent_run_id, extra_tags, progress, echo, model_hook,
                  on_epoch_end) -> dict[str, Any]:
    from tqdm import tqdm

    from histoclr import distributed as dist_utils
    from histoclr.config.loader import config_to_dict, flatten, save_config
    from histoclr.io import atomic_save, atomic_write_json
    from histoclr.seg.dataset import SegCropDataset, load_pair
    from histoclr.seg.freeze import apply_freeze, parse_freeze_spec, trainable_parameter_counts
    from histoclr.seg.model import SegModelSpec, SegNet, init_encoder, save_seg_checkpoint
    from histoclr.seg.overlay import save_overlay_png
    from histoclr.tracking import mlflow_run

    echo = (echo or tqdm.write) if dist.is_main else (lambda *_: None)
    cfg.validate()
    m, d, t = cfg.model, cfg.data, cfg.train
    out = Path(cfg.out_dir)
    device = dist.device
    tracking = cfg.tracking.enabled and dist.is_main
    if t.sync_batchnorm and dist.distributed and device.type != "cuda":
        raise HistoclrError("train.sync_batchnorm needs CUDA (torch has no CPU SyncBatchNorm); "
                            "set train.sync_batchnorm=false for CPU runs")
    if t.threads:
        torch.set_num_threads(t.threads)
    key = config_key(cfg)

    # ---- resume state (checked before any heavy work)
    state = None
    if t.resume and (out / LAST).is_file():
        try:
            state = torch.load(out / LAST, map_location="cpu", weights_only=True)
        except Exception as e:
            raise InputFileError(out / LAST, f"cannot read the resume state ({str(e).splitlines()[0]}); "
                                 "delete it or set train.resume=false") from None
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise InputFileError(out / LAST, "not a histoclr fine-tuning state file")
        if state["config_key"] != key:
            raise InputFileError(out / LAST, "belongs to a different configuration; use another out_dir "
                                 "or set train.resume=false to start over")
        saved_world = state.get("world_size", 1)
        if saved_world != dist.world_size:
            raise InputFileError(out / LAST, f"written by {saved_world} process(es) x batch {t.batch_size}; "
                                 f"this run has {dist.world_size}: resume with the same number of processes")

    # ---- data
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    chosen, val_pairs, pool_size = select_pairs(cfg)
    echo(f"labelled training images: {len(chosen)} of {pool_size} ({', '.join(p.image_id for p in chosen)}); "
         f"validation images: {len(val_pairs)}")

    # ---- model (before the slow data loading: a bad backbone file fails at once)
    model = SegNet(SegModelSpec(m.encoder, m.architecture, m.output_stride, m.classes, m.decoder_channels))
    init_info = init_encoder(model, cfg.init, cfg.imagenet_weights)
    if model_hook is not None:
        model_hook(model)
    # ---- every process takes its batch_size share of each global batch of crops
    global_batch = t.batch_size * dist.world_size
    dataset = SegCropDataset(chosen, d.mpp, d.crop_size, samples_per_epoch=t.steps_per_epoch * global_batch,
                             augment=d.augment, seed=cfg.seed)
    sampler = (torch.utils.data.DistributedSampler(dataset, dist.world_size, dist.rank, shuffle=False,
                                                   drop_last=True) if dist.distributed else None)
    loader = torch.utils.data.DataLoader(dataset, batch_size=t.batch_size, shuffle=False, sampler=sampler,
                                         drop_last=True, num_workers=d.num_workers,
                                         persistent_workers=d.num_workers > 0)
    val_loaded = [load_pair(p, d.mpp) for p in val_pairs]
    if t.sync_batchnorm and dist.distributed:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    apply_freeze(model, parse_freeze_spec(cfg.freeze))
    counts = trainable_parameter_counts(model)
    echo("trainable parameters: " + ", ".join(f"{k} {v:,}" for k, v in counts.items()))
    model.to(device)
    net: torch.nn.Module = model
    if dist.distributed:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
        echo(f"distributed: {dist.world_size} processes x batch {t.batch_size} = global batch {global_batch}")
    optimizer = build_optimizer(model, cfg)
    total_steps = t.epochs * t.steps_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine_lambda(total_steps, t.warmup_steps,
                                                                           t.min_lr_ratio))
    loss_fn = build_loss(m.classes, m.dice_weight)

    start_epoch, best, history, bad_epochs, elapsed, stopped = 0, None, [], 0, 0.0, False
    run_id = None
    if state is not None:
        model.net.load_state_dict(state["model"], strict=True)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        start_epoch, best, history = state["epoch"], state["best"], state["history"]
        bad_epochs, elapsed, stopped = state["bad_epochs"], state["train_time_s"], state["stopped"]
        run_id = _existing_run(state.get("run_id"), cfg.tracking.tracking_uri) if tracking else None
        echo(f"resuming from {out / LAST} after epoch {start_epoch}")

    label_fraction = cfg.label_fraction if cfg.label_fraction is not None else round(len(chosen) / pool_size, 4)
    params = flatten(config_to_dict(cfg))
    params.update({"init": cfg.init, "freeze": cfg.freeze, "label_fraction": label_fraction,
                   "num_labeled": len(chosen), "seed": cfg.seed, "encoder": m.encoder,
                   "pretrain_run_id": init_info["pretrain_run_id"], "init_source": init_info["init_source"],
                   "label_pool": pool_size, "num_val": len(val_pairs), "world_size": dist.world_size,
                   "global_batch": global_batch})
    params.update({f"trainable_params.{k}": v for k, v in counts.items()})
    tags = {"histoclr.kind": "finetune", "labeled_ids": ",".join(p.image_id for p in chosen)[:5000],
            **(extra_tags or {})}
    if dist.is_main:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")

    run_ctx = (mlflow_run(cfg.tracking.experiment, cfg.tracking.run_name, cfg.tracking.tracking_uri,
                          params=params, tags=tags, run_id=run_id, parent_run_id=parent_run_id)
               if tracking else contextlib.nullcontext(None))
    with run_ctx as run:
        track = _Tracker(tracking)
        run_id = run.info.run_id if run is not None else None
        if state is None:
            track.metrics({f"trainable_params.{k}": v for k, v in counts.items()})
        bar = tqdm(total=total_steps, initial=start_epoch * t.steps_per_epoch, desc="finetune-seg",
                   unit="step", disable=not (progress and dist.is_main), dynamic_ncols=True)
        step = start_epoch * t.steps_per_epoch
        for epoch in range(start_epoch, t.epochs):
            if stopped:
                break
            t0 = time.time()
            dataset.set_epoch(epoch)
            net.train()
            losses = []
            for x, y in loader:
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                loss = loss_fn(net(x), y)
                global_loss = dist_utils.all_reduce_mean(loss)      # the global batch's loss, same on every rank
                if not torch.isfinite(global_loss):
                    raise HistoclrError(f"non-finite training loss ({global_loss.item()}) at step {step + 1}; "
                                        f"lower train.lr (now {t.lr}) or check the data")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if t.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
                optimizer.step()
                scheduler.step()
                step += 1
                losses.append(global_loss.item())
                bar.update(1)
                bar.set_postfix(epoch=epoch + 1, loss=f"{losses[-1]:.3f}",
                                best_dice=f"{best['dice']:.3f}" if best else "-")
            val, preds, _ = evaluate(model, val_loaded, d.crop_size, t.val_overlap, t.val_batch_size, device,
                                     keep_preds=t.overlays)
            row = {"epoch": epoch + 1, "train_loss": float(np.mean(losses)),
                   **{f"val_{k}": v for k, v in val.items()}, "lr": optimizer.param_groups[0]["lr"]}
            history.append(row)
            track.metrics({k: v for k, v in row.items() if k != "epoch"}, step=epoch + 1)
            improved = best is None or val["dice"] > best["dice"]
            if improved:
                best = {**val, "epoch": epoch + 1}
                bad_epochs = 0
            if improved and dist.is_main:
                save_seg_checkpoint(out / BEST, model, mpp=d.mpp, window=d.crop_size, metadata={
                    "epoch": epoch + 1, "val": val, "run_id": run_id, "init": cfg.init,
                    "pretrain_run_id": init_info["pretrain_run_id"], "config": config_to_dict(cfg)})
                for lp, pair, pred in list(zip(val_loaded, val_pairs, preds))[:t.overlays]:
                    save_overlay_png(out / "overlays" / f"{pair.image_id}.png", lp.image, pred, lp.mask)
            if not improved:
                bad_epochs += 1
            stopped = bool(t.patience and bad_epochs >= t.patience)
            elapsed += time.time() - t0
            echo(f"epoch {epoch + 1}/{t.epochs}: loss {row['train_loss']:.4f}  val dice {val['dice']:.4f} "
                 f"iou {val['iou']:.4f} aji {val['aji']:.4f}" + ("  (best)" if improved else "")
                 + ("  early stop" if stopped else ""))
            payload = {"format": STATE_FORMAT, "config_key": key, "epoch": epoch + 1,
                       "model": model.net.state_dict(), "optimizer": optimizer.state_dict(),
                       "scheduler": scheduler.state_dict(), "torch_rng": torch.get_rng_state(),
                       "best": best, "history": history, "bad_epochs": bad_epochs, "train_time_s": elapsed,
                       "stopped": stopped, "run_id": run_id, "world_size": dist.world_size}
            if dist.is_main:
                atomic_save(out / LAST, lambda tmp, state=payload: torch.save(state, tmp))
            dist_utils.barrier()        # last.pt is complete before any process moves on
            if on_epoch_end is not None:
                on_epoch_end(row)
        bar.close()

        result = {"run_id": run_id, "best_val_dice": best["dice"], "val_iou": best["iou"],
                  "val_aji": best["aji"], "val_pixel_acc": best["pixel_acc"], "best_epoch": best["epoch"],
                  "train_time_s": elapsed, "num_labeled": len(chosen), "epochs_run": len(history),
                  "checkpoint": str(out / BEST), "out_dir": str(out)}
        track.metrics({k: result[k] for k in ("best_val_dice", "val_iou", "val_aji", "val_pixel_acc",
                                                "best_epoch", "train_time_s")})
        if dist.is_main:
            atomic_write_json(out / "metrics.json", {**result, "history": history})
        track.artifact(out / BEST, "model")
        track.artifact(out / "config.yaml")
        track.artifact(out / "metrics.json")
        if (out / "overlays").is_dir():
            track.artifact(out / "overlays", "overlays")
    echo(f"best val dice {result['best_val_dice']:.4f} (epoch {result['best_epoch']}), iou {result['val_iou']:.4f}, "
         f"aji {result['val_aji']:.4f}; {result['train_time_s']:.0f} s; model {out / BEST}")
    return result
