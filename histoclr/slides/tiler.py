"""Cut slides into tissue tiles: plan each slide (resolution, tissue mask, grid), read and write
its tiles in row chunks on N processes, and rebuild the manifests from per-slide fragments.

Output folder::

    tile_options.json          the options that decide the tiles (a re-run must match them)
    tiles/<slide_id>/<slide_id>_x<X>_y<Y>.png   X, Y: level-0 pixels of the top-left corner
    qc/<slide_id>.png          thumbnail + tissue mask + kept tiles
    .parts/<slide_id>.json     written last for a finished slide: its slides.csv and tiles.csv rows
    tiles.csv, slides.csv      rebuilt from the fragments (see histoclr.manifests.tiles)

Every file is written atomically; a slide without a fragment is redone from scratch, so an
interrupted and resumed run ends with exactly the files of an uninterrupted one.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import math
import multiprocessing
import shutil
import sys
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from histoclr.config.tile import TileConfig
from histoclr.errors import HistoclrError, InputFileError
from histoclr.io import atomic_path, atomic_write_json, atomic_write_text
from histoclr.manifests.tiles import MANIFEST_NAME, SLIDES_NAME, format_slides_csv, format_tiles_csv
from histoclr.progress import progress_bar
from histoclr.slides.inputs import SlideSpec
from histoclr.slides.reader import level_for_mpp, open_slide
from histoclr.slides.tissue import region_fractions, tissue_mask
from histoclr.slides.qc import save_qc

OPTIONS_NAME = "tile_options.json"
PARTS_DIR = ".parts"
CHUNK_TILES = 64  # tiles per task: whole grid rows, at least this many tiles


@dataclass
class Geometry:
    """How one slide is cut: tiles of ``read_size`` px at ``level``, written at ``out_size`` px."""

    level: int
    read_size: int
    out_size: int
    footprint0: float      # tile side in level-0 pixels
    step0: float           # grid step in level-0 pixels
    tile_mpp: float | None  # µm/px of the written tiles


@dataclass
class SlidePlan:
    spec: SlideSpec
    row: dict                      # the slides.csv row (status filled in at the end)
    geometry: Geometry | None = None
    tiles: list[tuple[int, int, float]] = field(default_factory=list)  # (x0, y0, tissue fraction)
    error: str | None = None


@dataclass
class TilingResult:
    slides: list[dict]   # slides.csv rows, sorted by slide_id
    tiles: int           # tiles in the manifest
    ok: int
    failed: int
    skipped: int         # slides already finished by an earlier run


# ------------------------------------------------------------------ geometry

def slide_geometry(reader, cfg: TileConfig, spec: SlideSpec) -> tuple[Geometry, float | None, str]:
    """The cut of one slide, the base µm/px used and its source (metadata | assumed | none)."""

    if reader.mpp is not None:
        base, source = reader.mpp, "metadata"
    elif cfg.assume_mpp is not None:
        base, source = cfg.assume_mpp, "assumed"
    else:
        base, source = None, "none"
    if cfg.mpp is not None:
        if base is None:
            raise InputFileError(spec.given, "no resolution metadata (µm/px) in the file: pass "
                                 "--assume-mpp MPP to tile it at --mpp, or tile by --level")
        level, read_size = level_for_mpp(reader.level_downsamples, base, cfg.mpp, cfg.tile_size)
        scale0 = cfg.mpp / base
        tile_mpp: float | None = cfg.mpp
    else:
        level = cfg.level
        if level >= reader.level_count:
            raise InputFileError(spec.given, f"--level {level} asked, but the slide has "
                                 f"{reader.level_count} level(s) (0..{reader.level_count - 1})")
        read_size = cfg.tile_size
        scale0 = reader.level_downsamples[level]
        tile_mpp = base * scale0 if base is not None else None
    geo = Geometry(level=level, read_size=read_size, out_size=cfg.tile_size,
                   footprint0=cfg.tile_size * scale0, step0=cfg.step * scale0, tile_mpp=tile_mpp)
    return geo, base, source


def grid(width: int, height: int, footprint0: float, step0: float) -> tuple[np.ndarray, np.ndarray]:
    """Level-0 x and y of the tiles that fit entirely in ``width x height`` (1-D int arrays)."""
    def axis(n: int) -> np.ndarray:
        if n + 1e-6 < footprint0:
            return np.zeros(0, np.int64)
        count = math.floor((n - footprint0) / step0 + 1e-6) + 1
        return np.floor(np.arange(count) * step0 + 0.5).astype(np.int64)

    return axis(width), axis(height)


# ------------------------------------------------------------------ worker side

_READERS: dict[str, object] = {}


def _reader(path: Path):
    """An open reader per process (the last two slides used), reused across row chunks."""

    key = str(path)
    r = _READERS.get(key)
    if r is None:
        while len(_READERS) >= 2:
            _READERS.pop(next(iter(_READERS))).close()
        r = _READERS[key] = open_slide(path)
    return r


def _forget_reader(path: Path) -> None:
    r = _READERS.pop(str(path), None)
    if r is not None:
        r.close()


def _reason(e: BaseException) -> str:
    msg = str(e).splitlines()[0] if str(e) else ""
    return f"{type(e).__name__}: {msg}" if msg else type(e).__name__


def _one_line(spec: SlideSpec, e: BaseException) -> str:
    return str(e) if isinstance(e, InputFileError) else f"{spec.given}: {_reason(e)}"


def _file_facts(path: Path) -> dict:
    try:
        st = path.stat()
    except OSError:
        return {"file_size": "", "file_mtime": ""}
    mtime = datetime.fromtimestamp(st.st_mtime, timezone.utc).isoformat(timespec="microseconds")
    return {"file_size": st.st_size, "file_mtime": mtime}


def plan_slide(spec: SlideSpec, cfg: TileConfig, out: Path) -> SlidePlan:
    """Open a slide, choose the level, detect tissue, lay the grid; write its QC picture."""

    row = {"slide_id": spec.slide_id, "slide_path": spec.given, **_file_facts(spec.path),
           "width": "", "height": "", "mpp": "", "mpp_source": "", "vendor": "", "tile_count": 0,
           "status": "failed", "error": ""}
    plan = SlidePlan(spec=spec, row=row)
    try:
        reader = _reader(spec.path)
        W, H = reader.dimensions
        row.update(width=W, height=H, vendor=reader.vendor)
        geo, base, source = slide_geometry(reader, cfg, spec)
        row.update(mpp="" if base is None else round(base, 6), mpp_source=source)
        xs, ys = grid(W, H, geo.footprint0, geo.step0)
        longest = max(W, H) * cfg.tissue.px_per_tile / geo.footprint0
        thumb = reader.thumbnail(int(min(max(longest, 512), cfg.tissue.thumbnail_size)))
        sx, sy = thumb.shape[1] / W, thumb.shape[0] / H
        tile_px = geo.footprint0 * sx * geo.footprint0 * sy
        mask = tissue_mask(thumb, tuple(cfg.tissue.saturation_range), cfg.tissue.pen_filter,
                           min_object_px=max(1, int(cfg.tissue.min_object_tiles * tile_px)),
                           max_hole_px=max(1, int(cfg.tissue.max_hole_tiles * tile_px)))
        gx, gy = np.meshgrid(xs, ys)  # row-major: y outer, x inner
        gx, gy = gx.ravel(), gy.ravel()
        boxes = np.stack([gx * sx, gy * sy, (gx + geo.footprint0) * sx, (gy + geo.footprint0) * sy], 1)
        frac = region_fractions(mask.tissue, boxes) if len(boxes) else np.zeros(0)
        keep = frac >= cfg.min_tissue - 1e-9
        plan.geometry = geo
        plan.tiles = [(int(x), int(y), round(float(f), 4)) for x, y, f in zip(gx[keep], gy[keep], frac[keep])]
        if cfg.qc:
            save_qc(out / "qc" / f"{spec.slide_id}.png", thumb, mask, boxes[keep],
                    title=f"{spec.slide_id}: {len(plan.tiles)} tiles")
    except Exception as e:  # noqa: BLE001  any failure of one slide fails that slide only
        plan.error = _one_line(spec, e)
        _forget_reader(spec.path)
    return plan


def _resized(im, geo: Geometry):
    """The tile at ``out_size`` px (area-averaged when more pixels were read)."""
    from PIL import Image

    if geo.read_size != geo.out_size:
        down = geo.read_size > geo.out_size
        im = im.resize((geo.out_size, geo.out_size),
                       Image.Resampling.BOX if down else Image.Resampling.BICUBIC)
    return im


def tile_path(slide_id: str, x: int, y: int, fmt: str) -> str:
    """Path of a tile relative to the output folder."""
    ext = "jpg" if fmt == "jpeg" else "png"
    return f"tiles/{slide_id}/{slide_id}_x{x}_y{y}.{ext}"


def write_tiles(spec: SlideSpec, geo: Geometry, tiles: Sequence[tuple[int, int, float]],
                cfg: TileConfig, out: Path) -> tuple[list[dict], str | None]:
    """Read and write ``tiles`` of one slide; returns their tiles.csv rows, or the error line."""
    rows = []
    try:
        reader = _reader(spec.path)
        for x, y, frac in tiles:
            try:
                im = reader.read_region_image((x, y), geo.level, (geo.read_size, geo.read_size))
            except Exception as e:  # noqa: BLE001  OpenSlide/tifffile/PIL errors on bad data
                raise InputFileError(spec.given, f"cannot read the region at level {geo.level}, "
                                     f"x={x}, y={y} ({_reason(e)})") from None
            im = _resized(im, geo)
            rel = tile_path(spec.slide_id, x, y, cfg.format)
            with atomic_path(out / rel) as tmp:
                if cfg.format == "jpeg":
                    im.save(tmp, format="JPEG", quality=cfg.jpeg_quality)
                else:
                    im.save(tmp, format="PNG", compress_level=1)
            rows.append({"slide_id": spec.slide_id, "slide_path": spec.given, "x": x, "y": y,
                         "level": geo.level, "read_size": geo.read_size, "out_size": geo.out_size,
                         "mpp": "" if geo.tile_mpp is None else round(geo.tile_mpp, 6),
                         "tissue_fraction": frac, "tile_path": rel})
    except Exception as e:  # noqa: BLE001  reported as this slide's one-line error
        _forget_reader(spec.path)
        return [], _one_line(spec, e)
    return rows, None


# ------------------------------------------------------------------ main side

def check_options(out: Path, cfg: TileConfig) -> None:
    """Record the tiling options in ``out``, or fail if ``out`` holds tiles made with others.

    Options recorded by a run in which no slide was tiled (e.g. all failed for lack of
    resolution metadata) are replaced: re-running with ``--assume-mpp`` into the same ``out`` works.
    """
    path = out / OPTIONS_NAME
    want = json.loads(json.dumps(cfg.output_options(), sort_keys=True))
    if path.is_file():
        try:
            have = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise HistoclrError(f"{path}: unreadable ({e}); delete it to start over") from None
        if have != want and not any((out / PARTS_DIR).glob("*.json")):
            atomic_write_json(path, want)   # no slide was tiled with the old options (all failed)
            return
        if have != want:
            diffs = _diff(have, want)
            raise HistoclrError(
                f"{out} holds tiles made with other options ({'; '.join(diffs)}): use another "
                f"--out, the same options, or delete {out} to start over")
        return
    if (out / MANIFEST_NAME).exists() or (out / PARTS_DIR).exists():
        raise HistoclrError(f"{out} holds tiles but no {OPTIONS_NAME}: use another --out, "
                            f"or delete {out} to start over")
    atomic_write_json(path, want)


def _diff(have: dict, want: dict, prefix: str = "") -> list[str]:
    out = []
    for k in sorted(set(have) | set(want)):
        a, b = have.get(k), want.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _diff(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k}: {a} before, {b} now")
    return out


def _finished(out: Path, spec: SlideSpec) -> dict | None:
    """The fragment of a slide finished earlier, if it is still valid for the file on disk."""
    path = out / PARTS_DIR / f"{spec.slide_id}.json"
    try:
        frag = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    facts = _file_facts(spec.path)
    row = frag.get("slide", {})
    if (row.get("slide_path") != spec.given or row.get("file_size") != facts["file_size"]
            or row.get("file_mtime") != facts["file_mtime"]):
        return None
    if not all((out / t["tile_path"]).is_file() for t in frag.get("tiles", [])):
        return None
    return frag


def _clear_slide(out: Path, spec: SlideSpec) -> None:
    """Remove what an earlier, unfinished attempt at this slide left (tiles, QC, fragment)."""
    shutil.rmtree(out / "tiles" / spec.slide_id, ignore_errors=True)
    for p in (out / "qc" / f"{spec.slide_id}.png", out / PARTS_DIR / f"{spec.slide_id}.json"):
        p.unlink(missing_ok=True)


def _remove_temp_files(out: Path) -> None:
    """Temp files of writers killed part-way (atomic_path names them ``.<stem>.*.tmp*``)."""
    for folder in (out, out / "qc", out / PARTS_DIR):
        if folder.is_dir():
            for p in folder.glob(".*.tmp*"):
                p.unlink(missing_ok=True)


def _chunks(tiles: list[tuple[int, int, float]]) -> list[list[tuple[int, int, float]]]:
    """Whole grid rows (same y), grouped until at least CHUNK_TILES tiles."""
    out: list[list] = []
    cur: list = []
    for i, t in enumerate(tiles):
        cur.append(t)
        row_ends = i + 1 == len(tiles) or tiles[i + 1][1] != t[1]
        if row_ends and len(cur) >= CHUNK_TILES:
            out.append(cur)
            cur = []
    if cur:
        out.append(cur)
    return out


def _default_log(msg: str) -> None:
    from tqdm import tqdm

    tqdm.write(msg, file=sys.stderr)


def tile_slides(specs: Sequence[SlideSpec], cfg: TileConfig, out: str | Path, workers: int = 1,
                progress: bool = True, log: Callable[[str], None] = _default_log) -> TilingResult:
    """Tile ``specs`` into ``out``; finished slides (from an earlier run) are skipped.

    A slide that cannot be read is reported through ``log`` as one line and recorded as
    failed in slides.csv; the others are tiled. Writes tiles.csv and slides.csv at the end.

    Raises:
        HistoclrError: ``out`` holds tiles made with other options.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    check_options(out, cfg)
    _remove_temp_files(out)

    done: dict[str, dict] = {}
    failed: dict[str, dict] = {}
    todo = []
    for spec in specs:
        frag = _finished(out, spec)
        if frag is not None:
            done[spec.slide_id] = frag
        else:
            _clear_slide(out, spec)
            todo.append(spec)
    skipped = len(done)

    bar = progress_bar(total=0, unit="tile", desc="tiling", dynamic_ncols=True, disable=not progress,
                       file=sys.stderr, postfix={"slides": f"{skipped}/{len(specs)}"})
    plans: dict[str, SlidePlan] = {}
    rows: dict[str, list[dict]] = {}
    pending: dict[str, int] = {}
    errors: dict[str, str] = {}

    def fail(plan: SlidePlan, msg: str) -> None:
        _clear_slide(out, plan.spec)
        plan.row.update(status="failed", error=msg, tile_count=0)
        failed[plan.spec.slide_id] = plan.row
        log(f"error: {msg}")

    def finish(plan: SlidePlan) -> None:
        sid = plan.spec.slide_id
        if sid in errors:
            fail(plan, errors[sid])
        else:
            tiles = sorted(rows.pop(sid, []), key=lambda r: (r["y"], r["x"]))
            plan.row.update(status="ok", error="", tile_count=len(tiles))
            frag = {"slide": plan.row, "tiles": tiles}
            atomic_write_text(out / PARTS_DIR / f"{sid}.json", json.dumps(frag, separators=(",", ":")))
            done[sid] = frag
        bar.set_postfix(slides=f"{len(done) + len(failed)}/{len(specs)}", refresh=False)

    def handle(kind: str, sid: str, result) -> list[tuple]:
        """Record a finished task; return the tasks it unlocks as (fn, args, kind, sid)."""
        if kind == "plan":
            plan = plans[sid] = result
            if plan.error:
                fail(plan, plan.error)
                return []
            bar.total += len(plan.tiles)
            bar.refresh()
            chunks = _chunks(plan.tiles)
            pending[sid], rows[sid] = len(chunks), []
            if not chunks:
                finish(plan)
            return [(write_tiles, (plan.spec, plan.geometry, c, cfg, out), "tiles", sid) for c in chunks]
        chunk_rows, err = result
        if err and sid not in errors:
            errors[sid] = err
        rows[sid] += chunk_rows
        bar.update(len(chunk_rows))
        pending[sid] -= 1
        if pending[sid] == 0:
            finish(plans[sid])
        return []

    tasks = [(plan_slide, (s, cfg, out), "plan", s.slide_id) for s in todo]
    try:
        if workers == 1:  # in this process, first in first out: plans, then row chunks
            queue = deque(tasks)
            while queue:
                fn, args, kind, sid = queue.popleft()
                queue.extend(handle(kind, sid, fn(*args)))
        else:
            with cf.ProcessPoolExecutor(max_workers=workers,
                                        mp_context=multiprocessing.get_context("forkserver")) as pool:
                futures = {pool.submit(fn, *args): (kind, sid) for fn, args, kind, sid in tasks}
                try:
                    while futures:
                        finished, _ = cf.wait(list(futures), return_when=cf.FIRST_COMPLETED)
                        for fut in finished:
                            kind, sid = futures.pop(fut)
                            for fn, args, k, i in handle(kind, sid, fut.result()):
                                futures[pool.submit(fn, *args)] = (k, i)
                except BaseException:
                    pool.shutdown(wait=True, cancel_futures=True)
                    raise
    finally:
        bar.close()

    slide_rows = [done[s.slide_id]["slide"] if s.slide_id in done else failed[s.slide_id] for s in specs]
    tile_rows = [t for s in specs if s.slide_id in done for t in done[s.slide_id]["tiles"]]
    atomic_write_text(out / MANIFEST_NAME, format_tiles_csv(tile_rows))
    atomic_write_text(out / SLIDES_NAME, format_slides_csv(slide_rows))
    return TilingResult(slides=slide_rows, tiles=len(tile_rows), ok=len(done), failed=len(failed),
                        skipped=skipped)

