"""Whole-image inference: sliding window with Gaussian overlap blending at the model's mpp, then the
checkpoint's instance post-processing (:mod:`histoclr.seg.postprocess`)."""

from __future__ import annotations

import math
from dataclasses import replace
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
import tifffile
import torch
from PIL import Image
from torch import nn

from histoclr.errors import InputFileError
from histoclr.images import normalize_image
from histoclr.io import atomic_path
from histoclr.seg.dataset import resize_nearest
from histoclr.seg.overlay import save_overlay_png
from histoclr.seg.postprocess import (
    PostprocessParams,
    foreground_probability,
    instances_from_output,
)
from histoclr.slides.reader import level_for_mpp, open_slide


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


def predict_image(ckpt, image: np.ndarray, image_mpp: float | None, *, overlap: float = 0.25,
                  batch_size: int = 4, device=None,
                  postprocess: PostprocessParams | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Nucleus instances and probability of an RGB uint8 image ``(H, W, 3)``, both at its own size.

    The image is resampled to ``ckpt.mpp`` (area when shrinking, bilinear when enlarging), run by
    sliding window and post-processed there with ``postprocess`` (default: the checkpoint's own
    parameters, the ones validated in training); the instances are resized back nearest-neighbour
    and the probability bilinearly. Returns ``(instances (H, W) int32, probability (H, W) float32)``.
    ``ckpt``: a :class:`histoclr.seg.model.SegCheckpoint`. ``image_mpp`` may be None only when the
    model works at native resolution (``ckpt.mpp is None``).
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
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        work = cv2.resize(image, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    target = ckpt.model.spec.target
    x = normalize_image(work, ckpt.mean, ckpt.std)
    out = sliding_window_predict(ckpt.model, x, ckpt.window, overlap, batch_size, device, target)
    instances = instances_of(out, target, postprocess or ckpt.postprocess)
    prob = foreground_probability(split_output(out, target)[0]).astype(np.float32)
    if prob.shape != (h, w):
        prob = cv2.resize(prob, (w, h), interpolation=cv2.INTER_LINEAR)
        instances = resize_nearest(instances, (h, w))
    return instances, prob


# --------------------------------------------------------------------------- files
MAX_WHOLE_PIXELS = 100_000_000   # a larger input needs --region


def read_input(path, region: tuple[int, int, int, int] | None = None, *, mpp: float | None = None,
               assume_mpp: float | None = None, model_mpp: float | None = None):
    """Read an image, or a level-0 ``region = (x, y, w, h)`` of a slide, near ``model_mpp``.

    The input's mpp is ``mpp`` when given, else the file's metadata, else ``assume_mpp``. A slide
    region is read through OpenSlide from the coarsest pyramid level still at least as fine as the
    model's mpp. Returns ``(rgb (h', w', 3) uint8, mpp of rgb or None, (h, w) level-0 size, name)``.

    Raises:
        InputFileError: unreadable file, a region outside the slide, an input too large without
            ``--region``, or an unknown mpp when the model needs one.
    """
    path = Path(path)
    with open_slide(path) as s:
        base_mpp = mpp or s.mpp or assume_mpp
        if model_mpp is not None and base_mpp is None:
            raise InputFileError(path, f"its resolution (mpp) is unknown and the model works at {model_mpp} "
                                 "um/px; pass --mpp M (or --assume-mpp M for files without it)")
        W, H = s.dimensions
        if region is None:
            if W * H > MAX_WHOLE_PIXELS:
                raise InputFileError(path, f"{W}x{H} px is too large to predict whole; pass --region x,y,w,h")
            x, y, w, h = 0, 0, W, H
            name = path.stem
        else:
            x, y, w, h = region
            if w < 1 or h < 1 or x < 0 or y < 0 or x + w > W or y + h > H:
                raise InputFileError(path, f"region x={x},y={y},w={w},h={h} is not inside the slide ({W}x{H} at level 0)")
            name = f"{path.stem}_x{x}_y{y}_w{w}_h{h}"
        level = 0
        if model_mpp is not None and s.level_count > 1:
            level, _ = level_for_mpp(s.level_downsamples, base_mpp, model_mpp, 1)
        ds = s.level_downsamples[level]
        rgb = s.read_region((x, y), level, (max(1, round(w / ds)), max(1, round(h / ds))))
    return rgb, (base_mpp * ds if base_mpp else None), (h, w), name


def predict_file(ckpt, path, out_dir, *, region=None, mpp=None, assume_mpp=None, mask_format: str = "png",
                 binary: bool = False, threshold: float | None = None, overlap: float = 0.25, batch_size: int = 4,
                 device=None) -> dict:
    """Predict one input and write, at the input's (level-0 region's) size, ``<name>_instances.<png|tif>``
    (the nucleus instance labels: 16-bit PNG, or TIFF past 65,535 nuclei) or, with ``binary``,
    ``<name>_mask.<png|tif>`` (0/255), plus ``<name>_overlay.png`` with every nucleus outlined.

    ``threshold``: overrides the checkpoint's foreground threshold. Returns ``{"mask": path,
    "overlay": path, "nuclei": n, "foreground": fraction}``.
    """
    if mask_format not in ("png", "tiff"):
        raise ValueError(f"mask_format must be png or tiff, got {mask_format!r}")
    params = ckpt.postprocess if threshold is None else replace(ckpt.postprocess, fg_threshold=threshold).validate()
    rgb, image_mpp, (h, w), name = read_input(path, region, mpp=mpp, assume_mpp=assume_mpp, model_mpp=ckpt.mpp)
    instances, _ = predict_image(ckpt, rgb, image_mpp, overlap=overlap, batch_size=batch_size, device=device,
                                 postprocess=params)
    if instances.shape != (h, w):
        instances = resize_nearest(instances, (h, w))
        rgb = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_LINEAR)
    out_dir = Path(out_dir)
    n = int(instances.max())
    if binary:
        data = (instances > 0).astype(np.uint8) * 255
        stem = f"{name}_mask"
    else:
        data = instances.astype(np.uint16) if n <= 65535 else instances.astype(np.int32)
        stem = f"{name}_instances"
        if mask_format == "png" and n > 65535:
            mask_format = "tiff"      # a 16-bit PNG holds at most 65,535 nuclei
    mask_path = out_dir / f"{stem}.{'png' if mask_format == 'png' else 'tif'}"
    with atomic_path(mask_path) as tmp:
        if mask_format == "png":
            Image.fromarray(data).save(tmp, format="PNG")
        else:
            tifffile.imwrite(tmp, data, compression="zlib")
    overlay_path = save_overlay_png(out_dir / f"{name}_overlay.png", rgb, instances)
    return {"mask": mask_path, "overlay": overlay_path, "nuclei": n, "foreground": float((instances > 0).mean())}
