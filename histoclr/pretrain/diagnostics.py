"""Label-free checks of a pretrained encoder on the held-out slides' tiles.

- Positive-pair ranking: two histology views of each held-out tile go through the encoder (eval
  mode); for each of the 2N view embeddings ``h`` (the backbone's output, what fine-tuning
  inherits), the rank of its partner among the 2N-1 others (top-1/top-5, mean rank). The same
  views through a randomly initialised encoder give the baseline, side by side.
- Embedding map: 2-D projection (t-SNE or PCA) of the held-out tiles' embeddings coloured by
  slide, trained encoder next to the random one (PNG).
- Nearest-neighbour montage: a few query tiles and their nearest held-out tiles (cosine) (PNG).
- Loss curve from the MLflow run's metric history (PNG).

:class:`HoldoutDiagnostics` bundles them as the trainer's ``on_end`` callback.
"""

from __future__ import annotations

import contextlib
import logging
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from histoclr.images import IMAGENET_MEAN, IMAGENET_STD
from histoclr.io import atomic_path, atomic_write_json
from histoclr.pretrain.dataset import sample_per_slide
from histoclr.ssl.augment import seed_transforms
from histoclr.ssl.loss import ranking_metrics
from histoclr.ssl.model import build_encoder
from histoclr.ssl.trainer import sample_seed
from histoclr.tracking import metric_history
from histoclr.io import atomic_write_text

log = logging.getLogger(__name__)

EMBEDDING_MAP = "embedding_map.png"
NEIGHBOURS = "neighbours.png"
LOSS_CURVE = "loss_curve.png"
SUMMARY = "diagnostics.json"


# --------------------------------------------------------------------------- embeddings
def eval_transform(image_size: int):
    """Deterministic view for embeddings: resize the whole tile, ImageNet-normalise, CHW float."""
    import albumentations as A
    from albumentations.pytorch import ToTensorV2

    return A.Compose([A.Resize(image_size, image_size), A.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD),
                      ToTensorV2()])


@torch.no_grad()
def embed(encoder: nn.Module, x: torch.Tensor, batch_size: int, device: torch.device,
          autocast: Callable[[], Any] = contextlib.nullcontext) -> torch.Tensor:
    """Encoder features of ``x (N, 3, S, S)`` in eval mode -> ``(N, D)`` float32 on CPU."""
    was_training = encoder.training
    encoder.eval()
    out = []
    try:
        for i in range(0, len(x), batch_size):
            xb = x[i:i + batch_size].to(device, non_blocking=True)
            with autocast():
                out.append(encoder(xb).float().cpu())
    finally:
        encoder.train(was_training)
    return torch.cat(out)


def two_views(images: Sequence[np.ndarray], transform, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two augmented views of each image ``(H, W, 3) uint8`` -> two ``(N, 3, S, S)`` batches.

    ``transform`` is a :class:`histoclr.ssl.augment.MultiViewTransform` with two views; image
    ``i``'s views are seeded from ``(seed, i)``, so they are the same on every call. The global
    RNG states are restored afterwards.
    """

    v1, v2 = [], []
    with _preserved_rng():
        for i, img in enumerate(images):
            s = sample_seed(seed, 0, i)
            random.seed(s)
            np.random.seed(s)
            torch.manual_seed(s)
            seed_transforms(transform, s)
            a, b = transform(img)[:2]
            v1.append(a)
            v2.append(b)
    return torch.stack(v1), torch.stack(v2)


@contextlib.contextmanager
def _preserved_rng():
    py, npy = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        try:
            yield
        finally:
            random.setstate(py)
            np.random.set_state(npy)


def project_2d(features: torch.Tensor, method: str = "auto", seed: int = 0) -> tuple[np.ndarray, str]:
    """``(N, D)`` -> ``((N, 2) points, method used)``.

    ``auto`` uses t-SNE (scikit-learn) when it is installed and there are >= 20 points, else
    PCA (``torch.pca_lowrank``).
    """
    if method not in ("auto", "pca", "tsne"):
        raise ValueError(f"unknown projection {method!r}; choose auto, pca or tsne")
    n = features.shape[0]
    if n < 2:
        raise ValueError(f"need at least 2 points to project, got {n}")
    if method == "auto":
        try:
            import sklearn.manifold  # noqa: F401

            method = "tsne" if n >= 20 else "pca"
        except ImportError:
            method = "pca"
    x = features.double()
    if method == "tsne":
        from sklearn.manifold import TSNE

        perplexity = float(max(2.0, min(30.0, (n - 1) / 3)))
        pts = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(
            x.numpy())
        return np.asarray(pts, dtype=np.float64), "t-SNE"
    mean = x.mean(0, keepdim=True)
    q = min(2, *x.shape)
    _, _, v = torch.pca_lowrank(x, q=q, center=True, niter=4)
    pts = ((x - mean) @ v[:, :q]).numpy()
    if q < 2:
        pts = np.concatenate([pts, np.zeros((n, 1))], axis=1)
    return pts, "PCA"


def nearest_neighbours(features: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine k nearest neighbours of each row among the other rows -> ``(sims, idx)``, ``(N, k)``."""
    z = torch.nn.functional.normalize(features.float(), dim=1)
    sim = z @ z.T
    sim.fill_diagonal_(-float("inf"))
    k = min(k, features.shape[0] - 1)
    return sim.topk(k, dim=1)


def same_slide_rate(features: torch.Tensor, slide_ids: Sequence[str]) -> float:
    """Fraction of tiles whose nearest neighbour (cosine) comes from the same slide."""
    _, idx = nearest_neighbours(features, 1)
    ids = np.asarray(slide_ids)
    return float(np.mean(ids[idx[:, 0].numpy()] == ids))


# --------------------------------------------------------------------------- pictures
def _figure_to_png(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def save_embedding_map(panels: dict[str, np.ndarray], slide_ids: Sequence[str], path: str | Path) -> Path:
    """One scatter panel per ``title -> (N, 2) points``, points coloured by slide."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    slides = sorted(set(slide_ids))
    cmap = plt.get_cmap("tab20" if len(slides) > 10 else "tab10")
    colour = {s: cmap(i % cmap.N) for i, s in enumerate(slides)}
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 5), squeeze=False)
    for ax, (title, pts) in zip(axes[0], panels.items()):
        for s in slides:
            m = np.asarray([sid == s for sid in slide_ids])
            ax.scatter(pts[m, 0], pts[m, 1], s=12, color=colour[s], label=_short(s), alpha=0.8)
        ax.set_title(title, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0][-1].legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7, title="slide",
                       markerscale=1.5, frameon=False)
    return _figure_to_png(fig, Path(path))


def save_neighbour_montage(images: Sequence[np.ndarray], slide_ids: Sequence[str], features: torch.Tensor,
                           queries: Sequence[int], k: int, path: str | Path, title: str = "") -> Path:
    """Rows: a query tile, then its ``k`` nearest tiles (cosine similarity; green = same slide)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sims, idx = nearest_neighbours(features, k)
    k = idx.shape[1]
    fig, axes = plt.subplots(len(queries), k + 1, figsize=(1.7 * (k + 1), 1.9 * len(queries)),
                             squeeze=False)
    for r, q in enumerate(queries):
        cells = [(q, f"query\n{_short(slide_ids[q])}", "black")]
        for c in range(k):
            j = int(idx[q, c])
            same = slide_ids[j] == slide_ids[q]
            cells.append((j, f"{sims[q, c]:.2f}\n{_short(slide_ids[j])}", "green" if same else "red"))
        for ax, (j, label, col) in zip(axes[r], cells):
            ax.imshow(images[j])
            ax.set_title(label, fontsize=7, color=col)
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_edgecolor(col)
                spine.set_linewidth(2 if col != "black" else 1)
    if title:
        fig.suptitle(title, fontsize=10)
    return _figure_to_png(fig, Path(path))


def save_loss_curve(history: dict[str, list[tuple[int, float]]], path: str | Path, title: str = "") -> Path:
    """One panel per metric name -> ``[(step, value)]``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n, h in history.items() if h]
    if not names:
        raise ValueError("no metric history to plot")
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 3.6), squeeze=False)
    for ax, name in zip(axes[0], names):
        steps, values = zip(*sorted(history[name]))
        ax.plot(steps, values, lw=1.2)
        ax.set_xlabel("step")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    return _figure_to_png(fig, Path(path))


def _short(slide_id: str, n: int = 14) -> str:
    return slide_id if len(slide_id) <= n else slide_id[:n - 1] + "…"


# --------------------------------------------------------------------------- the on_end callback
class HoldoutDiagnostics:
    """The trainer's ``on_end``: label-free checks on held-out tiles, PNGs + metrics.

    Args:
        holdout: a :class:`histoclr.pretrain.dataset.TileDataset` of the held-out slides' tiles
            (no transform), or ``None`` when nothing is held out.
        views: the training :class:`MultiViewTransform` (two views).
        cfg: the run's :class:`histoclr.config.pretrain.PretrainConfig`.
        bad_tile_sources: datasets whose unreadable-tile counts are reported (``bad_tiles``).
    """

    def __init__(self, holdout, views, cfg, bad_tile_sources: Sequence[Any] = ()):
        self.holdout = holdout
        self.views = views
        self.cfg = cfg
        self.bad_tile_sources = list(bad_tile_sources)

    def __call__(self, trainer, mlflow_mod) -> dict[str, float]:
        out_dir = Path(trainer.out_dir) / "diagnostics"
        out_dir.mkdir(parents=True, exist_ok=True)
        metrics: dict[str, float] = {}
        files: list[Path] = []
        summary: dict[str, Any] = {"step": trainer.step}

        if mlflow_mod is not None and trainer.run_id:
            history = metric_history(trainer.run_id, ("loss", "top1"), getattr(mlflow_mod, "tracking_uri", None))
            if history.get("loss"):
                files.append(save_loss_curve(history, out_dir / LOSS_CURVE,
                                             title=f"{self.cfg.model.arch} SimCLR, batch-level metrics"))

        if self.cfg.diagnostics.enabled and self.holdout is not None:
            m, pictures, info = self.holdout_checks(trainer)
            metrics.update(m)
            files.extend(pictures)
            summary.update(info)
        elif self.holdout is None:
            log.warning("no held-out slides (data.holdout_fraction=0 or a single slide): "
                        "skipping the held-out ranking, embedding map and neighbour montage")

        bad = [t for ds in self.bad_tile_sources for t in ds.bad_tiles()]
        metrics["bad_tiles"] = float(len(bad))
        if bad:
            atomic_write_text(out_dir / "bad_tiles.txt", "".join(f"{p}\t{r}\n" for p, r in bad))
            files.append(out_dir / "bad_tiles.txt")
        summary["metrics"] = metrics

        atomic_write_json(out_dir / SUMMARY, summary)
        files.append(out_dir / SUMMARY)
        if mlflow_mod is not None:
            for f in files:
                mlflow_mod.log_artifact(str(f), artifact_path="diagnostics")
        return metrics

    def holdout_checks(self, trainer, out_dir: str | Path | None = None) -> tuple[dict[str, float], list[Path], dict]:
        """Ranking (trained vs random), embedding map and montage on the held-out tiles.

        Pictures go to ``out_dir`` (default ``<trainer.out_dir>/diagnostics``).
        """

        cfg, g = self.cfg, self.cfg.diagnostics
        seed = cfg.train.seed
        ds = self.holdout
        chosen = sample_per_slide(ds.slide_ids, g.max_tiles, seed)
        images, slide_ids = [], []
        for j in chosen:
            img = ds.try_read(j)
            if img is not None:
                images.append(img)
                slide_ids.append(ds.slide_ids[j])
        if len(images) < 2:
            log.warning("fewer than 2 readable held-out tiles: skipping the held-out checks")
            return {}, [], {}

        device = trainer.dist.device
        autocast = getattr(trainer, "autocast", contextlib.nullcontext)
        memory_format = torch.channels_last if cfg.train.channels_last else torch.contiguous_format
        trained = trainer.model.encoder
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            random_enc = build_encoder(cfg.model.arch).to(device, memory_format=memory_format)
        encoders = {"": trained, "_random": random_enc}

        v1, v2 = two_views(images, self.views, seed)
        x = eval_transform(cfg.views.image_size)
        plain = torch.stack([x(image=img)["image"] for img in images])
        metrics: dict[str, float] = {"holdout_tiles": float(len(images)),
                                     "holdout_slides": float(len(set(slide_ids)))}
        feats: dict[str, torch.Tensor] = {}
        bs = g.batch_size
        for suffix, enc in encoders.items():
            h1 = embed(enc, v1, bs, device, autocast)
            h2 = embed(enc, v2, bs, device, autocast)
            for k, v in ranking_metrics(h1, h2).items():
                metrics[f"holdout_{k}{suffix}"] = float(v)
            feats[suffix] = embed(enc, plain, bs, device, autocast)
            metrics[f"holdout_nn_same_slide{suffix}"] = same_slide_rate(feats[suffix], slide_ids)
        del random_enc

        out_dir = Path(out_dir) if out_dir is not None else Path(trainer.out_dir) / "diagnostics"
        step = trainer.step
        panels, method = {}, ""
        for suffix, title in (("", f"SimCLR {cfg.model.arch}, step {step}"), ("_random", "random init")):
            pts, method = project_2d(feats[suffix], g.projection, seed)
            panels[f"{title}\n{method} of {len(images)} held-out tiles; top-1 "
                   f"{metrics['holdout_top1' + suffix]:.2f}"] = pts
        pictures = [save_embedding_map(panels, slide_ids, out_dir / EMBEDDING_MAP)]
        queries = sample_per_slide(slide_ids, g.n_queries, seed + 1)
        pictures.append(save_neighbour_montage(
            images, slide_ids, feats[""], queries, g.n_neighbours, out_dir / NEIGHBOURS,
            title=f"nearest held-out tiles, SimCLR {cfg.model.arch} step {step} (cosine; green = same slide)"))
        info = {"holdout_slide_ids": sorted(set(slide_ids)), "projection": method,
                "pictures": [p.name for p in pictures]}
        return metrics, pictures, info
