"""Image files, the lowest layer: file suffixes, RGB and label reads, resolution, normalisation.

Every stage reads single image files through this module, and whole slides through
:mod:`histoclr.slides.reader`, which builds on it. It imports only :mod:`histoclr.errors` (and
torch inside :func:`normalize_image`, so that tiling never loads it).

- suffixes: :data:`IMAGE_SUFFIXES` (single images), :data:`WSI_SUFFIXES` (vendor whole-slide
  formats), :data:`OPENSLIDE_SUFFIXES` and :data:`TILE_INPUT_SUFFIXES` (what ``histoclr tile``
  picks up in a folder);
- pixels: :func:`read_rgb` (RGB uint8, ``InputFileError`` naming the file), :func:`decode_image`
  (the same plus the file's resolution, with the decoders' own errors), :func:`as_rgb_uint8`,
  :func:`read_label`, :func:`image_shape`;
- resolution (µm/px): :func:`image_mpp` from a file's metadata, :func:`tiff_page_mpp`,
  :func:`dpi_mpp`, all with the plausibility check :data:`PLAUSIBLE_MPP`;
- ImageNet normalisation: :data:`IMAGENET_MEAN`, :data:`IMAGENET_STD`, :func:`normalize_image`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from io import BytesIO
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
import tifffile
from PIL import Image

from histoclr.errors import InputFileError

TIFF_SUFFIXES: tuple[str, ...] = (".tif", ".tiff")
PLAIN_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg")
#: Single images (tiles, MoNuSeg images, masks): TIFF or a plain format.
IMAGE_SUFFIXES: tuple[str, ...] = TIFF_SUFFIXES + PLAIN_SUFFIXES
#: Vendor whole-slide formats: a file with one of these suffixes is always a slide.
WSI_SUFFIXES: tuple[str, ...] = (".svs", ".ndpi", ".vms", ".vmu", ".scn", ".mrxs", ".svslide", ".bif")
#: What OpenSlide is tried on first: the vendor formats, (pyramidal) TIFF and DICOM.
OPENSLIDE_SUFFIXES: tuple[str, ...] = WSI_SUFFIXES + TIFF_SUFFIXES + (".dcm",)
#: Files ``histoclr tile`` picks up when given a folder (explicit files may have any suffix).
TILE_INPUT_SUFFIXES: tuple[str, ...] = OPENSLIDE_SUFFIXES + PLAIN_SUFFIXES

#: A resolution tag outside this range (µm/px) is not a microscope's (e.g. the 72 dpi default).
PLAUSIBLE_MPP = (0.01, 20.0)
_MICRONS_PER_UNIT = {2: 25400.0, 3: 10000.0}  # TIFF ResolutionUnit: inch, centimetre

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

# Pillow modes whose array is already grey / RGB / RGBA with one value per channel.
_ARRAY_MODES = frozenset({"L", "RGB", "RGBA", "I;16", "I;16L", "I;16B", "I", "F"})


# ----------------------------------------------------------------------------- resolution

def plausible_mpp(mpp: float | None) -> float | None:
    """``mpp`` when it is a microscope's resolution (:data:`PLAUSIBLE_MPP`), else ``None``."""
    if mpp is None or not PLAUSIBLE_MPP[0] <= mpp <= PLAUSIBLE_MPP[1]:
        return None
    return float(mpp)


def tiff_page_mpp(page) -> float | None:
    """µm/px from a tifffile page's X/YResolution and ResolutionUnit (mean of x and y), if plausible."""
    try:
        unit = int(page.tags["ResolutionUnit"].value)
        xr, yr = (n / d for n, d in (page.tags["XResolution"].value, page.tags["YResolution"].value))
    except (KeyError, ZeroDivisionError, TypeError, ValueError):
        return None
    per_unit = _MICRONS_PER_UNIT.get(unit)
    if per_unit is None or xr <= 0 or yr <= 0:
        return None
    return plausible_mpp((per_unit / xr + per_unit / yr) / 2)


def dpi_mpp(dpi) -> float | None:
    """µm/px from a Pillow ``info["dpi"]`` pair (mean of x and y), if plausible."""
    if not dpi or len(dpi) < 2 or not (dpi[0] > 0 and dpi[1] > 0):
        return None
    return plausible_mpp((25400.0 / dpi[0] + 25400.0 / dpi[1]) / 2)


def image_mpp(path: str | Path) -> float | None:
    """µm/px recorded in an image file's metadata (TIFF resolution tags, PNG/JPEG dpi), if plausible.

    Reads the header only. Raises:
        InputFileError: the file is missing or not a readable image.
    """
    path = Path(path)
    try:
        if path.suffix.lower() in TIFF_SUFFIXES:
            with tifffile.TiffFile(path) as tf:
                return tiff_page_mpp(tf.pages[0])
        with Image.open(path) as im:
            return dpi_mpp(im.info.get("dpi"))
    except FileNotFoundError:
        raise InputFileError(path, "file not found") from None
    except Exception as e:  # noqa: BLE001  tifffile/Pillow raise many types for bad files
        raise InputFileError(path, f"cannot read image ({_describe(e)})") from None


# ----------------------------------------------------------------------------- pixels

def as_rgb_uint8(a: np.ndarray, path: str | Path = "image") -> np.ndarray:
    """An image array as contiguous RGB uint8 ``(H, W, 3)``.

    Grey ``(H, W)`` is repeated, 16-bit is scaled to 8-bit, an alpha channel is composited onto
    white. Raises ``InputFileError`` naming ``path`` for any other shape or pixel type.
    """
    a = np.asarray(a)
    if a.size == 0:
        raise InputFileError(path, "no image data (unreadable or empty image file)")
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] not in (3, 4):
        raise InputFileError(path, f"expected an RGB image, got an array of shape {a.shape}")
    if a.dtype == np.uint16:
        a = (a // 257).astype(np.uint8)
    elif a.dtype != np.uint8:
        raise InputFileError(path, f"unsupported pixel type {a.dtype} (expected 8-bit RGB)")
    if a.shape[2] == 4:
        if a[:, :, 3].min() == 255:  # opaque: the common case, no blending
            a = a[:, :, :3]
        else:  # composite straight alpha onto white
            alpha = a[:, :, 3:4].astype(np.float32) / 255
            a = (a[:, :, :3] * alpha + 255 * (1 - alpha) + 0.5).astype(np.uint8)
    return np.ascontiguousarray(a)


class DecodedImage(NamedTuple):
    """An image file's pixels and what its metadata says."""

    rgb: np.ndarray        # (H, W, 3) uint8
    mpp: float | None      # µm/px from the metadata (plausible values only), else None
    format: str            # "tiff", "png", "jpeg", ...


def decode_image(path: str | Path) -> DecodedImage:
    """Read an image file (TIFF via tifffile, first page; anything else via Pillow) as RGB uint8.

    For loops that report unreadable files themselves: a missing or undecodable file raises the
    decoder's own error (``FileNotFoundError``, ``OSError``, ``ValueError``, ...); a decodable image
    that is not grey/RGB(A) at 8 or 16 bits raises ``InputFileError``. Use :func:`read_rgb` for a
    one-line ``InputFileError`` in every case.
    """
    path = Path(path)
    if path.suffix.lower() in TIFF_SUFFIXES:
        with tifffile.TiffFile(path) as tf:
            page = tf.pages[0]
            return DecodedImage(as_rgb_uint8(page.asarray(), path), tiff_page_mpp(page), "tiff")
    data = path.read_bytes()  # one read: Pillow parses the header, OpenCV decodes the same bytes
    with Image.open(BytesIO(data)) as im:  # the header only: format, mode, resolution
        fmt = (im.format or "image").lower()
        mpp = dpi_mpp(im.info.get("dpi"))
        rgb = _decode_rgb_opencv(data, im)
        if rgb is not None:
            return DecodedImage(rgb, mpp, fmt)
        if im.mode not in _ARRAY_MODES:  # palette, LA, CMYK, 1-bit, ...
            im = im.convert("RGBA")
        return DecodedImage(as_rgb_uint8(np.asarray(im), path), mpp, fmt)


def _decode_rgb_opencv(data: bytes, im: Image.Image) -> np.ndarray | None:
    """Pixels ``(H, W, 3)`` uint8 of an 8-bit RGB PNG or JPEG decoded by OpenCV, else None.

    OpenCV decodes these 1.3-1.5x faster than Pillow, to the same pixels (the pretraining data path
    reads every tile this way). EXIF orientation is ignored, as Pillow does. None (Pillow decodes,
    and raises its own error) for other modes and formats, a JPEG without its end marker and
    anything OpenCV cannot decode in full (a truncated file).
    """
    if im.mode != "RGB" or im.format not in ("PNG", "JPEG"):
        return None
    buf = np.frombuffer(data, np.uint8)
    if im.format == "JPEG" and buf[-2:].tobytes() != b"\xff\xd9":
        return None
    rgb = cv2.imdecode(buf, cv2.IMREAD_COLOR_RGB | cv2.IMREAD_IGNORE_ORIENTATION)
    if rgb is None or rgb.shape != (im.height, im.width, 3):
        return None
    return rgb


def read_rgb(path: str | Path) -> np.ndarray:
    """Read an image file as RGB uint8 ``(H, W, 3)`` (see :func:`as_rgb_uint8`).

    Raises:
        InputFileError: missing, unreadable, truncated or not an RGB/grey image (names the file).
    """
    try:
        return decode_image(path).rgb
    except InputFileError:
        raise
    except FileNotFoundError:
        raise InputFileError(path, "file not found") from None
    except Exception as e:  # noqa: BLE001  tifffile/Pillow raise many types for bad files
        raise InputFileError(path, f"cannot read image ({_describe(e)})") from None


def _describe(e: BaseException) -> str:
    text = (str(e).splitlines() or [""])[0].strip()
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _read_array(path: Path) -> np.ndarray:
    try:
        if path.suffix.lower() in TIFF_SUFFIXES:
            return np.asarray(tifffile.imread(path, key=0))
        with Image.open(path) as im:
            return np.asarray(im)
    except FileNotFoundError:
        raise InputFileError(path, "file not found") from None
    except Exception as e:  # noqa: BLE001  unreadable, truncated, unknown format
        raise InputFileError(path, f"cannot read image ({_describe(e)})") from None


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
            with tifffile.TiffFile(path) as tf:
                shape = tf.pages[0].shape
            return int(shape[0]), int(shape[1])
        with Image.open(path) as im:
            w, h = im.size
        return h, w
    except FileNotFoundError:
        raise InputFileError(path, "file not found") from None
    except Exception as e:  # noqa: BLE001
        raise InputFileError(path, f"cannot read image ({_describe(e)})") from None


# ----------------------------------------------------------------------------- normalisation

def normalize_image(image: np.ndarray, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """RGB uint8 ``(H, W, 3)`` -> float32 tensor ``(3, H, W)``: ``(x / 255 - mean) / std``."""
    import torch

    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be RGB uint8 (H, W, 3), got {image.dtype} {image.shape}")
    x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float().div_(255.0)
    m = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    return x.sub_(m).div_(s)


# ----------------------------------------------------------------------------- pyramidal TIFF
def write_tiled_pyramid(path: str | Path, width: int, height: int, tile_at: Callable[[int, int, int], np.ndarray], *,
                        levels: int, tile: int = 256, mpp: float | None = None,
                        compression: str | None = None) -> Path:
    """Write a tiled pyramidal RGB TIFF (downsamples 1, 2, 4, ... for ``levels`` levels) of
    ``width x height`` level-0 px, tile by tile, that OpenSlide opens.

    ``tile_at(tx, ty, downsample)`` returns the ``(tile, tile, 3)`` uint8 tile whose top-left corner is
    ``(tx, ty)`` in that level's px. ``mpp``: resolution tags (µm per level-0 px); ``compression``:
    tifffile's (``"jpeg"``, ``"zlib"``, ...) or None.
    """
    path = Path(path)
    with tifffile.TiffWriter(path, bigtiff=width * height * 3 > 2**31) as tw:
        for level in range(levels):
            ds = 2 ** level
            lw, lh = max(1, width // ds), max(1, height // ds)

            def tiles(lw=lw, lh=lh, ds=ds) -> Iterator[np.ndarray]:
                for ty in range(0, lh, tile):
                    for tx in range(0, lw, tile):
                        yield tile_at(tx, ty, ds)

            extra = {} if compression is None else {"compression": compression}
            if mpp is not None:
                extra.update(resolution=(1e4 / mpp / ds, 1e4 / mpp / ds), resolutionunit="CENTIMETER")
            tw.write(tiles(), shape=(lh, lw, 3), dtype=np.uint8, tile=(tile, tile), photometric="rgb",
                     subfiletype=1 if level else 0, **extra)
    return path
