"""Per-core throughput of the `histology` views at 224 px from the tiler's JPEG and PNG tiles, step by step.

Tiles: written by the real tiler (:func:`histoclr.slides.tiler.tile_slides`, 224 px at 0.5 um/px)
from the MoNuSeg images under ../shared/data (a synthetic slide when that folder is absent), once
as JPEG (quality 90) and once as PNG. Everything runs in ONE process pinned to ONE CPU core
(``os.sched_setaffinity``), torch threads 1 (what a DataLoader worker gets):

1. steps: decode (``TileDataset.try_read``, once per tile and shared by its two views), then each
   transform of the recipe called on its own, in order, timed per view;
2. item: what a DataLoader worker runs per item, ``SeededDataset(TileDataset(views))[(i, seed)]``
   (per-item seeding, decode, two views through the albumentations Compose);
3. loader: the trainer's own DataLoader with one worker, batch 64, main process and worker pinned
   to the same core (adds collation and the hand-over between processes).

"before" is the data path as it was (albumentations' own ``HEStain`` / ``RandomRotate90`` /
``Normalize``, i.e. ``fast_ops=False``; Pillow decode; ``torch.manual_seed`` per item), "fast ops
only" the shipped recipe with that old decode and seeding, "after" everything as shipped, "uint8"
after with ``normalize=False`` (uint8 views, normalised by the trainer on its device); rounds
interleave them in the same run and the median of the rounds is reported.

    .venv/bin/python benchmarks/bench_views.py
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from unittest import mock

import torch

from histoclr.docs_sections import write_section

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("HISTOCLR_SHARED_DATA", REPO.parent / "shared" / "data"))
MONUSEG_MPP = 0.2527
STEP_OF = {"RandomResizedCrop": "crop + resize", "HorizontalFlip": "flips + rot90",
           "VerticalFlip": "flips + rot90", "RandomRotate90": "flips + rot90",
           "FastRandomRotate90": "flips + rot90", "HEStain": "HEStain", "FastHEStain": "HEStain",
           "ColorJitter": "colour jitter", "GaussianBlur": "blur + grayscale", "ToGray": "blur + grayscale",
           "Normalize": "normalise + to-tensor", "FastNormalize": "normalise + to-tensor",
           "ToTensorV2": "normalise + to-tensor"}
STEPS = ["decode", "crop + resize", "flips + rot90", "HEStain", "colour jitter", "blur + grayscale",
         "normalise + to-tensor"]


def make_tiles(out: Path, fmt: str, source: str = "auto", n_images: int = 17, tile_size: int = 224) -> Path:
    """Tile manifest folder ``out`` (``tiles.csv``) written by the real tiler at 0.5 um/px.

    ``source``: ``monuseg`` (the unlabelled MoNuSeg images, ``n_images`` of them, at 0.2527 um/px),
    ``synthetic`` (one synthetic pyramidal TIFF with H&E-like tissue), or ``auto`` (MoNuSeg when
    ../shared/data has it). A folder that already holds a ``tiles.csv`` is reused.
    """
    if (out / "tiles.csv").is_file():
        return out
    from histoclr.config.tile import TileConfig
    from histoclr.slides.inputs import find_slides
    from histoclr.slides.tiler import tile_slides

    images = sorted((SHARED / "monuseg2018" / "unlabeled" / "images").glob("*.tif"))
    if source == "monuseg" or (source == "auto" and images):
        if not images:
            raise SystemExit(f"no MoNuSeg images under {SHARED}")
        inputs = images[:n_images]
    else:
        from histoclr.slides.synthetic import write_pyramid_tiff

        slide = out.parent / "synthetic_slide.tif"
        if not slide.is_file():
            out.parent.mkdir(parents=True, exist_ok=True)
            side = 8192
            write_pyramid_tiff(slide, side, side, 0.25, [(256, 256, side - 256, side // 2),
                                                         (1024, side // 2 + 256, side - 1024, side - 512)],
                               levels=3)
        inputs = [slide]
    cfg = TileConfig(tile_size=tile_size, mpp=0.5, assume_mpp=MONUSEG_MPP, format=fmt, qc=False)
    tile_slides(find_slides(inputs), cfg, out, workers=1, progress=False, log=lambda msg: None)
    return out


def _legacy_seed_everything(seed: int) -> None:
    """The per-item seeding before issue 18's second pass: ``torch.manual_seed`` (CPU and, lazily,
    CUDA: a stack trace recorded on every call while CUDA is not initialised)."""
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@contextlib.contextmanager
def legacy_data_path():
    """The data path as it was before: Pillow decodes every tile and each item seeds torch with
    ``torch.manual_seed``. DataLoader workers forked inside inherit the patches."""
    with mock.patch("histoclr.images._decode_rgb_opencv", return_value=None), \
            mock.patch("histoclr.ssl.trainer._seed_everything", _legacy_seed_everything):
        yield


def describe_tiles(folder: Path) -> str:
    from histoclr.pretrain.dataset import load_tiles

    t = load_tiles([folder])
    return f"{len(t)} tiles from {t['slide_id'].nunique()} images"


def dataset_for(folder: Path, transform):
    from histoclr.pretrain.dataset import TileDataset, load_tiles

    return TileDataset.from_table(load_tiles([folder]), transform)


def time_steps(dataset, compose, n_tiles: int, n_views: int = 2) -> dict[str, float]:
    """CPU seconds per VIEW of each step (decode shared by the ``n_views`` views of a tile)."""
    acc: dict[str, float] = defaultdict(float)
    transforms = list(compose.transforms)
    for i in range(n_tiles):
        t0 = time.process_time()
        img = dataset.try_read(i % len(dataset))
        acc["decode"] += time.process_time() - t0
        for _ in range(n_views):
            x = img
            for tr in transforms:
                t0 = time.process_time()
                x = tr(image=x)["image"]
                acc[STEP_OF.get(type(tr).__name__, type(tr).__name__)] += time.process_time() - t0
    return {k: v / (n_tiles * n_views) for k, v in acc.items()}


def time_items(dataset, n_tiles: int, seed: int = 0) -> tuple[float, float]:
    """(CPU seconds, wall seconds) per view of ``SeededDataset(dataset)[(i, seed_i)]`` (two views per item)."""
    from histoclr.ssl.trainer import SeededDataset, sample_seed

    seeded = SeededDataset(dataset)
    keys = [(i % len(dataset), sample_seed(seed, 0, i)) for i in range(n_tiles)]
    # as in a DataLoader worker: SeededDataset skips saving/restoring the global RNG states there
    with mock.patch("torch.utils.data.get_worker_info", return_value=object()):
        c0, t0 = time.process_time(), time.perf_counter()
        for k in keys:
            views = seeded[k]
        cpu, wall = time.process_time() - c0, time.perf_counter() - t0
    assert len(views) == 2 and views[0].shape[-1] > 0
    return cpu / (2 * n_tiles), wall / (2 * n_tiles)


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Cycle(torch.utils.data.Dataset):
    """``dataset`` repeated to ``n`` items (``.dataset`` keeps the views reachable for seeding)."""

    def __init__(self, dataset, n: int):
        self.dataset, self.n = dataset, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        return self.dataset[i % len(self.dataset)]


def loader_rate(dataset, batch_size: int, batches: int, image_size: int) -> float:
    """Views per CPU second of the worker, per CPU second of worker + main process, and per wall
    second, of the trainer's DataLoader with one worker (after one warm-up batch)."""
    from histoclr.config.ssl import SSLConfig, TrainConfig, ViewsConfig
    from histoclr.ssl.trainer import EpochSampler, SimCLRTrainer

    dataset = Cycle(dataset, batch_size * (batches + 1))
    cfg = SSLConfig(views=ViewsConfig(recipe="histology", image_size=image_size),
                    train=TrainConfig(batch_size=batch_size, num_workers=1, device="cpu", prefetch_factor=2,
                                      persistent_workers=False))
    trainer = SimCLRTrainer(cfg, dataset)
    loader = trainer._build_loader(EpochSampler(dataset, 1, 0, 0, batch_size), torch.device("cpu"))
    it = iter(loader)
    next(it)
    worker = it._workers[0].pid       # torch's worker process (private attribute, Linux)
    w0, m0, t0 = _cpu_seconds(worker), _cpu_seconds(os.getpid()), time.perf_counter()
    for _ in range(batches):
        next(it)
    w, m, wall = _cpu_seconds(worker) - w0, _cpu_seconds(os.getpid()) - m0, time.perf_counter() - t0
    del it
    views = 2 * batch_size * batches
    return views / w, views / (w + m), views / wall


def verdict(item_cpu: dict, decode: dict, loader_worker: dict | None, loader_uint8: dict | None = None,
            target: float = 200) -> str:
    """One paragraph: the after rates against ``target`` views/s per core and where the time goes.

    ``item_cpu``/``decode``: CPU ms per view by format (after); ``loader_worker``: views per worker
    CPU second by format (after), or None.
    """
    parts = []
    for f, ms in item_cpu.items():
        rate = 1e3 / ms
        text = (f"{f.upper()} {rate:.0f} views per CPU second ({'meets' if rate >= target else 'below'} the "
                f"{target:.0f} target; decode {decode[f]:.2f} of its {ms:.2f} ms per view")
        if loader_worker:
            extra = 1e3 / loader_worker[f] - ms
            text += f"; collation into shared memory in the DataLoader worker adds {extra:.2f} ms"
        if loader_uint8:
            rate_u8 = loader_uint8[f]
            text += (f"; in the DataLoader worker {loader_worker[f]:.0f} views per CPU second with float views, "
                     f"{rate_u8:.0f} with uint8 views ({'meets' if rate_u8 >= target else 'below'} the target)")
        parts.append(text + ")")
    return ("After, per free core: " + "; ".join(parts) + ". The rest of a view is crop, flips, HEStain, "
            "colour jitter, blur and normalisation at about 0.1-0.6 ms each (table), plus the albumentations "
            "Compose bookkeeping.")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiles", type=int, default=48, help="tiles per measurement (two views each)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved before/after rounds (median reported)")
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--source", choices=["auto", "monuseg", "synthetic"], default="auto")
    ap.add_argument("--loader-batches", type=int, default=3, help="timed DataLoader batches of 64 (0: skip)")
    ap.add_argument("--cache", type=Path, default=None, help="keep the tiles here (default: a temporary folder)")
    ap.add_argument("--no-doc", action="store_true", help="print the table only")
    args = ap.parse_args()

    from histoclr.ssl.augment import MultiViewTransform, histology_views

    core = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {core})
    torch.set_num_threads(1)
    load_start = os.getloadavg()[0]
    # before: albumentations' own ops, Pillow decode, torch.manual_seed per item; after: as shipped
    # fast ops only: the fast ops with the old decode and seeding (the state after the first pass)
    # uint8: the recipe with normalize=False (the GPU config), normalised by the trainer on its device
    variants = {"before": ({"fast_ops": False}, legacy_data_path), "fast ops only": ({}, legacy_data_path),
                "after": ({}, contextlib.nullcontext), "uint8": ({"normalize": False}, contextlib.nullcontext)}
    with tempfile.TemporaryDirectory() as tmp:
        root = args.cache or Path(tmp)
        folders = {fmt: make_tiles(root / f"tiles_{fmt}_{args.source}", fmt, args.source)
                   for fmt in ("jpeg", "png")}
        origin = describe_tiles(folders["png"])
        steps: dict = defaultdict(list)     # (fmt, variant) -> [per-round dict]
        items: dict = defaultdict(list)
        loaders: dict = defaultdict(list)
        for r in range(args.rounds):
            for fmt, folder in folders.items():
                for name, (kw, data_path) in variants.items():
                    compose = histology_views(args.image_size, **kw)
                    ds = dataset_for(folder, MultiViewTransform(compose, 2))
                    with data_path():
                        time_steps(ds, compose, 2)                          # warm-up (imports, caches)
                        steps[fmt, name].append(time_steps(ds, compose, args.tiles))
                        items[fmt, name].append(time_items(ds, args.tiles, seed=r))
                        if args.loader_batches and r == 0:
                            loaders[fmt, name].append(loader_rate(ds, 64, args.loader_batches, args.image_size))
                    print(f"round {r + 1} {fmt} {name}: {1e3 * items[fmt, name][-1][0]:.2f} CPU ms/view", flush=True)
    load_end = os.getloadavg()[0]

    cols = [(fmt, name) for fmt in folders for name in variants]
    med = {c: {s: 1e3 * statistics.median(d.get(s, 0.0) for d in steps[c]) for s in STEPS} for c in cols}
    item_cpu = {c: 1e3 * statistics.median(x[0] for x in items[c]) for c in cols}
    item_wall = {c: 1e3 * statistics.median(x[1] for x in items[c]) for c in cols}

    def row(label: str, values, fmt: str = "{:.2f}") -> str:
        return f"| {label} | " + " | ".join(fmt.format(v) for v in values) + " |"

    body = [(f"`histology` recipe at {args.image_size} px (crop scale 0.3-1, flips, rot90, HEStain p 0.8, "
             f"colour jitter p 0.8, blur p 0.3), two views per tile; tiles: {origin}, written by "
             f"`histoclr tile` at 0.5 um/px as JPEG (quality 90) and PNG. One process pinned to one core "
             f"(core {core}), torch threads 1; {args.tiles} tiles ({2 * args.tiles} views) per measurement, "
             f"median of {args.rounds} interleaved rounds. before = the data path as it was: albumentations' own "
             f"`HEStain`, `RandomRotate90` and `Normalize` (`fast_ops=False`), tiles decoded by Pillow, and "
             f"`torch.manual_seed` per item; after = as shipped: `FastHEStain`, `FastRandomRotate90`, "
             f"`FastNormalize` (same random draws, images within one grey level per op), tiles decoded by "
             f"OpenCV (the same pixels), and only torch's CPU generator seeded per item (`torch.manual_seed` "
             f"also queues a CUDA seed, recording a stack trace each call while CUDA is not initialised); "
             f"fast ops only = the fast ops with the old decode and seeding; uint8 = after with `normalize: "
             f"false` (the GPU config): uint8 views, which the trainer normalises on its device. "
             "Times are CPU time of the process (`time.process_time`, so other jobs on the shared core do "
             "not count) unless marked wall."), "",
            "| step (CPU ms per view) | " + " | ".join(f"{f.upper()} {n}" for f, n in cols) + " |",
            "|---|" + "---:|" * len(cols)]
    for s in STEPS:
        body.append(row("decode (once per tile, / 2 views)" if s == "decode" else s, [med[c][s] for c in cols]))
    body.append(row("sum of the steps", [sum(med[c].values()) for c in cols]))
    body.append(row("**whole item** (`SeededDataset[(i, seed)]` as in a worker: seeding + decode + 2 views)",
                    [item_cpu[c] for c in cols], "**{:.2f}**"))
    body.append(row("**views per CPU second** (whole item) = views/s per free core",
                    [1e3 / item_cpu[c] for c in cols], "**{:.0f}**"))
    body.append(row("views/s, wall clock, on the shared core (whole item)", [1e3 / item_wall[c] for c in cols],
                    "{:.0f}"))
    if args.loader_batches:
        body.append(row(f"trainer DataLoader, 1 worker + main process on the same core, batch 64, "
                        f"{args.loader_batches} batches: views per worker CPU second (adds collation into "
                        "shared memory)", [loaders[c][0][0] for c in cols], "{:.0f}"))
        body.append(row("the same, views per CPU second of worker + main process",
                        [loaders[c][0][1] for c in cols], "{:.0f}"))
        body.append(row("the same, views/s wall clock", [loaders[c][0][2] for c in cols], "{:.0f}"))
    ratios = {f: item_cpu[f, "before"] / item_cpu[f, "after"] for f in folders}
    second = {f: item_cpu[f, "fast ops only"] / item_cpu[f, "after"] for f in folders}
    loader_second = ({f: loaders[f, "after"][0][0] / loaders[f, "fast ops only"][0][0] for f in folders}
                     if args.loader_batches else {})
    loader_uint8 = ({f: loaders[f, "uint8"][0][0] / loaders[f, "after"][0][0] for f in folders}
                    if args.loader_batches else {})
    hest = {f: med[f, "before"]["HEStain"] / med[f, "after"]["HEStain"] for f in folders}
    body += ["", ("**Speed-up after / before (views per CPU second, whole item): "
                  + ", ".join(f"{f.upper()} {ratios[f]:.2f}x" for f in folders) + "**; HEStain step alone "
                  + ", ".join(f"{f.upper()} {hest[f]:.1f}x" for f in folders) + ". OpenCV decode and CPU-only "
                  "seeding alone (after / fast ops only): whole item "
                  + ", ".join(f"{f.upper()} {second[f]:.2f}x" for f in folders)
                  + ("; DataLoader worker " + ", ".join(f"{f.upper()} {loader_second[f]:.2f}x" for f in folders)
                     if loader_second else "") + "."
                  + (" uint8 views / float views, DataLoader worker (collation of a quarter of the bytes): "
                     + ", ".join(f"{f.upper()} {loader_uint8[f]:.2f}x" for f in folders) + "."
                     if loader_uint8 else "")),
             "", verdict({f: item_cpu[f, "after"] for f in folders}, {f: med[f, "after"]["decode"] for f in folders},
                         {f: loaders[f, "after"][0][0] for f in folders} if args.loader_batches else None,
                         {f: loaders[f, "uint8"][0][0] for f in folders} if args.loader_batches else None),
             "", ("Target (issue 18): 200 views/s per core, so that 16 cores feed 3,000 views/s. The steps "
                  "are timed one by one outside the Compose, so their sum differs from the whole item "
                  "(Compose bookkeeping, per-item seeding). The CPU was shared with other engineers' jobs "
                  f"and a background pretraining run (load average {load_start:.1f} at the start, "
                  f"{load_end:.1f} at the end, on {os.cpu_count()} cores): wall-clock rates are well below "
                  "the CPU-time rates, and CPU time on a busy core is itself somewhat inflated (shared "
                  "caches); before and after come from the same rounds.")]
    text = "\n".join(body)
    print(text)
    if not args.no_doc:
        defaults = {"tiles": 48, "rounds": 3, "image_size": 224, "source": "auto", "loader_batches": 3}
        extra = [f"--{k.replace('_', '-')} {getattr(args, k)}" for k, v in defaults.items() if getattr(args, k) != v]
        cmd = " ".join([".venv/bin/python benchmarks/bench_views.py", *extra])
        print(write_section("Histology views per CPU core (224 px)", text, cmd))


if __name__ == "__main__":
    main()
