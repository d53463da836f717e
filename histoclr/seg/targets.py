"""Training targets from nucleus instance maps ``(H, W)`` int (0 = background, k > 0 = nucleus k).

Three targets (``model.target``):

* ``binary``: the nucleus mask, classes ``{0: background, 1: nucleus}``;
* ``contour``: classes ``{0: background, 1: nucleus interior, 2: nucleus boundary}``, the boundary
  being the ``boundary_width`` innermost pixels of every nucleus (width 1 is
  ``skimage.segmentation.find_boundaries(mode="inner")``), so two touching nuclei are separated by
  a boundary band;
* ``distance``: the binary classes plus a regression channel: each nucleus pixel's Euclidean
  distance to the nucleus's own border (``scipy.ndimage.distance_transform_edt`` per instance),
  divided by that nucleus's maximum, so every nucleus peaks at 1.0 at its centre.

:func:`make_target` returns ``{"classes": (H, W) int64, "distance": (H, W) float32}`` (the
``distance`` entry only for the ``distance`` target); the loss and the post-processing read the
network's output channels through :func:`output_channels`.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

TARGETS = ("binary", "contour", "distance")


def output_channels(target: str, binary_classes: int = 2) -> int:
    """Number of network output channels for ``target``.

    binary: ``binary_classes`` (2: softmax, 1: sigmoid); contour: 3 class logits; distance: 2
    class logits + 1 regression channel.
    """
    if target == "binary":
        if binary_classes not in (1, 2):
            raise ValueError(f"binary target needs 1 or 2 classes, got {binary_classes}")
        return binary_classes
    if target in ("contour", "distance"):
        return 3
    raise ValueError(f"unknown target {target!r}; choose one of {', '.join(TARGETS)}")


def _check_instances(instances) -> np.ndarray:
    inst = np.asarray(instances)
    if inst.ndim != 2 or not np.issubdtype(inst.dtype, np.integer):
        raise ValueError(f"instances must be a 2-D integer label map, got {inst.dtype} {inst.shape}")
    if inst.size and inst.min() < 0:
        raise ValueError("instance labels must be >= 0 (0 = background)")
    return inst


def instance_distance(instances) -> np.ndarray:
    """``(H, W)`` float32: each nucleus pixel's Euclidean distance to the nearest pixel outside its own
    nucleus (background or another nucleus; 1.0 on the outermost ring), 0 on background."""
    inst = _check_instances(instances)
    out = np.zeros(inst.shape, np.float32)
    for k, sl in enumerate(ndimage.find_objects(inst), start=1):
        if sl is None:
            continue
        obj = inst[sl] == k
        # pad by one pixel so a nucleus cut by the crop edge still has a border there
        d = ndimage.distance_transform_edt(np.pad(obj, 1))[1:-1, 1:-1]
        out[sl][obj] = d[obj]
    return out


def contour_classes(instances, boundary_width: int = 2) -> np.ndarray:
    """``(H, W)`` uint8: 0 background, 1 interior, 2 boundary.

    The boundary is every nucleus pixel within ``boundary_width`` px of the outside of its own
    nucleus; ``boundary_width=1`` equals ``find_boundaries(mode="inner", connectivity=1)``.
    """
    inst = _check_instances(instances)
    if boundary_width < 1:
        raise ValueError(f"boundary_width must be >= 1, got {boundary_width}")
    d = instance_distance(inst)
    out = (inst > 0).astype(np.uint8)
    out[(inst > 0) & (d <= boundary_width)] = 2
    return out


def normalized_distance(instances) -> np.ndarray:
    """``(H, W)`` float32: per-nucleus distance to its border divided by its maximum (0 on background)."""
    inst = _check_instances(instances)
    d = instance_distance(inst)
    if not inst.any():
        return d
    peaks = np.zeros(int(inst.max()) + 1, np.float32)
    peaks[1:] = ndimage.maximum(d, inst, np.arange(1, inst.max() + 1))     # 0 for absent labels
    return np.divide(d, peaks[inst], out=np.zeros_like(d), where=inst > 0)


def make_target(instances, target: str, boundary_width: int = 2) -> dict[str, np.ndarray]:
    """The training target of ``target`` for one instance map: ``{"classes": (H, W) int64[, "distance"]}``."""
    inst = _check_instances(instances)
    if target == "binary":
        return {"classes": (inst > 0).astype(np.int64)}
    if target == "contour":
        return {"classes": contour_classes(inst, boundary_width).astype(np.int64)}
    if target == "distance":
        return {"classes": (inst > 0).astype(np.int64), "distance": normalized_distance(inst)}
    raise ValueError(f"unknown target {target!r}; choose one of {', '.join(TARGETS)}")
