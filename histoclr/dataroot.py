"""A data root described and checked: ``histoclr data describe`` and ``histoclr data verify``.

:func:`describe_root` lists every file under a data root with its size, sha256, role and known
facts, as rows of the data manifest (:mod:`histoclr.manifests.data`); :func:`verify_root`
compares a data root with such rows.

Roles come from the layout (MoNuSeg-style ``labeled/images``, ``labeled/annotations``,
``unlabeled/images``) and the file type (whole-slide formats, README files). Facts that a file does
not record itself (organ, split, source, licence, a fallback mpp or magnification) come from a
YAML *facts* file: a list of rules ``{match: <glob on path>, <column>: <value>, ...}`` applied in
order, later rules overriding earlier ones.
"""

from __future__ import annotations

import fnmatch
import os
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import yaml
from tqdm import tqdm

from histoclr.errors import ConfigError, InputFileError
from histoclr.images import IMAGE_SUFFIXES, TIFF_SUFFIXES, WSI_SUFFIXES, image_mpp
from histoclr.io import sha256_file
from histoclr.manifests.data import SPLITS
from histoclr.slides.reader import open_wsi

FACT_KEYS = ("organ", "split", "source", "licence", "mpp", "magnification")


# ----------------------------------------------------------------------------- roles and facts

def classify(relpath: str) -> str:
    """The role of a file from its root-relative posix path (see :data:`histoclr.manifests.data.ROLES`)."""
    p = PurePosixPath(relpath)
    suffix = p.suffix.lower()
    parents = [s.lower() for s in p.parts[:-1]]
    if p.name.lower().startswith("readme"):
        return "readme"
    if suffix in WSI_SUFFIXES:
        return "slide"
    if len(parents) >= 2:
        group, kind = parents[-2], parents[-1]
        if group in ("labeled", "labelled"):
            if kind == "images" and suffix in IMAGE_SUFFIXES:
                return "labeled_image"
            if kind == "annotations" and suffix == ".xml":
                return "annotation"
        if group in ("unlabeled", "unlabelled") and kind == "images" and suffix in IMAGE_SUFFIXES:
            return "unlabeled_image"
    return "other"


@dataclass(frozen=True)
class FactRule:
    """One rule of a facts file: ``values`` apply to every path matching the glob ``match``."""

    match: str
    values: Mapping[str, str] = field(default_factory=dict)


def load_facts(path: str | Path) -> list[FactRule]:
    """Read a facts YAML file: a list of ``{match: GLOB, organ|split|...: value}`` mappings.

    Raises:
        ConfigError: unreadable file, not a list, missing ``match``, an unknown key, a bad split
            or a non-numeric mpp/magnification (the message names the file and the rule).
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: facts file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, list):
        raise ConfigError(f"{path}: top level must be a list of rules "
                          "(- match: GLOB, then column: value)")
    rules = []
    for i, item in enumerate(data, 1):
        where = f"{path}: rule {i}"
        if not isinstance(item, dict) or not isinstance(item.get("match"), str):
            raise ConfigError(f"{where}: each rule must be a mapping with a 'match' glob")
        unknown = sorted(set(item) - {"match", *FACT_KEYS})
        if unknown:
            raise ConfigError(f"{where}: unknown key {unknown[0]!r} "
                              f"(allowed: match, {', '.join(FACT_KEYS)})")
        values = {k: "" if v is None else str(v) for k, v in item.items() if k != "match"}
        if values.get("split", "") not in ("", *SPLITS):
            raise ConfigError(f"{where}: split must be one of {', '.join(SPLITS)}, "
                              f"not {values['split']!r}")
        for k in ("mpp", "magnification"):
            if values.get(k):
                try:
                    if float(values[k]) <= 0:
                        raise ValueError
                except ValueError:
                    raise ConfigError(f"{where}: {k} must be a positive number, "
                                      f"not {values[k]!r}") from None
        rules.append(FactRule(item["match"], values))
    return rules


def _apply_facts(relpath: str, rules: Iterable[FactRule]) -> dict[str, str]:
    out: dict[str, str] = {}
    for rule in rules:
        if fnmatch.fnmatchcase(relpath, rule.match):
            out.update(rule.values)
    return out


# ----------------------------------------------------------------------------- metadata readers

def _fmt(x: float) -> str:
    return f"{x:.6g}"


def annotation_mpp(path: str | Path) -> float | None:
    """``MicronsPerPixel`` of an Aperio ImageScope XML annotation (root attribute), if present."""
    try:
        for _, elem in ET.iterparse(path, events=("start",)):
            value = elem.get("MicronsPerPixel")
            return float(value) if value not in (None, "") else None
    except (ET.ParseError, ValueError) as e:
        raise InputFileError(path, f"cannot read annotation XML ({e})") from None
    return None


def slide_facts(path: str | Path) -> tuple[float | None, float | None]:
    """``(mpp, objective magnification)`` of a whole-slide image, as its reader reports them."""
    with open_wsi(path) as s:
        return s.mpp, s.objective_power


# ----------------------------------------------------------------------------- describe

def list_files(root: str | Path) -> list[str]:
    """Root-relative posix paths of the regular files under ``root`` (hidden names skipped)."""
    root = Path(root)
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if name.startswith("."):
                continue
            full = Path(dirpath) / name
            if full.is_file():
                out.append(full.relative_to(root).as_posix())
    return sorted(out)


def _hash_all(root: Path, relpaths: list[str], progress: bool) -> dict[str, str]:
    sizes = {p: (root / p).stat().st_size for p in relpaths}
    digests = {}
    with tqdm(total=sum(sizes.values()), unit="B", unit_scale=True, unit_divisor=1024,
              desc="sha256", disable=not progress, leave=False) as bar:
        for p in relpaths:
            digests[p] = sha256_file(root / p)
            bar.update(sizes[p])
    return digests


def describe_root(root: str | Path, facts: Iterable[FactRule] = (),
                  progress: bool = True) -> list[dict[str, str]]:
    """One data-manifest row (a dict with :data:`histoclr.manifests.data.DATA_COLUMNS`) per file
    under ``root``.

    mpp is read from the file's own metadata first (OpenSlide for slides, ``MicronsPerPixel``
    of the paired annotation for labelled images, TIFF resolution tags), then from ``facts``.

    Raises:
        InputFileError: ``root`` is not a folder, a labelled image has no annotation (or the
            reverse), or a facts rule matches no file (likely a typo).
    """
    root = Path(root)
    if not root.is_dir():
        raise InputFileError(root, "data root is not a folder")
    facts = list(facts)
    relpaths = list_files(root)
    if not relpaths:
        raise InputFileError(root, "data root holds no files")
    for rule in facts:
        if not any(fnmatch.fnmatchcase(p, rule.match) for p in relpaths):
            raise InputFileError(root, f"facts rule match {rule.match!r} matches no file here")

    roles = {p: classify(p) for p in relpaths}
    annotations: dict[str, str] = {}
    for p, role in roles.items():
        if role == "annotation":
            annotations[_pair_key(p)] = p
    labeled = {_pair_key(p): p for p, r in roles.items() if r == "labeled_image"}
    unpaired = sorted(set(labeled) ^ set(annotations))
    if unpaired:
        who = labeled.get(unpaired[0]) or annotations[unpaired[0]]
        kind = "annotation" if unpaired[0] in labeled else "image"
        raise InputFileError(root / who, f"has no matching {kind} (same name under "
                             f"labeled/{'annotations' if kind == 'annotation' else 'images'}/); "
                             f"{len(unpaired)} unpaired file(s) in all")

    digests = _hash_all(root, relpaths, progress)
    rows = []
    for p in relpaths:
        role = roles[p]
        fact = _apply_facts(p, facts)
        mpp, mpp_source, mag = None, "", None
        if role == "slide":
            mpp, mag = slide_facts(root / p)
            mpp_source = "openslide" if mpp else ""
        elif role in ("annotation", "labeled_image"):
            mpp = annotation_mpp(root / annotations[_pair_key(p)])
            mpp_source = "annotation" if mpp else ""
        if mpp is None and role in ("labeled_image", "unlabeled_image") and \
                PurePosixPath(p).suffix.lower() in TIFF_SUFFIXES:
            mpp = image_mpp(root / p)
            mpp_source = "tiff" if mpp else ""
        if mpp is None and fact.get("mpp"):
            mpp, mpp_source = float(fact["mpp"]), "facts"
        if mag is None and fact.get("magnification"):
            mag = float(fact["magnification"])
        rows.append({
            "path": p,
            "bytes": str((root / p).stat().st_size),
            "sha256": digests[p],
            "role": role,
            "pair_id": PurePosixPath(p).stem if role not in ("readme", "other") else "",
            "split": fact.get("split", ""),
            "organ": fact.get("organ", ""),
            "mpp": _fmt(mpp) if mpp else "",
            "mpp_source": mpp_source,
            "magnification": _fmt(mag) if mag else "",
            "source": fact.get("source", ""),
            "licence": fact.get("licence", ""),
        })
    return rows


def _pair_key(relpath: str) -> str:
    """The group folder (``.../labeled``) plus the stem: an image and its annotation share it."""
    p = PurePosixPath(relpath)
    return f"{p.parent.parent}/{p.stem}"


@dataclass
class VerifyReport:
    """What :func:`verify_root` found. ``changed`` holds ``(path, explanation)`` pairs."""

    ok: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    changed: list[tuple[str, str]] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.missing and not self.changed


def verify_root(root: str | Path, rows: Iterable[Mapping[str, str]], size_only: bool = False,
                progress: bool = True) -> VerifyReport:
    """Compare the files under ``root`` with manifest ``rows`` (size first, then sha256).

    Files under ``root`` that the manifest does not list are reported in ``extra`` and do not
    make the check fail.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputFileError(root, "data root is not a folder")
    rows = list(rows)
    report = VerifyReport()
    to_hash = []
    for row in rows:
        f = root / row["path"]
        if not f.is_file():
            report.missing.append(row["path"])
            continue
        size, want = f.stat().st_size, int(row["bytes"])
        if size != want:
            report.changed.append((row["path"], f"size {want} -> {size} bytes"))
        elif size_only:
            report.ok.append(row["path"])
        else:
            to_hash.append(row)
    with tqdm(total=sum(int(r["bytes"]) for r in to_hash), unit="B", unit_scale=True,
              unit_divisor=1024, desc="sha256", disable=not progress, leave=False) as bar:
        for row in to_hash:
            got = sha256_file(root / row["path"])
            if got == row["sha256"]:
                report.ok.append(row["path"])
            else:
                why = f"sha256 {row['sha256'][:12]}… -> {got[:12]}… (same size)"
                report.changed.append((row["path"], why))
            bar.update(int(row["bytes"]))
    listed = {r["path"] for r in rows}
    report.extra = [p for p in list_files(root) if p not in listed]
    return report
