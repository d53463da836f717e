"""SimCLR view pipelines (albumentations), multi-view wrapper, seeding, and a preview picture.

Every recipe maps an ``(H, W, 3)`` uint8 RGB image to a float32 ``(3, S, S)`` tensor normalised
with ``mean``/``std``, or with ``normalize=False`` to the uint8 ``(3, S, S)`` view, which the trainer
normalises on its device (:func:`normalize_views`): a quarter of the bytes to collate, share and
copy per view, for data paths that must feed a GPU. Nothing here knows which data set it is used on.

Determinism: albumentations 2.x pipelines keep their own RNG (global ``random``/NumPy seeds do
not reach them). :func:`seed_views` seeds one pipeline (or a :class:`MultiViewTransform`) with a
*single* shared NumPy/Python generator, so the same seed gives the same views.
(``A.Compose(seed=...)`` alone would give every transform an identical copy of the stream,
correlating e.g. the horizontal and vertical flips.) :func:`augment_worker_init_fn` is the
``DataLoader(worker_init_fn=...)`` that gives each worker a different, reproducible stream.

Speed: the ``histology`` recipe uses :class:`FastHEStain`, :class:`FastRandomRotate90` and
:class:`FastNormalize`, which draw exactly the parameters of albumentations' ``HEStain`` /
``RandomRotate90`` / ``Normalize`` (same random stream) and compute the same images on uint8 RGB
with lookup tables, one 3x4 colour matrix and ``cv2.rotate`` (HEStain within one grey level of the
original and ~9x faster at 224 px; the whole recipe ~4-7x: ``benchmarks/bench_views.py``).
``fast_ops=False`` builds the albumentations originals.
"""

from __future__ import annotations

import inspect
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import albumentations as A
import cv2
import numpy as np
import torch
from albumentations.pytorch import ToTensorV2

from histoclr.images import IMAGENET_MEAN, IMAGENET_STD
from histoclr.io import atomic_path


def _check_prob(**probs: float) -> None:
    for name, p in probs.items():
        if not 0.0 <= float(p) <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {p}")


def _check_size_scale(image_size: int, scale: Sequence[float]) -> tuple[float, float]:
    if int(image_size) < 8:
        raise ValueError(f"image_size must be >= 8, got {image_size}")
    lo, hi = (float(s) for s in scale)
    if not 0.0 < lo <= hi <= 1.0:
        raise ValueError(f"scale must satisfy 0 < low <= high <= 1, got {tuple(scale)}")
    return lo, hi


def _tail(blur_p: float, blur_sigma: Sequence[float], grayscale_p: float,
          mean: Sequence[float], std: Sequence[float], fast: bool = False, normalize: bool = True) -> list:
    lo, hi = (float(s) for s in blur_sigma)
    if not 0.0 < lo <= hi:
        raise ValueError(f"blur_sigma must satisfy 0 < low <= high, got {tuple(blur_sigma)}")
    _check_mean_std(mean, std)
    # blur_limit=0: kernel size derived from the sampled sigma
    out = [A.GaussianBlur(blur_limit=0, sigma_limit=(lo, hi), p=blur_p), A.ToGray(num_output_channels=3, p=grayscale_p)]
    if normalize:
        out.append((FastNormalize if fast else A.Normalize)(mean=tuple(mean), std=tuple(std), max_pixel_value=255.0))
    return [*out, ToTensorV2()]


def _check_mean_std(mean: Sequence[float], std: Sequence[float]) -> None:
    if len(mean) != 3 or len(std) != 3 or min(float(v) for v in std) <= 0:
        raise ValueError(f"mean and std need 3 values each, std > 0; got {tuple(mean)}, {tuple(std)}")


def normalize_views(x: torch.Tensor, mean: Sequence[float] = IMAGENET_MEAN,
                    std: Sequence[float] = IMAGENET_STD) -> torch.Tensor:
    """uint8 views ``(B, 3, S, S)`` (a recipe with ``normalize=False``) -> float32 ``(x / 255 - mean) / std``
    on ``x``'s device, as the recipe's own normalisation would have given them; other dtypes pass through."""
    if x.dtype != torch.uint8:
        return x
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"views must be (B, 3, S, S), got {tuple(x.shape)}")
    m = torch.as_tensor(mean, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    s = torch.as_tensor(std, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    return (x.float() / 255.0 - m) / s


def natural_views(image_size: int = 96, scale: Sequence[float] = (0.08, 1.0), hflip_p: float = 0.5,
                  jitter_strength: float = 0.5, jitter_p: float = 0.8, grayscale_p: float = 0.2,
                  blur_p: float = 0.5, blur_sigma: Sequence[float] = (0.1, 2.0),
                  mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                  normalize: bool = True) -> A.Compose:
    """The SimCLR paper's recipe (Chen et al. 2020, appendix A).

    Random resized crop (area ``scale``, aspect 3/4..4/3) to ``image_size``, horizontal flip,
    colour jitter (brightness/contrast/saturation ``0.8 s``, hue ``0.2 s`` with
    ``s = jitter_strength``) with probability ``jitter_p``, grayscale, Gaussian blur, normalise.
    ``(H, W, 3)`` uint8 -> ``(3, image_size, image_size)`` float32 (uint8 with ``normalize=False``).
    """
    lo, hi = _check_size_scale(image_size, scale)
    _check_prob(hflip_p=hflip_p, jitter_p=jitter_p, grayscale_p=grayscale_p, blur_p=blur_p)
    s = float(jitter_strength)
    if not 0.0 <= 0.2 * s <= 0.5:
        raise ValueError(f"jitter_strength must be in [0, 2.5] (hue = 0.2*s <= 0.5), got {jitter_strength}")
    return A.Compose([
        A.RandomResizedCrop(size=(int(image_size), int(image_size)), scale=(lo, hi)),
        A.HorizontalFlip(p=hflip_p),
        A.ColorJitter(brightness=0.8 * s, contrast=0.8 * s, saturation=0.8 * s, hue=0.2 * s, p=jitter_p),
        *_tail(blur_p, blur_sigma, grayscale_p, mean, std, normalize=normalize),
    ])


# --------------------------------------------------------------------------- fast uint8 ops
# -log(max(v / 255, 1e-6)) for every uint8 value, once per channel (albumentations' optical density)
_OD_LUT = np.repeat((-np.log(np.maximum(np.arange(256) / 255.0, 1e-6))).astype(np.float32)[:, None], 3,
                    axis=1).reshape(256, 1, 3)
_LUMA = np.array([[0.299, 0.587, 0.114]], np.float32)   # albumentations' tissue-mask luminosity
_TISSUE_LUMA = 0.85 * 255                                # tissue: luminosity below this (uint8 scale)


def _od_to_uint8(od: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """``round(255 * exp(-(od @ matrix[:, :3].T + matrix[:, 3])))`` saturated to uint8; ``od (H, W, 3)``."""
    out = cv2.transform(od, -matrix.astype(np.float32))
    cv2.exp(out, out)
    return cv2.convertScaleAbs(out, alpha=255.0)


def he_stain_uint8(img: np.ndarray, stain_matrix: np.ndarray, scale_factors: np.ndarray,
                   shift_values: np.ndarray, augment_background: bool = False) -> np.ndarray:
    """albumentations' ``apply_he_stain_augmentation`` for an ``(H, W, 3)`` uint8 RGB image, fast.

    The original maps every pixel to optical density ``OD = -log(max(I/255, 1e-6))``, solves the
    stain concentrations ``C = OD P`` (``P (3, 2)``: the regularised pseudo-inverse of the
    ``(2, 3)`` stain matrix ``M``), scales and shifts them on tissue pixels (luminosity < 0.85) and
    reconstructs ``exp(-C M)``. All of that is affine in ``OD``: ``OD' = OD (P diag(s) M) + t M``
    on tissue and ``OD (P M)`` elsewhere, so here ``OD`` comes from a 256-entry lookup table and
    ``OD'`` from one ``cv2.transform`` per pixel class. Returns ``(H, W, 3)`` uint8, equal to the
    original within one grey level (float32 rounding).
    """
    m = np.asarray(stain_matrix, np.float64)
    proj = np.linalg.solve(m @ m.T + 1e-6 * np.eye(2), m).T                # (3, 2): C = OD @ proj
    tissue_map = np.concatenate([((proj * np.asarray(scale_factors, np.float64)) @ m).T,
                                 (np.asarray(shift_values, np.float64) @ m)[:, None]], axis=1)   # (3, 4)
    od = cv2.LUT(img, _OD_LUT)
    out = _od_to_uint8(od, tissue_map)
    if augment_background:
        return out
    background = cv2.compare(cv2.transform(img.astype(np.float32), _LUMA), _TISSUE_LUMA, cv2.CMP_GE)
    if cv2.countNonZero(background):
        plain = _od_to_uint8(od, np.concatenate([(proj @ m).T, np.zeros((3, 1))], axis=1))
        cv2.copyTo(plain, background, out)
    return out


class FastHEStain(A.HEStain):
    """``A.HEStain`` (same arguments, same random draws) computed by :func:`he_stain_uint8` on
    ``(H, W, 3)`` uint8 RGB images; other inputs go to the original."""

    def apply(self, img: np.ndarray, stain_matrix: np.ndarray, scale_factors: np.ndarray,
              shift_values: np.ndarray, **params: Any) -> np.ndarray:
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            return super().apply(img, stain_matrix, scale_factors, shift_values, **params)
        return he_stain_uint8(img, stain_matrix, scale_factors, shift_values, self.augment_background)


class FastNormalize(A.Normalize):
    """``A.Normalize`` (``normalization="standard"``) of ``(H, W, 3)`` uint8 images as one
    ``cv2.LUT`` into float32 (a 256 x 3 table of ``(v / max_pixel_value - mean) / std``); other
    inputs and settings go to the original. Equal to it within float32 rounding."""

    def apply(self, img: np.ndarray, **params: Any) -> np.ndarray:
        if (img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3 or self.normalization != "standard"
                or self.mean is None or self.std is None):
            return super().apply(img, **params)
        table = getattr(self, "_table", None)
        if table is None:
            v = np.arange(256, dtype=np.float64)[:, None] / float(self.max_pixel_value)
            mean = np.broadcast_to(np.asarray(self.mean, np.float64), (3,))
            std = np.broadcast_to(np.asarray(self.std, np.float64), (3,))
            table = self._table = ((v - mean) / std).astype(np.float32).reshape(256, 1, 3)
        return cv2.LUT(img, table)


_CV2_ROT90 = {1: cv2.ROTATE_90_COUNTERCLOCKWISE, 2: cv2.ROTATE_180, 3: cv2.ROTATE_90_CLOCKWISE}


class FastRandomRotate90(A.RandomRotate90):
    """``A.RandomRotate90`` whose image rotation is ``cv2.rotate`` (a contiguous copy) instead of
    ``np.rot90`` (a strided view the next transform copies slowly); same draws, same pixels."""

    def apply(self, img: np.ndarray, factor: int, **params: Any) -> np.ndarray:
        if factor % 4 == 0:
            return img
        return cv2.rotate(np.ascontiguousarray(img), _CV2_ROT90[factor % 4])


def histology_views(image_size: int = 224, scale: Sequence[float] = (0.3, 1.0), hflip_p: float = 0.5,
                    vflip_p: float = 0.5, rot90_p: float = 0.5, hestain_p: float = 0.8,
                    hestain_method: str = "random_preset",
                    intensity_scale_range: Sequence[float] = (0.7, 1.3),
                    intensity_shift_range: Sequence[float] = (-0.1, 0.1),
                    augment_background: bool = False, brightness: float = 0.2, contrast: float = 0.2,
                    saturation: float = 0.1, hue: float = 0.04, jitter_p: float = 0.8,
                    blur_p: float = 0.3, blur_sigma: Sequence[float] = (0.1, 1.5),
                    grayscale_p: float = 0.0, mean: Sequence[float] = IMAGENET_MEAN,
                    std: Sequence[float] = IMAGENET_STD, fast_ops: bool = True, normalize: bool = True) -> A.Compose:
    """Stain-aware views of H&E tiles.

    Milder random resized crop than the natural recipe: ``scale`` down to 0.3 of the area
    (at most ~1.8x zoom), because nucleus size at a fixed magnification is a diagnostic cue
    and the fine-tuned segmenter sees tiles at the pretraining magnification; 8% crops would
    zoom 3.5x and make nuclei look like whole cell clusters. Tissue has no canonical
    orientation, so horizontal + vertical flips and 90-degree rotations. ``A.HEStain``
    re-weights the haematoxylin and eosin concentrations (``intensity_scale_range``,
    ``intensity_shift_range``; ``hestain_method`` one of ``random_preset``, ``preset``,
    ``macenko``, ``vahadane``), which models lab-to-lab stain variation better than a big hue
    jitter; then a mild brightness/contrast/saturation/hue jitter and a light Gaussian blur
    (focus variation). Grayscale is off by default (stain colour carries information).
    ``fast_ops``: :class:`FastHEStain` / :class:`FastRandomRotate90` / :class:`FastNormalize` (same
    draws and images, several times faster); false: albumentations' own classes (the reference).
    ``(H, W, 3)`` uint8 -> ``(3, image_size, image_size)`` float32; with ``normalize=False`` uint8, for
    the trainer to normalise on its device (:func:`normalize_views`).
    """
    lo, hi = _check_size_scale(image_size, scale)
    _check_prob(hflip_p=hflip_p, vflip_p=vflip_p, rot90_p=rot90_p, hestain_p=hestain_p,
                jitter_p=jitter_p, grayscale_p=grayscale_p, blur_p=blur_p)
    return A.Compose([
        A.RandomResizedCrop(size=(int(image_size), int(image_size)), scale=(lo, hi)),
        A.HorizontalFlip(p=hflip_p),
        A.VerticalFlip(p=vflip_p),
        (FastRandomRotate90 if fast_ops else A.RandomRotate90)(p=rot90_p),
        (FastHEStain if fast_ops else A.HEStain)(method=hestain_method, intensity_scale_range=tuple(intensity_scale_range),
                  intensity_shift_range=tuple(intensity_shift_range),
                  augment_background=augment_background, p=hestain_p),
        A.ColorJitter(brightness=brightness, contrast=contrast, saturation=saturation, hue=hue, p=jitter_p),
        *_tail(blur_p, blur_sigma, grayscale_p, mean, std, fast=fast_ops, normalize=normalize),
    ])


VIEW_RECIPES: dict[str, Callable[..., A.Compose]] = {"natural": natural_views, "histology": histology_views}
RECIPES = VIEW_RECIPES  # short alias


def recipe_params(recipe: str) -> list[str]:
    """The keyword parameters that :func:`build_views` accepts for ``recipe``."""
    if recipe not in VIEW_RECIPES:
        raise ValueError(f"unknown view recipe {recipe!r}; choose one of {', '.join(VIEW_RECIPES)}")
    return list(inspect.signature(VIEW_RECIPES[recipe]).parameters)


def build_views(recipe: str, **params: Any) -> A.Compose:
    """``VIEW_RECIPES[recipe](**params)``; ValueError naming an unknown recipe or parameter."""
    valid = recipe_params(recipe)
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise ValueError(f"unknown parameter(s) {', '.join(unknown)} for view recipe {recipe!r}; "
                         f"valid: {', '.join(valid)}")
    return VIEW_RECIPES[recipe](**params)


class MultiViewTransform:
    """``n_views`` independent draws of ``transform`` on one image.

    ``__call__(image (H, W, 3) uint8 RGB ndarray or PIL.Image) -> [ (3, S, S) float32 ] * n_views``.
    """

    def __init__(self, transform: A.Compose, n_views: int = 2):
        if int(n_views) < 1:
            raise ValueError(f"n_views must be >= 1, got {n_views}")
        self.transform = transform
        self.n_views = int(n_views)

    def __call__(self, image) -> list[torch.Tensor]:
        image = _as_rgb_uint8(image)
        return [self.transform(image=image)["image"] for _ in range(self.n_views)]

    def __repr__(self) -> str:
        return f"MultiViewTransform(n_views={self.n_views}, transform={self.transform!r})"


def _as_rgb_uint8(image) -> np.ndarray:
    if not isinstance(image, np.ndarray):  # PIL.Image
        image = np.asarray(image.convert("RGB"))
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got shape {image.shape} "
                         f"dtype {image.dtype}")
    return np.ascontiguousarray(image)


# --------------------------------------------------------------------------- seeding
def _compose_of(transform) -> A.BaseCompose:
    inner = transform.transform if isinstance(transform, MultiViewTransform) else transform
    if not isinstance(inner, A.BaseCompose):
        raise TypeError("expected an albumentations Compose or MultiViewTransform, "
                        f"got {type(transform).__name__}")
    return inner


def seed_views(transform: MultiViewTransform | A.BaseCompose, seed: int) -> None:
    """Reseed the pipeline so that the same ``seed`` gives the same sequence of views.

    All transforms of the pipeline share one ``np.random.default_rng(seed)`` and one
    ``random.Random(seed)``.
    """
    seed = int(seed) % 2**63
    _compose_of(transform).set_random_state(np.random.default_rng(seed), random.Random(seed))


def _is_pipeline(obj) -> bool:
    return isinstance(obj, (MultiViewTransform, A.BaseCompose))


def seed_transforms(dataset, seed: int) -> int:
    """Reseed every pipeline reachable as ``.transform`` / ``.views`` of ``dataset``.

    Also follows ``.dataset`` (wrappers such as ``Subset``) and ``.datasets`` (``ConcatDataset``)
    to a depth of 8. Pipeline ``k`` found gets ``seed + k`` (distinct streams). Returns how
    many pipelines were reseeded.
    """
    found: list = []

    def visit(obj, depth: int) -> None:
        if obj is None or depth > 8:
            return
        if _is_pipeline(obj):
            if not any(obj is f for f in found):
                found.append(obj)
            return
        for name in ("transform", "views"):
            visit(getattr(obj, name, None), depth + 1)
        visit(getattr(obj, "dataset", None), depth + 1)
        for child in getattr(obj, "datasets", None) or ():
            visit(child, depth + 1)

    visit(dataset, 0)
    for k, pipeline in enumerate(found):
        seed_views(pipeline, seed + k)
    return len(found)


def augment_worker_init_fn(worker_id: int) -> None:
    """``DataLoader(worker_init_fn=augment_worker_init_fn)``: per-worker, reproducible augmentation.

    In a worker, ``torch.initial_seed()`` is ``base_seed + worker_id`` (the base seed comes from
    the DataLoader's ``generator``, or the global torch RNG). This seeds Python ``random``,
    NumPy's global RNG, and every :class:`MultiViewTransform` / albumentations Compose
    reachable from the worker's dataset as ``.transform`` / ``.views`` (see
    :func:`seed_transforms`) from that seed, so workers draw different streams that repeat
    for the same base seed. Outside a worker it does nothing.
    """
    info = torch.utils.data.get_worker_info()
    if info is None:
        return
    seed = torch.initial_seed() % 2**63
    random.seed(seed)
    np.random.seed(seed % 2**32)
    seed_transforms(info.dataset, seed)


# --------------------------------------------------------------------------- preview
def _to_display(view: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """A view ``(3, S, S)`` (normalised float, or uint8) -> ``(S, S, 3)`` float in [0, 1]."""
    if view.dtype == torch.uint8:
        return view.detach().cpu().numpy().transpose(1, 2, 0) / 255.0
    x = view.detach().float().cpu().numpy().transpose(1, 2, 0)
    return np.clip(x * np.asarray(std) + np.asarray(mean), 0.0, 1.0)


def save_view_preview(images: list[np.ndarray], transform: MultiViewTransform | A.BaseCompose,
                      path: str | Path, n_pairs: int = 4, seed: int = 0,
                      mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                      tile_inches: float = 1.5, dpi: int = 100) -> Path:
    """PNG grid: one row per image = the original, then ``n_pairs`` view pairs (de-normalised).

    The figure is ``(1 + 2 * n_pairs) * tile_inches * dpi`` pixels wide and
    ``len(images) * tile_inches * dpi`` high. Views are drawn after reseeding
    ``transform`` with ``seed`` (the pipeline's RNG state is restored afterwards). Written
    atomically.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not images:
        raise ValueError("images must not be empty")
    if int(n_pairs) < 1:
        raise ValueError(f"n_pairs must be >= 1, got {n_pairs}")
    compose = _compose_of(transform)
    saved = (compose.random_generator, compose.py_random)
    seed_views(compose, seed)
    try:
        rows = []
        for image in images:
            image = _as_rgb_uint8(image)
            rows.append((image, [compose(image=image)["image"] for _ in range(2 * n_pairs)]))
    finally:
        compose.set_random_state(*saved)

    cols = 1 + 2 * n_pairs
    fig, axes = plt.subplots(len(rows), cols, figsize=(cols * tile_inches, len(rows) * tile_inches),
                             dpi=dpi, squeeze=False)
    for r, (image, views) in enumerate(rows):
        axes[r][0].imshow(image)
        for c, view in enumerate(views, start=1):
            axes[r][c].imshow(_to_display(view, mean, std))
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0][0].set_title("original", fontsize=8)
    for p in range(n_pairs):
        axes[0][1 + 2 * p].set_title(f"pair {p + 1}: view 1", fontsize=8)
        axes[0][2 + 2 * p].set_title("view 2", fontsize=8)
    fig.subplots_adjust(left=0.01, right=0.99, top=0.93, bottom=0.01, wspace=0.05, hspace=0.05)
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=dpi, format="png")
    finally:
        plt.close(fig)
    return path
