"""Partial freezing of the ResNet encoder by stage, and per-stage parameter groups.

Stages of a (torchvision / smp) ResNet encoder: ``stem`` (conv1, bn1), ``layer1`` ... ``layer4``.
A freeze spec is ``none``, ``all``, a stage name, a range ``layer1-3`` or a comma list of those
(``stem,layer1-2``). Frozen stages get ``requires_grad=False`` and their BatchNorm layers stay in
eval mode (running statistics unchanged) even after ``model.train()``: :class:`SegNet.train`
re-applies it.
"""

from __future__ import annotations

from torch import nn

from histoclr.config.seg import STAGES

_STAGE_MODULES: dict[str, tuple[str, ...]] = {
    "stem": ("conv1", "bn1"),
    "layer1": ("layer1",), "layer2": ("layer2",), "layer3": ("layer3",), "layer4": ("layer4",),
}


def stage_modules(encoder: nn.Module, stage: str) -> list[nn.Module]:
    """The sub-modules of ``encoder`` that make up ``stage``."""
    if stage not in _STAGE_MODULES:
        raise ValueError(f"unknown stage {stage!r}; valid: {', '.join(STAGES)}")
    return [getattr(encoder, name) for name in _STAGE_MODULES[stage]]


def _norm_layers(module: nn.Module):
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._NormBase)]


def apply_freeze(model: nn.Module, stages: set[str]) -> None:
    """Freeze ``stages`` of ``model.encoder`` (``model``: a :class:`histoclr.seg.model.SegNet`).

    Frozen parameters get ``requires_grad=False``; their BatchNorm layers are put in eval mode
    now and again by every later ``model.train()``. Unlisted stages are made trainable.
    """
    unknown = set(stages) - set(STAGES)
    if unknown:
        raise ValueError(f"unknown stage(s) {', '.join(sorted(unknown))}; valid: {', '.join(STAGES)}")
    if not hasattr(model, "frozen_stages"):
        raise ValueError(f"{type(model).__name__} does not support stage freezing (use histoclr.seg.model.SegNet)")
    for stage in STAGES:
        for module in stage_modules(model.encoder, stage):
            for p in module.parameters():
                p.requires_grad_(stage not in stages)
    model.frozen_stages = frozenset(stages)
    model.train(model.training)


def keep_frozen_norms_in_eval(model: nn.Module) -> None:
    """Put the norm layers of ``model.frozen_stages`` in eval mode (called by ``SegNet.train``)."""
    for stage in getattr(model, "frozen_stages", ()):
        for module in stage_modules(model.encoder, stage):
            for norm in _norm_layers(module):
                norm.eval()


def trainable_parameter_counts(model: nn.Module) -> dict[str, int]:
    """Trainable parameters per encoder stage, of the ``decoder`` (decoder + head) and ``total``."""
    counts = {stage: sum(p.numel() for m in stage_modules(model.encoder, stage)
                         for p in m.parameters() if p.requires_grad) for stage in STAGES}
    encoder_ids = {id(p) for p in model.encoder.parameters()}
    counts["decoder"] = sum(p.numel() for p in model.parameters()
                            if p.requires_grad and id(p) not in encoder_ids)
    counts["total"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return counts
