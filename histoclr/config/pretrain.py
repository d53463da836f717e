"""Typed defaults for `histoclr pretrain`: the SimCLR config (:class:`SSLConfig`) plus tile data.

``PretrainConfig`` is :class:`histoclr.config.ssl.SSLConfig` (model, loss, optim, views, train,
tracking, out_dir) with two more groups: ``data`` (which tiles, which slides are held out) and
``diagnostics`` (the label-free checks run on the held-out slides at the end of training).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from histoclr.config.ssl import SSLConfig, ViewsConfig
from histoclr.errors import ConfigError

PROJECTIONS = ("auto", "pca", "tsne")


@dataclass
class DataConfig:
    manifests: list[str] = field(default_factory=list)   # tiles.csv files (or folders holding one)
    slides: list[str] = field(default_factory=list)      # slide_id include list; empty = all slides
    min_tissue: float = 0.0                              # keep tiles with tissue_fraction >= this
    holdout_fraction: float = 0.2                        # fraction of SLIDES held out for the checks


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
    out_dir: str = "runs/pretrain"

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first invalid key."""
        super().validate()
        d, g = self.data, self.diagnostics
        if not d.manifests:
            raise ConfigError("data.manifests is empty; give one or more tile manifests "
                              "(tiles.csv written by `histoclr tile`), e.g. data.manifests=[tiles/tiles.csv]")
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
