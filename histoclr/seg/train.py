"""Fine-tune DeepLabV3 for nucleus instances on a few labelled images, tracked in MLflow.

``run_finetune(cfg)`` reads top to bottom: data, model, optimiser, resume, then per epoch
:func:`train_one_epoch` on random augmented crops and :func:`evaluate` on the whole validation
images (sliding window, then the instance post-processing of :mod:`histoclr.seg.postprocess`,
scored by AJI, PQ, detection F1 and Dice). The best epoch by ``train.select_metric`` (AJI by
default) is kept as ``best.pt``, the file ``histoclr predict`` reads; ``last.pt`` (a
:class:`FinetuneState`) is written every epoch and resumed from. After the last epoch the
post-processing parameters are chosen on the *training* images (:func:`tune_postprocess`), stored in
``best.pt``, and the validation scores are recomputed with them.

Under ``torchrun`` it is data-parallel (DDP; Gloo on CPU, NCCL on GPUs): every process takes its
``train.batch_size`` share of the global batch (the ``DistributedSampler`` shards the crop indices,
and a crop depends only on ``(seed, epoch, index)``), the validation images are shared out between
the processes, and only rank 0 writes checkpoints and overlays and opens the MLflow run. The Dice
term of the loss is computed on each process's share of the batch (like BatchNorm statistics,
unless ``train.sync_batchnorm``).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from tqdm import tqdm

from histoclr import distributed as dist_utils
from histoclr.config.loader import config_to_dict, flatten, save_config
from histoclr.config.seg import FinetuneConfig, parse_freeze_spec
from histoclr.errors import HistoclrError, InputFileError, TrainingDiverged
from histoclr.images import normalize_image
from histoclr.io import atomic_write_json, load_tagged, save_tagged
from histoclr.manifests.pairs import read_pairs_manifest
from histoclr.optim import param_groups, warmup_cosine
from histoclr.progress import progress_bar
from histoclr.seg.dataset import LoadedPair, SegCropDataset, load_pair
from histoclr.seg.freeze import apply_freeze, trainable_parameter_counts
from histoclr.seg.losses import build_loss
from histoclr.seg.metrics import aggregated_jaccard_index, instance_metrics
from histoclr.seg.model import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    SegModelSpec,
    SegNet,
    init_encoder,
    save_seg_checkpoint,
)
from histoclr.seg.naming import finetune_run_name, init_identity
from histoclr.seg.overlay import save_overlay_png
from histoclr.seg.pairs import select_labeled
from histoclr.seg.postprocess import PostprocessParams, choose_params, default_params
from histoclr.seg.predict import instances_of, sliding_window_predict, split_output
from histoclr.tracking import run_exists, start_run

LAST = "last.pt"
BEST = "best.pt"
STATE_FORMAT = "histoclr-finetune-state"
STATE_VERSION = 1                # files written before versioning read as version 1
METRICS = ("dice", "iou", "pixel_acc", "aji", "pq", "dq", "sq", "f1")


# --------------------------------------------------------------------------- pieces
def select_pairs(cfg: FinetuneConfig):
    """``(labelled training pairs, validation pairs, size of the training pool)`` from the manifest."""
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


def build_optimizer(model, cfg: FinetuneConfig) -> torch.optim.Optimizer:
    """AdamW / SGD (momentum 0.9, Nesterov) over the trainable parameters: encoder at
    ``lr * encoder_lr_mult``, decoder and head at ``lr``, no decay on biases and norms."""
    t = cfg.train
    groups = param_groups(model, t.weight_decay, lr=t.lr, mult={"encoder": cfg.encoder_lr_mult},
                          part_of=lambda name: "encoder" if name.startswith("net.encoder.") else "decoder")
    for g in groups:
        g.pop("lars")
    if t.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=t.lr)
    return torch.optim.SGD(groups, lr=t.lr, momentum=0.9, nesterov=True)


def base_postprocess(cfg: FinetuneConfig) -> PostprocessParams:
    """The configured post-processing (``method: auto`` -> the target's own method)."""
    pp = asdict(cfg.postprocess)
    pp.pop("tune")
    method = pp.pop("method")
    params = default_params(cfg.model.target, **pp)
    return params if method == "auto" else replace(params, method=method).validate()


def predict_outputs(model, images: Sequence[np.ndarray], window: int, overlap: float, batch_size: int,
                    device) -> list[torch.Tensor]:
    """Activated sliding-window outputs ``(C, H, W)`` of RGB uint8 images ``(H, W, 3)``."""
    return [sliding_window_predict(model, normalize_image(im), window, overlap, batch_size, device) for im in images]


def evaluate(model, loaded_pairs: Sequence[LoadedPair], window: int, overlap: float, batch_size: int, device,
             params: PostprocessParams, keep_preds: int | None = None) -> tuple[dict, list, list]:
    """Whole-image sliding-window evaluation of instances: ``(mean {dice, iou, pixel_acc, aji, pq, dq,
    sq, f1}, predicted instance maps, per-image metric dicts)``.

    Under torch.distributed each process evaluates every ``world_size``-th image and all of them get
    every result; ``keep_preds``: return only the first that many predictions (None: all).
    """
    rank, world = (torch.distributed.get_rank(), torch.distributed.get_world_size()) \
        if torch.distributed.is_initialized() else (0, 1)
    keep = len(loaded_pairs) if keep_preds is None else keep_preds
    target = model.spec.target
    mine = {}
    for i in range(rank, len(loaded_pairs), world):
        lp = loaded_pairs[i]
        out = sliding_window_predict(model, normalize_image(lp.image), window, overlap, batch_size, device)
        pred = instances_of(out, target, params)
        mine[i] = ({k: float(v) for k, v in instance_metrics(pred, lp.instances, lp.mask).items()},
                   pred if i < keep else None)
    results = {}
    for part in dist_utils.all_gather_objects(mine):
        results.update(part)
    per_image = [results[i][0] for i in range(len(loaded_pairs))]
    preds = [results[i][1] for i in range(min(keep, len(loaded_pairs)))]
    mean = {k: float(np.mean([m[k] for m in per_image])) for k in per_image[0]}
    return mean, preds, per_image


def tune_postprocess(model, loaded_train: Sequence[LoadedPair], base: PostprocessParams, window: int,
                     overlap: float, batch_size: int, device) -> tuple[PostprocessParams, list[dict]]:
    """Choose the post-processing parameters that maximise the mean AJI on the *training* images."""
    target = model.spec.target
    outputs = [split_output(o, target) for o in
               predict_outputs(model, [lp.image for lp in loaded_train], window, overlap, batch_size, device)]
    return choose_params(outputs, [lp.instances for lp in loaded_train], base, aggregated_jaccard_index)


def config_key(cfg: FinetuneConfig) -> str:
    """Hash of everything that changes the training (not where it logs, nor ``train.resume``). A
    SimCLR init counts by its weights (:func:`init_identity`): a moved checkout resumes its runs."""
    d = config_to_dict(cfg)
    for k in ("tracking", "out_dir"):
        d.pop(k, None)
    d["init"] = init_identity(cfg.init)
    for k in ("resume", "threads"):
        d["train"].pop(k, None)
    return hashlib.sha1(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()


@dataclass
class FinetuneState:
    """Everything ``last.pt`` holds besides the weights and optimiser: the run's progress.

    ``best``: the best epoch's validation metrics plus ``epoch``; ``history``: one metrics row per
    epoch; ``postprocess`` / ``final``: the chosen post-processing and its validation metrics
    (None until chosen after the last epoch).
    """

    config_key: str
    world_size: int = 1
    epoch: int = 0
    best: dict | None = None
    history: list = field(default_factory=list)
    bad_epochs: int = 0
    train_time_s: float = 0.0
    stopped: bool = False
    run_id: str | None = None
    postprocess: dict | None = None     # the chosen post-processing parameters, once chosen
    final: dict | None = None           # the best epoch's validation metrics with those parameters

    def save(self, path: Path, model: SegNet, optimizer, scheduler) -> None:
        """Write atomically; a failed write (disk full) is one line naming ``path``, the old file kept."""
        save_tagged(path, STATE_FORMAT, STATE_VERSION, {
            **asdict(self), "model": model.net.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "torch_rng": torch.get_rng_state()})

    @classmethod
    def load(cls, path: Path, config_key: str, world_size: int) -> tuple["FinetuneState", dict]:
        """``(state, payload)``; the payload holds ``model``, ``optimizer``, ``scheduler``, ``torch_rng``.

        Raises:
            InputFileError: unreadable, not a state file, another configuration or process count.
        """
        payload = load_tagged(path, STATE_FORMAT, STATE_VERSION, "fine-tuning state file",
                              "delete it or set train.resume=false to start over",
                              upgrades={None: lambda p: {**p, "version": STATE_VERSION}})   # untagged = version 1
        if payload.get("config_key") != config_key:
            raise InputFileError(path, "belongs to a different configuration; use another out_dir "
                                 "or set train.resume=false to start over")
        saved_world = payload.get("world_size", 1)
        if saved_world != world_size:
            raise InputFileError(path, f"written by {saved_world} process(es); this run has {world_size}: "
                                 "resume with the same number of processes")
        names = cls.__dataclass_fields__
        return cls(**{k: payload[k] for k in names if k in payload}), payload


def train_one_epoch(net: torch.nn.Module, model: torch.nn.Module, loader, loss_fn, optimizer, scheduler,
                    device, *, step: int, grad_clip: float, lr: float,
                    on_step: Callable[[float], None] | None = None) -> dict[str, float]:
    """One pass over ``loader``; returns ``{"train_loss": mean global-batch loss, "steps": n}``.

    ``net``: the (possibly DDP-wrapped) ``model``. Raises ``HistoclrError`` on a non-finite loss.
    """
    net.train()
    losses = []
    for x, y in loader:
        x = x.to(device, non_blocking=True)
        y = {k: v.to(device, non_blocking=True) for k, v in y.items()}
        loss = loss_fn(net(x), y)
        global_loss = dist_utils.all_reduce_mean(loss)      # the global batch's loss, same on every rank
        dist_utils.check_finite_loss(global_loss, step + len(losses) + 1,
                                     f"lower train.lr (now {lr}) or check the data; last.pt holds the last "
                                     "finished epoch (delete it or set train.resume=false to start over)")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        scheduler.step()
        losses.append(global_loss.item())
        if on_step is not None:
            on_step(losses[-1])
    return {"train_loss": float(np.mean(losses)), "steps": len(losses)}


# --------------------------------------------------------------------------- the run
def epoch_metric_names(row: dict) -> dict[str, float]:
    """An epoch's history row under its MLflow names: ``val_aji`` -> ``epoch_val_aji`` (the plain
    ``val_*`` names are the run's result, the selected epoch with the chosen post-processing, logged
    at the end), ``train_loss`` and ``lr`` unchanged."""
    return {(f"epoch_{k}" if k.startswith("val_") else k): v for k, v in row.items() if k != "epoch"}


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
    # ============================================================ setup
    echo = (echo or tqdm.write) if dist.is_main else (lambda *_: None)
    cfg.validate()
    m, d, t = cfg.model, cfg.data, cfg.train
    out = Path(cfg.out_dir)
    device = dist.device
    tracking = cfg.tracking.enabled and dist.is_main
    dist_utils.check_sync_batchnorm(t.sync_batchnorm, dist)
    if t.threads:
        torch.set_num_threads(t.threads)
    key = config_key(cfg)
    base_params = base_postprocess(cfg)

    # ============================================================ resume state (before any heavy work)
    state, saved = FinetuneState(key, dist.world_size), None
    if t.resume and (out / LAST).is_file():
        state, saved = FinetuneState.load(out / LAST, key, dist.world_size)

    # ============================================================ data
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    chosen, val_pairs, pool_size = select_pairs(cfg)
    echo(f"labelled training images: {len(chosen)} of {pool_size} ({', '.join(p.image_id for p in chosen)}); "
         f"validation images: {len(val_pairs)}")

    # ============================================================ model (before the slow data loading)
    model = SegNet(SegModelSpec(m.encoder, m.architecture, m.output_stride, m.classes, m.decoder_channels,
                                m.target))
    init_info = init_encoder(model, cfg.init, cfg.imagenet_weights)
    model.set_compute(str(t.precision), t.channels_last)
    if model_hook is not None:
        model_hook(model)
    global_batch = t.batch_size * dist.world_size     # every process takes its batch_size share
    dataset = SegCropDataset(chosen, d.mpp, d.crop_size, samples_per_epoch=t.steps_per_epoch * global_batch,
                             augment=d.augment, seed=cfg.seed, target=m.target, boundary_width=m.boundary_width)
    sampler = (torch.utils.data.DistributedSampler(dataset, dist.world_size, dist.rank, shuffle=False,
                                                   drop_last=True) if dist.distributed else None)
    loader = torch.utils.data.DataLoader(dataset, batch_size=t.batch_size, shuffle=False, sampler=sampler,
                                         drop_last=True, num_workers=d.num_workers,
                                         persistent_workers=d.num_workers > 0)
    val_loaded = [load_pair(p, d.mpp) for p in val_pairs]
    apply_freeze(model, parse_freeze_spec(cfg.freeze))
    counts = trainable_parameter_counts(model)
    echo("trainable parameters: " + ", ".join(f"{k} {v:,}" for k, v in counts.items()))
    model, net = dist_utils.prepare_model(model, dist, t.sync_batchnorm)     # SyncBatchNorm, device, DDP
    if dist.distributed:
        echo(f"distributed: {dist.world_size} processes x batch {t.batch_size} = global batch {global_batch}")

    # ============================================================ optimiser, schedule, loss
    optimizer = build_optimizer(model, cfg)
    total_steps = t.epochs * t.steps_per_epoch
    scheduler = warmup_cosine(optimizer, t.warmup_steps, total_steps, t.min_lr_ratio)
    loss_fn = build_loss(m.target, m.classes, m.dice_weight, m.distance_weight)
    if saved is not None:
        model.net.load_state_dict(saved["model"], strict=True)
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        torch.set_rng_state(saved["torch_rng"])
        echo(f"resuming from {out / LAST} after epoch {state.epoch}")
    run_id = state.run_id if tracking and run_exists(state.run_id, cfg.tracking.tracking_uri) else None

    # ============================================================ tracking
    label_fraction = cfg.label_fraction if cfg.label_fraction is not None else round(len(chosen) / pool_size, 4)
    params = flatten(config_to_dict(cfg))
    params.update({"init": cfg.init, "freeze": cfg.freeze, "label_fraction": label_fraction,
                   "num_labeled": len(chosen), "seed": cfg.seed, "encoder": m.encoder, "target": m.target,
                   "pretrain_run_id": init_info["pretrain_run_id"], "init_source": init_info["init_source"],
                   "label_pool": pool_size, "num_val": len(val_pairs), "world_size": dist.world_size,
                   "global_batch": global_batch})
    params.update({f"trainable_params.{k}": v for k, v in counts.items()})
    tags = {"histoclr.kind": "finetune", "labeled_ids": ",".join(p.image_id for p in chosen)[:5000],
            **(extra_tags or {})}
    if dist.is_main:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")
    select = t.select_metric

    def save_best(params_used: PostprocessParams, val: dict, epoch: int, preds) -> None:
        save_seg_checkpoint(out / BEST, model, mpp=d.mpp, window=d.crop_size, postprocess=params_used, metadata={
            "epoch": epoch, "val": val, "run_id": run_id, "init": cfg.init, "target": m.target,
            "select_metric": select, "pretrain_run_id": init_info["pretrain_run_id"], "config": config_to_dict(cfg)})
        for lp, pair, pred in list(zip(val_loaded, val_pairs, preds))[:t.overlays]:
            save_overlay_png(out / "overlays" / f"{pair.image_id}.png", lp.image, pred, lp.instances)

    run_name = cfg.tracking.run_name or finetune_run_name(cfg.init, cfg.freeze, cfg.label_fraction,
                                                          cfg.num_labeled, cfg.seed)
    with start_run(cfg.tracking.experiment, run_name, tracking_uri=cfg.tracking.tracking_uri,
                   params=params, tags=tags, run_id=run_id, parent_run_id=parent_run_id,
                   enabled=tracking) as run:
        run_id = run.run_id
        state.run_id = run_id
        if saved is None:
            run.log_metrics({f"trainable_params.{k}": v for k, v in counts.items()})

        # ======================================================== epochs
        bar = progress_bar(total=total_steps, initial=state.epoch * t.steps_per_epoch, desc="finetune-seg",
                   unit="step", disable=not (progress and dist.is_main), dynamic_ncols=True)
        for epoch in range(state.epoch, t.epochs):
            if state.stopped:
                break
            t0 = time.time()
            dataset.set_epoch(epoch)

            def on_step(loss: float, epoch=epoch) -> None:
                bar.update(1)
                bar.set_postfix(epoch=epoch + 1, loss=f"{loss:.3f}",
                                best=f"{state.best[select]:.3f}" if state.best else "-")

            stats = train_one_epoch(net, model, loader, loss_fn, optimizer, scheduler, device,
                                    step=epoch * t.steps_per_epoch, grad_clip=t.grad_clip, lr=t.lr, on_step=on_step)
            val, preds, _ = evaluate(model, val_loaded, d.crop_size, t.val_overlap, t.val_batch_size, device,
                                     base_params, keep_preds=t.overlays)
            row = {"epoch": epoch + 1, "train_loss": stats["train_loss"],
                   **{f"val_{k}": v for k, v in val.items()}, "lr": optimizer.param_groups[0]["lr"]}
            state.history.append(row)
            run.log_metrics(epoch_metric_names(row), step=epoch + 1)
            improved = state.best is None or val[select] > state.best[select]
            if improved:
                state.best = {**val, "epoch": epoch + 1}
                state.bad_epochs = 0
                if dist.is_main:
                    save_best(base_params, val, epoch + 1, preds)
            else:
                state.bad_epochs += 1
            state.stopped = bool(t.patience and state.bad_epochs >= t.patience)
            state.epoch = epoch + 1
            state.train_time_s += time.time() - t0
            echo(f"epoch {epoch + 1}/{t.epochs}: loss {row['train_loss']:.4f}  val aji {val['aji']:.4f} "
                 f"pq {val['pq']:.4f} dice {val['dice']:.4f} f1 {val['f1']:.4f}" + ("  (best)" if improved else "")
                 + ("  early stop" if state.stopped else ""))
            bad = dist_utils.nonfinite_tensors(model, optimizer)
            if bad:                     # never checkpoint a poisoned state (e.g. BatchNorm running_var)
                raise TrainingDiverged(
                    f"training diverged in epoch {epoch + 1}: non-finite {', '.join(bad[:3])}"
                    f"{' ...' if len(bad) > 3 else ''}; {out / LAST} keeps epoch {epoch}; lower train.lr "
                    f"(now {t.lr})", (epoch + 1) * t.steps_per_epoch)
            if dist.is_main:
                state.save(out / LAST, model, optimizer, scheduler)
            dist_utils.barrier()        # last.pt is complete before any process moves on
            if on_epoch_end is not None:
                on_epoch_end(row)
        bar.close()

        # ======================================================== post-processing chosen on the training images
        tuned_now = state.postprocess is None
        if tuned_now and cfg.postprocess.tune:
            tuned, table, best_sd = None, [], None
            if dist.is_main:
                best_sd = load_tagged(out / BEST, CHECKPOINT_FORMAT, CHECKPOINT_VERSION, "model checkpoint",
                                      "delete it and last.pt to retrain")["state_dict"]
                model.net.load_state_dict(best_sd, strict=True)
                echo(f"choosing the post-processing ({base_params.method}) on the {len(dataset.items)} "
                     "training image(s) ...")
                tuned, table = tune_postprocess(model, dataset.items, base_params, d.crop_size, t.val_overlap,
                                                t.val_batch_size, device)
            tuned = dist_utils.broadcast_object(tuned)
            if dist.distributed:
                model.net.load_state_dict(dist_utils.broadcast_object(best_sd), strict=True)
            val, preds, _ = evaluate(model, val_loaded, d.crop_size, t.val_overlap, t.val_batch_size, device,
                                     tuned, keep_preds=t.overlays)
            echo(f"post-processing chosen on the training images: {tuned.to_dict()}; "
                 f"val aji {val['aji']:.4f} pq {val['pq']:.4f} dice {val['dice']:.4f}")
            state.postprocess, state.final = tuned.to_dict(), {**val, "epoch": state.best["epoch"]}
            if dist.is_main:
                save_best(tuned, val, state.best["epoch"], preds)
                atomic_write_json(out / "postprocess_search.json", {"chosen": tuned.to_dict(), "table": table})
        elif tuned_now:
            state.postprocess, state.final = base_params.to_dict(), dict(state.best)
        if tuned_now and dist.is_main:
            state.save(out / LAST, model, optimizer, scheduler)
        dist_utils.barrier()
        best_params, final = PostprocessParams.from_dict(state.postprocess), state.final

        # ======================================================== results
        result = {"run_id": run_id, "best_val_dice": final["dice"], "val_iou": final["iou"],
                  "val_aji": final["aji"], "val_pq": final["pq"], "val_dq": final["dq"], "val_sq": final["sq"],
                  "val_f1": final["f1"], "val_pixel_acc": final["pixel_acc"], "best_epoch": final["epoch"],
                  "select_metric": select, "postprocess": best_params.to_dict(),
                  "val_aji_untuned": state.best["aji"], "train_time_s": state.train_time_s,
                  "num_labeled": len(chosen), "epochs_run": len(state.history), "checkpoint": str(out / BEST),
                  "out_dir": str(out)}
        run.log_metrics({k: result[k] for k in ("best_val_dice", "val_iou", "val_aji", "val_pq", "val_dq", "val_sq",
                                                "val_f1", "val_pixel_acc", "val_aji_untuned", "best_epoch",
                                                "train_time_s")})
        if tuned_now:
            run.log_params({f"postprocess_chosen.{k}": v for k, v in best_params.to_dict().items()})
        if dist.is_main:
            atomic_write_json(out / "metrics.json", {**result, "history": state.history})
        run.log_artifact(out / BEST, "model")
        run.log_artifact(out / "config.yaml")
        run.log_artifact(out / "metrics.json")
        if (out / "postprocess_search.json").is_file():
            run.log_artifact(out / "postprocess_search.json")
        if (out / "overlays").is_dir():
            run.log_artifact(out / "overlays", "overlays")
    echo(f"best epoch {result['best_epoch']} by val {select}: aji {result['val_aji']:.4f}, pq {result['val_pq']:.4f}, "
         f"dice {result['best_val_dice']:.4f}, f1 {result['val_f1']:.4f}; {result['train_time_s']:.0f} s; "
         f"model {out / BEST}")
    return result
