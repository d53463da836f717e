"""Image/mask pairs: discovery by file stem, the pairs manifest, and the labelled subset.

The pairs manifest is a CSV (first line ``# histoclr-seg-pairs v1``) with the columns
``image_id, image, mask, mask_format, split, mpp``; ``image`` and ``mask`` are POSIX paths
relative to a data root, ``split`` is ``train`` | ``val`` | ``test`` | empty, ``mpp`` is
microns per pixel or empty when unknown.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from histoclr.errors import InputFileError
from histoclr.seg.annotations import _SUFFIX_FORMAT, MASK_FORMATS

PAIRS_HEADER = "# histoclr-seg-pairs v1"
PAIR_COLUMNS = ("image_id", "image", "mask", "mask_format", "split", "mpp")
SPLITS = ("train", "val", "test", "")
IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")


@dataclass
class SegPair:
    """One image and its nucleus annotation."""

    image_id: str
    image_path: Path
    mask_path: Path
    mask_format: str  # one of MASK_FORMATS
    split: str = ""  # "train" | "val" | "test" | ""
    mpp: float | None = None  # microns per pixel of the image, None when unknown


@dataclass
class PairReport:
    """What ``discover_pairs`` found: usable pairs and one line per problem."""

    pairs: list[SegPair] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    info: dict[str, PairInfo] = field(default_factory=dict)  # image_id -> PairInfo


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
    from histoclr.seg.annotations import (
        instances_from_label_image,
        rasterize_instances,
        read_aperio_xml,
        read_geojson,
    )
    from histoclr.images import image_shape, read_label

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
    from tqdm import tqdm

    images_dir, masks_dir = Path(images_dir), Path(masks_dir)
    for d, what in ((images_dir, "images"), (masks_dir, "masks")):
        if not d.is_dir():
            raise InputFileError(d, f"{what} folder not found")
    images = _files_by_stem(images_dir, IMAGE_SUFFIXES)
    masks = _files_by_stem(masks_dir, tuple(_SUFFIX_FORMAT))
    report = PairReport()
    stems = sorted(set(images) | set(masks))
    for stem in tqdm(stems, desc="annotations", unit="pair", disable=not progress):
        imgs, msks = images.get(stem, []), masks.get(stem, [])
        if not msks:
            report.problems.append(f"image without mask: {imgs[0]} (no {stem}.* in {masks_dir})")
            continue
        if not imgs:
            report.problems.append(f"mask without image: {msks[0]} (no {stem}.* in {images_dir})")
            continue
        if len(imgs) > 1 or len(msks) > 1:
            names = ", ".join(p.name for p in imgs + msks)
            report.problems.append(f"ambiguous pair {stem}: several files share the stem ({names})")
            continue
        pair = SegPair(stem, imgs[0], msks[0], _SUFFIX_FORMAT[msks[0].suffix.lower()])
        info = inspect_pair(pair, coverage=coverage)
        if isinstance(info, str):
            report.problems.append(info)
            continue
        pair.mpp = info.mpp
        report.pairs.append(pair)
        report.info[stem] = info
    return report


def _rel(path: Path, root: Path) -> str:
    return Path(os.path.relpath(Path(path).resolve(), root.resolve())).as_posix()


def format_pairs_manifest(pairs: Sequence[SegPair], data_root: str | Path) -> str:
    """The pairs manifest text (header line + CSV) with paths relative to ``data_root``."""
    root = Path(data_root)
    buf = io.StringIO()
    buf.write(PAIRS_HEADER + "\n")
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(PAIR_COLUMNS)
    for p in pairs:
        if p.mask_format not in MASK_FORMATS:
            raise ValueError(f"pair {p.image_id}: unknown mask_format {p.mask_format!r}")
        if p.split not in SPLITS:
            raise ValueError(f"pair {p.image_id}: unknown split {p.split!r}")
        w.writerow([p.image_id, _rel(p.image_path, root), _rel(p.mask_path, root), p.mask_format,
                    p.split, "" if p.mpp is None else repr(float(p.mpp))])
    return buf.getvalue()


def write_pairs_manifest(pairs: Sequence[SegPair], csv_path: str | Path,
                         data_root: str | Path) -> None:
    """Write the pairs manifest atomically; paths are stored relative to ``data_root``."""
    from histoclr.io import atomic_write_text

    atomic_write_text(csv_path, format_pairs_manifest(pairs, data_root))


def read_pairs_manifest(csv_path: str | Path, data_root: str | Path, *,
                        check_files: bool = True) -> list[SegPair]:
    """Read a pairs manifest; paths are resolved against ``data_root``.

    Raises ``InputFileError`` naming the file and line for a missing column, a bad value,
    a duplicate id, or (``check_files``) images/masks missing under ``data_root``.
    """
    csv_path, root = Path(csv_path), Path(data_root)
    try:
        text = csv_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputFileError(csv_path, "file not found") from None
    lines = text.splitlines()
    start = 1 if lines and lines[0].startswith("#") else 0
    if start and lines[0].strip() != PAIRS_HEADER:
        raise InputFileError(csv_path, f"unknown manifest version line {lines[0]!r} "
                             f"(expected {PAIRS_HEADER!r})")
    reader = csv.DictReader(lines[start:])
    missing_cols = [c for c in PAIR_COLUMNS if c not in (reader.fieldnames or [])]
    if missing_cols:
        raise InputFileError(csv_path, f"missing column(s) {', '.join(missing_cols)} "
                             f"(expected {', '.join(PAIR_COLUMNS)})")
    pairs: list[SegPair] = []
    seen: set[str] = set()
    for n, row in enumerate(reader, start=start + 2):
        where = f"line {n}"
        image_id = (row["image_id"] or "").strip()
        if not image_id or not row["image"] or not row["mask"]:
            raise InputFileError(csv_path, f"{where}: image_id, image and mask must not be empty")
        if image_id in seen:
            raise InputFileError(csv_path, f"{where}: duplicate image_id {image_id!r}")
        seen.add(image_id)
        if row["mask_format"] not in MASK_FORMATS:
            raise InputFileError(csv_path, f"{where}: mask_format {row['mask_format']!r} is not one "
                                 f"of {', '.join(MASK_FORMATS)}")
        split = (row["split"] or "").strip()
        if split not in SPLITS:
            raise InputFileError(csv_path, f"{where}: split {split!r} is not train, val, test or empty")
        mpp = None
        if (row["mpp"] or "").strip():
            try:
                mpp = float(row["mpp"])
            except ValueError:
                mpp = float("nan")
            if not (math.isfinite(mpp) and mpp > 0):
                raise InputFileError(csv_path, f"{where}: mpp {row['mpp']!r} is not a positive number")
        pairs.append(SegPair(image_id, root / row["image"], root / row["mask"], row["mask_format"],
                             split, mpp))
    if not pairs:
        raise InputFileError(csv_path, "the manifest lists no pairs")
    if check_files:
        missing = [str(p) for pair in pairs for p in (pair.image_path, pair.mask_path)
                   if not p.is_file()]
        if missing:
            more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
            raise InputFileError(csv_path, f"{len(missing)} listed file(s) not found under "
                                 f"{root}: {', '.join(missing[:3])}{more}")
    return pairs


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
