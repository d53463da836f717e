"""Turn command-line inputs (slide files, folders, CSV lists) into slides with stable ids."""

from __future__ import annotations

import csv
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from histoclr.errors import HistoclrError, InputFileError
from histoclr.images import TILE_INPUT_SUFFIXES


@dataclass(frozen=True)
class SlideSpec:
    slide_id: str   # unique, file-name safe: the file stem (plus a path hash when stems clash)
    path: Path      # the file to open
    given: str      # the path as given (folder input joined with the found file)


def _slide_files_in(folder: Path, recursive: bool) -> list[Path]:
    found = folder.rglob("*") if recursive else folder.glob("*")
    files = sorted(p for p in found if p.is_file() and p.suffix.lower() in TILE_INPUT_SUFFIXES
                   and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    # A DICOM slide is a folder of .dcm files; OpenSlide opens the whole series from any one.
    seen_dicom: set[Path] = set()
    out = []
    for p in files:
        if p.suffix.lower() == ".dcm":
            if p.parent in seen_dicom:
                continue
            seen_dicom.add(p.parent)
        out.append(p)
    return out


def _paths_from_csv(csv_path: Path) -> list[Path]:
    """The ``path`` column of a CSV list; relative paths are relative to the CSV's folder."""
    try:
        with open(csv_path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
            columns = rows[0].keys() if rows else []
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise InputFileError(csv_path, f"cannot read CSV list ({e})") from None
    if "path" not in columns:
        raise InputFileError(csv_path, "a slide list CSV needs a 'path' column "
                             f"(found: {', '.join(columns) or 'no rows'})")
    paths = [Path(r["path"].strip()) for r in rows if (r.get("path") or "").strip()]
    return [p if p.is_absolute() else csv_path.parent / p for p in paths]


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def find_slides(inputs: Sequence[str | Path], recursive: bool = False) -> list[SlideSpec]:
    """Every slide named by ``inputs`` (files, folders, ``.csv`` lists), sorted by ``slide_id``.

    Raises:
        HistoclrError: a missing path, a folder without slides, or no slides at all.
    """
    if not inputs:
        raise HistoclrError("no input given: name slide files, folders or a CSV list (column 'path')")
    found: list[tuple[Path, str]] = []
    for inp in inputs:
        p = Path(inp)
        if not p.exists():
            raise HistoclrError(f"{p}: no such file or folder")
        if p.is_dir():
            files = _slide_files_in(p, recursive)
            if not files:
                hint = "" if recursive else " (use --recursive to search sub-folders)"
                raise HistoclrError(f"{p}: no slide files found ({', '.join(TILE_INPUT_SUFFIXES)}){hint}")
            found += [(f, str(f)) for f in files]
        elif p.suffix.lower() == ".csv":
            listed = _paths_from_csv(p)
            missing = [q for q in listed if not q.is_file()]
            if missing:
                more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
                raise HistoclrError(f"{p}: listed slide not found: {missing[0]}{more}")
            found += [(q, str(q)) for q in listed]
        else:
            found.append((p, str(p)))
    unique: dict[Path, tuple[Path, str]] = {}
    for path, given in found:
        unique.setdefault(path.resolve(), (path, given))
    if not unique:
        raise HistoclrError("no slides found in the inputs")
    stems: dict[str, int] = {}
    for resolved in unique:
        stem = _UNSAFE.sub("_", resolved.stem) or "slide"
        stems[stem] = stems.get(stem, 0) + 1
    specs = []
    for resolved, (path, given) in unique.items():
        stem = _UNSAFE.sub("_", resolved.stem) or "slide"
        sid = stem if stems[stem] == 1 else f"{stem}-{hashlib.sha1(str(resolved).encode()).hexdigest()[:8]}"
        specs.append(SlideSpec(slide_id=sid, path=path, given=given))
    return sorted(specs, key=lambda s: s.slide_id)
