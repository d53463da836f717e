"""The `histoclr pretrain` recipe: data -> held-out split by slide -> SimCLR -> label-free checks.

1. ``data.mode=tiles``: read and filter the tile manifests, split SLIDES into training and
   held-out, a :class:`TileDataset` of the training tiles; ``data.mode=dense``: plan the
   slides/images (:mod:`histoclr.pretrain.dense`; the segmentation validation images excluded),
   split them, a :class:`DenseCropDataset` of fresh random tissue crops, and
   ``<out_dir>/dense_manifest.json`` recording what the run sees;
2. the stain-aware ``histology`` views;
3. :class:`histoclr.ssl.trainer.SimCLRTrainer` trains (DDP under torchrun, checkpoints,
   resume, MLflow), keeps backbone snapshots at ``snapshots.steps`` (each with the held-out
   checks, :mod:`histoclr.pretrain.snapshots`) and writes ``<out_dir>/backbone.pt``;
4. at the end, on rank 0, :class:`HoldoutDiagnostics` logs the held-out checks.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from histoclr.config.pretrain import PretrainConfig
from histoclr.errors import ConfigError
from histoclr.io import sha256_file
from histoclr.pretrain.dataset import TileDataset, load_tiles, sample_per_slide, split_slides
from histoclr.pretrain.dense import DenseCropDataset, build_dense, write_manifest
from histoclr.pretrain.diagnostics import HoldoutDiagnostics
from histoclr.pretrain.snapshots import Snapshots
from histoclr.ssl.augment import MultiViewTransform
from histoclr.ssl.augment import build_views as _build
from histoclr.ssl.trainer import SimCLRTrainer

log = logging.getLogger(__name__)


@dataclass
class PretrainData:
    """The data of a run: training tiles/crops (with views) and held-out tiles/crops (raw images)."""

    train: Any                 # TileDataset / DenseCropDataset with the MultiViewTransform
    holdout: Any | None        # TileDataset / DenseHoldout without transform, or None
    train_slides: list[str]
    holdout_slides: list[str]
    views: Any                 # the MultiViewTransform
    manifest_sha256: dict[str, str]
    dense: Any | None = None   # histoclr.pretrain.dense.DenseData (data.mode=dense)

    def describe(self) -> str:
        n_hold = len(self.holdout) if self.holdout is not None else 0
        if self.dense is not None:
            m = self.dense.manifest
            r = m["recipe"]
            return (f"dense crops ({r['crop_size']} px at {r['mpp']} µm/px, tissue >= {r['min_tissue']}) "
                    f"from {len(self.train_slides)} training source(s) ({m['train_tissue_mm2']:.2f} mm² of "
                    f"tissue); {n_hold} held-out crops from {len(self.holdout_slides)} source(s)"
                    + (f" ({', '.join(self.holdout_slides[:6])}{', ...' if len(self.holdout_slides) > 6 else ''})"
                       if self.holdout_slides else "")
                    + f"; {len(self.dense.excluded)} excluded"
                    + (f" ({', '.join(x['source_id'] for x in self.dense.excluded[:6])})" if self.dense.excluded else ""))
        return (f"{len(self.train)} training tiles from {len(self.train_slides)} slide(s); "
                f"{n_hold} held-out tiles from {len(self.holdout_slides)} slide(s)"
                + (f" ({', '.join(self.holdout_slides[:6])}{', ...' if len(self.holdout_slides) > 6 else ''})"
                   if self.holdout_slides else ""))


def build_views(cfg: PretrainConfig):
    """The configured view recipe wrapped in a :class:`MultiViewTransform`; ConfigError on bad params."""

    v = cfg.views
    try:
        transform = _build(v.recipe, image_size=v.image_size, **dict(v.params))
    except (TypeError, ValueError) as e:
        raise ConfigError(f"views.params: {e}") from None
    return MultiViewTransform(transform, v.n_views)


def prepare_data(cfg: PretrainConfig) -> PretrainData:
    """Build the datasets: tiles (no tile is decoded) or dense (each source planned once)."""

    d = cfg.data
    views = build_views(cfg)
    if d.mode == "dense":
        if d.manifests:
            log.warning("data.mode=dense: data.manifests (%s) is not used; set data.mode=tiles to "
                        "train on those tiles", ", ".join(map(str, d.manifests)))
        dense = build_dense(cfg, views)
        return PretrainData(dense.train, dense.holdout, [s.source_id for s in dense.train_sources],
                            [s.source_id for s in dense.holdout_sources], views, {}, dense)
    tiles = load_tiles(d.manifests, d.slides, d.min_tissue)
    train_slides, hold_slides = split_slides(tiles["slide_id"], d.holdout_fraction, cfg.train.seed)
    train = TileDataset.from_table(tiles[tiles["slide_id"].isin(set(train_slides))], views)
    hold_rows = tiles[tiles["slide_id"].isin(set(hold_slides))]
    holdout = TileDataset.from_table(hold_rows) if len(hold_rows) else None
    sha = {m: sha256_file(m) for m in sorted(set(tiles["manifest"]))}
    return PretrainData(train, holdout, train_slides, hold_slides, views, sha)


def preview_images(dataset, n: int = 4) -> list:
    """Up to ``n`` readable tiles (HWC uint8), one per slide where possible, for the view preview."""

    if isinstance(dataset, DenseCropDataset):
        return [dataset.try_read(k) for k in range(n)]
    out = []
    for j in sample_per_slide(dataset.slide_ids, 4 * n, seed=0):
        img = dataset.try_read(j)
        if img is not None:
            out.append(img)
        if len(out) == n:
            break
    return out


def run_name(cfg: PretrainConfig) -> str:
    """The MLflow run name: ``pretrain simclr <views recipe> <data mode> <arch> <steps> steps``."""
    return (f"pretrain simclr {cfg.views.recipe} {cfg.data.mode} {cfg.model.arch} "
            f"{cfg.train.max_steps} steps")


def pretrain(cfg: PretrainConfig, resume: str | Path | None = None, data: PretrainData | None = None,
             allow_new_config: bool = False):
    """Run the recipe; returns the trainer's :class:`TrainResult` (metrics include the checks).

    ``allow_new_config``: resume although the config differs from the checkpoint's (see
    :meth:`SimCLRTrainer.fit`)."""

    cfg.validate()
    cfg.tracking.run_name = cfg.tracking.run_name or run_name(cfg)
    data = data or prepare_data(cfg)
    sources = [data.train] + ([data.holdout] if data.holdout is not None else [])
    extra_params = {
        "data.train_tiles": len(data.train), "data.train_slides": len(data.train_slides),
        "data.holdout_tiles": len(data.holdout) if data.holdout is not None else 0,
        "data.holdout_slide_ids": ",".join(data.holdout_slides) or "-",
        "data.manifest_sha256": ",".join(f"{Path(m).name}:{s[:16]}" for m, s in data.manifest_sha256.items()),
    }
    data_meta: dict[str, Any] = {"mode": cfg.data.mode, "train_sources": list(data.train_slides),
                                 "holdout_sources": list(data.holdout_slides)}
    if data.dense is not None:
        path = write_manifest(data.dense, cfg.out_dir, resuming=resume is not None)
        sha = data.dense.manifest_sha256
        excluded = [x["source_id"] for x in data.dense.excluded]
        extra_params.update({"data.dense_manifest_sha256": sha[:16], "data.excluded": ",".join(excluded) or "-",
                             "data.train_tissue_mm2": data.dense.manifest["train_tissue_mm2"]})
        data_meta.update({"manifest": str(path.resolve()), "manifest_sha256": sha, "excluded": excluded,
                          "recipe": data.dense.manifest["recipe"]})
    else:
        data_meta["manifests"] = dict(data.manifest_sha256)
    diagnostics = HoldoutDiagnostics(data.holdout, data.views, cfg, bad_tile_sources=sources)
    snapshots = Snapshots(cfg.snapshots.steps, cfg.train.max_steps, data_meta,
                          diagnostics if cfg.snapshots.diagnostics else None,
                          artifacts=[path] if data.dense is not None else [])
    trainer = SimCLRTrainer(
        cfg, data.train, extra_params=extra_params,
        extra_tags={"data": "histology-dense-crops" if data.dense is not None else "histology-tiles"},
        on_end=diagnostics, on_step=snapshots, preview_images=preview_images(data.train))
    return trainer.fit(resume=resume, allow_new_config=allow_new_config)
