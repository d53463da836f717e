"""The fine-tuning loss for each target (:mod:`histoclr.seg.targets`).

``loss(output (B, C, H, W), target {"classes": (B, H, W) int64[, "distance": (B, H, W) float32]})``:

* binary, C = 2 / contour, C = 3: cross-entropy + ``dice_weight`` x multiclass Dice (smp);
* binary, C = 1: BCE + ``dice_weight`` x binary Dice;
* distance, C = 3: cross-entropy + Dice on the two class channels, plus ``distance_weight`` x MSE
  between the last channel and the normalised distance map (over every pixel, background = 0).
"""

from __future__ import annotations

from typing import Callable, Mapping

import torch
from segmentation_models_pytorch.losses import DiceLoss

from histoclr.seg.targets import output_channels

Loss = Callable[[torch.Tensor, Mapping[str, torch.Tensor]], torch.Tensor]


def build_loss(target: str = "binary", classes: int = 2, dice_weight: float = 1.0,
               distance_weight: float = 1.0) -> Loss:
    """The loss of ``target`` (``classes``: the binary target's 1 or 2 output channels)."""
    if dice_weight < 0 or distance_weight < 0:
        raise ValueError(f"loss weights must be >= 0, got dice {dice_weight}, distance {distance_weight}")
    channels = output_channels(target, classes)
    if channels == 1:
        bce, bdice = torch.nn.BCEWithLogitsLoss(), DiceLoss(mode="binary", from_logits=True)

        def binary_loss(out, y):
            cls = y["classes"]
            return bce(out[:, 0], cls.float()) + dice_weight * bdice(out, cls[:, None])
        return binary_loss

    ce, mdice = torch.nn.CrossEntropyLoss(), DiceLoss(mode="multiclass", from_logits=True)
    if target == "distance":
        def distance_loss(out, y):
            logits, cls = out[:, :2], y["classes"]
            mse = torch.nn.functional.mse_loss(out[:, 2], y["distance"])
            return ce(logits, cls) + dice_weight * mdice(logits, cls) + distance_weight * mse
        return distance_loss

    def class_loss(out, y):
        cls = y["classes"]
        return ce(out, cls) + dice_weight * mdice(out, cls)
    return class_loss
