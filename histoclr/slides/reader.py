"""One reader interface for whole-slide images (OpenSlide) and plain images (via histoclr.images).

Resolution is explicit in every read: ``read_region(location, level, size)`` takes the top-left
corner in level-0 pixels, the pyramid level and the size in pixels *at that level*.

    with open_slide("slide.svs") as s:
        level, read_size = level_for_mpp(s.level_downsamples, s.mpp, target_mpp=0.5, out_size=224)
        rgb = s.read_region((x0, y0), level, (read_size, read_size))   # (H, W, 3) uint8
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from histoclr.errors import InputFileError
from histoclr.images import decode_image


class SlideReader:
    """A slide opened for reading. Subclasses fill the attributes and implement the reads.

    Attributes:
        path: the file.
        level_dimensions: ``(width, height)`` of every level, level 0 first.
        level_downsamples: level-0 pixels per level pixel, for every level.
        mpp: microns per level-0 pixel from the file's metadata, ``None`` when it has none.
        vendor: the format (OpenSlide's vendor, or ``plain-tiff`` / ``plain-png`` / ...).
        objective_power: the scanner's objective magnification (e.g. 40), ``None`` when unknown.
    """

    path: Path
    level_dimensions: tuple[tuple[int, int], ...]
    level_downsamples: tuple[float, ...]
    mpp: float | None
    vendor: str
    objective_power: float | None = None

    @property
    def dimensions(self) -> tuple[int, int]:
        """``(width, height)`` of level 0."""
        return self.level_dimensions[0]

    @property
    def level_count(self) -> int:
        return len(self.level_dimensions)

    def read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        """RGB ``(size[1], size[0], 3)`` uint8 of ``level``, top-left at level-0 ``location``.

        Pixels outside the slide (or transparent ones) are white.
        """
        return np.asarray(self.read_region_image(location, level, size))

    def read_region_image(self, location: tuple[int, int], level: int, size: tuple[int, int]):
        """:meth:`read_region` as a PIL RGB image (saves two copies when the next step is PIL)."""
        raise NotImplementedError

    def thumbnail(self, max_size: int) -> np.ndarray:
        """The whole slide as RGB uint8 ``(h, w, 3)`` with ``max(h, w) <= max_size``, aspect kept."""
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self):  # -> Self (3.11+)
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _check_level(self, level: int) -> None:
        if not 0 <= level < self.level_count:
            raise ValueError(f"level {level} out of range: {self.path.name} has {self.level_count} level(s)")


def _rgba_to_rgb(img):
    """A PIL RGBA image (OpenSlide's, not premultiplied) as a PIL RGB image on white."""
    if img.getchannel("A").getextrema()[0] == 255:  # fully opaque: the common case, no blending
        return img.convert("RGB")
    bg = Image.new("RGBA", img.size, (255, 255, 255, 255))
    bg.alpha_composite(img)
    return bg.convert("RGB")


class OpenSlideReader(SlideReader):
    """Every format OpenSlide reads (svs, ndpi, mrxs, scn, pyramidal TIFF, DICOM, ...)."""

    def __init__(self, path: Path, slide) -> None:
        self.path = path
        self._slide = slide
        self.level_dimensions = tuple(tuple(int(v) for v in d) for d in slide.level_dimensions)
        self.level_downsamples = tuple(float(d) for d in slide.level_downsamples)
        props = slide.properties
        self.vendor = props.get("openslide.vendor", "unknown")
        self.mpp = None
        try:
            mx, my = float(props["openslide.mpp-x"]), float(props["openslide.mpp-y"])
            if mx > 0 and my > 0:
                self.mpp = (mx + my) / 2
        except (KeyError, ValueError):
            pass
        try:
            power = float(props["openslide.objective-power"])
            self.objective_power = power if power > 0 else None
        except (KeyError, ValueError):
            self.objective_power = None

    def read_region_image(self, location, level, size):
        self._check_level(level)
        return _rgba_to_rgb(self._slide.read_region(tuple(location), level, tuple(size)))

    def thumbnail(self, max_size: int) -> np.ndarray:
        return np.asarray(self._slide.get_thumbnail((max_size, max_size)).convert("RGB"))

    def close(self) -> None:
        self._slide.close()


class PlainImageReader(SlideReader):
    """A plain (one-level, e.g. stripped) image held in memory: TIFF via tifffile, else Pillow."""

    def __init__(self, path: Path, rgb: np.ndarray, mpp: float | None, vendor: str) -> None:
        self.path = path
        self._rgb = rgb
        h, w = rgb.shape[:2]
        self.level_dimensions = ((w, h),)
        self.level_downsamples = (1.0,)
        self.mpp = mpp
        self.vendor = vendor

    def read_region(self, location, level, size) -> np.ndarray:
        self._check_level(level)
        (x, y), (w, h) = location, size
        out = np.full((h, w, 3), 255, np.uint8)
        H, W = self._rgb.shape[:2]
        x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, W), min(y + h, H)
        if x1 > x0 and y1 > y0:
            out[y0 - y:y1 - y, x0 - x:x1 - x] = self._rgb[y0:y1, x0:x1]
        return out

    def read_region_image(self, location, level, size):
        return Image.fromarray(self.read_region(location, level, size))

    def thumbnail(self, max_size: int) -> np.ndarray:
        im = Image.fromarray(self._rgb)
        im.thumbnail((max_size, max_size), Image.Resampling.BOX)
        return np.asarray(im)


def _open_plain(path: Path, why_not_openslide: str) -> PlainImageReader:
    try:
        rgb, mpp, fmt = decode_image(path)
    except InputFileError:
        raise
    except Exception as e:  # noqa: BLE001  tifffile/Pillow raise many types for bad files
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise InputFileError(path, f"cannot read: {why_not_openslide}, and not a readable plain "
                             f"image either ({type(e).__name__}: {msg})") from None
    return PlainImageReader(path, rgb, mpp, f"plain-{fmt}")


def open_slide(path: str | Path) -> SlideReader:
    """Open ``path`` with OpenSlide, or as a plain image when OpenSlide does not support it.

    Raises:
        InputFileError: missing, unreadable, truncated or unsupported file (one line naming it).
    """
    import openslide

    path = Path(path)
    if not path.is_file():
        raise InputFileError(path, "file not found" if not path.exists() else "not a file")
    try:
        return OpenSlideReader(path, openslide.OpenSlide(str(path)))
    except openslide.OpenSlideUnsupportedFormatError:
        return _open_plain(path, "not a format OpenSlide reads")
    except (openslide.OpenSlideError, OSError) as e:
        # A known format with broken content: still try the plain readers (e.g. a stripped TIFF).
        return _open_plain(path, f"OpenSlide error ({str(e).splitlines()[0] if str(e) else type(e).__name__})")


def open_wsi(path: str | Path) -> OpenSlideReader:
    """Open ``path`` with OpenSlide only (no plain-image fallback: for metadata of whole slides).

    Raises:
        InputFileError: missing file, or one OpenSlide cannot open (one line naming it).
    """
    import openslide

    path = Path(path)
    if not path.is_file():
        raise InputFileError(path, "file not found" if not path.exists() else "not a file")
    try:
        return OpenSlideReader(path, openslide.OpenSlide(str(path)))
    except (openslide.OpenSlideError, OSError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise InputFileError(path, f"OpenSlide cannot open this slide ({msg})") from None


def level_for_mpp(level_downsamples: Sequence[float], base_mpp: float, target_mpp: float,
                  out_size: int, tolerance: float = 0.01) -> tuple[int, int]:
    """The level to read for tiles of ``out_size`` px at ``target_mpp`` µm/px, and the read size.

    Picks the coarsest level whose resolution is at or finer than the target (within
    ``tolerance``, relative); the region of ``read_size`` px read there is then resized to
    ``out_size``. When even level 0 is coarser than the target, level 0 is read and upsampled.

    Returns:
        ``(level, read_size)`` with ``read_size = round(out_size * target_mpp / level_mpp)``.
    """
    if base_mpp <= 0 or target_mpp <= 0:
        raise ValueError(f"mpp must be > 0 (slide {base_mpp}, target {target_mpp})")
    if out_size <= 0:
        raise ValueError(f"out_size must be > 0, got {out_size}")
    best = 0
    for level, ds in enumerate(level_downsamples):
        if base_mpp * ds <= target_mpp * (1 + tolerance) and ds >= level_downsamples[best]:
            best = level
    level_mpp = base_mpp * level_downsamples[best]
    read_size = max(1, math.floor(out_size * target_mpp / level_mpp + 0.5))
    return best, read_size
