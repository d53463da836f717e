"""Image/mask pairs: discovery by file stem, inspection, and the labelled subset.

The pairs manifest itself (:class:`SegPair`, reading and writing) is an on-disk contract between
stages and lives in :mod:`histoclr.manifests.pairs`.
"""

from __future__ import annotations

import glob
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from histoclr.errors import InputFileError
from histoclr.images import IMAGE_SUFFIXES, image_shape, read_label
from histoclr.manifests.pairs import MASK_SUFFIX_FORMATS, SegPair
from histoclr.seg.annotations import (
    instances_from_label_image,
    rasterize_instances,
    read_aperio_xml,
    read_geojson,
)


@dataclass
class PairReport:
    """What ``discover_pairs`` found: usable pairs and one line per problem."""

    pairs: list[SegPair] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    info: dict[str, PairInfo] = field(default_factory=dict)  # image_id -> PairInfo


def _unusable_mask(path: Path) -> str:
    """Why a file with an image's stem is not read as its mask."""
    if path.suffix.lower() in (".jpg", ".jpeg"):
        return (f"found {path}, not used: JPEG is lossy, its compression changes the label values; "
                "save the masks as PNG (lossless) instead")
    return f"found {path}, not a mask format (use {', '.join(sorted(MASK_SUFFIX_FORMATS))})"


def _files_by_stem(folder: Path, suffixes) -> dict[str, list[Path]]:
    out: dict[str, list[Path]] = defaultdict(list)
    for p in sorted(folder.iterdir()):
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in suffixes:
            out[p.stem].append(p)
    return out


@dataclass
class PairInfo:
    """What loading one pair's annotation showed (``coverage`` only when rasterised)."""

    height: int
    width: int
    nuclei: int  # polygons read (XML/GeoJSON) or instances (label image)
    skipped: int = 0  # degenerate regions / non-polygon features left out
    mpp: float | None = None  # from the annotation file (Aperio MicronsPerPixel), if any
    coverage: float | None = None  # foreground fraction of the image


def inspect_pair(pair: SegPair, *, coverage: bool = False) -> PairInfo | str:
    """Load one pair's annotation: a ``PairInfo`` or a one-line problem.

    Problems: missing/unreadable files, empty annotations, label-image size mismatches.
    ``coverage=True`` also rasterises the instances to measure the foreground fraction.
    """
    try:
        h, w = image_shape(pair.image_path)
        if pair.mask_format in ("aperio_xml", "geojson"):
            reader = read_aperio_xml if pair.mask_format == "aperio_xml" else read_geojson
            polys = reader(pair.mask_path)
            info = PairInfo(h, w, len(polys), polys.skipped, polys.mpp)
            if coverage:
                info.coverage = float((rasterize_instances(polys, (h, w)) > 0).mean())
            return info
        if pair.mask_format != "label_image":
            return f"unknown mask format {pair.mask_format!r} for {pair.mask_path}"
        labels = read_label(pair.mask_path)
        if labels.shape != (h, w):
            return (f"size mismatch: mask {pair.mask_path} is {labels.shape[1]}x{labels.shape[0]}"
                    f" but image {pair.image_path} is {w}x{h}")
        try:
            inst = instances_from_label_image(labels)
        except ValueError as e:
            return f"{pair.mask_path}: {e}"
        n = len(np.unique(inst)) - 1
        if n == 0:
            return f"empty annotation: {pair.mask_path} has no foreground pixels"
        return PairInfo(h, w, n, coverage=float((inst > 0).mean()) if coverage else None)
    except InputFileError as e:
        return str(e)


def discover_pairs(images_dir: str | Path, masks_dir: str | Path, *,
                   coverage: bool = False, progress: bool = False) -> PairReport:
    """Match images to masks by file stem (``X.tif`` <-> ``X.xml`` / ``X.geojson`` / ``X.png``).

    Problems (one line each): images without a mask, masks without an image, several masks
    for one image, unreadable or empty annotations, label images whose size differs from the
    image. Only pairs without problems are returned in ``pairs`` (``report.info[image_id]``
    holds their ``PairInfo``); ``mpp`` comes from the annotation (Aperio ``MicronsPerPixel``)
    when present, ``split`` is empty. ``coverage``: also measure each pair's foreground
    fraction; ``progress``: a tqdm bar over the stems.
    """
    images_dir, masks_dir = Path(images_dir), Path(masks_dir)
    for d, what in ((images_dir, "images"), (masks_dir, "masks")):
        if not d.is_dir():
            raise InputFileError(d, f"{what} folder not found")
    images = _files_by_stem(images_dir, IMAGE_SUFFIXES)
    masks = _files_by_stem(masks_dir, tuple(MASK_SUFFIX_FORMATS))
    report = PairReport()
    stems = sorted(set(images) | set(masks))
    for stem in tqdm(stems, desc="annotations", unit="pair", disable=not progress):
        imgs, msks = images.get(stem, []), masks.get(stem, [])
        if not msks:
            found = sorted(p for p in masks_dir.glob(f"{glob.escape(stem)}.*") if p.is_file())
            report.problems.append(f"image without mask: {imgs[0]} "
                                   + (f"({_unusable_mask(found[0])})" if found else f"(no {stem}.* in {masks_dir})"))
            continue
        if not imgs:
            report.problems.append(f"mask without image: {msks[0]} (no {stem}.* in {images_dir})")
            continue
        if len(imgs) > 1 or len(msks) > 1:
            names = ", ".join(p.name for p in imgs + msks)
            report.problems.append(f"ambiguous pair {stem}: several files share the stem ({names})")
            continue
        pair = SegPair(stem, imgs[0], msks[0], MASK_SUFFIX_FORMATS[msks[0].suffix.lower()])
        info = inspect_pair(pair, coverage=coverage)
        if isinstance(info, str):
            report.problems.append(info)
            continue
        pair.mpp = info.mpp
        report.pairs.append(pair)
        report.info[stem] = info
    return report


def select_labeled(pairs_or_ids, *, num_labeled: int | None = None,
                   label_fraction: float | None = None, seed: int = 0) -> list:
    """A deterministic subset of the TRAINING images for ``seed`` (exactly one of the two sizes).

    ``pairs_or_ids``: ``SegPair`` objects (those with split ``train`` or empty are candidates)
    or image-id strings (all candidates). Candidates are sorted by id and permuted with
    ``numpy.random.default_rng(seed)``; the first ``k`` are taken, so for one seed smaller
    subsets are contained in larger ones. ``label_fraction`` in (0, 1] gives
    ``k = max(1, round(fraction * n))`` (halves round up). Returned sorted by id.
    """
    items = list(pairs_or_ids)

    def key(x) -> str:
        return x if isinstance(x, str) else x.image_id

    cands = [x for x in items if isinstance(x, str) or x.split in ("train", "")]
    cands.sort(key=key)
    if len({key(x) for x in cands}) != len(cands):
        raise ValueError("select_labeled: duplicate image ids")
    n = len(cands)
    if n == 0:
        raise ValueError("select_labeled: no training images to choose from")
    if (num_labeled is None) == (label_fraction is None):
        raise ValueError("select_labeled: give exactly one of num_labeled and label_fraction")
    if num_labeled is not None:
        if isinstance(num_labeled, bool) or int(num_labeled) != num_labeled or not 1 <= num_labeled <= n:
            raise ValueError(f"num_labeled must be an integer in [1, {n}] (the number of training "
                             f"images), got {num_labeled!r}")
        k = int(num_labeled)
    else:
        f = float(label_fraction)
        if not (0.0 < f <= 1.0):
            raise ValueError(f"label_fraction must be in (0, 1], got {label_fraction!r}")
        k = min(n, max(1, math.floor(f * n + 0.5 + 1e-9)))
    order = np.random.default_rng(seed).permutation(n)
    chosen = sorted((cands[i] for i in order[:k]), key=key)
    return chosen
