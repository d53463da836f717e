"""STL-10 through torchvision: the unlabeled split as SimCLR views, train/test as (image, label).

``load_stl10(root, split)`` wraps :class:`torchvision.datasets.STL10`. When the binary files are
missing it downloads them (``download=True``); offline, it raises ONE line that says to pass
``--data-root`` (never a traceback wall). The archive's md5 is checked on download; the extracted
files (2.7 GB) are not re-hashed on every load, only checked for a consistent size.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from histoclr.errors import HistoclrError, InputFileError
from histoclr.images import normalize_image
from histoclr.io import atomic_write_bytes

SPLITS = ("unlabeled", "train", "test")
BASE_FOLDER = "stl10_binary"
IMAGE_BYTES = 3 * 96 * 96
_SPLIT_FILES = {"unlabeled": ("unlabeled_X.bin", None), "train": ("train_X.bin", "train_y.bin"),
                "test": ("test_X.bin", "test_y.bin")}


@functools.cache
def _dataset_class():
    """torchvision's STL10 with a cheap integrity check (files present) instead of md5 on every load."""
    from torchvision.datasets import STL10

    class _STL10(STL10):
        def _check_integrity(self) -> bool:
            folder = Path(self.root) / self.base_folder
            return all((folder / name).is_file() for name, _ in self.train_list + self.test_list)

    _STL10.__name__ = _STL10.__qualname__ = "STL10"
    return _STL10


def _check_sizes(folder: Path, split: str) -> None:
    """Raise InputFileError when a split's files are truncated or do not match each other."""
    x_name, y_name = _SPLIT_FILES[split]
    x_path = folder / x_name
    size = x_path.stat().st_size
    if size == 0 or size % IMAGE_BYTES:
        raise InputFileError(x_path, f"size {size} bytes is not a whole number of 3x96x96 images "
                                     "(truncated download?)")
    if y_name is not None:
        y_path = folder / y_name
        if y_path.stat().st_size != size // IMAGE_BYTES:
            raise InputFileError(y_path, f"{y_path.stat().st_size} labels for {size // IMAGE_BYTES} "
                                         f"images in {x_name}")


def load_stl10(root: str | os.PathLike, split: str, download: bool = True):
    """The torchvision STL10 dataset for ``split`` (``unlabeled``, ``train`` or ``test``).

    ``dataset.data`` is ``(N, 3, 96, 96)`` uint8, ``dataset.labels`` ``(N,)`` int (0..9; -1 for
    unlabeled). Raises a one-line :class:`HistoclrError` naming ``--data-root`` when the files
    are absent and cannot be downloaded.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown STL-10 split {split!r}; choose one of {', '.join(SPLITS)}")
    root = Path(root)
    cls = _dataset_class()
    folder = root / BASE_FOLDER
    hint = (f"download {cls.filename} elsewhere ({cls.url}), extract it and pass "
            f"--data-root DIR containing {BASE_FOLDER}/")

    def missing() -> list[str]:
        return [name for name, _ in cls.train_list + cls.test_list if not (folder / name).is_file()]

    if missing():
        if not download:
            raise HistoclrError(f"STL-10 not found under {root} (download disabled); {hint}")
        from torchvision.datasets.utils import download_and_extract_archive

        try:
            download_and_extract_archive(cls.url, str(root), filename=cls.filename, md5=cls.tgz_md5)
        except Exception as e:  # noqa: BLE001  URLError, HTTP/socket/tar errors, md5 mismatch, full disk
            reason = (str(e).splitlines() or [""])[0].strip()
            raise HistoclrError(
                f"STL-10 not found under {root} and could not be downloaded "
                f"({type(e).__name__}: {reason or 'no detail'}; offline?); {hint}") from None
    if missing():
        raise HistoclrError(f"STL-10 under {root} is incomplete (missing {', '.join(missing())}); {hint}")
    _check_sizes(folder, split)
    return cls(str(root), split=split, download=False)


class STL10Views:
    """Unlabeled images as SimCLR views: item ``i`` -> ``transform(HWC uint8 image)``.

    ``transform`` is typically ``MultiViewTransform(build_views("natural", ...), 2)``, returning a
    list of ``(3, S, S)`` float tensors. ``indices`` restricts to a subset (smoke runs).
    """

    def __init__(self, base, transform: Callable[[np.ndarray], object],
                 indices: Sequence[int] | None = None):
        self.data = base.data
        self.transform = transform
        self.indices = np.arange(len(self.data)) if indices is None else np.asarray(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def image(self, i: int) -> np.ndarray:
        """Image ``i`` as ``(96, 96, 3)`` uint8 (HWC)."""
        return np.ascontiguousarray(self.data[self.indices[i]].transpose(1, 2, 0))

    def __getitem__(self, i: int):
        return self.transform(self.image(i))


class STL10Labeled:
    """Labelled images for evaluation: item ``i`` -> ``(x (3, S, S) float32, label int)``.

    Deterministic transform: :func:`histoclr.images.normalize_image` (scale to [0, 1], ImageNet
    mean/std, as the SimCLR views are), then a resize to ``image_size`` (bilinear, antialiased)
    when it is not 96.
    """

    def __init__(self, base, image_size: int = 96, indices: Sequence[int] | None = None):
        if image_size < 8:
            raise ValueError(f"image_size must be >= 8, got {image_size}")
        self.data = base.data
        self.labels = np.asarray(base.labels, dtype=np.int64)
        self.indices = np.arange(len(self.data)) if indices is None else np.asarray(indices)
        self.image_size = int(image_size)

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def targets(self) -> np.ndarray:
        """Labels of this subset, ``(N,)`` int64."""
        return self.labels[self.indices]

    def __getitem__(self, i: int):
        import torch.nn.functional as F

        j = self.indices[i]
        x = normalize_image(self.data[j].transpose(1, 2, 0))  # (3, 96, 96); bilinear commutes with it
        if self.image_size != x.shape[-1]:
            x = F.interpolate(x[None], size=(self.image_size, self.image_size), mode="bilinear",
                              align_corners=False, antialias=True)[0]
        return x, int(self.labels[j])


def write_stl10_split(root: str | os.PathLike, split: str, images: np.ndarray,
                      labels: np.ndarray | None = None) -> Path:
    """Write ``images`` ``(N, 96, 96, 3)`` uint8 HWC (and ``labels`` 0..9) as ``split`` of the
    official binary release under ``root/stl10_binary/`` (e.g. a small subset for smoke runs).

    Each image is stored channel by channel, each channel column-major (what torchvision undoes
    with ``reshape(-1, 3, 96, 96).transpose(0, 1, 3, 2)``); labels are stored 1-based as uint8.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown STL-10 split {split!r}; choose one of {', '.join(SPLITS)}")
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[1:] != (96, 96, 3) or images.dtype != np.uint8:
        raise ValueError(f"images must be (N, 96, 96, 3) uint8, got {images.shape} {images.dtype}")
    x_name, y_name = _SPLIT_FILES[split]
    if (y_name is None) != (labels is None):
        raise ValueError(f"split {split!r} {'needs' if y_name else 'has no'} labels")

    folder = Path(root) / BASE_FOLDER
    atomic_write_bytes(folder / x_name, images.transpose(0, 3, 2, 1).tobytes())
    if y_name is not None:
        labels = np.asarray(labels)
        if labels.shape != (len(images),) or labels.min() < 0 or labels.max() > 9:
            raise ValueError(f"labels must be ({len(images)},) in 0..9")
        atomic_write_bytes(folder / y_name, (labels + 1).astype(np.uint8).tobytes())
    return folder
