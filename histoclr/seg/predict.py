"""Whole-image inference: sliding window with Gaussian overlap blending at the model's mpp, then the
checkpoint's instance post-processing (:mod:`histoclr.seg.postprocess`). Files, slides and regions:
:mod:`histoclr.seg.slide_predict`."""

from __future__ import annotations

import math
from functools import lru_cache

import cv2
import numpy as np
import torch
from torch import nn

from histoclr.images import normalize_image
from histoclr.seg.dataset import resize_nearest
from histoclr.seg.postprocess import (
    PostprocessParams,
    foreground_probability,
    instances_from_output,
)


@lru_cache(maxsize=8)
def _gaussian_weights(window: int, sigma_scale: float = 0.125) -> torch.Tensor:
    """``(window, window)`` weights peaking at the centre (sigma = window / 8), floored at 1e-3 of the peak."""
    r = torch.arange(window, dtype=torch.float32) - (window - 1) / 2
    g = torch.exp(-0.5 * (r / (window * sigma_scale)) ** 2)
    w = g[:, None] * g[None, :]
    w = w / w.max()
    return w.clamp_min_(1e-3)


def window_starts(size: int, window: int, overlap: float) -> list[int]:
    """Start offsets covering ``[0, size)`` with windows of ``window`` px (``size >= window``)."""
    if size <= window:
        return [0]
    stride = max(1, round(window * (1.0 - overlap)))
    starts = list(range(0, size - window, stride))
    starts.append(size - window)
    return starts


def activate(logits: torch.Tensor, target: str = "binary") -> torch.Tensor:
    """Network output ``(B, C, H, W)`` -> probabilities: sigmoid for one channel, else softmax over
    the class channels; for the ``distance`` target the last channel (the regression) is clamped
    to [0, 1] and the first two are softmaxed."""
    if target == "distance":
        return torch.cat([torch.softmax(logits[:, :2], dim=1), logits[:, 2:3].clamp(0, 1)], dim=1)
    return torch.sigmoid(logits) if logits.shape[1] == 1 else torch.softmax(logits, dim=1)


def sliding_window_predict(model: nn.Module, image: torch.Tensor, window: int, overlap: float = 0.25,
                           batch_size: int = 4, device: str | torch.device | None = None,
                           target: str | None = None) -> torch.Tensor:
    """Activated outputs ``(C, H, W)`` (see :func:`activate`) for a normalised image ``(3, H, W)``.

    Windows of ``window`` px overlapping by ``overlap`` (fraction) are blended with Gaussian
    weights; an image smaller than the window (in either side) is reflect-padded (zero-padded
    when too small to reflect) and the padding is cropped off again. ``target``: the model's
    training target (default: ``model.spec.target`` when present, else binary).
    The model is run in eval mode under ``torch.inference_mode``; its mode is restored afterwards.
    """
    if target is None:
        target = getattr(getattr(model, "spec", None), "target", "binary")
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"image must be a (3, H, W) tensor, got {tuple(image.shape)}")
    if window < 1 or not 0 <= overlap < 1 or batch_size < 1:
        raise ValueError(f"need window >= 1, 0 <= overlap < 1, batch_size >= 1; got {window}, {overlap}, {batch_size}")
    if device is None:
        device = next(model.parameters()).device
    _, h, w = image.shape
    ph, pw = max(0, window - h), max(0, window - w)
    x = image.float()
    if ph or pw:
        mode = "reflect" if ph < h and pw < w else "constant"
        x = torch.nn.functional.pad(x[None], (0, pw, 0, ph), mode=mode)[0]
    H, W = x.shape[1:]
    weights = _gaussian_weights(window).to(device)
    boxes = [(y, xx) for y in window_starts(H, window, overlap) for xx in window_starts(W, window, overlap)]
    acc = None
    norm = torch.zeros((H, W), device=device)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for i in range(0, len(boxes), batch_size):
                chunk = boxes[i:i + batch_size]
                batch = torch.stack([x[:, y:y + window, xx:xx + window] for y, xx in chunk]).to(device)
                logits = model(batch)
                probs = activate(logits, target)
                if acc is None:
                    acc = torch.zeros((probs.shape[1], H, W), device=device)
                for (y, xx), p in zip(chunk, probs):
                    acc[:, y:y + window, xx:xx + window] += p * weights
                    norm[y:y + window, xx:xx + window] += weights
    finally:
        model.train(was_training)
    return (acc / norm)[:, :h, :w].cpu()


def split_output(out: torch.Tensor | np.ndarray, target: str = "binary") -> tuple[np.ndarray, np.ndarray | None]:
    """Activated outputs ``(C, H, W)`` -> ``(class probabilities (C', H, W), distance (H, W) or None)``."""
    p = out.numpy() if isinstance(out, torch.Tensor) else np.asarray(out)
    if p.ndim != 3:
        raise ValueError(f"outputs must be (C, H, W), got {p.shape}")
    if target == "distance":
        return p[:2], p[2]
    return p, None


def instances_of(out: torch.Tensor | np.ndarray, target: str, params: PostprocessParams) -> np.ndarray:
    """int32 instance map ``(H, W)`` of one image's activated outputs ``(C, H, W)``."""
    classes, distance = split_output(out, target)
    return instances_from_output(classes, params, distance)


def resample(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """RGB ``(h, w, 3)`` resized to ``size = (w', h')``: area averaging when shrinking, bilinear when
    enlarging; returned as is when already that size."""
    if image.shape[1::-1] == tuple(size):
        return image
    shrink = size[0] * size[1] < image.shape[0] * image.shape[1]
    return cv2.resize(image, tuple(size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def predict_work(ckpt, work: np.ndarray, params: PostprocessParams, *, overlap: float = 0.25,
                 batch_size: int = 4, device=None) -> tuple[np.ndarray, np.ndarray]:
    """Instances and nucleus probability of an RGB uint8 image ``(H, W, 3)`` already at ``ckpt.mpp``.

    Sliding window (batches of ``batch_size`` windows), then the post-processing ``params``.
    Returns ``(instances (H, W) int32, probability (H, W) float32)``.
    """
    target = ckpt.model.spec.target
    x = normalize_image(work, ckpt.mean, ckpt.std)
    out = sliding_window_predict(ckpt.model, x, ckpt.window, overlap, batch_size, device, target)
    prob = foreground_probability(split_output(out, target)[0]).astype(np.float32)
    return instances_of(out, target, params), prob


def predict_image(ckpt, image: np.ndarray, image_mpp: float | None, *, overlap: float = 0.25,
                  batch_size: int = 4, device=None,
                  postprocess: PostprocessParams | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Nucleus instances and probability of an RGB uint8 image ``(H, W, 3)``, both at its own size.

    The image is resampled to ``ckpt.mpp`` (:func:`resample`) and run through :func:`predict_work`
    with ``postprocess`` (default: the checkpoint's own parameters, the ones validated in training);
    the instances are resized back nearest-neighbour and the probability bilinearly. Returns
    ``(instances (H, W) int32, probability (H, W) float32)``. ``ckpt``: a
    :class:`histoclr.seg.model.SegCheckpoint`. ``image_mpp`` may be None only when the model works
    at native resolution (``ckpt.mpp is None``). Whole slides and regions:
    :mod:`histoclr.seg.slide_predict`.
    """
    h, w = image.shape[:2]
    scale = 1.0
    if ckpt.mpp is not None:
        if image_mpp is None:
            raise ValueError("the image's mpp is unknown; it is needed to resample to the model's "
                             f"{ckpt.mpp} um/px")
        scale = image_mpp / ckpt.mpp
    work = image
    if not math.isclose(scale, 1.0, rel_tol=1e-3):
        work = resample(image, (max(1, round(w * scale)), max(1, round(h * scale))))
    instances, prob = predict_work(ckpt, work, postprocess or ckpt.postprocess, overlap=overlap,
                                   batch_size=batch_size, device=device)
    if prob.shape != (h, w):
        prob = cv2.resize(prob, (w, h), interpolation=cv2.INTER_LINEAR)
        instances = resize_nearest(instances, (h, w))
    return instances, prob
