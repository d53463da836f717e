"""Benchmark `histoclr tile` on a large synthetic pyramidal TIFF against the bare-OpenSlide
floor and histolab's GridTiler, all in the same run.

    .venv/bin/python benchmarks/bench_tile.py [--size 20480] [--histolab-python /tmp/histolab-venv/bin/python]

The slide (JPEG tiles, 0.25 µm/px as a 40x scan, H&E-like texture on ~40 % of it) is cached in
/tmp/histoclr-bench/; it is tiled at 0.5 µm/px (224-px tiles read from pyramid level 1). Writes the section "Tiling (histoclr tile)" of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from histoclr.docs_sections import write_section

REPO = Path(__file__).resolve().parents[1]

CACHE = Path("/tmp/histoclr-bench")
SLIDE_MPP = 0.25
MPP = 0.5
LEVEL = 1  # 0.5 µm/px is level 1 of a 0.25 µm/px pyramid
TILE = 224

HISTOLAB_SCRIPT = r"""
import sys, time
from pathlib import Path
from histolab.slide import Slide
from histolab.tiler import GridTiler
slide_path, out = sys.argv[1], Path(sys.argv[2])
t0 = time.perf_counter()
slide = Slide(slide_path, processed_path=str(out))
GridTiler(tile_size=(224, 224), level=1, check_tissue=True, tissue_percent=50.0,
          pixel_overlap=0, prefix="", suffix=".png").extract(slide)  # its tiles are RGBA: no JPEG
print(time.perf_counter() - t0, len(list(out.rglob("*.png"))))
"""


def build_slide(size: int) -> Path:
    from histoclr.slides.synthetic import write_pyramid_tiff

    path = CACHE / f"synthetic_{size}_{SLIDE_MPP}mpp_jpeg.tif"
    if path.is_file():
        return path
    CACHE.mkdir(parents=True, exist_ok=True)
    s = size
    tissue = [(s // 10, s // 10, s // 2, s * 9 // 10),            # a large section
              (s * 6 // 10, s // 5, s * 9 // 10, s // 2)]         # and a smaller one
    t0 = time.perf_counter()
    tmp = path.with_suffix(".tmp.tif")
    write_pyramid_tiff(tmp, s, s, mpp=SLIDE_MPP, tissue=tissue, levels=5, compression="jpeg")
    tmp.rename(path)
    print(f"built {path} ({path.stat().st_size / 2**20:.0f} MiB) in {time.perf_counter() - t0:.0f} s")
    return path


def floor(path: Path) -> tuple[float, int]:
    """Bare OpenSlide.read_region over histoclr's whole grid: one process, no filter, no writes."""
    import openslide

    from histoclr.slides.tiler import grid

    slide = openslide.OpenSlide(str(path))
    w, h = slide.dimensions
    step0 = TILE * MPP / SLIDE_MPP
    xs, ys = grid(w, h, step0, step0)
    t0 = time.perf_counter()
    for y in ys:
        for x in xs:
            slide.read_region((int(x), int(y)), LEVEL, (TILE, TILE))
    return time.perf_counter() - t0, len(xs) * len(ys)


def histoclr_tile(path: Path, workers: int, out: Path, fmt: str = "jpeg") -> tuple[float, int]:
    """The whole command as a user runs it (process start, planning, tissue mask, JPEG writes)."""
    from histoclr.manifests.tiles import read_tile_manifest

    cmd = [sys.executable, "-m", "histoclr", "tile", str(path), "--mpp", str(MPP), "--tile-size",
           str(TILE), "--format", fmt, "--workers", str(workers), "--quiet", "--out", str(out)]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0, len(read_tile_manifest(out))


def histolab(path: Path, python: str, out: Path) -> tuple[float, int] | str:
    if not Path(python).is_file() or subprocess.run([python, "-c", "import histolab"], check=False,
                                                   capture_output=True).returncode != 0:
        return (f"not run: histolab is not importable with {python} (its own venv: python -m venv "
                "/tmp/histolab-venv && /tmp/histolab-venv/bin/pip install histolab)")
    script = out.parent / "histolab_run.py"
    script.write_text(HISTOLAB_SCRIPT)
    r = subprocess.run([python, str(script), str(path), str(out)], check=False, capture_output=True,
                       text=True)
    if r.returncode != 0:
        return f"failed: {r.stderr.strip().splitlines()[-1] if r.stderr.strip() else r.returncode}"
    dt, n = r.stdout.split()[-2:]
    return float(dt), int(n)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=20480, help="slide side in pixels (level 0)")
    ap.add_argument("--histolab-python", default="/tmp/histolab-venv/bin/python")
    ns = ap.parse_args()
    path = build_slide(ns.size)
    work = Path(tempfile.mkdtemp(prefix="bench_tile_"))
    try:
        f_s, grid_n = floor(path)
        print(f"floor: {grid_n} grid tiles in {f_s:.1f} s")
        results = {}
        for fmt, w in (("jpeg", 1), ("jpeg", 2), ("png", 1)):
            results[fmt, w] = histoclr_tile(path, w, work / f"{fmt}{w}", fmt)
            print(f"histoclr tile --format {fmt} --workers {w}: {results[fmt, w][1]} tiles in "
                  f"{results[fmt, w][0]:.1f} s")
        hl = histolab(path, ns.histolab_python, work / "histolab")
        print(f"histolab: {hl}")
    finally:
        shutil.rmtree(work, ignore_errors=True)

    kept = results["jpeg", 1][1]
    rows = [("| method | workers | wall (s) | tiles written | grid positions/s | × floor (same grid) | "
             "written tiles/s | × floor (per written tile) |"),
            "|---|---|---|---|---|---|---|---|",
            (f"| floor: bare `OpenSlide.read_region`, whole grid, no filter, no writes | 1 | {f_s:.1f} | "
             f"0 (reads {grid_n}) | {grid_n / f_s:.0f} | 1.00 | {grid_n / f_s:.0f} | 1.00 |")]
    for (fmt, w), (dt, n) in results.items():
        rows.append(f"| `histoclr tile --format {fmt}` (whole command) | {w} | {dt:.1f} | {n} | "
                    f"{grid_n / dt:.0f} | {f_s / dt:.2f} | {n / dt:.0f} | {(n / dt) / (grid_n / f_s):.2f} |")
    if isinstance(hl, tuple):
        dt, n = hl
        rows.append(f"| histolab 0.7 `GridTiler` (level 1, 224 px, tissue ≥ 50 %, PNG) | 1 | {dt:.1f} | {n} | "
                    f"{grid_n / dt:.0f} | {f_s / dt:.2f} | {n / dt:.0f} | {(n / dt) / (grid_n / f_s):.2f} |")
    else:
        rows.append(f"| histolab `GridTiler` | 1 | – | – | – | – | – | {hl} |")
    body = "\n".join(rows) + f"""

Slide: synthetic pyramidal TIFF {ns.size} x {ns.size} px at {SLIDE_MPP} µm/px (5 levels, 256-px
JPEG tiles, H&E-like texture on ~40 % of it; cached in {CACHE}), tiled at {MPP} µm/px into
{TILE}-px tiles (read from level {LEVEL}, no resize): {grid_n} grid positions, {kept} with ≥ 50 % tissue. "× floor (same
grid)" compares the time to get through the slide's grid (histoclr reads only tissue tiles, the
floor reads every position); "× floor (per written tile)" compares the rate per tile read, which
for histoclr also pays the JPEG encode (quality 90), the atomic write, the tissue mask, the QC
picture and the process start. histolab writes PNG (its RGBA tiles cannot be saved as JPEG), so
compare it with the histoclr PNG row; it runs in its own venv (/tmp/histolab-venv). Each number is one run on a CPU shared with other jobs, so expect
noise of tens of percent.
"""
    cmd = "python benchmarks/bench_tile.py" + (f" --size {ns.size}" if ns.size != 20480 else "")
    doc = write_section("Tiling (histoclr tile)", body, cmd)
    print(body)
    print(f"wrote {doc}")


if __name__ == "__main__":
    main()
