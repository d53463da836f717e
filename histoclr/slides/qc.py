"""QC picture of one slide: thumbnail, tissue mask (green), removed pen/dark (magenta), kept tiles."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from histoclr.io import atomic_save
from histoclr.slides.tissue import TissueMask

TISSUE_RGB = (0, 200, 0)
EXCLUDED_RGB = (230, 0, 230)
TILE_RGB = (0, 80, 255)


def qc_image(thumb: np.ndarray, mask: TissueMask, boxes: np.ndarray, title: str = ""):
    """A PIL image: ``thumb`` ``(h, w, 3)`` with the masks tinted and ``boxes`` ``(N, 4)``
    (x0, y0, x1, y1 in thumbnail pixels) outlined, plus a title line."""
    from PIL import Image, ImageDraw

    img = thumb.astype(np.float32)
    for m, rgb, alpha in ((mask.tissue, TISSUE_RGB, 0.35), (mask.excluded, EXCLUDED_RGB, 0.5)):
        img[m] = (1 - alpha) * img[m] + alpha * np.asarray(rgb, np.float32)
    im = Image.fromarray(img.round().astype(np.uint8))
    draw = ImageDraw.Draw(im)
    for x0, y0, x1, y1 in np.asarray(boxes).reshape(-1, 4):
        draw.rectangle([x0, y0, max(x0, x1 - 1), max(y0, y1 - 1)], outline=TILE_RGB)
    if title:
        canvas = Image.new("RGB", (im.width, im.height + 16), (255, 255, 255))
        canvas.paste(im, (0, 16))
        ImageDraw.Draw(canvas).text((2, 2), title, fill=(0, 0, 0))
        im = canvas
    return im


def save_qc(path: str | Path, thumb: np.ndarray, mask: TissueMask, boxes: np.ndarray,
            title: str = "") -> None:
    """Write the QC picture to ``path`` (PNG, atomically)."""
    im = qc_image(thumb, mask, boxes, title)
    atomic_save(path, lambda tmp: im.save(tmp, format="PNG"))
