"""The tile manifest: the only way later stages see tiles.

A tiling output folder holds:

- ``tiles.csv``: first line ``# histoclr-tiles v<N>``, then a CSV header and one row per tile
  with :data:`TILE_COLUMNS`. ``tile_path`` is relative to the folder holding ``tiles.csv``.
- ``slides.csv``: one row per input slide with :data:`SLIDE_COLUMNS` (status ``ok`` or
  ``failed`` with the reason in ``error``).

See ``data_manifests/README.md`` for the meaning of every column.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping
from pathlib import Path

from histoclr.manifests.csvfile import CsvFormat, ManifestError, format_rows, read_rows

MANIFEST_NAME = "tiles.csv"
SLIDES_NAME = "slides.csv"

TILE_COLUMNS: tuple[str, ...] = (
    "slide_id",         # stable id of the slide (file stem, made unique)
    "slide_path",       # path of the slide file as given
    "x",                # level-0 x of the tile's top-left corner (pixels)
    "y",                # level-0 y of the tile's top-left corner (pixels)
    "level",            # pyramid level read from (0 = full resolution)
    "read_size",        # side of the square region read at `level` (pixels)
    "out_size",         # side of the written tile (pixels)
    "mpp",              # microns per pixel of the written tile
    "tissue_fraction",  # fraction of the tile covered by the tissue mask, 0..1
    "tile_path",        # tile image, relative to the manifest's folder
)
TILES = CsvFormat("tiles", 1, TILE_COLUMNS, "tile manifest", "tiles", remedy="re-run `histoclr tile`")
_INT_COLUMNS = ("x", "y", "level", "read_size", "out_size")
_FLOAT_COLUMNS = ("mpp", "tissue_fraction")

SLIDE_COLUMNS: tuple[str, ...] = (
    "slide_id", "slide_path", "file_size", "file_mtime", "width", "height", "mpp",
    "mpp_source", "vendor", "tile_count", "status", "error",
)

def format_tiles_csv(rows: Iterable[Mapping]) -> str:
    """The text of a ``tiles.csv`` for ``rows`` (mappings with :data:`TILE_COLUMNS`)."""
    return format_rows(TILES, rows)


def format_slides_csv(rows: Iterable[Mapping]) -> str:
    """The text of a ``slides.csv`` (a plain CSV report, not read back by histoclr)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=SLIDE_COLUMNS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow(r)
    return buf.getvalue()


def read_tile_manifest(path: str | Path):
    """Read and check a ``tiles.csv`` (or the folder that holds one).

    Returns:
        A ``pandas.DataFrame`` with :data:`TILE_COLUMNS` (integers for the pixel columns, floats
        for ``mpp`` and ``tissue_fraction``); ``tile_path`` is made absolute.

    Raises:
        ManifestError: missing file, another format version, missing columns or bad values,
            always naming the file (and the line).
    """
    import pandas as pd

    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST_NAME
    rows = read_rows(TILES, path)
    columns: dict[str, list] = {c: [] for c in rows[0][1]}
    for line, row in rows:
        for c, v in row.items():
            columns[c].append(v)
        for c in _INT_COLUMNS:
            if not row[c].lstrip("-").isdigit():
                raise ManifestError(path, f"line {line}: column {c!r} must hold integers, not {row[c]!r}")
        for c in _FLOAT_COLUMNS:
            try:
                float(row[c])
            except ValueError:
                raise ManifestError(path, f"line {line}: column {c!r} must hold numbers, "
                                    f"not {row[c]!r}") from None
    df = pd.DataFrame(columns)
    for c in _INT_COLUMNS:
        df[c] = df[c].astype("int64")
    for c in _FLOAT_COLUMNS:
        df[c] = df[c].astype("float64")
    root = path.parent
    df["tile_path"] = [str((root / p).resolve()) if not Path(p).is_absolute() else p
                       for p in df["tile_path"]]
    return df
