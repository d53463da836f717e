"""The `histoclr pretrain` recipe: tiles -> held-out split by slide -> SimCLR -> label-free checks.

1. read and filter the tile manifests (``data``), split SLIDES into training and held-out;
2. build the stain-aware ``histology`` views and a :class:`TileDataset` of the training tiles;
3. :class:`histoclr.ssl.trainer.SimCLRTrainer` trains (DDP under torchrun, checkpoints,
   resume, MLflow) and writes ``<out_dir>/backbone.pt`` for ``finetune-seg``;
4. at the end, on rank 0, :class:`HoldoutDiagnostics` logs the held-out checks.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from histoclr.config.pretrain import PretrainConfig
from histoclr.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass
class PretrainData:
    """The data of a run: training tiles (with views) and held-out tiles (raw images)."""

    train: Any                 # TileDataset with the MultiViewTransform
    holdout: Any | None        # TileDataset without transform, or None
    train_slides: list[str]
    holdout_slides: list[str]
    views: Any                 # the MultiViewTransform
    manifest_sha256: dict[str, str]

    def describe(self) -> str:
        n_hold = len(self.holdout) if self.holdout is not None else 0
        return (f"{len(self.train)} training tiles from {len(self.train_slides)} slide(s); "
                f"{n_hold} held-out tiles from {len(self.holdout_slides)} slide(s)"
                + (f" ({', '.join(self.holdout_slides[:6])}{', ...' if len(self.holdout_slides) > 6 else ''})"
                   if self.holdout_slides else ""))


def build_views(cfg: PretrainConfig):
    """The configured view recipe wrapped in a :class:`MultiViewTransform`; ConfigError on bad params."""
    from histoclr.ssl.augment import MultiViewTransform
    from histoclr.ssl.augment import build_views as _build

    v = cfg.views
    try:
        transform = _build(v.recipe, image_size=v.image_size, **dict(v.params))
    except (TypeError, ValueError) as e:
        raise ConfigError(f"views.params: {e}") from None
    return MultiViewTransform(transform, v.n_views)


def prepare_data(cfg: PretrainConfig) -> PretrainData:
    """Read the manifests, filter, split by slide and build the datasets (no tile is decoded)."""
    from histoclr.io import sha256_file
    from histoclr.pretrain.dataset import TileDataset, load_tiles, split_slides

    d = cfg.data
    views = build_views(cfg)
    tiles = load_tiles(d.manifests, d.slides, d.min_tissue)
    train_slides, hold_slides = split_slides(tiles["slide_id"], d.holdout_fraction, cfg.train.seed)
    train = TileDataset.from_table(tiles[tiles["slide_id"].isin(set(train_slides))], views)
    hold_rows = tiles[tiles["slide_id"].isin(set(hold_slides))]
    holdout = TileDataset.from_table(hold_rows) if len(hold_rows) else None
    sha = {m: sha256_file(m) for m in sorted(set(tiles["manifest"]))}
    return PretrainData(train, holdout, train_slides, hold_slides, views, sha)


def preview_images(dataset, n: int = 4) -> list:
    """Up to ``n`` readable tiles (HWC uint8), one per slide where possible, for the view preview."""
    from histoclr.pretrain.dataset import sample_per_slide

    out = []
    for j in sample_per_slide(dataset.slide_ids, 4 * n, seed=0):
        img = dataset.try_read(j)
        if img is not None:
            out.append(img)
        if len(out) == n:
            break
    return out


def pretrain(cfg: PretrainConfig, resume: str | Path | None = None, data: PretrainData | None = None):
    """Run the recipe; returns the trainer's :class:`TrainResult` (metrics include the checks)."""
    from histoclr.pretrain.diagnostics import HoldoutDiagnostics
    from histoclr.ssl.trainer import SimCLRTrainer

    cfg.validate()
    data = data or prepare_data(cfg)
    sources = [data.train] + ([data.holdout] if data.holdout is not None else [])
    extra_params = {
        "data.train_tiles": len(data.train), "data.train_slides": len(data.train_slides),
        "data.holdout_tiles": len(data.holdout) if data.holdout is not None else 0,
        "data.holdout_slide_ids": ",".join(data.holdout_slides) or "-",
        "data.manifest_sha256": ",".join(f"{Path(m).name}:{s[:16]}" for m, s in data.manifest_sha256.items()),
    }
    trainer = SimCLRTrainer(
        cfg, data.train, extra_params=extra_params, extra_tags={"data": "histology-tiles"},
        on_end=HoldoutDiagnostics(data.holdout, data.views, cfg, bad_tile_sources=sources),
        preview_images=preview_images(data.train))
    return trainer.fit(resume=resume)
