"""Dense sampling for pretraining: a new random crop at a random tissue position for every item.

``data.mode=dense`` replaces the fixed tiles with crops read from the slides/images themselves,
through the project's reader (:func:`histoclr.slides.reader.open_slide`) at an explicit
resolution (``data.dense.mpp``; :func:`histoclr.slides.reader.level_for_mpp` picks the level,
the region read is resized to ``crop_size``), restricted to tissue by the tiler's thumbnail mask
(:func:`histoclr.slides.tissue.tissue_mask`).

The recipe (documented in ``data_manifests/DENSE_MANIFEST.md``), for item ``index`` of epoch
``e`` (global sample ``k = e * crops_per_epoch + index``) with the trainer's per-item seed
``s = sample_seed(train.seed, e, index)``::

    rng = numpy.random.default_rng([s, CROP_SALT])
    source  = rng.choice(n_sources, p=weights)            # weighting: source (equal) | area
    (r, c)  = cells[rng.integers(len(cells))]             # a thumbnail cell whose crop box is tissue
    (u, v)  = rng.random(2)                               # uniform offset inside the cell
    x0, y0  = min(floor((c + u) / sx), W - F0), min(floor((r + v) / sy), H - F0)   # level-0 px
    crop    = resize(read_region((x0, y0), level, (read, read)), crop_size)

So a crop is a pure function of ``(train.seed, k)``: the same seed gives the same crops, a
resumed run (the trainer restores epoch and position) continues the same sequence, and the
number of DataLoader workers does not matter. ``<out_dir>/dense_manifest.json`` records what a
run saw: every source with its mpp, level, tissue area and role (train | holdout), the excluded
images and why, and the recipe above.

Each process (main, every DataLoader worker) opens a source once and keeps it open: plain
images (the MoNuSeg TIFFs) are then held decoded in memory, whole-slide images stay open in
OpenSlide.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
from torch.utils.data import Dataset

from histoclr.errors import HistoclrError, InputFileError
from histoclr.io import atomic_write_text
from histoclr.manifests.pairs import read_pairs_manifest
from histoclr.pretrain.dataset import split_slides
from histoclr.slides.inputs import find_slides
from histoclr.slides.reader import level_for_mpp, open_slide
from histoclr.slides.tissue import region_fractions, tissue_mask
from histoclr.ssl.trainer import sample_seed

DENSE_MANIFEST = "dense_manifest.json"
DENSE_FORMAT = "histoclr-dense-manifest"
DENSE_VERSION = 1
CROP_SALT = 0xC209      # the crop position stream, distinct from the views' streams
HOLDOUT_SALT = 0x401D   # the fixed held-out crops of the label-free checks


@dataclass
class DenseSource:
    """One slide/image planned for dense crops.

    ``cells`` ``(n, 2)`` int32 are the ``(row, col)`` thumbnail cells that may hold a crop's
    top-left corner: the crop box starting there lies inside the image and its tissue fraction
    (thumbnail mask) is at least ``min_tissue``.
    """

    source_id: str
    path: str
    width: int                 # level 0
    height: int
    base_mpp: float            # µm per level-0 pixel
    mpp_source: str            # metadata | assumed
    vendor: str
    level: int                 # the level read
    read_size: int             # pixels read at ``level`` (resized to crop_size)
    footprint0: float          # crop side in level-0 pixels
    scale: tuple[float, float]  # thumbnail px per level-0 px (x, y)
    tissue_area_mm2: float
    tissue_fraction: float     # of the whole image
    cells: np.ndarray

    def info(self) -> dict:
        """The manifest row (no cells)."""
        d = asdict(self)
        d.pop("cells")
        d["scale"] = [round(float(v), 8) for v in self.scale]
        d["valid_cells"] = int(len(self.cells))
        d["footprint0"] = round(float(self.footprint0), 4)
        d["tissue_area_mm2"] = round(float(self.tissue_area_mm2), 5)
        d["tissue_fraction"] = round(float(self.tissue_fraction), 4)
        return d


def plan_source(spec, *, mpp: float, crop_size: int, assume_mpp: float | None, min_tissue: float,
                tissue) -> DenseSource:
    """Open ``spec`` (a :class:`histoclr.slides.inputs.SlideSpec`), pick the level for ``mpp``,
    detect tissue on a thumbnail and list the cells a crop may start in.

    Raises:
        InputFileError: unreadable file, no resolution (and no ``assume_mpp``), smaller than one
            crop, or no crop position with enough tissue; the message names the file.
    """

    with open_slide(spec.path) as reader:
        if reader.mpp is not None:
            base, source = reader.mpp, "metadata"
        elif assume_mpp is not None:
            base, source = assume_mpp, "assumed"
        else:
            raise InputFileError(spec.given, "no resolution metadata (µm/px) in the file: set "
                                 "data.dense.assume_mpp to read it at data.dense.mpp")
        W, H = reader.dimensions
        level, read_size = level_for_mpp(reader.level_downsamples, base, mpp, crop_size)
        footprint0 = read_size * reader.level_downsamples[level]
        if footprint0 > min(W, H):
            raise InputFileError(spec.given, f"{W}x{H} px is smaller than one crop ({crop_size} px at "
                                 f"{mpp} µm/px = {footprint0:.0f} level-0 px)")
        longest = max(W, H) * tissue.px_per_tile / footprint0
        thumb = reader.thumbnail(int(min(max(longest, 512), tissue.thumbnail_size, max(W, H))))
        vendor = reader.vendor
    h, w = thumb.shape[:2]
    sx, sy = w / W, h / H
    crop_px = footprint0 * sx * footprint0 * sy
    mask = tissue_mask(thumb, tuple(tissue.saturation_range), tissue.pen_filter,
                       min_object_px=max(1, int(tissue.min_object_tiles * crop_px)),
                       max_hole_px=max(1, int(tissue.max_hole_tiles * crop_px))).tissue
    rows, cols = np.mgrid[:h, :w]
    rows, cols = rows.ravel(), cols.ravel()
    # a cell is valid when a crop starting at it fits in the image (positions later in the
    # cell are clamped to W - footprint) ...
    f = math.ceil(footprint0)
    fits = (np.ceil(cols / sx) + f <= W) & (np.ceil(rows / sy) + f <= H)
    boxes = np.stack([cols, rows, cols + footprint0 * sx, rows + footprint0 * sy], 1).astype(np.float64)
    # ... and its crop box holds enough tissue
    frac = region_fractions(mask, boxes)
    keep = fits & (frac >= min_tissue - 1e-9)
    if not keep.any():
        raise InputFileError(spec.given, f"no {crop_size} px crop at {mpp} µm/px has a tissue fraction "
                             f">= {min_tissue} (lower data.dense.min_tissue, or exclude the file)")
    area_mm2 = float(mask.sum()) / (sx * sy) * base * base / 1e6
    return DenseSource(
        source_id=spec.slide_id, path=spec.given, width=int(W), height=int(H), base_mpp=float(base),
        mpp_source=source, vendor=vendor, level=int(level), read_size=int(read_size),
        footprint0=float(footprint0), scale=(float(sx), float(sy)), tissue_area_mm2=area_mm2,
        tissue_fraction=float(mask.mean()), cells=np.stack([rows[keep], cols[keep]], 1).astype(np.int32))


def _resize(im, size: int) -> np.ndarray:
    """A PIL crop at ``size`` px (area average when shrinking, bicubic when enlarging) as HWC uint8."""
    from PIL import Image

    if im.size != (size, size):
        down = im.size[0] > size
        im = im.resize((size, size), Image.Resampling.BOX if down else Image.Resampling.BICUBIC)
    return np.asarray(im)


class _Readers:
    """Open readers of this process (each source opened once, reopened after a fork)."""

    def __init__(self):
        self._pid = None
        self._open: dict[str, Any] = {}

    def get(self, path: str):
        if self._pid != os.getpid():           # a forked worker must not share OpenSlide handles
            self._pid, self._open = os.getpid(), {}
        r = self._open.get(path)
        if r is None:
            r = self._open[path] = open_slide(path)
        return r

    def __getstate__(self):          # open handles never travel to another process
        return {"_pid": None, "_open": {}}


class DenseCrops:
    """Crop reading shared by the training dataset and the held-out crops.

    ``crop(j, x0, y0)``: the ``(crop_size, crop_size, 3)`` uint8 crop of source ``j`` with its
    top-left corner at level-0 ``(x0, y0)``.
    """

    def __init__(self, sources: list[DenseSource], crop_size: int):
        if not sources:
            raise ValueError("dense sampling needs at least one source")
        self.sources = list(sources)
        self.crop_size = int(crop_size)
        self._readers = _Readers()

    def position(self, rng: np.random.Generator, j: int) -> tuple[int, int]:
        """A random level-0 top-left corner of a tissue crop in source ``j``."""
        s = self.sources[j]
        r, c = s.cells[int(rng.integers(len(s.cells)))]
        u, v = rng.random(2)
        sx, sy = s.scale
        f = math.ceil(s.footprint0)
        x0 = min(int((c + u) / sx), s.width - f)
        y0 = min(int((r + v) / sy), s.height - f)
        return max(0, x0), max(0, y0)

    def crop(self, j: int, x0: int, y0: int) -> np.ndarray:
        s = self.sources[j]
        try:
            im = self._readers.get(s.path).read_region_image((x0, y0), s.level, (s.read_size, s.read_size))
        except InputFileError:
            raise
        except Exception as e:  # noqa: BLE001  OpenSlide/tifffile/PIL errors on bad data
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise InputFileError(s.path, f"cannot read the crop at level {s.level}, x={x0}, y={y0} "
                                 f"({type(e).__name__}: {msg})") from None
        return _resize(im, self.crop_size)


class DenseCropDataset(Dataset):
    """Training items for ``data.mode=dense``: ``transform(crop)`` of a fresh random tissue crop.

    ``len`` is ``crops_per_epoch``. Under :class:`histoclr.ssl.trainer.SimCLRTrainer` the item
    is :meth:`getitem_seeded` ``(index, s)`` with the trainer's per-item seed
    ``s = sample_seed(seed, epoch, index)``, so the crop of global sample
    ``k = epoch * len + index`` is :meth:`sample(k) <sample>` — a pure function of ``(seed, k)``.
    ``dataset[index]`` alone (no trainer) is the crop of epoch 0.

    Args:
        crops: the sources and the reader (:class:`DenseCrops`).
        weighting: ``source`` (each source equally likely) or ``area`` (by tissue area).
        transform: e.g. ``MultiViewTransform`` -> ``[(3, S, S)] * 2``; ``None``: the HWC uint8 crop.
    """

    def __init__(self, crops: DenseCrops, crops_per_epoch: int, seed: int, weighting: str = "source",
                 transform: Callable[[np.ndarray], Any] | None = None):
        if weighting not in ("source", "area"):
            raise ValueError(f"weighting must be source or area, got {weighting!r}")
        self.crops = crops
        self.length = int(crops_per_epoch)
        self.seed = int(seed)
        self.transform = transform
        w = np.array([s.tissue_area_mm2 if weighting == "area" else 1.0 for s in crops.sources], np.float64)
        self.weights = w / w.sum()
        self.slide_ids = [s.source_id for s in crops.sources]   # the view preview spreads over them

    def __len__(self) -> int:
        return self.length

    def position(self, item_seed: int) -> tuple[int, int, int]:
        """``(source index, x0, y0)`` of the crop for the trainer's per-item seed."""
        rng = np.random.default_rng([int(item_seed), CROP_SALT])
        j = int(rng.choice(len(self.weights), p=self.weights))
        return (j, *self.crops.position(rng, j))

    def sample(self, k: int) -> tuple[int, int, int]:
        """``(source index, x0, y0)`` of global sample ``k`` (``k = epoch * len + index``)."""

        epoch, index = divmod(int(k), self.length)
        return self.position(sample_seed(self.seed, epoch, index))

    def getitem_seeded(self, index: int, item_seed: int):
        """The item for the trainer's ``(index, sample_seed)`` key."""
        img = self.crops.crop(*self.position(item_seed))
        return self.transform(img) if self.transform is not None else img

    def __getitem__(self, index: int):
        return self.getitem_seeded(index, sample_seed(self.seed, 0, int(index)))

    # the trainer's diagnostics ask every data source for unreadable tiles: a dense source that
    # cannot be read fails the run with its file named (it was read once when planned)
    def try_read(self, j: int) -> np.ndarray | None:
        """Crop of global sample ``j`` (HWC uint8): lets the view preview use this dataset."""
        return self.crops.crop(*self.sample(j))

    def bad_tiles(self) -> list[tuple[str, str]]:
        return []


class DenseHoldout:
    """Fixed crops of the held-out sources for the label-free checks (no transform).

    Crop ``j`` comes from held-out source ``j % n`` at a position drawn from
    ``default_rng([seed, j, HOLDOUT_SALT])``; ``slide_ids[j]`` names its source. Same interface
    as a :class:`histoclr.pretrain.dataset.TileDataset` without transform.
    """

    def __init__(self, crops: DenseCrops, n: int, seed: int):
        self.crops = crops
        self.seed = int(seed)
        k = len(crops.sources)
        self.slide_ids = [crops.sources[j % k].source_id for j in range(int(n))]

    def __len__(self) -> int:
        return len(self.slide_ids)

    def position(self, j: int) -> tuple[int, int, int]:
        src = j % len(self.crops.sources)
        return (src, *self.crops.position(np.random.default_rng([self.seed, int(j), HOLDOUT_SALT]), src))

    def try_read(self, j: int) -> np.ndarray:
        return self.crops.crop(*self.position(j))

    def __getitem__(self, j: int) -> np.ndarray:
        return self.try_read(j)

    def bad_tiles(self) -> list[tuple[str, str]]:
        return []


# --------------------------------------------------------------------------- exclusion, the manifest
def excluded_images(pairs_csv: str | Path | None, root: str | Path, splits) -> dict[str, str]:
    """``{resolved image path or image_id: reason}`` of the pairs manifest's images in ``splits``."""
    if not pairs_csv or not splits:
        return {}

    out: dict[str, str] = {}
    for pair in read_pairs_manifest(pairs_csv, root, check_files=False):
        if pair.split in set(splits):
            reason = f"split={pair.split} in {pairs_csv}"
            out[str(Path(pair.image_path).resolve())] = reason
            out[pair.image_id] = reason
    return out


@dataclass
class DenseData:
    """What :func:`build_dense` returns: the datasets and the manifest of the run's data."""

    train: DenseCropDataset
    holdout: DenseHoldout | None
    train_sources: list[DenseSource]
    holdout_sources: list[DenseSource]
    excluded: list[dict]           # {"source_id", "path", "reason"}
    manifest: dict

    @property
    def manifest_sha256(self) -> str:
        return hashlib.sha256(manifest_text(self.manifest).encode()).hexdigest()


def manifest_text(manifest: dict) -> str:
    return json.dumps(manifest, indent=2, sort_keys=True) + "\n"


def build_dense(cfg, transform=None, progress: Callable[[str], None] | None = None) -> DenseData:
    """Find, exclude, plan and split the dense sources of ``cfg`` (a ``PretrainConfig``).

    Raises:
        HistoclrError: no sources, a source that cannot be used (named), or nothing left to
            train on after the exclusions and the held-out split.
    """

    d, e = cfg.data, cfg.data.dense
    root = Path(e.root)
    inputs = [s if Path(s).is_absolute() else str(root / s) for s in e.sources]
    specs = find_slides(inputs, recursive=e.recursive)
    banned = excluded_images(e.exclude_pairs, root, e.exclude_splits)
    for sid in e.exclude:
        banned.setdefault(sid, "data.dense.exclude")
    kept, excluded = [], []
    for spec in specs:
        reason = banned.get(str(Path(spec.path).resolve())) or banned.get(spec.slide_id) \
            or banned.get(Path(spec.path).stem)
        if reason:
            excluded.append({"source_id": spec.slide_id, "path": spec.given, "reason": reason})
        else:
            kept.append(spec)
    unknown = sorted(set(e.holdout) - {s.slide_id for s in kept})
    if unknown:
        raise HistoclrError(f"data.dense.holdout: {', '.join(unknown)} not among the usable sources")
    if not kept:
        raise HistoclrError(f"data.dense.sources: all {len(specs)} source(s) are excluded")
    planned = []
    for i, spec in enumerate(kept):
        planned.append(plan_source(spec, mpp=e.mpp, crop_size=e.crop_size, assume_mpp=e.assume_mpp,
                                   min_tissue=e.min_tissue, tissue=e.tissue))
        if progress is not None:
            progress(f"planned {i + 1}/{len(kept)}: {spec.slide_id}")
    ids = [s.source_id for s in planned]
    if e.holdout:
        hold_ids = sorted(e.holdout)
    else:
        hold_ids = split_slides(ids, d.holdout_fraction, cfg.train.seed)[1]
    train_src = [s for s in planned if s.source_id not in set(hold_ids)]
    hold_src = [s for s in planned if s.source_id in set(hold_ids)]
    if not train_src:
        raise HistoclrError("data.dense: every usable source is held out; lower data.holdout_fraction")
    train = DenseCropDataset(DenseCrops(train_src, e.crop_size), e.crops_per_epoch, cfg.train.seed,
                             e.weighting, transform)
    holdout = DenseHoldout(DenseCrops(hold_src, e.crop_size), cfg.diagnostics.max_tiles,
                           cfg.train.seed) if hold_src else None
    manifest = {
        "format": DENSE_FORMAT, "version": DENSE_VERSION,
        "recipe": {"mpp": e.mpp, "crop_size": e.crop_size, "min_tissue": e.min_tissue,
                   "crops_per_epoch": e.crops_per_epoch, "seed": cfg.train.seed, "weighting": e.weighting,
                   "crop_salt": CROP_SALT, "holdout_salt": HOLDOUT_SALT, "holdout_crops": cfg.diagnostics.max_tiles,
                   "assume_mpp": e.assume_mpp, "tissue": asdict(e.tissue),
                   "rule": "crop of global sample k = epoch*crops_per_epoch + index: "
                           "rng = default_rng([sample_seed(seed, epoch, index), crop_salt]); see DENSE_MANIFEST.md"},
        "root": str(root), "sources_given": list(e.sources),
        "exclude_pairs": e.exclude_pairs, "exclude_splits": list(e.exclude_splits),
        "sources": [dict(s.info(), role="train") for s in train_src]
        + [dict(s.info(), role="holdout") for s in hold_src],
        "excluded": excluded,
        "train_tissue_mm2": round(sum(s.tissue_area_mm2 for s in train_src), 4),
    }
    return DenseData(train, holdout, train_src, hold_src, excluded, manifest)


def write_manifest(data: DenseData, out_dir: str | Path, resuming: bool = False) -> Path:
    """Write ``<out_dir>/dense_manifest.json``; when resuming, check an existing one matches.

    Raises:
        InputFileError: resuming a run whose manifest lists other sources or another recipe
            (the resumed run would not continue the same crops).
    """

    path = Path(out_dir) / DENSE_MANIFEST
    if resuming and path.is_file():
        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise InputFileError(path, f"unreadable ({e})") from None
        for key in ("recipe", "sources", "excluded"):
            if old.get(key) != data.manifest.get(key):
                raise InputFileError(path, f"the run being resumed used another {key} than this config "
                                     "(same out_dir, other data); use another out_dir or the same data")
    atomic_write_text(path, manifest_text(data.manifest))
    return path
