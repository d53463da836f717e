"""The data-root manifest: every file under a data root with its size, sha256, role and known facts.

A data manifest (``data_manifests/*.csv``) has a first line ``# histoclr-data v<N>``, then a CSV
header and one row per file with :data:`DATA_COLUMNS`; ``path`` is relative to the data root and
uses ``/``. It is written by :func:`histoclr.dataroot.describe_root` (``histoclr data describe``)
and checked by :func:`histoclr.dataroot.verify_root` (``histoclr data verify``). See
``data_manifests/README.md``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePosixPath

from histoclr.manifests.csvfile import CsvFormat, ManifestError, format_rows, read_rows

DATA_COLUMNS: tuple[str, ...] = (
    "path",           # relative to the data root, '/'-separated
    "bytes",          # file size
    "sha256",         # hex digest of the content
    "role",           # one of ROLES
    "pair_id",        # sample id (file stem); an image and its annotation share it
    "split",          # train / val / test for labelled data; empty otherwise
    "organ",          # tissue of origin, from the facts file
    "mpp",            # microns per pixel at full resolution
    "mpp_source",     # where mpp came from: openslide, annotation, tiff, facts
    "magnification",  # objective magnification (e.g. 40)
    "source",         # where the file comes from
    "licence",        # licence it is distributed under
)
DATA = CsvFormat("data", 1, DATA_COLUMNS, "data manifest", "files",
                 remedy="re-run `histoclr data describe`")
ROLES = ("labeled_image", "annotation", "unlabeled_image", "slide", "readme", "other")
SPLITS = ("train", "val", "test")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def format_data_manifest(rows: Iterable[Mapping[str, str]]) -> str:
    """The text of a data manifest for ``rows`` (mappings with :data:`DATA_COLUMNS`)."""
    return format_rows(DATA, rows)


def read_data_manifest(path: str | Path) -> list[dict[str, str]]:
    """Read and check a data manifest; returns its rows as dicts of strings.

    Raises:
        ManifestError: missing file, wrong first line or version, missing columns, or a bad
            value (path, size, checksum, role, split), naming the file and the line.
    """
    path = Path(path)
    rows, seen = [], set()
    for line, row in read_rows(DATA, path):
        p = row["path"]
        pp = PurePosixPath(p)
        if not p or pp.is_absolute() or ".." in pp.parts or "\\" in p:
            raise ManifestError(path, f"line {line}: path {p!r} must be relative to the "
                                "data root, '/'-separated, without '..'")
        if p in seen:
            raise ManifestError(path, f"line {line}: path {p!r} is listed twice")
        seen.add(p)
        if not row["bytes"].isdigit():
            raise ManifestError(path, f"line {line}: bytes must be a non-negative integer, "
                                f"not {row['bytes']!r}")
        if not _SHA256.match(row["sha256"]):
            raise ManifestError(path, f"line {line}: sha256 must be 64 lowercase hex digits, "
                                f"not {row['sha256'][:70]!r}")
        if row["role"] not in ROLES:
            raise ManifestError(path, f"line {line}: role {row['role']!r} is not one of "
                                f"{', '.join(ROLES)}")
        if row["split"] not in ("", *SPLITS):
            raise ManifestError(path, f"line {line}: split {row['split']!r} is not one of "
                                f"{', '.join(SPLITS)} (or empty)")
        rows.append(row)
    return rows
