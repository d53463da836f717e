"""Nucleus annotations -> instance label maps.

Polygons are ``(K, 2)`` float arrays of ``(x, y)`` vertices in full-resolution pixel coordinates
(x = column, y = row), as Aperio ImageScope and QuPath write them. ``rasterize_instances`` fills
them with ``skimage.draw.polygon``: label 0 is background, polygon ``i`` gets label ``i + 1``,
and where polygons overlap the later one wins.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from histoclr.errors import InputFileError
from histoclr.images import read_label
from histoclr.manifests.pairs import MASK_FORMATS, MASK_SUFFIX_FORMATS


class Polygons(list):
    """A list of ``(K, 2)`` xy polygons that also records what was skipped while reading.

    ``skipped``: regions with fewer than 3 distinct vertices (or non-polygon geometries);
    ``mpp``: microns per pixel written in the file (Aperio ``MicronsPerPixel``), else ``None``.
    """

    def __init__(self, items=(), skipped: int = 0, mpp: float | None = None):
        super().__init__(items)
        self.skipped = skipped
        self.mpp = mpp


def mask_format_for(path: str | Path) -> str:
    """The mask format implied by a file suffix (``.xml`` -> ``aperio_xml``, ...)."""
    fmt = MASK_SUFFIX_FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise ValueError(f"{path}: unknown mask suffix (expected one of {sorted(MASK_SUFFIX_FORMATS)})")
    return fmt


def _polygon_or_none(xy: np.ndarray) -> np.ndarray | None:
    """Drop a closing vertex equal to the first; ``None`` if fewer than 3 distinct vertices."""
    if xy.ndim != 2 or xy.shape[1] != 2 or not np.isfinite(xy).all():
        return None
    if len(xy) > 1 and np.array_equal(xy[0], xy[-1]):
        xy = xy[:-1]
    other = (xy != xy[0]).any(axis=1) if len(xy) else np.zeros(0, bool)
    if not other.any():
        return None
    second = xy[other.argmax()]
    if not (other & (xy != second).any(axis=1)).any():
        return None  # fewer than 3 distinct vertices
    return xy


def read_aperio_xml(path: str | Path) -> Polygons:
    """Read every ``<Region>`` of an Aperio ImageScope XML as one polygon.

    Regions with fewer than 3 distinct vertices are skipped (counted in ``.skipped``).
    Raises ``InputFileError`` for a missing, malformed or empty (no usable region) file.
    """
    path = Path(path)
    polys: list[np.ndarray] = []
    skipped = 0
    root = None
    try:
        for _, elem in ET.iterparse(path, events=("end",)):
            root = elem  # the last element to end is the root
            if elem.tag != "Region":
                continue
            try:
                xy = np.array([(float(v.get("X")), float(v.get("Y")))
                               for v in elem.iter("Vertex")], dtype=np.float64).reshape(-1, 2)
            except (TypeError, ValueError):
                xy = np.empty((0, 2))
            poly = _polygon_or_none(xy)
            if poly is None:
                skipped += 1
            else:
                polys.append(poly)
            elem.clear()
    except FileNotFoundError:
        raise InputFileError(path, "file not found") from None
    except ET.ParseError as e:
        raise InputFileError(path, f"malformed XML ({e})") from None
    if root is None or root.tag != "Annotations":
        tag = "nothing" if root is None else f"<{root.tag}>"
        raise InputFileError(path, f"not an Aperio XML (root element {tag}, expected <Annotations>)")
    if not polys:
        detail = f" ({skipped} degenerate region(s) skipped)" if skipped else ""
        raise InputFileError(path, f"empty annotation: no nucleus <Region> with >= 3 vertices{detail}")
    try:
        mpp = float(root.get("MicronsPerPixel") or "nan")
    except ValueError:
        mpp = float("nan")
    return Polygons(polys, skipped=skipped, mpp=mpp if mpp > 0 else None)


def read_geojson(path: str | Path) -> Polygons:
    """Read QuPath GeoJSON (a FeatureCollection, a list of Features or one Feature).

    Each Polygon's exterior ring is one polygon (holes are ignored); each part of a
    MultiPolygon is a separate polygon. Other geometries are skipped (counted in ``.skipped``).
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputFileError(path, "file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputFileError(path, f"malformed GeoJSON ({e})") from None
    if isinstance(data, dict) and data.get("type") == "FeatureCollection":
        features = data.get("features")
    elif isinstance(data, dict) and data.get("type") == "Feature":
        features = [data]
    else:
        features = data
    if not isinstance(features, list):
        raise InputFileError(path, "not GeoJSON: expected a FeatureCollection, a Feature or a list "
                             "of Features")
    polys: list[np.ndarray] = []
    skipped = 0
    for feat in features:
        geom = feat.get("geometry") if isinstance(feat, dict) else None
        gtype = geom.get("type") if isinstance(geom, dict) else None
        coords = geom.get("coordinates") if isinstance(geom, dict) else None
        if gtype == "Polygon":
            rings = [coords[0]] if coords else []
        elif gtype == "MultiPolygon":
            rings = [p[0] for p in coords or [] if p]
        else:
            skipped += 1
            continue
        for ring in rings:
            try:
                poly = _polygon_or_none(np.asarray(ring, dtype=np.float64)[:, :2])
            except (TypeError, ValueError, IndexError):
                poly = None
            if poly is None:
                skipped += 1
            else:
                polys.append(poly)
    if not polys:
        detail = f" ({skipped} non-polygon or degenerate feature(s) skipped)" if skipped else ""
        raise InputFileError(path, f"empty annotation: no Polygon features{detail}")
    return Polygons(polys, skipped=skipped)


def rasterize_instances(polygons, shape: tuple[int, int]) -> np.ndarray:
    """Fill polygons into an int32 ``(H, W)`` label map: 0 background, polygon i -> i + 1.

    Overlaps: the later polygon wins. Parts outside the image are clipped.
    """
    from skimage.draw import polygon as draw_polygon

    h, w = int(shape[0]), int(shape[1])
    if h <= 0 or w <= 0:
        raise ValueError(f"shape must be positive (H, W), got {shape}")
    labels = np.zeros((h, w), dtype=np.int32)
    for i, xy in enumerate(polygons, start=1):
        xy = np.asarray(xy, dtype=np.float64)
        if xy.ndim != 2 or xy.shape[1] != 2:
            raise ValueError(f"polygon {i - 1} must be a (K, 2) xy array, got shape {xy.shape}")
        rr, cc = draw_polygon(xy[:, 1], xy[:, 0], shape=(h, w))
        labels[rr, cc] = i
    return labels


def instances_from_label_image(labels: np.ndarray) -> np.ndarray:
    """int32 instance map from a label image; a binary image (values {0, v}) -> connected components."""
    from skimage.measure import label as cc_label

    values = np.unique(labels)
    if labels.dtype == bool or len(values[values != 0]) <= 1:
        return cc_label(labels != 0, connectivity=1).astype(np.int32)
    if values.min() < 0:
        raise ValueError("label images must not hold negative values")
    return labels.astype(np.int32)


def load_instances(mask_path: str | Path, mask_format: str, shape: tuple[int, int]) -> np.ndarray:
    """Instance map int32 ``(H, W)`` of one annotation file at the image's native ``shape``.

    ``mask_format``: ``aperio_xml`` | ``geojson`` | ``label_image`` (PNG/TIFF labels, or a binary
    mask whose connected components become the instances). A label image whose size differs
    from ``shape`` raises ``InputFileError``.
    """
    mask_path = Path(mask_path)
    if mask_format == "aperio_xml":
        return rasterize_instances(read_aperio_xml(mask_path), shape)
    if mask_format == "geojson":
        return rasterize_instances(read_geojson(mask_path), shape)
    if mask_format == "label_image":
        labels = read_label(mask_path)
        if labels.shape != tuple(shape):
            raise InputFileError(mask_path, f"size mismatch: mask is {labels.shape[1]}x"
                                 f"{labels.shape[0]} but the image is {shape[1]}x{shape[0]} (WxH)")
        try:
            return instances_from_label_image(labels)
        except ValueError as e:
            raise InputFileError(mask_path, str(e)) from None
    raise ValueError(f"unknown mask_format {mask_format!r} (expected one of {MASK_FORMATS})")
