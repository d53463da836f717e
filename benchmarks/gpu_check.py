"""One-GPU check (issue 18): SimCLR and fine-tuning throughput on one GPU in under 8 minutes.

Measures, with the project's own components (``SimCLRTrainer``, ``SimCLRModel``, NT-Xent,
``run_finetune``, ``load_seg_checkpoint`` + ``predict_image``) and the shipped GPU configs
(``configs/pretrain/gpu_resnet50.yaml``, ``configs/finetune/gpu_resnet50.yaml``):

1. ``simclr_model_only``: SimCLR ResNet-50, 224 px, bf16, channels-last, the config's batch, on
   pre-made view tensors already on the GPU (no data path): views/s, peak GPU memory;
2. ``simclr_model_only_compiled``: the same with ``train.compile=true`` (``torch.compile``);
3. ``simclr_end_to_end_{png,jpeg}``: the same trainer on a real tile manifest (tiles written by
   ``histoclr tile`` from synthetic slides, or ``--manifest``), histology views in
   ``os.cpu_count()`` DataLoader workers: views/s, the share of step time spent waiting for a
   batch, and the ratio end-to-end / model-only (eager);
4. ``simclr_data_only_{png,jpeg}``: that DataLoader alone (what the CPU can feed);
5. ``finetune_seg``: DeepLabV3 ResNet-50 training images/s (``run_finetune``, one epoch on
   synthetic image/mask pairs, validation excluded from the timing);
6. ``predict``: ``predict_image`` tiles/s (sliding windows) on a large synthetic image with the
   checkpoint of (5), and the share of that time inside the network.

Steps: the first ``skip`` steps (cuDNN autotuning, compilation, worker start-up) are left out.
Each phase's result goes to ``<out>/gpu_check.json`` as soon as it is measured, and the section
"GPU check (one GPU)" of docs/benchmarks.md is rewritten after each phase, so a run cut short
keeps what it measured. A phase that would not fit the time budget is skipped and says so.

    bash benchmarks/gpu_check.sh                      # on the GPU machine
    .venv/bin/python benchmarks/gpu_check.py --smoke  # every code path on the CPU in about a minute

``--smoke``: tiny sizes (ResNet-18, 32 px views, batch 4, fp32, one timed step), CPU, ``torch.compile``
with the ``eager`` backend (Dynamo tracing without Inductor code generation); it writes its
section to ``<out>/benchmarks.md``, never to docs/benchmarks.md.
"""

from __future__ import annotations

import time

T0 = time.monotonic()   # the budget counts from here (imports included)

import argparse
import contextlib
import functools
import gc
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from unittest import mock

import torch

from histoclr.progress import TimedLoader

REPO = Path(__file__).resolve().parents[1]
SECTION = "GPU check (one GPU)"
PRETRAIN_CONFIG = REPO / "configs" / "pretrain" / "gpu_resnet50.yaml"
FINETUNE_CONFIG = REPO / "configs" / "finetune" / "gpu_resnet50.yaml"


@dataclass
class Sizes:
    """Everything that differs between the GPU run and the CPU smoke run."""

    device: str
    arch: str                 # SimCLR encoder
    image_size: int           # view side (px)
    batch_size: int | None    # per step; None: the config's
    precision: str | None     # None: the config's (bf16)
    steps: int                # timed steps per SimCLR phase
    skip: int                 # warm-up steps left out
    workers: int              # DataLoader workers end to end
    e2e_skip: int             # end-to-end warm-up steps: at least one batch per worker (the prefetched stock)
    e2e_steps: int            # end-to-end timed steps: several batches per worker (steady state)
    prefetch_factor: int      # batches in flight per worker end to end (shared memory: workers x this x batch)
    slide_side: int           # side of each synthetic slide at 0.5 um/px (px)
    tile_workers: int         # `histoclr tile` processes for the synthetic slides
    n_slides: int
    seg_encoder: str
    seg_crop: int
    seg_batch: int | None     # None: the config's
    seg_steps: int
    seg_workers: int | None   # None: the config's
    pair_size: int            # synthetic image/mask pairs (px)
    predict_side: int         # synthetic image for predict (px)
    predict_batch: int
    compile_backend: str | None   # None: torch.compile's default (Inductor)


_CORES = os.cpu_count() or 1
GPU = Sizes(device="cuda", arch="resnet50", image_size=224, batch_size=None, precision=None, steps=12, skip=3,
            workers=_CORES, e2e_skip=_CORES + 2, e2e_steps=3 * _CORES, prefetch_factor=2,
            slide_side=224 * 24, tile_workers=min(16, _CORES), n_slides=2, seg_encoder="resnet50",
            seg_crop=256, seg_batch=None, seg_steps=15, seg_workers=None, pair_size=768,
            predict_side=4096, predict_batch=32, compile_backend=None)
SMOKE = Sizes(device="cpu", arch="resnet18", image_size=32, batch_size=4, precision="32", steps=1, skip=1,
              workers=2, e2e_skip=1, e2e_steps=2, prefetch_factor=2, slide_side=224 * 4, tile_workers=1, n_slides=1,
              seg_encoder="resnet18", seg_crop=64, seg_batch=2, seg_steps=3, seg_workers=0, pair_size=96, predict_side=128, predict_batch=4,
              compile_backend="eager")
# rough seconds per phase on an H100-class GPU (to skip what would not fit the budget)
ESTIMATE_S = {"simclr_model_only": 30, "simclr_end_to_end_png": 45, "simclr_data_only_png": 20,
              "finetune_seg": 60, "predict": 30, "simclr_model_only_compiled": 150,
              "simclr_end_to_end_jpeg": 45, "simclr_data_only_jpeg": 20}


# --------------------------------------------------------------------------- helpers
def elapsed() -> float:
    return time.monotonic() - T0


def fresh_dir(work: Path, name: str) -> Path:
    """A new, empty run folder under ``work/runs`` (a rerun never resumes an earlier run)."""
    (work / "runs").mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{name}_", dir=work / "runs"))


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


@contextlib.contextmanager
def peak_memory(device: str, into: dict):
    """``into["peak_gpu_mem_gib"]``: the peak GPU memory allocated inside the block (None on CPU)."""
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    try:
        yield
    finally:
        into["peak_gpu_mem_gib"] = (round(torch.cuda.max_memory_allocated() / 2**30, 2)
                                    if device == "cuda" else None)


class PremadeLoader:
    """Yields the same two ``(B, 3, S, S)`` view tensors (already on the device) ``n`` times."""

    def __init__(self, views: list[torch.Tensor], n: int):
        self.views, self.n = views, n

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        for _ in range(self.n):
            yield self.views


class Cycle(torch.utils.data.Dataset):
    """``dataset`` repeated to ``n`` items, so a timed run stays inside one epoch (``.dataset``
    keeps the views reachable for the trainer's per-item seeding)."""

    def __init__(self, dataset, n: int):
        self.dataset, self.n = dataset, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        return self.dataset[i % len(self.dataset)]


def step_rate(stamps: list[float], waits: list[float], skip: int, items_per_step: int) -> dict:
    """Items/s and data-wait share over the steps after ``skip`` (stamp k = batch k handed over)."""
    steps = len(stamps) - 1 - skip
    if steps < 1:
        raise RuntimeError(f"need more than {skip + 1} steps, got {len(stamps)}")
    span = stamps[-1] - stamps[skip]
    return {"per_s": items_per_step * steps / span, "s_per_step": span / steps,
            "data_wait_share": sum(waits[skip + 1:]) / span, "timed_steps": steps}


# --------------------------------------------------------------------------- data
def make_tile_manifest(root: Path, fmt: str, sz: Sizes) -> Path:
    """Synthetic slides (0.5 um/px, all tissue) cut by the real tiler into 224 px tiles; the folder."""
    from histoclr.config.tile import TileConfig
    from histoclr.slides.inputs import find_slides
    from histoclr.slides.synthetic import write_pyramid_tiff
    from histoclr.slides.tiler import tile_slides

    slides = root / "slides"
    slides.mkdir(parents=True, exist_ok=True)
    side = sz.slide_side
    for i in range(sz.n_slides):
        path = slides / f"synthetic_{i}.tif"
        if not path.is_file():
            write_pyramid_tiff(path, side, side, 0.5, [(0, 0, side, side)], levels=2, seed=i)
    out = root / f"tiles_{fmt}"
    cfg = TileConfig(tile_size=224, mpp=0.5, format=fmt, qc=False, min_tissue=0.5)
    tile_slides(find_slides([slides]), cfg, out, workers=sz.tile_workers, progress=False,
                log=lambda msg: print(msg, file=sys.stderr))
    return out


def tile_dataset(manifest: Path, cfg, n_items: int):
    """The training tiles of ``manifest`` with the configured views, cycled to ``n_items``."""
    from histoclr.pretrain.dataset import TileDataset, load_tiles
    from histoclr.ssl.augment import MultiViewTransform, build_views

    v = cfg.views
    views = MultiViewTransform(build_views(v.recipe, image_size=v.image_size, **dict(v.params)), v.n_views)
    tiles = TileDataset.from_table(load_tiles([manifest]), views)
    return Cycle(tiles, n_items), len(tiles)


# --------------------------------------------------------------------------- SimCLR phases
def pretrain_config(sz: Sizes, out: Path, manifest: Path | None, *, compile: bool = False,
                    workers: int = 0, steps: int | None = None):
    from histoclr.config.loader import load_config
    from histoclr.config.pretrain import PretrainConfig

    steps = steps if steps is not None else sz.skip + sz.steps + 1
    over = [f"data.manifests=[{manifest or out / 'none.csv'}]", f"train.max_steps={steps}",
            f"train.prefetch_factor={sz.prefetch_factor}",
            "train.checkpoint_every=0", f"train.log_every={steps}", "tracking.enabled=false",
            f"train.compile={str(compile).lower()}", "train.sync_batchnorm=false",
            f"train.num_workers={workers}", f"train.device={sz.device}", f"model.arch={sz.arch}",
            f"views.image_size={sz.image_size}", f"out_dir={out}"]
    if sz.batch_size is not None:
        over.append(f"train.batch_size={sz.batch_size}")
    if sz.precision is not None:
        over.append(f"train.precision={sz.precision}")
    if sz.arch != "resnet50":
        over.append("model.proj_hidden_dim=512")
    return load_config(PretrainConfig, PRETRAIN_CONFIG, over)


def _trainer(cfg, dataset, premade: PremadeLoader | None = None):
    """A ``SimCLRTrainer`` whose loader (its own, or ``premade``) is wrapped in :class:`histoclr.progress.TimedLoader`."""
    from histoclr.ssl.trainer import SimCLRTrainer

    class Trainer(SimCLRTrainer):
        def _build_loader(self, sampler, device):
            self.stamped = TimedLoader(premade if premade is not None else super()._build_loader(sampler, device))
            return self.stamped

    return Trainer(cfg, dataset)


@contextlib.contextmanager
def compile_backend(backend: str | None):
    """Make the trainer's ``torch.compile(net)`` use ``backend`` (None: leave torch's default)."""
    if backend is None:
        yield
        return
    with mock.patch.object(torch, "compile", functools.partial(torch.compile, backend=backend)):
        yield


def simclr_model_only(sz: Sizes, work: Path, compiled: bool) -> dict:
    cfg = pretrain_config(sz, fresh_dir(work, "model"), None, compile=compiled)
    b, s = cfg.train.batch_size, cfg.views.image_size
    g = torch.Generator().manual_seed(0)
    views = [torch.randn(b, 3, s, s, generator=g).to(sz.device) for _ in range(2)]
    trainer = _trainer(cfg, Cycle(list(range(b)), b * cfg.train.max_steps), PremadeLoader(views, cfg.train.max_steps))
    res: dict = {"batch_size": b, "image_size": s, "arch": cfg.model.arch, "precision": cfg.train.precision,
                 "channels_last": cfg.train.channels_last, "compile": compiled}
    with peak_memory(sz.device, res), compile_backend(sz.compile_backend if compiled else None):
        t0 = time.perf_counter()
        trainer.fit()
        res["wall_s"] = time.perf_counter() - t0
    r = step_rate(trainer.stamped.stamps, trainer.stamped.waits, sz.skip, 2 * b)
    res.update(views_per_s=r["per_s"], s_per_step=r["s_per_step"], timed_steps=r["timed_steps"])
    return res


def simclr_end_to_end(sz: Sizes, work: Path, manifest: Path, model_only: dict | None) -> dict:
    cfg = pretrain_config(sz, fresh_dir(work, "e2e"), manifest, workers=sz.workers,
                          steps=sz.e2e_skip + sz.e2e_steps + 1)
    b = cfg.train.batch_size
    dataset, n_tiles = tile_dataset(manifest, cfg, b * (cfg.train.max_steps + 1))
    trainer = _trainer(cfg, dataset)
    res: dict = {"batch_size": b, "workers": cfg.train.num_workers, "tiles": n_tiles,
                 "prefetch_factor": cfg.train.prefetch_factor}
    with peak_memory(sz.device, res):
        t0 = time.perf_counter()
        trainer.fit()
        res["wall_s"] = time.perf_counter() - t0
    r = step_rate(trainer.stamped.stamps, trainer.stamped.waits, sz.e2e_skip, 2 * b)
    res.update(views_per_s=r["per_s"], s_per_step=r["s_per_step"], data_wait_share=r["data_wait_share"],
               timed_steps=r["timed_steps"])
    if model_only and "views_per_s" in model_only:
        res["ratio_to_model_only"] = r["per_s"] / model_only["views_per_s"]
    return res


def simclr_data_only(sz: Sizes, work: Path, manifest: Path) -> dict:
    """The end-to-end DataLoader (same workers, seeding, collation, pinning) without a model."""
    from histoclr.ssl.trainer import EpochSampler, SimCLRTrainer

    steps = sz.e2e_skip + max(1, 2 * sz.e2e_steps // 3) + 1
    cfg = pretrain_config(sz, fresh_dir(work, "data"), manifest, workers=sz.workers, steps=steps)
    b = cfg.train.batch_size
    dataset, _ = tile_dataset(manifest, cfg, b * (steps + 1))
    trainer = SimCLRTrainer(cfg, dataset)
    device = torch.device(sz.device)
    loader = TimedLoader(trainer._build_loader(EpochSampler(dataset, 1, 0, cfg.train.seed, b), device))
    t0 = time.perf_counter()
    for k, batch in enumerate(loader):
        batch[0].to(device, non_blocking=True), batch[1].to(device, non_blocking=True)
        if k + 1 >= steps:
            break
    sync(sz.device)
    r = step_rate(loader.stamps, loader.waits, sz.e2e_skip, 2 * b)
    del batch, loader               # the workers (and their shared-memory batches) go with the iterator
    gc.collect()
    return {"views_per_s": r["per_s"], "workers": cfg.train.num_workers, "batch_size": b,
            "timed_batches": r["timed_steps"], "wall_s": time.perf_counter() - t0, "peak_gpu_mem_gib": None}


# --------------------------------------------------------------------------- segmentation phases
def finetune_seg(sz: Sizes, work: Path) -> dict:
    from histoclr.config.loader import load_config
    from histoclr.config.seg import FinetuneConfig
    from histoclr.seg.synthetic import write_synthetic_pairs
    from histoclr.seg.train import run_finetune

    pairs = write_synthetic_pairs(work / "pairs", n=5, size=sz.pair_size, seed=0, mpp=0.5)
    run_dir = fresh_dir(work, "finetune")
    over = [f"pairs={pairs}", f"data_root={pairs.parent}", f"out_dir={run_dir}", "train.epochs=1",
            f"train.steps_per_epoch={sz.seg_steps}", "tracking.enabled=false", f"train.device={sz.device}",
            f"model.encoder={sz.seg_encoder}", f"data.crop_size={sz.seg_crop}"]
    if sz.seg_batch is not None:
        over.append(f"train.batch_size={sz.seg_batch}")
    if sz.seg_workers is not None:
        over.append(f"data.num_workers={sz.seg_workers}")
    cfg = load_config(FinetuneConfig, FINETUNE_CONFIG, over)
    calls: list[tuple[float, bool, int]] = []

    def hook(model: torch.nn.Module) -> None:
        def pre(module, args):
            calls.append((time.perf_counter(), module.training, int(args[0].shape[0])))
        model.register_forward_pre_hook(pre)

    res: dict = {"encoder": cfg.model.encoder, "architecture": cfg.model.architecture,
                 "batch_size": cfg.train.batch_size, "crop_size": cfg.data.crop_size,
                 "workers": cfg.data.num_workers}
    with peak_memory(sz.device, res):
        t0 = time.perf_counter()
        out = run_finetune(cfg, progress=False, echo=lambda *_: None, model_hook=hook)
        res["wall_s"] = time.perf_counter() - t0
    train = [c for c in calls if c[1]]
    skip = min(sz.skip, len(train) - 2)
    timed = train[skip:]
    res["images_per_s"] = sum(n for _, _, n in timed[:-1]) / (timed[-1][0] - timed[0][0])
    res["timed_steps"] = len(timed) - 1
    res["checkpoint"] = str(out.get("checkpoint") or run_dir / "best.pt")
    return res


def predict(sz: Sizes, checkpoint: Path) -> dict:
    from histoclr.seg.model import load_seg_checkpoint
    from histoclr.seg.predict import predict_image
    from histoclr.slides.synthetic import render_region

    ckpt = load_seg_checkpoint(checkpoint, sz.device)
    side = sz.predict_side
    image = render_region(0, 0, side, side, 1, [(0, 0, side, side)], seed=1)
    mpp = ckpt.mpp or 0.5
    forward = {"tiles": 0, "s": 0.0}

    def pre(module, args):
        sync(sz.device)
        forward["t"] = time.perf_counter()

    def post(module, args, output):
        sync(sz.device)
        forward["s"] += time.perf_counter() - forward["t"]
        forward["tiles"] += int(args[0].shape[0])

    predict_image(ckpt, image[:2 * ckpt.window, :2 * ckpt.window], mpp, batch_size=sz.predict_batch,
                  device=sz.device)                                   # warm-up (cuDNN autotuning)
    h1, h2 = ckpt.model.register_forward_pre_hook(pre), ckpt.model.register_forward_hook(post)
    res: dict = {"image_side": side, "window": ckpt.window, "batch_size": sz.predict_batch, "overlap": 0.25}
    with peak_memory(sz.device, res):
        t0 = time.perf_counter()
        predict_image(ckpt, image, mpp, overlap=0.25, batch_size=sz.predict_batch, device=sz.device)
        sync(sz.device)
        wall = time.perf_counter() - t0
    h1.remove()
    h2.remove()
    res.update(tiles=forward["tiles"], wall_s=wall, tiles_per_s=forward["tiles"] / wall,
               network_share=forward["s"] / wall)
    return res


# --------------------------------------------------------------------------- report
def environment(device: str) -> dict:
    env = {"torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
           "cpu_cores": os.cpu_count(), "cpu": platform.processor() or platform.machine()}
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                env["cpu"] = line.split(":", 1)[1].strip()
                break
    if device == "cuda":
        env["gpu"] = torch.cuda.get_device_name(0)
        env["gpu_mem_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
        try:
            env["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                           check=False, capture_output=True, text=True, timeout=20).stdout.strip() or "unknown"
        except (OSError, subprocess.SubprocessError):
            env["driver"] = "unknown (nvidia-smi failed)"
    return env


def _fmt(x, spec: str = "{:.0f}") -> str:
    return "-" if x is None or (isinstance(x, float) and not math.isfinite(x)) else spec.format(x)


def render(results: dict, env: dict, smoke: bool) -> str:
    """The markdown body of the section (one row per phase)."""
    machine = (f"{env.get('gpu', 'CPU only')}" + (f" ({env['gpu_mem_gib']} GiB), driver {env['driver']}"
               if "gpu" in env else "") + f"; torch {env['torch']} (CUDA {env['cuda']}); "
               f"{env['cpu_cores']} CPU cores ({env['cpu']})")
    lines = [("**Smoke run on the CPU (tiny sizes, not a measurement of anything)**. " if smoke else "")
             + f"{machine}. Total wall time {results.get('_total_s', float('nan')):.0f} s.", "",
             "| phase | what | throughput | s/step | data wait | ratio e2e / model-only | peak GPU mem (GiB) |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for name, r in results.items():
        if name.startswith("_"):
            continue
        if "error" in r or "skipped" in r:
            lines.append(f"| {name} | {r.get('error') or r.get('skipped')} | | | | | |")
            continue
        if name.startswith("simclr_model_only"):
            what = (f"{r['arch']} SimCLR, {r['image_size']} px, batch {r['batch_size']}, {r['precision']}, "
                    f"channels-last {r['channels_last']}, compile {r['compile']}, pre-made tensors on the device")
            tput, step = f"{r['views_per_s']:.0f} views/s", _fmt(r["s_per_step"], "{:.3f}")
        elif name.startswith("simclr_end_to_end"):
            what = (f"real {name.rsplit('_', 1)[1].upper()} tile manifest ({r['tiles']} tiles), histology views, "
                    f"{r['workers']} workers (prefetch {r['prefetch_factor']}), batch {r['batch_size']}, "
                    f"{r['timed_steps']} timed steps")
            tput, step = f"{r['views_per_s']:.0f} views/s", _fmt(r["s_per_step"], "{:.3f}")
        elif name.startswith("simclr_data_only"):
            what = f"the DataLoader above alone ({r['workers']} workers), no model"
            tput, step = f"{r['views_per_s']:.0f} views/s", "-"
        elif name == "finetune_seg":
            what = (f"`finetune-seg` {r['architecture']} {r['encoder']}, {r['crop_size']} px crops, "
                    f"batch {r['batch_size']}, {r['workers']} workers")
            tput, step = f"{r['images_per_s']:.1f} images/s", "-"
        elif name == "predict":
            what = (f"`predict_image` {r['image_side']} px image, {r['window']} px windows, overlap "
                    f"{r['overlap']}, batch {r['batch_size']} ({r['tiles']} windows; network "
                    f"{100 * r['network_share']:.0f}% of the time)")
            tput, step = f"{r['tiles_per_s']:.1f} tiles/s", "-"
        else:
            continue
        wait = _fmt(r.get("data_wait_share"), "{:.1%}") if "data_wait_share" in r else "-"
        ratio = _fmt(r.get("ratio_to_model_only"), "{:.2f}")
        lines.append(f"| {name} | {what} | {tput} | {step} | {wait} | {ratio} | "
                     f"{_fmt(r.get('peak_gpu_mem_gib'), '{:.2f}')} |")
    lines += ["", ("Steps after the first few (cuDNN autotuning, compilation, worker start-up; end to end: "
                   "after one batch per worker, so the prefetched stock is not counted) are timed from "
                   "batch hand-over to batch hand-over; the trainer synchronises every step (loss `.item()`). "
                   "data wait = the time the training loop blocked on the DataLoader / step time. "
                   "`finetune_seg` is timed between training forwards (validation excluded); `predict` "
                   "includes resampling and post-processing on the CPU. Written by `benchmarks/gpu_check.py`; "
                   "per-phase details in its `gpu_check.json`.")]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU; never writes docs/benchmarks.md")
    ap.add_argument("--out", type=Path, default=None, help="work folder (default: a temporary one; --smoke: required "
                    "or a temporary one) for data, runs, gpu_check.json")
    ap.add_argument("--doc", type=Path, default=None,
                    help="markdown file for the section (default: docs/benchmarks.md; --smoke: <out>/benchmarks.md)")
    ap.add_argument("--manifest", type=Path, action="append", default=None,
                    help="tile manifest folder(s) to use end to end instead of synthetic tiles (repeatable)")
    ap.add_argument("--budget-s", type=float, default=450, help="skip phases that would end after this (s)")
    ap.add_argument("--phases", default="all", help="comma-separated phase names (default: all)")
    args = ap.parse_args(argv)

    from histoclr.docs_sections import DOC, write_section

    sz = SMOKE if args.smoke else GPU
    if sz.device == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA GPU visible (torch.cuda.is_available() is False); use --smoke on a CPU",
              file=sys.stderr)
        return 2
    tmp = tempfile.TemporaryDirectory(prefix="gpu_check_") if args.out is None else None
    work = Path(tmp.name) if tmp is not None else args.out
    work.mkdir(parents=True, exist_ok=True)
    doc = args.doc or (work / "benchmarks.md" if args.smoke else DOC)
    if args.smoke and doc.resolve() == DOC.resolve():
        ap.error("--smoke never writes docs/benchmarks.md; pass another --doc")
    if not doc.exists():
        doc.parent.mkdir(parents=True, exist_ok=True)
        doc.write_text("# GPU check\n\nWritten by `benchmarks/gpu_check.py`.\n")
    torch.manual_seed(0)
    if args.smoke:
        torch.set_num_threads(1)      # tiny models on a (shared) CPU: one thread is fastest
    if sz.device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    env = environment(sz.device)
    command = "bash benchmarks/gpu_check.sh" + "".join(f" {a}" for a in (argv if argv is not None else sys.argv[1:]))
    results: dict = {}
    state: dict = {}

    def save() -> None:
        results["_total_s"] = elapsed()
        (work / "gpu_check.json").write_text(json.dumps({"sizes": asdict(sz), "env": env, "results": results},
                                                        indent=1, default=str))
        machine = f"{env.get('gpu', 'CPU')}, {env['cpu_cores']} CPU cores ({env['cpu']})"
        write_section(SECTION, render(results, env, args.smoke), command, machine=machine, doc=doc)

    def manifests() -> dict[str, Path]:
        if "manifests" not in state:
            if args.manifest:
                state["manifests"] = {f"m{i}" if i else "png": Path(m) for i, m in enumerate(args.manifest)}
            else:
                state["manifests"] = {fmt: make_tile_manifest(work / "data", fmt, sz) for fmt in ("png", "jpeg")}
            print(f"[{elapsed():.0f} s] tiles ready", flush=True)
        return state["manifests"]

    phases = {
        "simclr_model_only": lambda: simclr_model_only(sz, work, compiled=False),
        "simclr_end_to_end_png": lambda: simclr_end_to_end(sz, work, manifests()["png"],
                                                           results.get("simclr_model_only")),
        "simclr_data_only_png": lambda: simclr_data_only(sz, work, manifests()["png"]),
        "finetune_seg": lambda: finetune_seg(sz, work),
        "predict": lambda: predict(sz, Path(results["finetune_seg"]["checkpoint"])),
        "simclr_model_only_compiled": lambda: simclr_model_only(sz, work, compiled=True),
        "simclr_end_to_end_jpeg": lambda: simclr_end_to_end(sz, work, manifests()["jpeg"],
                                                            results.get("simclr_model_only")),
        "simclr_data_only_jpeg": lambda: simclr_data_only(sz, work, manifests()["jpeg"]),
    }
    wanted = list(phases) if args.phases == "all" else [p.strip() for p in args.phases.split(",")]
    unknown = sorted(set(wanted) - set(phases))
    if unknown:
        ap.error(f"unknown phase(s) {', '.join(unknown)}; choose from {', '.join(phases)}")
    if args.manifest:
        wanted = [p for p in wanted if not p.endswith("_jpeg")]
    failed = False
    try:
        for name in wanted:
            if not args.smoke and elapsed() + ESTIMATE_S[name] > args.budget_s:
                results[name] = {"skipped": f"skipped: {elapsed():.0f} s used, ~{ESTIMATE_S[name]} s more "
                                            f"would pass the {args.budget_s:.0f} s budget"}
            else:
                try:
                    t0 = time.perf_counter()
                    results[name] = phases[name]()
                    results[name]["phase_s"] = time.perf_counter() - t0
                    gc.collect()        # the phase's trainer, DataLoader workers and GPU tensors
                except Exception as e:  # noqa: BLE001 - one failed phase must not lose the others
                    failed = True
                    results[name] = {"error": f"failed: {type(e).__name__}: {str(e).splitlines()[0][:300]}"}
                    import traceback

                    traceback.print_exc()
            print(f"[{elapsed():.0f} s] {name}: {json.dumps(results[name], default=str)}", flush=True)
            save()
    finally:
        if tmp is not None:
            tmp.cleanup()
    print(f"gpu_check: {elapsed():.0f} s; section {SECTION!r} written to {doc}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
