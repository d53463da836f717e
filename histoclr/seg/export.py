"""Nucleus exports: per-nucleus measurements and outlines, the GeoJSON QuPath imports as detections,
the CSV table, the pyramidal instance-mask TIFF, the level-0 label image and the thumbnail overlay.

Coordinates are level-0 pixel *indices* (pixel ``(x, y)`` has its centre at ``(x, y)``), the convention
of :mod:`histoclr.seg.annotations`: ``read_geojson`` + ``rasterize_instances`` give back the instance
map. (QuPath puts pixel corners at integers, so it draws the outlines half a pixel up-left.)
Outlines follow the pixel edges (a staircase), so rasterising them at any integer scale reproduces
the pixels exactly.
"""

from __future__ import annotations

import csv
import json
import math
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image, ImageDraw
from skimage.color import rgb2hed
from skimage.measure import find_contours, regionprops_table

from histoclr.images import write_tiled_pyramid
from histoclr.io import atomic_path
from histoclr.seg.overlay import overlay_image

#: CSV columns, in order (µm columns are empty when the slide's resolution is unknown)
COLUMNS = ("id", "centroid_x_px", "centroid_y_px", "centroid_x_um", "centroid_y_um", "area_um2",
           "perimeter_um", "eccentricity", "solidity", "hematoxylin_od_mean")
#: the same measurements as QuPath names them in ``properties.measurements``
QUPATH_NAMES = {"area_um2": "Area µm^2", "perimeter_um": "Perimeter µm", "eccentricity": "Eccentricity",
                "solidity": "Solidity", "hematoxylin_od_mean": "Hematoxylin OD mean"}
_PROPS = ("label", "centroid", "area", "perimeter", "eccentricity", "solidity", "intensity_mean", "bbox")
_NS = uuid.UUID("6f1c0a52-3d35-4a8e-9a57-0d5f3b6c2e11")   # deterministic feature ids


def region_measurements(labels: np.ndarray, rgb: np.ndarray) -> dict[str, np.ndarray]:
    """``regionprops_table`` of an instance map ``(H, W)`` with the haematoxylin optical density of
    ``rgb`` ``(H, W, 3)`` (``rgb2hed`` channel 0) as intensity. Keys: ``label``, ``centroid-0/1``
    (row, col), ``area``, ``perimeter``, ``eccentricity``, ``solidity``, ``intensity_mean``,
    ``bbox-0..3``; each ``(N,)``, pixel units of ``labels``."""
    hed = rgb2hed(rgb)[..., 0] if labels.max() > 0 else np.zeros(labels.shape)
    return regionprops_table(labels, intensity_image=hed, properties=_PROPS)


def outline(mask: np.ndarray) -> np.ndarray:
    """``(K, 2)`` xy outline of the largest region of a boolean ``mask`` ``(H, W)``, in its pixel
    indices, along the pixel edges (vertices at half-integers, collinear ones dropped)."""
    contours = find_contours(np.pad(mask, 1).astype(np.uint8), 0.5)
    rc = max(contours, key=len)[:-1] - 1                     # (row, col), on edge midpoints
    nxt = np.roll(rc, -1, axis=0)
    half_row = rc[:, 0] % 1 != 0
    turn = half_row != np.roll(half_row, -1)                 # the path changes direction: a pixel corner
    corner = np.where(half_row[:, None], np.stack([rc[:, 0], nxt[:, 1]], 1), np.stack([nxt[:, 0], rc[:, 1]], 1))
    path = np.stack([rc, np.where(turn[:, None], corner, np.nan)], 1).reshape(-1, 2)
    path = path[~np.isnan(path[:, 0])]
    prev, after = np.roll(path, 1, axis=0), np.roll(path, -1, axis=0)
    cross = (path[:, 0] - prev[:, 0]) * (after[:, 1] - path[:, 1]) - (path[:, 1] - prev[:, 1]) * (after[:, 0] - path[:, 0])
    return path[cross != 0][:, ::-1].copy()


def nucleus_outlines(labels: np.ndarray, table: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Outline (:func:`outline`, xy in ``labels``' pixel indices) of every nucleus of ``table``."""
    out = []
    for i, lab in enumerate(table["label"]):
        r0, c0, r1, c1 = (int(table[f"bbox-{k}"][i]) for k in range(4))
        out.append(outline(labels[r0:r1, c0:c1] == lab) + (c0, r0))
    return out


# --------------------------------------------------------------------------- GeoJSON
def nucleus_feature(slide: str, nucleus_id: int, xy: np.ndarray, row: dict) -> dict:
    """One QuPath detection: closed polygon ``xy`` ``(K, 2)`` (level-0 px) with its measurements."""
    ring = np.vstack([xy, xy[:1]]).round(3).tolist()
    meas = {QUPATH_NAMES[k]: row[k] for k in QUPATH_NAMES if row[k] is not None}
    return {"type": "Feature", "id": str(uuid.uuid5(_NS, f"{slide}:{nucleus_id}")),
            "geometry": {"type": "Polygon", "coordinates": [ring]},
            "properties": {"objectType": "detection", "name": f"nucleus {nucleus_id}",
                           "classification": {"name": "Nucleus", "color": [255, 255, 0]},
                           "measurements": {"id": nucleus_id, **meas}}}


def _clean(v) -> float | int | None:
    if isinstance(v, (int, np.integer)):
        return int(v)
    v = float(v)
    return None if math.isnan(v) else round(v, 4)


def write_nuclei(geojson_path: str | Path, csv_path: str | Path, slide: str,
                 nuclei: Iterable[tuple[dict[str, np.ndarray], list[np.ndarray]]]) -> int:
    """Stream nuclei to ``<slide>.geojson`` (a FeatureCollection) and ``<slide>_nuclei.csv``
    (:data:`COLUMNS`), both atomically; returns the count.

    ``nuclei``: batches ``(columns {name: (N,)}, outlines [(K, 2) xy level-0 px] * N)``; ids must
    be in the columns.
    """
    n = 0
    with atomic_path(geojson_path) as gj_tmp, atomic_path(csv_path) as csv_tmp, \
            open(gj_tmp, "w", encoding="utf-8") as gj, open(csv_tmp, "w", newline="", encoding="utf-8") as cf:
        w = csv.writer(cf)
        w.writerow(COLUMNS)
        gj.write('{"type": "FeatureCollection", "features": [')
        for cols, outlines in nuclei:
            for i, xy in enumerate(outlines):
                row = {k: _clean(cols[k][i]) for k in COLUMNS}
                w.writerow(["" if row[k] is None else row[k] for k in COLUMNS])
                gj.write(("," if n else "") + "\n" + json.dumps(nucleus_feature(slide, row["id"], xy, row),
                                                               separators=(",", ":"), ensure_ascii=False))
                n += 1
        gj.write("\n]}\n")
    return n


# --------------------------------------------------------------------------- instance-mask TIFF
def encode_ids(labels: np.ndarray) -> np.ndarray:
    """Instance ids ``(H, W)`` as RGB uint8 ``(H, W, 3)``: id = R * 65536 + G * 256 + B."""
    ids = labels.astype(np.uint32)
    return np.stack([(ids >> 16) & 255, (ids >> 8) & 255, ids & 255], -1).astype(np.uint8)


def decode_ids(rgb: np.ndarray) -> np.ndarray:
    """Inverse of :func:`encode_ids`: int64 ids ``(H, W)``."""
    c = rgb[..., :3].astype(np.int64)
    return (c[..., 0] << 16) | (c[..., 1] << 8) | c[..., 2]


def write_mask_tiff(path: str | Path, width: int, height: int, mpp: float | None,
                    render: Callable[[int, int, int, int, float], np.ndarray], tile: int = 512,
                    min_size: int = 512) -> Path:
    """A tiled pyramidal TIFF instance mask (downsamples 1, 2, 4, ... until the longer side is at
    most ``min_size``), written tile by tile, atomically; OpenSlide and QuPath open it.

    ``render(x0, y0, w, h, downsample)`` returns the ids ``(h, w)`` of a tile at that downsample
    (``x0, y0`` in level-0 px). Ids are stored lossless (deflate) as 24-bit RGB
    (:func:`encode_ids`), as OpenSlide reads only 8-bit samples; ``mpp``: resolution tags (µm/px).
    """
    levels = 1
    while max(width, height) / 2 ** (levels - 1) > min_size:
        levels += 1

    def tile_at(tx: int, ty: int, ds: int) -> np.ndarray:
        lw, lh = max(1, width // ds), max(1, height // ds)
        block = np.zeros((tile, tile), np.int64)
        h, w = min(tile, lh - ty), min(tile, lw - tx)
        block[:h, :w] = render(tx * ds, ty * ds, w, h, ds)
        return encode_ids(block)

    with atomic_path(path) as tmp:
        write_tiled_pyramid(tmp, width, height, tile_at, levels=levels, tile=tile, mpp=mpp, compression="zlib")
    return Path(path)


# --------------------------------------------------------------------------- images
def write_label_raster(out: Path, name: str, instances: np.ndarray, binary: bool, mask_format: str) -> Path:
    """``out/<name>_instances.png`` (16-bit; TIFF past 65,535 nuclei or with ``mask_format="tiff"``) of
    an instance map ``(H, W)``, or with ``binary`` ``out/<name>_mask.png`` (0/255), atomically."""
    n = int(instances.max())
    if binary:
        data, stem = (instances > 0).astype(np.uint8) * 255, f"{name}_mask"
    else:
        data, stem = (instances.astype(np.uint16) if n <= 65535 else instances.astype(np.int32)), f"{name}_instances"
        if mask_format == "png" and n > 65535:
            mask_format = "tiff"      # a 16-bit PNG holds at most 65,535 nuclei
    path = out / f"{stem}.{'png' if mask_format == 'png' else 'tif'}"
    with atomic_path(path) as tmp:
        if mask_format == "png":
            Image.fromarray(data).save(tmp, format="PNG")
        else:
            tifffile.imwrite(tmp, data, compression="zlib")
    return path


def save_thumbnail_overlay(path: Path, thumb: np.ndarray, labels: np.ndarray, caption: str) -> Path:
    """The thumbnail ``(h, w, 3)`` with the nuclei ``labels`` ``(h, w)`` drawn
    (:func:`histoclr.seg.overlay.overlay_image`) above a one-line caption, as a PNG (atomically)."""
    img = Image.fromarray(overlay_image(thumb, labels))
    canvas = Image.new("RGB", (img.width, img.height + 18), (0, 0, 0))
    canvas.paste(img, (0, 0))
    ImageDraw.Draw(canvas).text((4, img.height + 3), caption, fill=(255, 255, 255))
    with atomic_path(path) as tmp:
        canvas.save(tmp, format="PNG")
    return path
