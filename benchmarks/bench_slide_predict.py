"""Whole-slide prediction (`histoclr predict`) throughput and peak memory, against the network forward
alone on the same tiles.

    .venv/bin/python -m benchmarks.bench_slide_predict [--model runs/instances/contour/best.pt] [--threads 2]

Cases, each in a fresh subprocess (so its peak RSS is its own):

* ``svs``: the real Aperio SVS (``../shared/data/slides/CMU-1-Small-Region.svs``, 0.499 um/px), a
  tissue region of it (``--svs-region``; the whole slide at the model's 0.25 um/px is ~100 tiles of
  512 px, too long for this CPU budget) through the same engine (``--region``: every tile, no tissue detection);
* ``synthetic 10k`` / ``synthetic 20k``: pyramidal TIFFs of 10240^2 and 20480^2 px at 0.25 um/px
  (:func:`histoclr.slides.synthetic.write_pyramid_tiff`, cached in ``--work-dir``), whole-slide mode
  (tissue found on the thumbnail), with 1 and 2 tissue boxes of 896^2 px, each inside 2 x 2 tiles: 4x the slide area,
  2x the tissue.

Per case: :func:`histoclr.seg.slide_predict.predict_input` as the CLI runs it (tissue, reads,
forward, post-processing, measurements, outlines, per-tile parts, GeoJSON / CSV / overlay), its
wall time and the process's peak RSS (``ru_maxrss``; the RSS after loading the model is given for
reference); then, in the same process, the same tiles (with their halo) read into memory, timed
(``read``), and the network forward alone on them (``sliding_window_predict``, same window,
overlap and batch). The rest (``predict_input`` - read - forward) is post-processing, stitching
and writing. ``--model``: a trained ``best.pt`` (its nuclei make the post-processing and the files
realistic); default a random DeepLabV3+ ResNet-18 at 0.25 um/px (speed of the network only).
Writes the section "Whole-slide prediction (histoclr predict)" of docs/benchmarks.md (``--no-doc``
to skip).
"""

from __future__ import annotations

import argparse
import json
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path

import torch

from histoclr.docs_sections import write_section
from histoclr.images import normalize_image
from histoclr.seg.model import build_seg_model, load_seg_checkpoint, save_seg_checkpoint
from histoclr.seg.postprocess import default_params
from histoclr.seg.predict import sliding_window_predict
from histoclr.seg.slide_predict import plan_input, predict_input, tile_reader
from histoclr.slides.reader import open_slide
from histoclr.slides.synthetic import write_pyramid_tiff

REPO = Path(__file__).resolve().parents[1]
SVS = REPO.parent / "shared" / "data" / "slides" / "CMU-1-Small-Region.svs"
SECTION = "Whole-slide prediction (histoclr predict)"
BOX = 896         # a tissue box inside 2 x 2 tiles of 512 px (64 px from their outer edges)
SYNTHETIC = {"synthetic 10k": (10240, [(2112, 2112, 2112 + BOX, 2112 + BOX)]),
             "synthetic 20k": (20480, [(2112, 2112, 2112 + BOX, 2112 + BOX),
                                       (12352, 14400, 12352 + BOX, 14400 + BOX)])}


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def slide_for(case: str, work: Path) -> Path:
    if case == "svs":
        return SVS
    side, boxes = SYNTHETIC[case]
    path = work / f"synthetic_{side}.tif"
    if not path.is_file():
        work.mkdir(parents=True, exist_ok=True)
        write_pyramid_tiff(path.with_suffix(".tmp.tif"), side, side, 0.25, boxes, levels=5, seed=1)
        path.with_suffix(".tmp.tif").rename(path)
    return path


def run_case(args) -> dict:
    """One case in this process: the pipeline, then read-only and forward-only on the same tiles."""
    torch.set_num_threads(args.threads)
    ck = load_seg_checkpoint(args.model_file)
    slide = slide_for(args.case, Path(args.work_dir))
    region = tuple(int(v) for v in args.svs_region.split(",")) if args.case == "svs" else None
    rss0 = rss_mib()
    t0 = time.perf_counter()
    res = predict_input(ck, slide, Path(args.work_dir) / "out", region=region, tile=args.tile, halo=args.halo,
                        batch_size=args.batch_size, overwrite=True, progress=False)
    total = time.perf_counter() - t0
    peak = rss_mib()
    with open_slide(slide) as reader:
        plan = plan_input(reader, slide, ck, region, tile=args.tile)
        read = tile_reader(reader, slide, plan.geo, args.halo)
        t0 = time.perf_counter()
        works = [read(c)[2] for c in plan.cores]
        read_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for w in works:
        sliding_window_predict(ck.model, normalize_image(w, ck.mean, ck.std), ck.window, 0.25, args.batch_size,
                               "cpu", ck.model.spec.target)
    fwd_s = time.perf_counter() - t0
    W, H = plan.geo.size0
    return {"case": args.case, "size": f"{W}x{H}", "mode": res.mode, "tiles": res.tiles, "nuclei": res.nuclei,
            "tissue_mm2": res.tissue_mm2, "total_s": total, "read_s": read_s, "forward_s": fwd_s,
            "rss_model_mib": rss0, "peak_rss_mib": peak,
            "work_px": int(sum((c[2] - c[0]) * (c[3] - c[1]) for c in plan.cores))}


def table(rows: list[dict]) -> str:
    out = [("| case | level-0 px | mode | tissue mm² | tiles | nuclei | wall s | tiles/s | forward alone s "
            "| read s | rest s | share not forward | peak RSS MiB (after model load) |"),
           "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        rest = r["total_s"] - r["forward_s"] - r["read_s"]
        out.append(f"| {r['case']} | {r['size']} | {r['mode']} | {r['tissue_mm2']:.2f} | {r['tiles']} | {r['nuclei']} "
                   f"| {r['total_s']:.1f} | {r['tiles'] / r['total_s']:.3f} | {r['forward_s']:.1f} | {r['read_s']:.2f} "
                   f"| {rest:.1f} | {100 * (1 - r['forward_s'] / r['total_s']):.0f}% "
                   f"| {r['peak_rss_mib']:.0f} ({r['rss_model_mib']:.0f}) |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="a trained best.pt (default: a random DeepLabV3+ ResNet-18)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tile", type=int, default=512)
    ap.add_argument("--halo", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--svs-region", default="800,1900,512,512", help="x,y,w,h (level-0 px) of the SVS")
    ap.add_argument("--cases", default="svs,synthetic 10k,synthetic 20k")
    ap.add_argument("--work-dir", default="/tmp/histoclr_bench_slide_predict")
    ap.add_argument("--note", default="", help="a sentence about the machine's load, added to the doc")
    ap.add_argument("--no-doc", action="store_true")
    ap.add_argument("--case", help=argparse.SUPPRESS)
    ap.add_argument("--model-file", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.case:
        print(json.dumps(run_case(args)))
        return []

    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    model_file, what = args.model, f"`{args.model}` (trained; its stored post-processing)"
    if model_file is None:
        torch.manual_seed(0)
        net = build_seg_model("resnet18", "deeplabv3plus", decoder_channels=128, target="contour")
        model_file = str(save_seg_checkpoint(work / "random.pt", net, mpp=0.25, window=192,
                                             postprocess=default_params("contour")))
        what = "a random DeepLabV3+ ResNet-18 (decoder 128, contour target, 0.25 um/px, 192 px windows)"
    ck = load_seg_checkpoint(model_file)
    rows = []
    for case in [c.strip() for c in args.cases.split(",") if c.strip()]:
        if case == "svs" and not SVS.is_file():
            print(f"skipping svs: {SVS} not found", file=sys.stderr)
            continue
        slide_for(case, work)                       # build synthetic slides outside the timed process
        cmd = [sys.executable, "-m", "benchmarks.bench_slide_predict", "--case", case, "--model-file", model_file,
               "--threads", str(args.threads), "--tile", str(args.tile), "--halo", str(args.halo),
               "--batch-size", str(args.batch_size), "--svs-region", args.svs_region, "--work-dir", str(work)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=REPO).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    body = [table(rows), ""]
    syn = {r["case"]: r for r in rows}
    if "synthetic 10k" in syn and "synthetic 20k" in syn:
        a, b = syn["synthetic 10k"], syn["synthetic 20k"]
        body.append(f"- 20k / 10k (4x the slide area): tissue area **{b['tissue_mm2'] / a['tissue_mm2']:.2f}x**, "
                    f"tiles {b['tiles'] / a['tiles']:.2f}x, wall time **{b['total_s'] / a['total_s']:.2f}x**, "
                    f"peak RSS **{b['peak_rss_mib'] / a['peak_rss_mib']:.2f}x** (above the model's RSS: "
                    f"{(b['peak_rss_mib'] - b['rss_model_mib']) / max(a['peak_rss_mib'] - a['rss_model_mib'], 1):.2f}x)")
    body.append("")
    body.append(
        f"Model: {what}; window {ck.window} px, overlap 0.25, batch {args.batch_size}, tiles of {args.tile} px "
        f"with a {args.halo} px halo at {ck.mpp} um/px, {args.threads} torch threads, CPU. `wall s` is "
        "`predict_input` from opening the slide to the last file (GeoJSON, CSV, overlay PNG, summary; no "
        "`--mask-tiff`); `forward alone` is the network on the same tiles (with their halo) already in memory; "
        "`read` reads those tiles once more; `rest` = wall - forward - read (post-processing, measurements, "
        "outlines, part files, GeoJSON/CSV/overlay). `share not forward` = 1 - forward / wall. The SVS row is "
        f"the tissue region `--region {args.svs_region}` of the real slide (the whole slide at 0.25 um/px is "
        "~100 tiles of 512 px, beyond this CPU budget); the synthetic rows are whole-slide runs (tissue on the "
        "thumbnail; a tile runs when any of it is tissue there). Peak RSS is the process's high-water mark after the run "
        "(torch and the model included). "
        "The synthetic slides' texture (pink with purple dots) holds nothing the trained model calls a nucleus, "
        "so their rows time tissue detection, reads, the forward and empty outputs; the SVS row, with real "
        "nuclei, shows what post-processing, measurements, outlines and the GeoJSON/CSV cost (`rest`). "
        "`--mask-tiff` is not timed: it renders every tile of the slide's pyramid, so its time grows with the "
        "slide's area, not its tissue.")
    if args.note:
        body.append("")
        body.append(args.note)
    if not args.no_doc:
        shown = [".venv/bin/python", "-m", "benchmarks.bench_slide_predict"]
        shown += ["--model", args.model] if args.model else []
        shown += [] if args.threads == 2 else ["--threads", str(args.threads)]
        write_section(SECTION, "\n".join(body), " ".join(shlex.quote(a) for a in shown))
    print("\n".join(body))
    return rows


if __name__ == "__main__":
    main()
