"""Whole-image inference: sliding window with Gaussian overlap blending, at the model's mpp."""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
from torch import nn


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
    stride = max(1, int(round(window * (1.0 - overlap))))
    starts = list(range(0, size - window, stride))
    starts.append(size - window)
    return starts


def sliding_window_predict(model: nn.Module, image: torch.Tensor, window: int, overlap: float = 0.25,
                           batch_size: int = 4, device: str | torch.device | None = None) -> torch.Tensor:
    """Class probabilities ``(C, H, W)`` for a normalised image ``(3, H, W)``.

    Windows of ``window`` px overlapping by ``overlap`` (fraction) are blended with Gaussian
    weights; an image smaller than the window (in either side) is reflect-padded (zero-padded
    when too small to reflect) and the padding is cropped off again. C = 1 -> sigmoid, else softmax.
    The model is run in eval mode under ``torch.inference_mode``; its mode is restored afterwards.
    """
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
                probs = torch.sigmoid(logits) if logits.shape[1] == 1 else torch.softmax(logits, dim=1)
                if acc is None:
                    acc = torch.zeros((probs.shape[1], H, W), device=device)
                for (y, xx), p in zip(chunk, probs):
                    acc[:, y:y + window, xx:xx + window] += p * weights
                    norm[y:y + window, xx:xx + window] += weights
    finally:
        model.train(was_training)
    return (acc / norm)[:, :h, :w].cpu()


def foreground(probs: torch.Tensor | np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Binary nucleus mask ``(H, W)`` bool from probabilities ``(C, H, W)`` (C = 1: p > threshold; else argmax == 1)."""
    p = probs.numpy() if isinstance(probs, torch.Tensor) else np.asarray(probs)
    if p.ndim != 3:
        raise ValueError(f"probs must be (C, H, W), got {p.shape}")
    return p[0] > threshold if p.shape[0] == 1 else p.argmax(axis=0) == 1


def predict_image(ckpt, image: np.ndarray, image_mpp: float | None, *, overlap: float = 0.25,
                  batch_size: int = 4, device=None) -> np.ndarray:
    """Nucleus probability ``(H, W)`` float32 of an RGB uint8 image ``(H, W, 3)`` at its own size.

    The image is resampled to ``ckpt.mpp`` (area when shrinking, bilinear when enlarging), run by
    sliding window, and the probabilities are resized back to the input size (bilinear).
    ``ckpt``: a :class:`histoclr.seg.model.SegCheckpoint`. ``image_mpp`` may be None only when the
    model works at native resolution (``ckpt.mpp is None``).
    """
    import cv2

    from histoclr.seg.dataset import normalize_image

    h, w = image.shape[:2]
    scale = 1.0
    if ckpt.mpp is not None:
        if image_mpp is None:
            raise ValueError("the image's mpp is unknown; it is needed to resample to the model's "
                             f"{ckpt.mpp} um/px")
        scale = image_mpp / ckpt.mpp
    work = image
    if not math.isclose(scale, 1.0, rel_tol=1e-3):
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        work = cv2.resize(image, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    x = normalize_image(work, ckpt.mean, ckpt.std)
    probs = sliding_window_predict(ckpt.model, x, ckpt.window, overlap, batch_size, device)
    p = (probs[0] if probs.shape[0] == 1 else probs[1]).numpy().astype(np.float32)
    if p.shape != (h, w):
        p = cv2.resize(p, (w, h), interpolation=cv2.INTER_LINEAR)
    return p
