"""Synthetic pyramidal TIFF slides (for tests and benchmarks): white glass with H&E-like
textured tissue rectangles, written tile by tile (never held in memory) with tifffile.

OpenSlide reads the result with its generic-tiff driver: one tiled page per level, level 0
first, resolution tags in centimetres (``openslide.mpp-x``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from histoclr.images import write_tiled_pyramid

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 in level-0 pixels


_BANK_SIZE = 512
_bank: dict[str, list[np.ndarray]] = {}


def _texture_bank() -> dict[str, list[np.ndarray]]:
    """Precomputed 512x512 patches (4 tissue, 4 glass): rendering crops them, which is ~50x
    faster than drawing noise per pixel and keeps big slides quick to write."""
    if not _bank:
        rng = np.random.default_rng(12345)
        pink = np.array([232, 150, 190], np.float32)
        purple = np.array([110, 60, 150], np.float32)
        n = _BANK_SIZE
        for _ in range(4):
            mix = rng.random((n, n, 1), dtype=np.float32) ** 6  # mostly pink, some purple dots
            noise = rng.normal(0, 8, (n, n, 3)).astype(np.float32)
            _bank.setdefault("tissue", []).append(
                np.clip(pink * (1 - mix) + purple * mix + noise, 0, 255).astype(np.uint8))
            _bank.setdefault("glass", []).append(
                np.clip(rng.normal(244, 2, (n, n, 3)), 0, 255).astype(np.uint8))
    return _bank


def _patch(kind: str, rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """An ``(h, w, 3)`` crop of a random bank patch of ``kind`` (tiled when larger)."""
    src = _texture_bank()[kind][int(rng.integers(4))]
    if h > _BANK_SIZE or w > _BANK_SIZE:
        src = np.tile(src, (-(-h // _BANK_SIZE), -(-w // _BANK_SIZE), 1))
    oy, ox = int(rng.integers(src.shape[0] - h + 1)), int(rng.integers(src.shape[1] - w + 1))
    return src[oy:oy + h, ox:ox + w]


def render_region(x0: int, y0: int, w: int, h: int, downsample: float, tissue: Sequence[Box],
                  seed: int = 0) -> np.ndarray:
    """Pixels ``(h, w, 3)`` of a level with ``downsample``, top-left at level pixel (x0, y0):
    near-white glass with H&E-like texture (pink stroma, purple dots) inside ``tissue``."""
    rng = np.random.default_rng([seed, int(downsample), x0, y0])
    out = _patch("glass", rng, h, w).copy()
    for bx0, by0, bx1, by1 in tissue:
        lx0, ly0 = int(bx0 / downsample) - x0, int(by0 / downsample) - y0
        lx1, ly1 = int(bx1 / downsample) - x0, int(by1 / downsample) - y0
        cx0, cy0, cx1, cy1 = max(lx0, 0), max(ly0, 0), min(lx1, w), min(ly1, h)
        if cx1 > cx0 and cy1 > cy0:
            out[cy0:cy1, cx0:cx1] = _patch("tissue", rng, cy1 - cy0, cx1 - cx0)
    return out


def write_pyramid_tiff(path: str | Path, width: int, height: int, mpp: float,
                       tissue: Sequence[Box], levels: int = 3, tile: int = 256,
                       compression: str | None = "jpeg", seed: int = 0) -> Path:
    """Write a tiled pyramidal TIFF (downsamples 1, 2, 4, ...) of ``width x height`` px at
    ``mpp`` µm/px with textured ``tissue`` boxes (level-0 px); returns ``path``."""
    if width <= 0 or height <= 0 or mpp <= 0 or levels < 1 or tile % 16:
        raise ValueError("width, height, mpp must be > 0, levels >= 1, tile a multiple of 16")
    path = Path(path)
    write_tiled_pyramid(path, width, height, lambda tx, ty, ds: render_region(tx, ty, tile, tile, ds, tissue, seed),
                        levels=levels, tile=tile, mpp=mpp, compression=compression)
    return path
