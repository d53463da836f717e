"""Tiles from one or more tile manifests: filtering, the held-out split by slide, the dataset.

Tiles are decoded in the DataLoader workers. A tile that cannot be read (missing, truncated,
not an image) is reported once (file and reason, one line on the ``histoclr`` logger), marked
bad in a shared-memory flag array (visible to the main process, so the count can be logged),
and the dataset returns the next readable tile instead: one bad file never stops a run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from histoclr.errors import ConfigError, HistoclrError
from histoclr.images import decode_image
from histoclr.manifests.tiles import MANIFEST_NAME, read_tile_manifest

log = logging.getLogger(__name__)


def load_tiles(manifests: Sequence[str | Path], slides: Sequence[str] = (), min_tissue: float = 0.0):
    """Read, concatenate and filter tile manifests.

    Args:
        manifests: ``tiles.csv`` files or folders holding one.
        slides: keep only these ``slide_id`` values (empty: all).
        min_tissue: keep tiles with ``tissue_fraction >= min_tissue``.

    Returns:
        A ``pandas.DataFrame`` with the manifest columns (absolute ``tile_path``) plus
        ``manifest`` (the file each row came from); duplicate tiles (same ``tile_path``) once.

    Raises:
        histoclr.manifests.csvfile.ManifestError: a manifest is missing or malformed.
        ConfigError: ``slides`` names a slide that no manifest holds.
        HistoclrError: no tile is left after filtering.
    """
    import pandas as pd

    if not manifests:
        raise ValueError("give at least one tile manifest")
    frames = []
    for m in manifests:
        path = Path(m)
        df = read_tile_manifest(path)
        df["manifest"] = str(path / MANIFEST_NAME if path.is_dir() else path)
        frames.append(df)
    tiles = pd.concat(frames, ignore_index=True).drop_duplicates("tile_path", ignore_index=True)
    if slides:
        unknown = sorted(set(slides) - set(tiles["slide_id"]))
        if unknown:
            known = sorted(set(tiles["slide_id"]))
            raise ConfigError(f"data.slides: slide(s) {', '.join(unknown)} not in the manifests "
                              f"(they hold {len(known)} slides: {', '.join(known[:10])}"
                              f"{', ...' if len(known) > 10 else ''})")
        tiles = tiles[tiles["slide_id"].isin(set(slides))]
    n_before = len(tiles)
    tiles = tiles[tiles["tissue_fraction"] >= min_tissue].reset_index(drop=True)
    if tiles.empty:
        raise HistoclrError(f"no tiles left: {n_before} tile(s) in {', '.join(map(str, manifests))} "
                            f"after the slide filter, none with tissue_fraction >= {min_tissue} "
                            "(lower data.min_tissue)")
    return tiles


def split_slides(slide_ids: Sequence[str], fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Split slides (never tiles) into ``(train, holdout)``, deterministically from ``seed``.

    ``round(fraction * n)`` slides are held out, at least one when ``fraction > 0`` and there
    are two or more slides, and always at least one slide is left for training.
    Both lists are sorted.
    """
    if not 0 <= fraction < 1:
        raise ValueError(f"fraction must be in [0, 1), got {fraction}")
    unique = sorted(set(slide_ids))
    n = len(unique)
    n_hold = round(fraction * n)
    if fraction > 0 and n >= 2:
        n_hold = max(1, n_hold)
    n_hold = min(n_hold, max(0, n - 1))
    order = np.random.default_rng(np.random.SeedSequence([seed, 0x5EED])).permutation(n)
    hold = sorted(unique[i] for i in order[:n_hold])
    return sorted(set(unique) - set(hold)), hold


def _reason(e: BaseException) -> str:
    if isinstance(e, FileNotFoundError):
        return "file not found"
    text = (str(e).splitlines() or [""])[0].strip()
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


class TileDataset(Dataset):
    """Tiles as training items: ``dataset[i] = transform(tile_i)`` (HWC uint8 when no transform).

    ``transform`` is typically ``MultiViewTransform(build_views("histology", ...), 2)`` giving
    a list of two ``(3, S, S)`` float tensors; it is reachable as ``dataset.transform`` so the
    DataLoader workers' seeding (:func:`histoclr.ssl.augment.augment_worker_init_fn`) finds it.
    An unreadable tile is reported, flagged and replaced by the next readable one.
    """

    def __init__(self, tile_paths: Sequence[str], slide_ids: Sequence[str] | None = None,
                 transform: Callable[[np.ndarray], object] | None = None):
        if not len(tile_paths):
            raise ValueError("TileDataset needs at least one tile")
        if slide_ids is not None and len(slide_ids) != len(tile_paths):
            raise ValueError(f"{len(slide_ids)} slide ids for {len(tile_paths)} tiles")
        self.tile_paths = [str(p) for p in tile_paths]
        self.slide_ids = [str(s) for s in slide_ids] if slide_ids is not None else [""] * len(tile_paths)
        self.transform = transform
        self._bad = torch.zeros(len(self.tile_paths), dtype=torch.uint8).share_memory_()

    @classmethod
    def from_table(cls, tiles, transform=None) -> TileDataset:
        """From a :func:`load_tiles` table."""
        return cls(list(tiles["tile_path"]), list(tiles["slide_id"]), transform)

    def __len__(self) -> int:
        return len(self.tile_paths)

    def try_read(self, j: int) -> np.ndarray | None:
        """Tile ``j`` as ``(H, W, 3)`` uint8, or ``None`` (reported once, flagged) when unreadable."""
        if self._bad[j]:
            return None
        try:
            return decode_image(self.tile_paths[j]).rgb
        except Exception as e:  # noqa: BLE001 - decoders raise OSError, ValueError, SyntaxError, struct.error...
            if not self._bad[j]:
                self._bad[j] = 1
                log.warning("%s: cannot read tile (%s); skipped", self.tile_paths[j], _reason(e))
            return None

    def image(self, index: int) -> tuple[int, np.ndarray]:
        """``(j, image)``: the first readable tile at or after ``index`` (wrapping around)."""
        n = len(self.tile_paths)
        for k in range(n):
            j = (index + k) % n
            img = self.try_read(j)
            if img is not None:
                return j, img
        raise HistoclrError(f"none of the {n} tiles could be read (see the warnings above)")

    def __getitem__(self, index: int):
        _, img = self.image(index)
        return self.transform(img) if self.transform is not None else img

    @property
    def n_bad(self) -> int:
        """Tiles found unreadable so far (by this process and its DataLoader workers)."""
        return int(self._bad.sum())

    def bad_tiles(self) -> list[tuple[str, str]]:
        """``[(tile_path, reason)]`` of the tiles found unreadable so far."""
        out = []
        for j in torch.nonzero(self._bad).flatten().tolist():
            try:
                decode_image(self.tile_paths[j])
                reason = "unreadable during training"
            except Exception as e:  # noqa: BLE001 - any decoder error is a reason to report
                reason = _reason(e)
            out.append((self.tile_paths[j], reason))
        return out


def sample_per_slide(slide_ids: Sequence[str], max_items: int, seed: int) -> list[int]:
    """Up to ``max_items`` indices, spread evenly over the slides (round robin, seeded order)."""
    rng = np.random.default_rng(seed)
    by_slide: dict[str, list[int]] = {}
    for i, s in enumerate(slide_ids):
        by_slide.setdefault(s, []).append(i)
    queues = [list(rng.permutation(idx)) for _, idx in sorted(by_slide.items())]
    out: list[int] = []
    while len(out) < max_items and any(queues):
        for q in queues:
            if q and len(out) < max_items:
                out.append(int(q.pop()))
    return sorted(out)
