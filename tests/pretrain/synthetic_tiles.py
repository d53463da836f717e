"""Tiny tile manifests for the pretrain tests: synthetic H&E-like PNG tiles (no tiler needed).

Loaded by path from the tests (importlib mode has no package imports between test folders).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from histoclr.io import atomic_write_text
from histoclr.manifests.tiles import format_tiles_csv


def he_tile(rng: np.random.Generator, size: int, tint: float) -> np.ndarray:
    """An H&E-looking tile: pink stroma with purple nuclei (filled discs); ``(size, size, 3)`` uint8."""
    img = np.empty((size, size, 3), np.float32)
    img[:] = (235, 170 + 20 * tint, 200)
    img += rng.normal(0, 8, img.shape)
    yy, xx = np.mgrid[:size, :size]
    for _ in range(rng.integers(4, 10)):
        cy, cx, r = rng.integers(0, size, 2).tolist() + [int(rng.integers(3, max(4, size // 8)))]
        m = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        img[m] = (90 + 30 * tint, 50, 140)
    return np.clip(img, 0, 255).astype(np.uint8)


def write_manifest(root: Path, slides: dict[str, int], size: int = 64, seed: int = 0,
                   tissue: float = 0.9) -> Path:
    """``root/tiles.csv`` + PNG tiles: ``slides`` maps slide_id -> number of tiles."""
    rng = np.random.default_rng(seed)
    rows = []
    (root / "tiles").mkdir(parents=True, exist_ok=True)
    for s_i, (slide, n) in enumerate(sorted(slides.items())):
        for t in range(n):
            rel = f"tiles/{slide}/{t:04d}.png"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(he_tile(rng, size, tint=s_i / max(1, len(slides) - 1))).save(root / rel)
            rows.append({"slide_id": slide, "slide_path": f"/slides/{slide}.svs", "x": t * size, "y": 0,
                         "level": 0, "read_size": size, "out_size": size, "mpp": 0.5,
                         "tissue_fraction": tissue, "tile_path": rel})
    path = root / "tiles.csv"
    atomic_write_text(path, format_tiles_csv(rows))
    return path
