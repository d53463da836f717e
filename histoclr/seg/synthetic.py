"""Synthetic H&E-like image/mask pairs for tests, smoke runs and benchmarks (no real data needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from histoclr.manifests.pairs import SegPair, write_pairs_manifest


def write_synthetic_pairs(root: str | Path, n: int = 4, size: int = 96, seed: int = 0,
                          mpp: float = 0.5) -> Path:
    """Write ``n`` pink images with dark purple 'nuclei' discs and their label-image masks.

    ``root/images/img{i}.png`` (``(size, size, 3)`` uint8), ``root/masks/img{i}.png`` (instance
    labels, uint8) and ``root/pairs.csv`` (image 0 is ``val``, the others ``train``); returns the
    manifest path.
    """
    from PIL import Image

    root = Path(root)
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(exist_ok=True)
    pairs = []
    for i in range(n):
        img, labels = draw_nuclei(rng, size, count=8)
        Image.fromarray(img).save(root / "images" / f"img{i}.png")
        Image.fromarray(labels.astype(np.uint8)).save(root / "masks" / f"img{i}.png")
        pairs.append(SegPair(f"img{i}", root / "images" / f"img{i}.png", root / "masks" / f"img{i}.png",
                             "label_image", "val" if i == 0 else "train", mpp))
    write_pairs_manifest(pairs, root / "pairs.csv", root)
    return root / "pairs.csv"


def draw_nuclei(rng: np.random.Generator, size: int, count: int, radius: tuple[int, int] = (4, 7)):
    """A pink ``(size, size, 3)`` uint8 image with ``count`` dark purple discs (radius in
    ``[radius[0], radius[1])`` px, placed at random so some touch or overlap; a later disc covers an
    earlier one) and their int32 instance labels ``(size, size)``."""
    yy, xx = np.mgrid[:size, :size]
    img = np.empty((size, size, 3), np.uint8)
    img[:] = (235, 170, 200)
    labels = np.zeros((size, size), np.int32)
    margin = radius[1] + 1
    for k in range(1, count + 1):
        cy, cx = rng.integers(margin, size - margin), rng.integers(margin, size - margin)
        r = rng.integers(*radius)
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        labels[disc] = k
        img[disc] = (90, 40, 130)
    img = np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)
    return img, labels


def synthetic_pair(size: int = 1000, seed: int = 0, count: int | None = None):
    """One ``(image (size, size, 3) uint8, instances (size, size) int32)`` pair with MoNuSeg-like
    density at 0.25 um/px: nuclei of radius 10-17 px, about one per 40 x 40 px by default."""
    rng = np.random.default_rng(seed)
    return draw_nuclei(rng, size, count or max(1, size * size // 1600), radius=(10, 17))
