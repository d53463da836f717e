"""The segmentation pairs manifest: which image goes with which nucleus annotation, and its split.

First line ``# histoclr-seg-pairs v1``, then a CSV header and one row per pair with
:data:`PAIR_COLUMNS`: ``image`` and ``mask`` are POSIX paths relative to a data root,
``mask_format`` one of :data:`MASK_FORMATS`, ``split`` ``train`` | ``val`` | ``test`` | empty,
``mpp`` microns per pixel or empty when unknown. Written by ``histoclr seg-data discover``
(pairs found by :func:`histoclr.seg.pairs.discover_pairs`), read by fine-tuning and the ablation.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from histoclr.io import atomic_write_text
from histoclr.manifests.csvfile import CsvFormat, ManifestError, format_rows, read_rows

PAIR_COLUMNS = ("image_id", "image", "mask", "mask_format", "split", "mpp")
PAIRS = CsvFormat("seg-pairs", 1, PAIR_COLUMNS, "seg pairs manifest", "pairs",
                  remedy="re-run `histoclr seg-data discover`")
SPLITS = ("train", "val", "test", "")
MASK_FORMATS = ("aperio_xml", "geojson", "label_image")
#: The mask format a file suffix implies.
MASK_SUFFIX_FORMATS = {".xml": "aperio_xml", ".geojson": "geojson", ".json": "geojson",
                       ".png": "label_image", ".tif": "label_image", ".tiff": "label_image"}


@dataclass
class SegPair:
    """One image and its nucleus annotation."""

    image_id: str
    image_path: Path
    mask_path: Path
    mask_format: str  # one of MASK_FORMATS
    split: str = ""  # "train" | "val" | "test" | ""
    mpp: float | None = None  # microns per pixel of the image, None when unknown


def _rel(path: Path, root: Path) -> str:
    return Path(os.path.relpath(Path(path).resolve(), root.resolve())).as_posix()


def format_pairs_manifest(pairs: Sequence[SegPair], data_root: str | Path) -> str:
    """The pairs manifest text (version line + CSV) with paths relative to ``data_root``."""
    root = Path(data_root)
    rows = []
    for p in pairs:
        if p.mask_format not in MASK_FORMATS:
            raise ValueError(f"pair {p.image_id}: unknown mask_format {p.mask_format!r}")
        if p.split not in SPLITS:
            raise ValueError(f"pair {p.image_id}: unknown split {p.split!r}")
        rows.append({"image_id": p.image_id, "image": _rel(p.image_path, root),
                     "mask": _rel(p.mask_path, root), "mask_format": p.mask_format, "split": p.split,
                     "mpp": "" if p.mpp is None else repr(float(p.mpp))})
    return format_rows(PAIRS, rows)


def write_pairs_manifest(pairs: Sequence[SegPair], csv_path: str | Path,
                         data_root: str | Path) -> None:
    """Write the pairs manifest atomically; paths are stored relative to ``data_root``."""
    atomic_write_text(csv_path, format_pairs_manifest(pairs, data_root))


def read_pairs_manifest(csv_path: str | Path, data_root: str | Path, *,
                        check_files: bool = True) -> list[SegPair]:
    """Read a pairs manifest; paths are resolved against ``data_root``.

    Raises:
        ManifestError: naming the file and line for another format or version, a missing column,
            a bad value, a duplicate id, or (``check_files``) images/masks missing under ``data_root``.
    """
    csv_path, root = Path(csv_path), Path(data_root)
    pairs: list[SegPair] = []
    seen: set[str] = set()
    for line, row in read_rows(PAIRS, csv_path):
        where = f"line {line}"
        image_id = row["image_id"].strip()
        if not image_id or not row["image"] or not row["mask"]:
            raise ManifestError(csv_path, f"{where}: image_id, image and mask must not be empty")
        if image_id in seen:
            raise ManifestError(csv_path, f"{where}: duplicate image_id {image_id!r}")
        seen.add(image_id)
        if row["mask_format"] not in MASK_FORMATS:
            raise ManifestError(csv_path, f"{where}: mask_format {row['mask_format']!r} is not one "
                                f"of {', '.join(MASK_FORMATS)}")
        split = row["split"].strip()
        if split not in SPLITS:
            raise ManifestError(csv_path, f"{where}: split {split!r} is not train, val, test or empty")
        mpp = None
        if row["mpp"].strip():
            try:
                mpp = float(row["mpp"])
            except ValueError:
                mpp = float("nan")
            if not (math.isfinite(mpp) and mpp > 0):
                raise ManifestError(csv_path, f"{where}: mpp {row['mpp']!r} is not a positive number")
        pairs.append(SegPair(image_id, root / row["image"], root / row["mask"], row["mask_format"],
                             split, mpp))
    if check_files:
        missing = [str(p) for pair in pairs for p in (pair.image_path, pair.mask_path)
                   if not p.is_file()]
        if missing:
            more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
            raise ManifestError(csv_path, f"{len(missing)} listed file(s) not found under "
                                f"{root}: {', '.join(missing[:3])}{more}")
    return pairs
