"""Typed defaults for `histoclr pretrain`: the SimCLR config (:class:`SSLConfig`) plus tile data.

``PretrainConfig`` is :class:`histoclr.config.ssl.SSLConfig` (model, loss, optim, views, train,
tracking, out_dir) with three more groups: ``data`` (fixed tiles from tile manifests, or dense
random crops read from the slides; which slides are held out), ``diagnostics`` (the label-free
checks on the held-out slides) and ``snapshots`` (backbone files kept at given steps, each with
the checks).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from histoclr.config.ssl import SSLConfig, ViewsConfig
from histoclr.config.tile import TissueConfig
from histoclr.errors import ConfigError

PROJECTIONS = ("auto", "pca", "tsne")
DATA_MODES = ("tiles", "dense")
WEIGHTINGS = ("source", "area")


@dataclass
class DenseConfig:
    """``data.mode=dense``: every training item is a new random crop at a tissue position."""

    root: str = "../shared/data"          # relative `sources` (and the pairs manifest's paths) are under it
    sources: list[str] = field(default_factory=list)  # slide/image files or folders (like `histoclr tile`)
    recursive: bool = False               # descend into sub-folders of folder sources
    mpp: float = 0.25                     # µm/px of the crops (read through the slide reader at this mpp)
    assume_mpp: Optional[float] = None    # µm/px of sources without resolution metadata
    crop_size: int = 120                  # crop side in pixels at `mpp` (the views are cut from it)
    min_tissue: float = 0.5               # a crop's tissue fraction (thumbnail mask) is at least this
    crops_per_epoch: int = 65536          # dataset length; crop k of a run = f(train.seed, k), never repeats
    weighting: str = "source"             # source: every source equally likely | area: by tissue area
    exclude_pairs: Optional[str] = "data_manifests/monuseg2018_seg_pairs.csv"  # segmentation pairs manifest
    exclude_splits: list[str] = field(default_factory=lambda: ["val"])  # its images of these splits never enter
    exclude: list[str] = field(default_factory=list)   # more source ids (file stems) never used
    holdout: list[str] = field(default_factory=list)   # source ids held out for the checks (empty: random,
    #                                                     data.holdout_fraction of the sources)
    tissue: TissueConfig = field(default_factory=TissueConfig)


@dataclass
class SnapshotConfig:
    steps: list[int] = field(default_factory=list)   # backbone snapshots at these steps, plus the last
    diagnostics: bool = True                         # run + log the held-out checks at each snapshot


@dataclass
class DataConfig:
    mode: str = "tiles"                                  # tiles: fixed tiles from manifests | dense
    manifests: list[str] = field(default_factory=list)   # tiles.csv files (or folders holding one)
    slides: list[str] = field(default_factory=list)      # slide_id include list; empty = all slides
    min_tissue: float = 0.0                              # keep tiles with tissue_fraction >= this
    holdout_fraction: float = 0.2                        # fraction of SLIDES held out for the checks
    dense: DenseConfig = field(default_factory=DenseConfig)


@dataclass
class DiagnosticsConfig:
    enabled: bool = True
    max_tiles: int = 512          # held-out tiles used (evenly sampled across held-out slides)
    batch_size: int = 64          # inference batch
    projection: str = "auto"      # auto (t-SNE when scikit-learn is installed, else PCA) | pca | tsne
    n_queries: int = 6            # rows of the nearest-neighbour montage
    n_neighbours: int = 6         # neighbours per query


@dataclass
class PretrainConfig(SSLConfig):
    views: ViewsConfig = field(default_factory=lambda: ViewsConfig(recipe="histology"))
    data: DataConfig = field(default_factory=DataConfig)
    diagnostics: DiagnosticsConfig = field(default_factory=DiagnosticsConfig)
    snapshots: SnapshotConfig = field(default_factory=SnapshotConfig)
    out_dir: str = "runs/pretrain"

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first invalid key."""
        super().validate()
        d, g = self.data, self.diagnostics
        if d.mode not in DATA_MODES:
            raise ConfigError(f"data.mode={d.mode!r} is not one of {', '.join(DATA_MODES)}")
        if d.mode == "tiles" and not d.manifests:
            raise ConfigError("data.manifests is empty; give one or more tile manifests "
                              "(tiles.csv written by `histoclr tile`), e.g. data.manifests=[tiles/tiles.csv]")
        if d.mode == "dense":
            _validate_dense(d.dense)
        bad_steps = [s for s in self.snapshots.steps if s < 1]
        if bad_steps:   # steps after train.max_steps are never reached (a shortened run keeps its last)
            raise ConfigError(f"snapshots.steps must be >= 1, got {bad_steps}")
        if not 0 <= d.min_tissue <= 1:
            raise ConfigError(f"data.min_tissue must be in [0, 1], got {d.min_tissue}")
        if not 0 <= d.holdout_fraction < 1:
            raise ConfigError(f"data.holdout_fraction must be in [0, 1), got {d.holdout_fraction}")
        if g.projection not in PROJECTIONS:
            raise ConfigError(f"diagnostics.projection={g.projection!r} is not one of {', '.join(PROJECTIONS)}")
        for key, value in (("diagnostics.max_tiles", g.max_tiles), ("diagnostics.batch_size", g.batch_size),
                           ("diagnostics.n_queries", g.n_queries), ("diagnostics.n_neighbours", g.n_neighbours)):
            if value < 1:
                raise ConfigError(f"{key} must be >= 1, got {value}")
        if g.max_tiles < 2:
            raise ConfigError(f"diagnostics.max_tiles must be >= 2 (ranking needs negatives), got {g.max_tiles}")


def _validate_dense(e: DenseConfig) -> None:
    if not e.sources:
        raise ConfigError("data.dense.sources is empty; name slide/image files or folders, e.g. "
                          "data.dense.sources=[monuseg2018/unlabeled/images]")
    if e.mpp <= 0 or (e.assume_mpp is not None and e.assume_mpp <= 0):
        raise ConfigError(f"data.dense.mpp and data.dense.assume_mpp must be > 0, got {e.mpp}, {e.assume_mpp}")
    if e.crop_size < 8:
        raise ConfigError(f"data.dense.crop_size must be >= 8, got {e.crop_size}")
    if not 0 <= e.min_tissue <= 1:
        raise ConfigError(f"data.dense.min_tissue must be in [0, 1], got {e.min_tissue}")
    if e.crops_per_epoch < 1:
        raise ConfigError(f"data.dense.crops_per_epoch must be >= 1, got {e.crops_per_epoch}")
    if e.weighting not in WEIGHTINGS:
        raise ConfigError(f"data.dense.weighting={e.weighting!r} is not one of {', '.join(WEIGHTINGS)}")
