"""Typed defaults for `histoclr tile` (slides -> tissue tiles + manifest)."""

from __future__ import annotations

from dataclasses import dataclass, field

from histoclr.config.loader import config_to_dict
from histoclr.errors import ConfigError

FORMATS = ("png", "jpeg")


@dataclass
class TissueConfig:
    # The mask is computed on a thumbnail with about `px_per_tile` pixels along a tile's side,
    # its longest side clamped to [512, thumbnail_size] (never larger than the slide).
    px_per_tile: int = 16
    thumbnail_size: int = 2048
    # Otsu's threshold on HSV saturation is clamped into this range (0..1).
    saturation_range: list[float] = field(default_factory=lambda: [0.05, 0.10])
    pen_filter: bool = True             # drop green/blue pen marks and very dark (black pen) pixels
    # Tissue blobs smaller than / holes smaller than this fraction of a tile's area are removed
    # / filled (measured on the thumbnail).
    min_object_tiles: float = 0.1
    max_hole_tiles: float = 0.05


@dataclass
class TileConfig:
    tile_size: int = 224                # side of a written tile (output pixels)
    stride: int | None = None        # grid step in output pixels (default: tile_size, no overlap)
    mpp: float | None = 0.5          # target µm/px of the tiles (set null to tile by `level`)
    level: int | None = None         # pyramid level to read as is (needs mpp: null)
    assume_mpp: float | None = None  # µm/px for slides without resolution metadata
    min_tissue: float = 0.5             # keep tiles whose tissue fraction is at least this
    format: str = "png"                 # png | jpeg
    jpeg_quality: int = 90
    recursive: bool = False             # descend into sub-folders of folder inputs
    qc: bool = True                     # write qc/<slide_id>.png
    tissue: TissueConfig = field(default_factory=TissueConfig)

    @property
    def step(self) -> int:
        return self.stride if self.stride is not None else self.tile_size

    def validate(self) -> None:
        if self.tile_size <= 0:
            raise ConfigError(f"tile: tile_size must be > 0, got {self.tile_size}")
        if self.stride is not None and self.stride <= 0:
            raise ConfigError(f"tile: stride must be > 0, got {self.stride}")
        if (self.mpp is None) == (self.level is None):
            raise ConfigError("tile: set exactly one of mpp (target µm/px) and level "
                              f"(got mpp={self.mpp}, level={self.level}); "
                              "on the command line --level clears mpp and --mpp clears level")
        if self.mpp is not None and self.mpp <= 0:
            raise ConfigError(f"tile: mpp must be > 0, got {self.mpp}")
        if self.level is not None and self.level < 0:
            raise ConfigError(f"tile: level must be >= 0, got {self.level}")
        if self.assume_mpp is not None and self.assume_mpp <= 0:
            raise ConfigError(f"tile: assume_mpp must be > 0, got {self.assume_mpp}")
        if not 0 <= self.min_tissue <= 1:
            raise ConfigError(f"tile: min_tissue must be in [0, 1], got {self.min_tissue}")
        if self.format not in FORMATS:
            raise ConfigError(f"tile: format must be one of {', '.join(FORMATS)}, got {self.format!r}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ConfigError(f"tile: jpeg_quality must be in [1, 100], got {self.jpeg_quality}")
        t = self.tissue
        if t.thumbnail_size < 16:
            raise ConfigError(f"tile: tissue.thumbnail_size must be >= 16, got {t.thumbnail_size}")
        if t.px_per_tile < 1:
            raise ConfigError(f"tile: tissue.px_per_tile must be >= 1, got {t.px_per_tile}")
        if len(t.saturation_range) != 2 or not 0 <= t.saturation_range[0] <= t.saturation_range[1] <= 1:
            raise ConfigError("tile: tissue.saturation_range must be [low, high] with "
                              f"0 <= low <= high <= 1, got {list(t.saturation_range)}")
        if t.min_object_tiles < 0 or t.max_hole_tiles < 0:
            raise ConfigError("tile: tissue.min_object_tiles and tissue.max_hole_tiles must be >= 0")

    def output_options(self) -> dict:
        """The options that decide the tiles (a re-run into the same folder must match them)."""
        d = config_to_dict(self)
        d.pop("recursive")
        d["stride"] = self.step
        return d
