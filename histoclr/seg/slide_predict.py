"""Nucleus prediction on whole slides, slide regions and plain images, tile by tile, resumable.

The processed area (the whole slide, a ``--region``, or a plain image) is resampled on a *work
grid* at the model's mpp and cut into tiles of ``tile`` work px (the cores). Each tile is read
from the pyramid level nearest the model's mpp with ``halo`` px of context on every side, run
through the network (:func:`histoclr.seg.predict.predict_work`: sliding window, batched) and
post-processed with the checkpoint's parameters; it keeps the nuclei whose centroid lies in its
core, so a nucleus cut by a tile border is reported once (the halo only gives context; it should
exceed the largest nucleus radius). On a whole slide only tiles with tissue on a thumbnail
(:func:`histoclr.slides.tissue.tissue_mask`) are run. Memory per tile is bounded: nothing
slide-sized at full resolution is ever held.

Files in the output folder, for an input ``<name>`` (``<stem>``, or ``<stem>_x.._y.._w.._h..`` for a
region), each written atomically:

    <name>.parts/settings.json, tile_NNNNN.npz   one file per finished tile (resume); removed at the end
    <name>.geojson            nucleus polygons in level-0 px, QuPath detections (histoclr.seg.export)
    <name>_nuclei.csv         one row per nucleus (histoclr.seg.export.COLUMNS)
    <name>_overlay.png        whole slide: the thumbnail with the nuclei; region / image: at its size
    <name>_instances.png      region / image only: labels at level 0 (16-bit; TIFF past 65,535;
                              ``binary``: ``<name>_mask.png``, 0/255), as before
    <name>_mask.tif           ``mask_tiff``: pyramidal tiled instance mask (ids as 24-bit RGB)
    <name>_summary.json       written last: the input is finished (a re-run with the same settings
                              skips it unless overwrite)
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from pathlib import Path

import numpy as np

from histoclr.config.tile import TissueConfig
from histoclr.errors import InputFileError
from histoclr.io import atomic_path, atomic_write_json, ensure_output_dir
from histoclr.progress import progress_bar
from histoclr.seg.export import (
    COLUMNS,
    nucleus_outlines,
    region_measurements,
    save_thumbnail_overlay,
    write_label_raster,
    write_mask_tiff,
    write_nuclei,
)
from histoclr.seg.overlay import save_overlay_png
from histoclr.seg.predict import predict_work, resample
from histoclr.slides.reader import level_for_mpp, open_slide
from histoclr.slides.tissue import region_fractions, tissue_mask

MAX_REGION_PIXELS = 100_000_000   # regions and plain images up to this size also get level-0 rasters
PARTS_FORMAT = 1
# tiles/s even below one tile a second (tqdm's default turns that into s/tile), and the ETA
BAR_FORMAT = "{l_bar}{bar}| {n_fmt}/{total_fmt} tiles [{elapsed}<{remaining}, {rate_noinv_fmt}]"
THUMBNAIL_SIZE = 1024             # longest side of the thumbnail (tissue detection, slide overlay)
_MEASURED = COLUMNS[1:]           # the per-tile columns (ids are given at the end)


@dataclass(frozen=True)
class Geometry:
    """Where the work grid lies: ``origin``/``size0`` in level-0 px, read from ``level``."""

    origin: tuple[int, int]
    size0: tuple[int, int]
    level: int
    downsample: float          # of ``level``
    scale: float               # work px per level-0 px
    base_mpp: float | None     # µm per level-0 px

    @property
    def work_size(self) -> tuple[int, int]:
        return max(1, round(self.size0[0] * self.scale)), max(1, round(self.size0[1] * self.scale))

    def level0_box(self, box: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
        """Work-px box ``(x0, y0, x1, y1)`` -> level-0 px box (absolute in the slide)."""
        (ox, oy), (w, h), (ww, wh) = self.origin, self.size0, self.work_size
        x0, y0, x1, y1 = box
        return ox + round(x0 * w / ww), oy + round(y0 * h / wh), ox + round(x1 * w / ww), oy + round(y1 * h / wh)


@dataclass
class Prediction:
    """What one input gave; ``files``: output name -> path."""

    name: str
    mode: str                  # slide | region
    nuclei: int
    tiles: int
    tissue_mm2: float | None
    files: dict[str, str] = field(default_factory=dict)
    skipped: bool = False
    seconds: float = 0.0

    @property
    def per_mm2(self) -> float | None:
        return self.nuclei / self.tissue_mm2 if self.tissue_mm2 else None

    def summary_line(self) -> str:
        tissue = "tissue area unknown (no mpp)" if self.tissue_mm2 is None else f"{self.tissue_mm2:.3f} mm² tissue"
        dens = "" if self.per_mm2 is None else f", {self.per_mm2:.0f} nuclei/mm²"
        return f"{self.name}: {self.nuclei} nuclei, {tissue}{dens}"


def geometry_of(reader, path, region, mpp=None, assume_mpp=None, model_mpp=None) -> Geometry:
    """The work grid of ``region = (x, y, w, h)`` (level-0 px; ``None``: the whole slide).

    The slide's mpp is ``mpp``, else its metadata, else ``assume_mpp``; the level read is the
    coarsest at least as fine as ``model_mpp`` (:func:`level_for_mpp`); ``model_mpp`` None: native.

    Raises:
        InputFileError: a region outside the slide, or an unknown mpp when the model needs one.
    """
    base = mpp or reader.mpp or assume_mpp
    if model_mpp is not None and base is None:
        raise InputFileError(path, f"its resolution (mpp) is unknown and the model works at {model_mpp} "
                             "um/px; pass --mpp M (or --assume-mpp M for files without it)")
    W, H = reader.dimensions
    x, y, w, h = region if region is not None else (0, 0, W, H)
    if w < 1 or h < 1 or x < 0 or y < 0 or x + w > W or y + h > H:
        raise InputFileError(path, f"region x={x},y={y},w={w},h={h} is not inside the slide ({W}x{H} at level 0)")
    level, scale = 0, 1.0
    if model_mpp is not None:
        level, _ = level_for_mpp(reader.level_downsamples, base, model_mpp, 1)
        scale = base / model_mpp
        if math.isclose(scale, 1.0, rel_tol=1e-3):
            scale = 1.0
    return Geometry((x, y), (w, h), level, float(reader.level_downsamples[level]), scale, base)


def tile_cores(work_size: tuple[int, int], tile: int) -> list[tuple[int, int, int, int]]:
    """Row-major core boxes ``(x0, y0, x1, y1)`` of ``tile`` px covering the work grid exactly."""
    ww, wh = work_size
    return [(x, y, min(x + tile, ww), min(y + tile, wh)) for y in range(0, wh, tile) for x in range(0, ww, tile)]


def slide_tissue(reader, footprint0: float, size: int = THUMBNAIL_SIZE, cfg: TissueConfig | None = None):
    """Thumbnail ``(h, w, 3)`` (longest side ``size``, or the slide's when smaller: the same memory
    whatever the slide's size) and its tissue mask ``(h, w)`` by the tiler's detection, cleaned up
    relative to a tile of ``footprint0`` level-0 px. Returns ``(thumbnail, mask)``."""
    cfg = cfg or TissueConfig()
    W, H = reader.dimensions
    thumb = reader.thumbnail(min(size, max(W, H)))
    tile_px = (footprint0 * thumb.shape[1] / W) * (footprint0 * thumb.shape[0] / H)
    mask = tissue_mask(thumb, tuple(cfg.saturation_range), cfg.pen_filter,
                       min_object_px=max(1, int(cfg.min_object_tiles * tile_px)),
                       max_hole_px=max(1, int(cfg.max_hole_tiles * tile_px)))
    return thumb, mask.tissue


def _thumb_boxes(boxes0: np.ndarray, reader, thumb) -> np.ndarray:
    W, H = reader.dimensions
    return boxes0 * np.array([thumb.shape[1] / W, thumb.shape[0] / H] * 2)


def read_level(reader, path, geo: Geometry, box0: tuple[int, int, int, int]) -> np.ndarray:
    """RGB of the level-0 box ``box0`` read at ``geo.level`` (its own size at that level).

    Raises:
        InputFileError: the slide cannot be read there (one line naming it).
    """
    x0, y0, x1, y1 = box0
    size = (max(1, round((x1 - x0) / geo.downsample)), max(1, round((y1 - y0) / geo.downsample)))
    try:
        return reader.read_region((x0, y0), geo.level, size)
    except Exception as e:  # noqa: BLE001  OpenSlide/tifffile/PIL errors on bad data
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise InputFileError(path, f"cannot read the region at level {geo.level}, x={x0}, y={y0} ({msg})") from None


def predict_tile(ckpt, work: np.ndarray, box: tuple[int, int, int, int], core: tuple[int, int, int, int],
                 box0: tuple[int, int, int, int], base_mpp: float | None, params, *, overlap: float = 0.25,
                 batch_size: int = 4, device=None) -> dict[str, np.ndarray]:
    """The nuclei of one tile: ``work`` ``(h, w, 3)`` is the work-grid ``box`` (core + halo) read
    from level-0 ``box0``; the nuclei whose centroid lies in ``core`` are kept.

    Returns the arrays of its part file: ``read`` (x0, y0, sx, sy: level-0 origin and level-0 px per
    work px), ``labels`` (the kept nuclei 1..k, cropped; int32), ``crop`` (its work-px offset in
    ``work``), one ``(k,)`` array per measured column, and the outlines ``poly_xy`` ``(V, 2)``
    (level-0 px) with ``poly_off`` ``(k + 1,)``.
    """
    inst, _ = predict_work(ckpt, work, params, overlap=overlap, batch_size=batch_size, device=device)
    t = region_measurements(inst, work)
    cy, cx = t["centroid-0"] + box[1], t["centroid-1"] + box[0]
    keep = (cx >= core[0]) & (cx < core[2]) & (cy >= core[1]) & (cy < core[3])
    t = {k: v[keep] for k, v in t.items()}
    k = int(keep.sum())
    lut = np.zeros(int(inst.max()) + 1, np.int32)
    lut[t["label"]] = np.arange(1, k + 1)
    kept = lut[inst]
    t["label"] = np.arange(1, k + 1)
    outlines = nucleus_outlines(kept, t)
    h, w = work.shape[:2]
    sx, sy = (box0[2] - box0[0]) / w, (box0[3] - box0[1]) / h
    to0 = np.array([sx, sy])
    xy = [box0[:2] + (o + 0.5) * to0 - 0.5 for o in outlines]
    um = float("nan") if base_mpp is None else base_mpp
    cols = {"centroid_x_px": box0[0] + (t["centroid-1"] + 0.5) * sx - 0.5,
            "centroid_y_px": box0[1] + (t["centroid-0"] + 0.5) * sy - 0.5}
    cols.update(centroid_x_um=cols["centroid_x_px"] * um, centroid_y_um=cols["centroid_y_px"] * um,
                area_um2=t["area"] * sx * sy * um * um, perimeter_um=t["perimeter"] * math.sqrt(sx * sy) * um,
                eccentricity=t["eccentricity"], solidity=t["solidity"], hematoxylin_od_mean=t["intensity_mean"])
    rows, colmask = kept.any(1), kept.any(0)
    r0, c0 = (int(rows.argmax()), int(colmask.argmax())) if k else (0, 0)
    r1, c1 = (h - int(rows[::-1].argmax()), w - int(colmask[::-1].argmax())) if k else (0, 0)
    return {"read": np.array([box0[0], box0[1], sx, sy], np.float64), "crop": np.array([c0, r0]),
            "labels": kept[r0:r1, c0:c1], **{c: np.asarray(cols[c], np.float64) for c in _MEASURED},
            "poly_xy": np.concatenate(xy) if xy else np.zeros((0, 2)),
            "poly_off": np.cumsum([0] + [len(o) for o in xy])}


class Parts:
    """The per-tile results of one input on disk (``folder/tile_NNNNN.npz``), with the settings
    they were made with; other settings clear the folder."""

    def __init__(self, folder: Path, settings: dict, fresh: bool = False):
        self.folder = folder
        settings = json.loads(json.dumps(settings))     # as read back (tuples -> lists)
        if fresh or self._settings() != settings:
            shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True, exist_ok=True)
        for p in folder.glob(".*.tmp*"):      # left by a killed writer
            p.unlink(missing_ok=True)
        atomic_write_json(folder / "settings.json", settings)
        self.load = lru_cache(maxsize=4)(self._load)
        self.offsets: list[int] = []
        self.boxes0: np.ndarray = np.zeros((0, 4))

    def _settings(self):
        try:
            return json.loads((self.folder / "settings.json").read_text())
        except (OSError, ValueError):
            return None

    def path(self, i: int) -> Path:
        return self.folder / f"tile_{i:05d}.npz"

    def save(self, i: int, arrays: dict[str, np.ndarray]) -> None:
        with atomic_path(self.path(i)) as tmp, open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)

    def _load(self, i: int) -> dict[str, np.ndarray]:
        with np.load(self.path(i)) as z:
            return {k: z[k] for k in z.files}

    def nuclei(self, n: int):
        """Batches ``(columns with ids, outlines)`` of tiles ``0..n-1``; records each tile's first
        id offset and the level-0 box of its labels (for :meth:`render`)."""
        self.offsets, boxes, nid = [], [], 0
        for i in range(n):
            c = self.load(i)
            k = len(c["poly_off"]) - 1
            x0, y0, sx, sy = c["read"]
            (cx, cy), (lh, lw) = c["crop"], c["labels"].shape
            boxes.append((x0 + cx * sx, y0 + cy * sy, x0 + (cx + lw) * sx, y0 + (cy + lh) * sy))
            self.offsets.append(nid)
            xy, off = c["poly_xy"], c["poly_off"]
            yield {"id": np.arange(nid + 1, nid + k + 1), **c}, [xy[off[j]:off[j + 1]] for j in range(k)]
            nid += k
        self.boxes0 = np.asarray(boxes, np.float64).reshape(-1, 4)

    def render(self, x0: float, y0: float, w: int, h: int, ds: float) -> np.ndarray:
        """Global nucleus ids ``(h, w)`` int64 of a grid of ``ds`` level-0 px per pixel whose pixel
        (0, 0) starts at level-0 ``(x0, y0)`` (nearest neighbour; after :meth:`nuclei`)."""
        out = np.zeros((h, w), np.int64)
        b = self.boxes0
        hit = np.flatnonzero((b[:, 0] < x0 + w * ds) & (b[:, 2] > x0) & (b[:, 1] < y0 + h * ds) & (b[:, 3] > y0))
        for i in hit:
            c = self.load(int(i))
            lab = c["labels"]
            rx, ry, sx, sy = c["read"]
            u = np.floor((x0 + (np.arange(w) + 0.5) * ds - rx) / sx).astype(np.int64) - c["crop"][0]
            v = np.floor((y0 + (np.arange(h) + 0.5) * ds - ry) / sy).astype(np.int64) - c["crop"][1]
            ju, iv = np.flatnonzero((u >= 0) & (u < lab.shape[1])), np.flatnonzero((v >= 0) & (v < lab.shape[0]))
            if not len(ju) or not len(iv):
                continue
            vals = lab[np.ix_(v[iv], u[ju])].astype(np.int64)
            block = out[iv[0]:iv[-1] + 1, ju[0]:ju[-1] + 1]
            np.copyto(block, vals + self.offsets[i], where=vals > 0)
        return out


def model_fingerprint(ckpt) -> str:
    """sha256 of what decides a model's output: weights, spec, mpp, window, normalisation, precision."""
    h = hashlib.sha256(repr((getattr(ckpt.model, "spec", None), ckpt.mpp, ckpt.window, tuple(ckpt.mean),
                             tuple(ckpt.std), getattr(ckpt.model, "precision", "32"))).encode())
    for k, v in sorted(ckpt.model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().numpy().tobytes())
    return h.hexdigest()


@dataclass
class Plan:
    """What to run for one input: its ``mode`` (slide | region), work grid, tiles and tissue."""

    name: str
    mode: str
    geo: Geometry
    cores: list[tuple[int, int, int, int]]   # work-px core boxes, row-major
    thumb: np.ndarray                        # (h, w, 3) thumbnail of the whole slide
    tissue: np.ndarray                       # (h, w) its tissue mask
    tissue_mm2: float | None                 # tissue area inside the processed area


def input_name(path: Path, region) -> str:
    """``<stem>``, or ``<stem>_x<X>_y<Y>_w<W>_h<H>`` for a region."""
    return path.stem if region is None else "{}_x{}_y{}_w{}_h{}".format(path.stem, *region)


def plan_input(reader, path: Path, ckpt, region=None, mpp=None, assume_mpp=None, tile: int = 1024,
               min_tissue: float = 0.0) -> Plan:
    """The :class:`Plan` of one opened input: a whole slide (no ``region``, not a plain image up to
    :data:`MAX_REGION_PIXELS`) keeps the tiles whose tissue fraction on the thumbnail exceeds
    ``min_tissue``; a region or plain image keeps every tile."""
    geo = geometry_of(reader, path, region, mpp, assume_mpp, ckpt.mpp)
    W, H = reader.dimensions
    plain_whole = region is None and reader.vendor.startswith("plain-") and W * H <= MAX_REGION_PIXELS
    mode = "region" if region is not None or plain_whole else "slide"
    thumb, tissue = slide_tissue(reader, ckpt.window / geo.scale)
    cores = tile_cores(geo.work_size, tile)
    if mode == "slide":
        boxes0 = np.array([geo.level0_box(c) for c in cores], np.float64)
        frac = region_fractions(tissue, _thumb_boxes(boxes0, reader, thumb))
        cores = [c for c, f in zip(cores, frac) if f > min_tissue]
    (x, y), (w, h) = geo.origin, geo.size0
    area = region_fractions(tissue, _thumb_boxes(np.array([[x, y, x + w, y + h]], np.float64), reader, thumb))[0]
    mm2 = None if geo.base_mpp is None else float(area * w * h * geo.base_mpp ** 2 / 1e6)
    return Plan(input_name(path, region), mode, geo, cores, thumb, tissue, mm2)


def tile_reader(reader, path: Path, geo: Geometry, halo: int):
    """``read(core) -> (box, box0, work)``: the core's box with ``halo`` (work px, clipped to the
    grid), its level-0 box and its RGB ``(h, w, 3)`` on the work grid."""
    ww, wh = geo.work_size

    def read(c):
        box = (max(0, c[0] - halo), max(0, c[1] - halo), min(ww, c[2] + halo), min(wh, c[3] + halo))
        box0 = geo.level0_box(box)
        return box, box0, resample(read_level(reader, path, geo, box0), (box[2] - box[0], box[3] - box[1]))

    return read


def _summary(path: Path) -> dict:
    """The summary of an input finished earlier (``{}`` when none or unreadable)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def predict_input(ckpt, path, out_dir, *, region=None, mpp=None, assume_mpp=None, tile: int = 1024,
                  halo: int = 64, overlap: float = 0.25, batch_size: int = 4, device=None,
                  threshold: float | None = None, binary: bool = False, mask_format: str = "png",
                  mask_tiff: bool = False, min_tissue: float = 0.0, overwrite: bool = False,
                  progress: bool = True, on_tile: Callable[[int], None] | None = None) -> Prediction:
    """Predict one slide, slide ``region = (x, y, w, h)`` or plain image into ``out_dir`` (module doc).

    A whole slide (no ``region``, not a plain image up to :data:`MAX_REGION_PIXELS`) runs only the
    tiles whose tissue fraction on the thumbnail exceeds ``min_tissue``; a region or image runs
    every tile and also gets level-0 rasters. ``tile``/``halo``: core side and context in work px.
    ``threshold`` overrides the checkpoint's foreground threshold. ``on_tile(k)`` is called after
    the k-th tile of this call is saved. An input finished earlier with the same settings (model,
    slide file, geometry, tiles, post-processing, outputs) is skipped unless ``overwrite``.

    Raises:
        InputFileError: unreadable input or region, unknown mpp (one line naming the file).
    """
    if mask_format not in ("png", "tiff"):
        raise ValueError(f"mask_format must be png or tiff, got {mask_format!r}")
    if tile < 16 or halo < 0:
        raise ValueError(f"need tile >= 16 and halo >= 0, got {tile}, {halo}")
    params = ckpt.postprocess if threshold is None else replace(ckpt.postprocess, fg_threshold=threshold).validate()
    path, out = Path(path), ensure_output_dir(out_dir)
    start = time.perf_counter()
    name = input_name(path, region)
    summary_path = out / f"{name}_summary.json"
    with open_slide(path) as reader:
        plan = plan_input(reader, path, ckpt, region, mpp, assume_mpp, tile, min_tissue)
        geo, cores, thumb, mode, (x, y) = plan.geo, plan.cores, plan.thumb, plan.mode, plan.geo.origin
        W, H = reader.dimensions
        settings = {"format": PARTS_FORMAT, "input": str(path.resolve()), "file_size": path.stat().st_size,
                    "file_mtime_ns": path.stat().st_mtime_ns, "geometry": asdict(geo), "tile": tile, "halo": halo,
                    "overlap": overlap, "min_tissue": min_tissue, "postprocess": params.to_dict(),
                    "model": model_fingerprint(ckpt), "tiles": len(cores)}
        job = json.loads(json.dumps({**settings, "outputs": {"binary": binary, "mask_format": mask_format,
                                                             "mask_tiff": mask_tiff}}))
        done = _summary(summary_path)
        if not overwrite and done.get("settings") == job:
            return Prediction(name, done["mode"], done["nuclei"], done["tiles"], done["tissue_mm2"], done["files"],
                              skipped=True)
        for p in out.glob(f".{name}*.tmp*"):          # left by a writer killed part-way
            p.unlink(missing_ok=True)
        parts = Parts(out / f"{name}.parts", settings, fresh=overwrite)
        summary_path.unlink(missing_ok=True)
        todo = [i for i in range(len(cores)) if not parts.path(i).is_file()]
        read = tile_reader(reader, path, geo, halo)

        bar = progress_bar(total=len(cores), initial=len(cores) - len(todo), unit="tile", desc=name,
                           disable=not progress, file=sys.stderr, bar_format=BAR_FORMAT)
        try:
            with ThreadPoolExecutor(max_workers=1) as pool:      # read the next tile during this one's forward
                nxt = pool.submit(read, cores[todo[0]]) if todo else None
                for k, i in enumerate(todo):
                    box, box0, work = nxt.result()
                    nxt = pool.submit(read, cores[todo[k + 1]]) if k + 1 < len(todo) else None
                    parts.save(i, predict_tile(ckpt, work, box, cores[i], box0, geo.base_mpp, params, overlap=overlap,
                                               batch_size=batch_size, device=device))
                    bar.update(1)
                    if on_tile is not None:
                        on_tile(k + 1)
        finally:
            bar.close()

        files = {"geojson": out / f"{name}.geojson", "csv": out / f"{name}_nuclei.csv"}
        n = write_nuclei(files["geojson"], files["csv"], name, parts.nuclei(len(cores)))
        if mode == "region" and geo.size0[0] * geo.size0[1] <= MAX_REGION_PIXELS:
            (w, h), box0 = geo.size0, (x, y, x + geo.size0[0], y + geo.size0[1])
            instances = parts.render(x, y, w, h, 1.0)
            files["mask"] = write_label_raster(out, name, instances, binary, mask_format)
            rgb = resample(read_level(reader, path, geo, box0), (w, h))
            files["overlay"] = save_overlay_png(out / f"{name}_overlay.png", rgb, instances)
        else:
            ds = max(W / thumb.shape[1], H / thumb.shape[0])
            caption = Prediction(name, mode, n, len(cores), plan.tissue_mm2).summary_line().replace("²", "2")
            files["overlay"] = save_thumbnail_overlay(out / f"{name}_overlay.png", thumb,
                                                      parts.render(0, 0, thumb.shape[1], thumb.shape[0], ds), caption)
        if mask_tiff:
            files["mask_tiff"] = write_mask_tiff(out / f"{name}_mask.tif", geo.size0[0], geo.size0[1], geo.base_mpp,
                                                 lambda tx, ty, tw, th, d: parts.render(x + tx, y + ty, tw, th, d))
    res = Prediction(name, mode, n, len(cores), plan.tissue_mm2, {k: str(v) for k, v in files.items()},
                     seconds=time.perf_counter() - start)
    atomic_write_json(summary_path, {**asdict(res), "nuclei_per_mm2": res.per_mm2, "input": str(path),
                                     "summary": res.summary_line(), "settings": job})
    shutil.rmtree(parts.folder, ignore_errors=True)
    return res

