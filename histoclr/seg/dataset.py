"""Load image/mask pairs at a target resolution; random augmented crops for training."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from skimage.segmentation import relabel_sequential

from histoclr.errors import HistoclrError
from histoclr.images import IMAGENET_MEAN, IMAGENET_STD, normalize_image, read_rgb
from histoclr.manifests.pairs import SegPair
from histoclr.seg.annotations import load_instances
from histoclr.seg.targets import TARGETS, make_target


@dataclass
class LoadedPair:
    """One pair in memory at the target resolution.

    image: ``(H, W, 3)`` uint8; mask: ``(H, W)`` uint8 in {0, 1}; instances: ``(H, W)`` int32;
    scale: output size / native size (``pair.mpp / target mpp``; 1.0 without resampling).
    """

    image: np.ndarray
    mask: np.ndarray
    instances: np.ndarray
    scale: float


def resize_nearest(labels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a 2-D label map (keeps dtype and label values)."""
    h, w = labels.shape
    rows = np.minimum(((np.arange(shape[0]) + 0.5) * h / shape[0]).astype(np.int64), h - 1)
    cols = np.minimum(((np.arange(shape[1]) + 0.5) * w / shape[1]).astype(np.int64), w - 1)
    return labels[rows[:, None], cols[None, :]]


def load_pair(pair: SegPair, mpp: float | None) -> LoadedPair:
    """Read a pair and resample it to ``mpp`` microns per pixel (``None``: native resolution).

    The image is resized with area averaging when shrinking and bilinear when enlarging; the
    instances are rasterised at native size and resized nearest-neighbour.
    """
    import cv2

    image = read_rgb(pair.image_path)
    instances = load_instances(pair.mask_path, pair.mask_format, image.shape[:2])
    scale = 1.0
    if mpp is not None:
        if not mpp > 0:
            raise ValueError(f"target mpp must be > 0, got {mpp}")
        if pair.mpp is None:
            raise HistoclrError(f"pair {pair.image_id}: its mpp is unknown, so it cannot be "
                                f"resampled to {mpp} um/px (set mpp in the pairs manifest)")
        scale = pair.mpp / mpp
    if not math.isclose(scale, 1.0, rel_tol=1e-6):
        h, w = image.shape[:2]
        out = (max(1, round(h * scale)), max(1, round(w * scale)))
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        image = cv2.resize(image, (out[1], out[0]), interpolation=interp)
        instances = resize_nearest(instances, out)
    else:
        scale = 1.0
    mask = (instances > 0).astype(np.uint8)
    return LoadedPair(np.ascontiguousarray(image), mask, instances, float(scale))


def build_augmentation(crop_size: int, augment: bool):
    """The albumentations pipeline applied to an image + mask window of ``window_size(crop_size)``.

    augment: flips, RandomRotate90, mild scale (Affine 0.8-1.25, small rotation),
    a centre crop to ``crop_size`` (the larger window keeps scaled-down corners filled with
    real tissue), then ``A.HEStain`` stain jitter. Without augment: a centre crop only.
    """
    import albumentations as A
    import cv2

    steps = []
    if augment:
        steps += [
            A.HorizontalFlip(p=0.5),
            A.VerticalFlip(p=0.5),
            A.RandomRotate90(p=0.5),
            A.Affine(scale=(0.8, 1.25), rotate=(-15, 15), border_mode=cv2.BORDER_REFLECT_101,
                     p=0.5),
        ]
    steps.append(A.CenterCrop(crop_size, crop_size))
    if augment:  # colour only, so after the crop: it is the slowest step, per pixel
        steps.append(A.HEStain(method="random_preset", p=0.5))
    return A.Compose(steps)


def window_size(crop_size: int) -> int:
    """Side of the window cut before augmentation (room for rotation and 0.8x zoom-out)."""
    return math.ceil(crop_size * 1.5)


class SegCropDataset:
    """Random ``crop_size`` crops of loaded pairs with joint image + instance-map augmentation.

    Item ``i`` -> ``(image float32 (3, S, S) normalised, target)``, the target computed from the
    augmented crop's instance map by :func:`histoclr.seg.targets.make_target`: a dict
    ``{"classes": int64 (S, S)[, "distance": float32 (S, S)]}`` (``target``: binary | contour |
    distance; ``boundary_width``: the contour band in px).
    Images are picked with probability proportional to their area; the crop position and
    augmentation are drawn from ``numpy.random.default_rng([seed, epoch, i])`` so an item is
    the same in any worker process (call ``set_epoch`` to get new crops each epoch).
    ``samples_per_epoch=None``: about as many crops as needed to cover every image once.
    ``loaded``: already loaded pairs (then ``pairs``/``mpp`` are not read); ``progress``: a tqdm
    bar while loading.
    """

    def __init__(self, pairs: Sequence[SegPair], mpp: float | None, crop_size: int = 256,
                 samples_per_epoch: int | None = None, augment: bool = True, seed: int = 0,
                 mean=IMAGENET_MEAN, std=IMAGENET_STD, loaded: Sequence[LoadedPair] | None = None,
                 progress: bool = False, target: str = "binary", boundary_width: int = 2):
        if target not in TARGETS:
            raise ValueError(f"unknown target {target!r}; choose one of {', '.join(TARGETS)}")
        if crop_size < 8:
            raise ValueError(f"crop_size must be >= 8, got {crop_size}")
        if not pairs and not loaded:
            raise ValueError("SegCropDataset needs at least one pair")
        if samples_per_epoch is not None and samples_per_epoch < 1:
            raise ValueError(f"samples_per_epoch must be >= 1, got {samples_per_epoch}")
        self.pairs = list(pairs)
        if loaded is None:
            from tqdm import tqdm

            loaded = [load_pair(p, mpp) for p in tqdm(self.pairs, desc="load pairs", unit="pair",
                                                      disable=not progress)]
        self.items = list(loaded)
        self.crop_size = crop_size
        self.window = window_size(crop_size)
        self.augment = augment
        self.seed = seed
        self.epoch = 0
        self.mean, self.std = mean, std
        self.target, self.boundary_width = target, boundary_width
        areas = np.array([it.mask.size for it in self.items], dtype=np.float64)
        self.weights = areas / areas.sum()
        self.samples_per_epoch = samples_per_epoch or max(
            1, math.ceil(areas.sum() / crop_size**2))
        self.transform = build_augmentation(crop_size, augment)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.samples_per_epoch

    def window_at(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The un-augmented ``(window, window)`` image/mask cut for item ``index`` (reflect-padded)."""
        image, instances, _ = self._window(index)
        return image, (instances > 0).astype(np.uint8)

    def _window(self, index: int):
        rng = np.random.default_rng([self.seed, self.epoch, index])
        item = self.items[int(rng.choice(len(self.items), p=self.weights))]
        win = self.window if self.augment else self.crop_size
        image, instances = item.image, item.instances
        h, w = instances.shape
        if h < win or w < win:  # reflect-pad small images (mirrored nuclei keep their label: harmless)
            import cv2

            ph, pw = max(0, win - h), max(0, win - w)
            pads = (ph // 2, ph - ph // 2, pw // 2, pw - pw // 2)
            image = cv2.copyMakeBorder(image, *pads, cv2.BORDER_REFLECT_101)
            instances = np.pad(instances, ((pads[0], pads[1]), (pads[2], pads[3])), mode="reflect")
            h, w = instances.shape
        y = int(rng.integers(0, h - win + 1))
        x = int(rng.integers(0, w - win + 1))
        cut = relabel_sequential(instances[y:y + win, x:x + win])[0]
        return image[y:y + win, x:x + win], cut.astype(np.uint16), rng

    def __getitem__(self, index: int):
        import torch

        if not 0 <= index < len(self):
            raise IndexError(index)
        image, instances, rng = self._window(index)
        self.transform.set_random_seed(int(rng.integers(0, 2**31 - 1)))
        out = self.transform(image=image, mask=instances)
        x = normalize_image(out["image"], self.mean, self.std)
        target = make_target(np.ascontiguousarray(out["mask"]).astype(np.int32), self.target, self.boundary_width)
        return x, {k: torch.from_numpy(v) for k, v in target.items()}
