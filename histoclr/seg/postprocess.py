"""Network output -> nucleus instances: marker-controlled watershed, small-object removal, hole filling.

One function, :func:`instances_from_output`, turns the class probabilities (and, for the
``distance`` target, the regression channel) of one image into an int32 instance map ``(H, W)``;
training validation, the parameter search, ``histoclr predict`` and the ablation all call it with
the :class:`PostprocessParams` stored in the checkpoint.

Methods (``PostprocessParams.method``):

* ``components``: connected components of the foreground (touching nuclei stay merged);
* ``watershed``: the classical distance-transform split of a binary foreground: the Euclidean
  distance transform, Gaussian-smoothed (``sigma`` px), markers from
  ``skimage.morphology.h_maxima`` (height ``h`` px), ``skimage.segmentation.watershed`` on its
  negative inside the foreground. Works on any binary mask (the ``binary`` target, Otsu);
* ``contour``: markers are the connected regions where ``P(interior) - P(boundary) >
  marker_threshold``; they are flooded over ``P(boundary)`` inside the foreground
  (``P(interior) + P(boundary) > fg_threshold``);
* ``distance``: markers are the regions where the predicted normalised distance exceeds
  ``marker_threshold``; flooded over the negative distance inside the foreground.

Every method fills holes in the foreground first, keeps foreground components that received no
marker as nuclei of their own, and removes nuclei smaller than ``min_size`` px.
"""

from __future__ import annotations

import inspect
import itertools
import warnings
from dataclasses import asdict, dataclass, replace
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from scipy import ndimage
from skimage.filters import gaussian
from skimage.measure import label
from skimage.morphology import h_maxima, remove_small_objects
from skimage.segmentation import relabel_sequential, watershed

METHODS = ("components", "watershed", "contour", "distance")
DEFAULT_METHOD = {"binary": "watershed", "contour": "contour", "distance": "distance"}


@dataclass(frozen=True)
class PostprocessParams:
    """The few knobs of the instance post-processing (sizes in pixels at the model's mpp)."""

    method: str = "contour"
    fg_threshold: float = 0.5       # foreground probability threshold
    marker_threshold: float = 0.3   # contour: P(interior) - P(boundary); distance: normalised distance
    h: float = 1.0                  # watershed: h-maxima height of the smoothed distance transform (px)
    sigma: float = 1.0              # watershed: Gaussian smoothing of the distance transform (px)
    min_size: int = 16              # nuclei smaller than this many pixels are removed
    min_marker_size: int = 4        # contour / distance: smaller markers are dropped

    def validate(self) -> "PostprocessParams":
        if self.method not in METHODS:
            raise ValueError(f"postprocess method {self.method!r} is not one of {', '.join(METHODS)}")
        if not 0 < self.fg_threshold < 1:
            raise ValueError(f"fg_threshold must be in (0, 1), got {self.fg_threshold}")
        if not -1 < self.marker_threshold < 1:
            raise ValueError(f"marker_threshold must be in (-1, 1), got {self.marker_threshold}")
        if self.h <= 0 or self.sigma < 0 or self.min_size < 0 or self.min_marker_size < 0:
            raise ValueError("h must be > 0; sigma, min_size and min_marker_size >= 0")
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "PostprocessParams":
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown post-processing parameter(s): {', '.join(sorted(unknown))}")
        return cls(**d).validate()


def default_params(target: str, **overrides) -> PostprocessParams:
    """The default parameters for a target (``binary`` -> distance-transform watershed)."""
    if target not in DEFAULT_METHOD:
        raise ValueError(f"unknown target {target!r}")
    return replace(PostprocessParams(method=DEFAULT_METHOD[target]), **overrides).validate()


# --------------------------------------------------------------------------- building blocks
def remove_small(ar: np.ndarray, min_size: int) -> np.ndarray:
    """``ar`` (a boolean mask, or a label image whose labels are the objects) without the objects of
    fewer than ``min_size`` pixels: ``skimage.morphology.remove_small_objects`` (scikit-image 0.26
    renamed its ``min_size``, keep >= it, to ``max_size``, drop <= it)."""
    if min_size <= 1:
        return ar
    with warnings.catch_warnings():   # a label image of one nucleus is not a mistaken boolean mask
        warnings.filterwarnings("ignore", message="Only one label was provided")
        if "max_size" in inspect.signature(remove_small_objects).parameters:
            return remove_small_objects(ar, max_size=min_size - 1)
        return remove_small_objects(ar, min_size=min_size)


def _remove_small_labels(labels: np.ndarray, min_size: int) -> np.ndarray:
    return relabel_sequential(remove_small(labels, min_size))[0].astype(np.int32)


def _flood(elevation: np.ndarray, markers: np.ndarray, fg: np.ndarray, min_size: int) -> np.ndarray:
    """Watershed of ``markers`` over ``elevation`` inside ``fg``; unmarked fg components become nuclei."""
    labels = watershed(elevation, markers, mask=fg) if markers.max() > 0 else np.zeros(fg.shape, np.int64)
    rest = fg & (labels == 0)
    if rest.any():
        extra = label(rest, connectivity=1)
        labels = np.where(extra > 0, extra + labels.max(), labels)
    return _remove_small_labels(labels, min_size)


def _markers(region: np.ndarray, min_marker_size: int) -> np.ndarray:
    markers = label(region, connectivity=1)
    return _remove_small_labels(markers, min_marker_size)


def split_binary(fg, *, h: float = 1.0, sigma: float = 1.0, min_size: int = 16) -> np.ndarray:
    """Distance-transform watershed of a binary mask ``(H, W)`` -> int32 instances ``(H, W)``."""
    fg = ndimage.binary_fill_holes(np.asarray(fg) != 0)
    if not fg.any():
        return np.zeros(fg.shape, np.int32)
    dist = ndimage.distance_transform_edt(fg)
    if sigma > 0:
        dist = gaussian(dist, sigma=sigma, preserve_range=True)
    markers = label(h_maxima(dist, h), connectivity=2)
    return _flood(-dist, markers, fg, min_size)


def connected_components(fg, *, min_size: int = 16) -> np.ndarray:
    """4-connected components of a hole-filled binary mask, at least ``min_size`` px, int32."""
    fg = ndimage.binary_fill_holes(np.asarray(fg) != 0)
    return _remove_small_labels(label(fg, connectivity=1), min_size)


def foreground_probability(probs: np.ndarray) -> np.ndarray:
    """``(H, W)`` nucleus probability from the class probabilities ``(C, H, W)`` of any target.

    C = 1: the sigmoid output; C = 2: P(nucleus); C = 3 (contour): P(interior) + P(boundary).
    """
    p = np.asarray(probs)
    if p.ndim != 3 or p.shape[0] not in (1, 2, 3):
        raise ValueError(f"probs must be (C, H, W) with C in 1..3, got {p.shape}")
    if p.shape[0] == 1:
        return p[0]
    return p[1:].sum(axis=0)


def instances_from_output(probs, params: PostprocessParams, distance=None) -> np.ndarray:
    """int32 instance map ``(H, W)`` from class probabilities ``(C, H, W)`` (C = 1, 2 or 3).

    ``distance``: the predicted normalised distance ``(H, W)`` (``distance`` method only).
    """
    p = np.asarray(probs, dtype=np.float32)
    fg = ndimage.binary_fill_holes(foreground_probability(p) > params.fg_threshold)
    if params.method == "components":
        return connected_components(fg, min_size=params.min_size)
    if params.method == "watershed":
        return split_binary(fg, h=params.h, sigma=params.sigma, min_size=params.min_size)
    if params.method == "contour":
        if p.shape[0] != 3:
            raise ValueError(f"the contour method needs 3 classes (background, interior, boundary), got {p.shape[0]}")
        markers = _markers(fg & (p[1] - p[2] > params.marker_threshold), params.min_marker_size)
        return _flood(p[2], markers, fg, params.min_size)
    if params.method == "distance":
        if distance is None:
            raise ValueError("the distance method needs the predicted distance map")
        d = np.asarray(distance, dtype=np.float32)
        if d.shape != fg.shape:
            raise ValueError(f"distance {d.shape} and probabilities {fg.shape} differ in size")
        markers = _markers(fg & (d > params.marker_threshold), params.min_marker_size)
        return _flood(-d, markers, fg, params.min_size)
    raise ValueError(f"postprocess method {params.method!r} is not one of {', '.join(METHODS)}")


# --------------------------------------------------------------------------- parameter search
def search_grid(method: str) -> list[dict[str, Any]]:
    """The candidate parameters tried by :func:`choose_params` for ``method``."""
    sizes = (8, 16, 32)
    if method == "components":
        grid = {"fg_threshold": (0.4, 0.5, 0.6), "min_size": sizes}
    elif method == "watershed":
        grid = {"h": (0.5, 1.0, 2.0), "sigma": (0.5, 1.0, 2.0), "min_size": sizes}
    elif method == "contour":
        grid = {"marker_threshold": (0.0, 0.2, 0.4, 0.6), "fg_threshold": (0.4, 0.5), "min_size": sizes}
    elif method == "distance":
        grid = {"marker_threshold": (0.3, 0.4, 0.5, 0.6), "fg_threshold": (0.4, 0.5), "min_size": sizes}
    else:
        raise ValueError(f"postprocess method {method!r} is not one of {', '.join(METHODS)}")
    keys = list(grid)
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]


def choose_params(outputs: Sequence[tuple[np.ndarray, np.ndarray | None]], truths: Sequence[np.ndarray],
                  base: PostprocessParams, score, candidates: Iterable[Mapping[str, Any]] | None = None,
                  ) -> tuple[PostprocessParams, list[dict[str, Any]]]:
    """Grid search: the parameters maximising the mean ``score(truth, instances)`` over the images.

    ``outputs``: per image ``(probs (C, H, W), distance (H, W) or None)``; ``truths``: the true
    instance maps. Meant for the *training* images only. Returns ``(best params, table)``, the
    table holding every candidate with its mean score; ties keep the earlier candidate (``base``
    is tried first).
    """
    if len(outputs) != len(truths) or not truths:
        raise ValueError("need one truth per output, and at least one image")
    cands = [{}] + list(candidates if candidates is not None else search_grid(base.method))
    table, best, best_score = [], base, -np.inf
    for change in cands:
        params = replace(base, **change).validate()
        s = float(np.mean([score(t, instances_from_output(p, params, d)) for (p, d), t in zip(outputs, truths)]))
        table.append({**params.to_dict(), "score": s})
        if s > best_score:
            best, best_score = params, s
    return best, table
