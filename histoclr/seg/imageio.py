"""Read RGB images and label images (TIFF via tifffile, everything else via Pillow)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from histoclr.errors import InputFileError

TIFF_SUFFIXES = (".tif", ".tiff")


def _read_array(path: Path) -> np.ndarray:
    try:
        if path.suffix.lower() in TIFF_SUFFIXES:
            import tifffile

            return np.asarray(tifffile.imread(path, key=0))
        from PIL import Image

        with Image.open(path) as im:
            return np.asarray(im)
    except FileNotFoundError:
        raise InputFileError(path, "file not found") from None
    except (OSError, ValueError, SyntaxError) as e:  # unreadable, truncated, unknown format
        raise InputFileError(path, f"cannot read image ({type(e).__name__}: {e})") from None


def read_rgb(path: str | Path) -> np.ndarray:
    """Read an image as RGB uint8 ``(H, W, 3)``; grey is repeated, alpha is dropped."""
    path = Path(path)
    a = _read_array(path)
    if a.size == 0:
        raise InputFileError(path, "no image data (unreadable or empty image file)")
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] not in (3, 4):
        raise InputFileError(path, f"expected an RGB image, got an array of shape {a.shape}")
    a = a[:, :, :3]
    if a.dtype != np.uint8:
        if a.dtype == np.uint16:
            a = (a // 257).astype(np.uint8)
        else:
            raise InputFileError(path, f"unsupported pixel type {a.dtype} (expected 8-bit RGB)")
    return np.ascontiguousarray(a)


def read_label(path: str | Path) -> np.ndarray:
    """Read a single-channel label/binary image ``(H, W)`` (an RGB image with equal channels is OK)."""
    path = Path(path)
    a = _read_array(path)
    if a.size == 0:
        raise InputFileError(path, "no image data (unreadable or empty image file)")
    if a.ndim == 3:
        if a.shape[2] == 4:
            a = a[:, :, :3]
        if not (a == a[:, :, :1]).all():
            raise InputFileError(path, "a label image must have one channel (this one is in colour)")
        a = a[:, :, 0]
    if a.ndim != 2:
        raise InputFileError(path, f"expected a 2-D label image, got an array of shape {a.shape}")
    if a.dtype.kind not in "biu":
        raise InputFileError(path, f"a label image must hold integers, not {a.dtype}")
    return a


def image_shape(path: str | Path) -> tuple[int, int]:
    """``(H, W)`` of an image, read from its header when the format allows."""
    path = Path(path)
    try:
        if path.suffix.lower() in TIFF_SUFFIXES:
            import tifffile

            with tifffile.TiffFile(path) as tf:
                shape = tf.pages[0].shape
            return int(shape[0]), int(shape[1])
        from PIL import Image

        with Image.open(path) as im:
            w, h = im.size
        return h, w
    except FileNotFoundError:
        raise InputFileError(path, "file not found") from None
    except (OSError, ValueError, SyntaxError) as e:
        raise InputFileError(path, f"cannot read image ({type(e).__name__}: {e})") from None


def save_outline_png(path: str | Path, image: np.ndarray, instances: np.ndarray,
                     colour=(0, 255, 255)) -> Path:
    """Write a PNG of ``image`` (H, W, 3) uint8 with each instance's outline drawn (atomically)."""
    from PIL import Image
    from skimage.segmentation import find_boundaries

    from histoclr.io import atomic_path

    if image.shape[:2] != instances.shape:
        raise ValueError(f"image {image.shape[:2]} and instances {instances.shape} differ in size")
    out = np.array(image[:, :, :3], dtype=np.uint8, copy=True)
    out[find_boundaries(instances, mode="inner")] = colour
    with atomic_path(path) as tmp:
        Image.fromarray(out).save(tmp, format="PNG")
    return Path(path)
