"""SimCLR trainer throughput on CPU: full steps with the real data path vs model-only steps.

Same run, same :class:`SimCLRTrainer`, ResNet-18 at 96 px, natural (paper) views, batch 64:

1. ``data+model``: JPEG crops (from the MoNuSeg images under ../shared/data when present, else
   synthetic) decoded with PIL and augmented with albumentations in DataLoader workers.
2. ``model only``: the same steps on pre-made view tensors (no decoding, no augmentation, no workers).
3. ``data only``: the DataLoader of (1) iterated without a model (what the data path can feed).

Throughput is the trainer's own ``images_per_s`` metric (two views = two images), read back from
a temporary MLflow store for every step after the first ``--skip`` (worker start-up, allocator
warm-up). ratio = model-only / data+model: how much slower the real data path makes a step.

    .venv/bin/python benchmarks/bench_trainer.py
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from histoclr.docs_sections import write_section

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("HISTOCLR_SHARED_DATA", REPO.parent / "shared" / "data"))


def make_jpegs(folder: Path, n: int, size: int = 160) -> str:
    """``n`` JPEG crops of the MoNuSeg images (or of synthetic blobs); returns where they came from."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    sources = sorted((SHARED / "monuseg2018" / "unlabeled" / "images").glob("*.tif"))
    if sources:
        import tifffile

        images = [tifffile.imread(p)[..., :3] for p in sources[:4]]
        origin = f"{size} px crops of {len(images)} MoNuSeg images"
    else:
        images = [np.clip(rng.normal(128, 60, (1000, 1000, 3)), 0, 255).astype(np.uint8)]
        origin = f"{size} px crops of synthetic noise images (shared data not found)"
    for i in range(n):
        img = images[i % len(images)]
        y, x = rng.integers(0, img.shape[0] - size), rng.integers(0, img.shape[1] - size)
        Image.fromarray(img[y:y + size, x:x + size]).save(folder / f"{i:04d}.jpg", quality=90)
    return origin


class JpegViews(torch.utils.data.Dataset):
    """Item ``i``: decode JPEG ``i`` (PIL) -> two augmented ``(3, S, S)`` views."""

    def __init__(self, folder: Path, transform):
        self.paths = sorted(folder.glob("*.jpg"))
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        from PIL import Image

        with Image.open(self.paths[i]) as im:
            return self.transform(np.asarray(im.convert("RGB")))


class PremadeViews(torch.utils.data.Dataset):
    def __init__(self, n: int, size: int):
        self.bank = torch.randn(8, 3, size, size, generator=torch.Generator().manual_seed(0))
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        return [self.bank[i % 8], self.bank[(i + 3) % 8]]


def train_rate(cfg, dataset, skip: int) -> tuple[float, float]:
    """(images/s over the steps after ``skip``, wall seconds of the whole fit)."""
    from mlflow.tracking import MlflowClient

    from histoclr.ssl.trainer import SimCLRTrainer

    t0 = time.perf_counter()
    result = SimCLRTrainer(cfg, dataset).fit()
    wall = time.perf_counter() - t0
    hist = MlflowClient(os.environ["MLFLOW_TRACKING_URI"]).get_metric_history(result.run_id, "images_per_s")
    rates = [m.value for m in sorted(hist, key=lambda m: m.step)][skip:]
    images = 2 * cfg.train.batch_size
    return len(rates) * images / sum(images / r for r in rates), wall


def loader_rate(cfg, dataset, batches: int, skip: int) -> float:
    """Images/s of the trainer's DataLoader alone (same sampler, workers, seeding)."""
    from histoclr.ssl.trainer import EpochSampler, SimCLRTrainer

    trainer = SimCLRTrainer(cfg, dataset)
    loader = trainer._build_loader(EpochSampler(dataset, 1, 0, cfg.train.seed, cfg.train.batch_size),
                                   torch.device("cpu"))
    it = iter(loader)
    for _ in range(skip):
        next(it)
    t0 = time.perf_counter()
    for _ in range(batches):
        next(it)
    return 2 * cfg.train.batch_size * batches / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=4, help="timed training steps per run")
    ap.add_argument("--skip", type=int, default=2, help="first steps left out of the timing")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--image-size", type=int, default=96)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()

    from histoclr.config.ssl import (
        ModelConfig,
        OptimConfig,
        SSLConfig,
        TrackingConfig,
        TrainConfig,
        ViewsConfig,
    )
    from histoclr.ssl.augment import MultiViewTransform, build_views

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp / 'mlflow.db'}"
        n_images = args.batch_size * (args.steps + args.skip)
        origin = make_jpegs(tmp / "jpeg", n_images)
        views = MultiViewTransform(build_views("natural", image_size=args.image_size), 2)

        def cfg(workers: int, name: str) -> SSLConfig:
            return SSLConfig(
                model=ModelConfig("resnet18", 512, 128, 2),
                optim=OptimConfig(name="lars", lr=0.3, warmup_steps=1),
                views=ViewsConfig(recipe="natural", image_size=args.image_size),
                train=TrainConfig(max_steps=args.steps + args.skip, batch_size=args.batch_size,
                                  num_workers=workers, precision="32", channels_last=False,
                                  checkpoint_every=0, log_every=1, device="cpu"),
                tracking=TrackingConfig(experiment="bench-trainer", run_name=name), out_dir=str(tmp / name))

        full, full_wall = train_rate(cfg(args.workers, "full"), JpegViews(tmp / "jpeg", views), args.skip)
        model, model_wall = train_rate(cfg(0, "model"), PremadeViews(n_images, args.image_size), args.skip)
        data = loader_rate(cfg(args.workers, "data"), JpegViews(tmp / "jpeg", views), args.steps, args.skip)

    rows = [("data + model (JPEG decode + views in workers)", full, full_wall),
            ("model only (pre-made view tensors, no workers)", model, model_wall)]
    body = [(f"ResNet-18 SimCLR (LARS, fp32, 2-layer 512-d head), {args.image_size} px natural views, "
             f"batch {args.batch_size} (= {2 * args.batch_size} views/step), {args.workers} DataLoader "
             f"workers, {args.steps} timed steps after {args.skip} warm-up steps; data: {origin}. "
             f"torch {torch.__version__}, {torch.get_num_threads()} intra-op threads."),
            "", "| run | images/s | s/step | wall s (incl. start-up) |", "|---|---:|---:|---:|"]
    for name, rate, wall in rows:
        body.append(f"| {name} | {rate:.1f} | {2 * args.batch_size / rate:.2f} | {wall:.0f} |")
    body.append(f"| data only (the DataLoader of the first row, no model) | {data:.1f} | "
                f"{2 * args.batch_size / data:.2f} | - |")
    bound = ("the model, not decoding/augmenting, bounds a step" if data > model
             else "the data path is the bottleneck")
    body += ["", (f"**ratio model-only / data+model = {model / full:.2f}x** (step time with the real data "
                  f"path {100 * (model / full - 1):+.0f}% vs model-only). The workers and the model share "
                  f"the same {os.cpu_count()} cores; the data path alone delivers {data / model:.1f}x the "
                  f"images/s the model consumes, so {bound}."),
             "", ("The CPU was shared with other engineers' jobs while this ran (load average "
                  f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores at the end), so absolute numbers are "
                  "pessimistic and noisy; the ratio is taken in one run.")]
    text = "\n".join(body)
    print(text)
    cmd = "  ".join(["python benchmarks/bench_trainer.py"] + sys.argv[1:])
    write_section("SimCLR trainer throughput (CPU)", text, cmd.strip())


if __name__ == "__main__":
    main()
