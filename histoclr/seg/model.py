"""DeepLabV3 / DeepLabV3+ (segmentation-models-pytorch) on a ResNet encoder, its initialisation
from a SimCLR backbone file / ImageNet / random, and the segmentation checkpoint file.

The smp ResNet encoder has torchvision's keys (``conv1.*``, ``bn1.*``, ``layer1.*`` ...), so a
histoclr backbone file loads into ``SegNet.encoder`` strictly, key for key.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from histoclr.config.seg import SEG_PRECISIONS
from histoclr.errors import HistoclrError, InputFileError
from histoclr.images import IMAGENET_MEAN, IMAGENET_STD
from histoclr.io import load_tagged, save_tagged
from histoclr.precision import autocast
from histoclr.seg.freeze import keep_frozen_norms_in_eval
from histoclr.seg.postprocess import PostprocessParams, default_params
from histoclr.seg.targets import output_channels
from histoclr.ssl.model import imagenet_state_dict, load_backbone, load_state_dict_strict
from histoclr.tracking import is_model_uri, resolve_model_uri

CHECKPOINT_FORMAT = "histoclr-seg-model"
CHECKPOINT_VERSION = 2          # 2: spec.target and the post-processing parameters


def _upgrade_v1(payload: dict) -> dict:
    """Version 1 (before instance targets): a binary-target model whose nuclei were its connected
    components; it reads as version 2 with exactly that post-processing."""
    post = default_params("binary", method="components").to_dict()
    return {**payload, "version": 2, "postprocess": payload.get("postprocess", post)}


@dataclass
class SegModelSpec:
    """Everything needed to rebuild the network (stored in every checkpoint)."""

    encoder: str = "resnet18"
    architecture: str = "deeplabv3"     # deeplabv3 | deeplabv3plus
    output_stride: int = 16
    classes: int = 2                    # binary target: 2 (softmax) or 1 (sigmoid)
    decoder_channels: int = 256
    target: str = "binary"              # binary | contour | distance (histoclr.seg.targets)

    @property
    def out_channels(self) -> int:
        return output_channels(self.target, self.classes)


class SegNet(nn.Module):
    """An smp segmentation model whose frozen encoder stages keep BatchNorm in eval mode.

    ``forward(x: (B, 3, H, W)) -> (B, spec.out_channels, H, W)``: class logits (and, for the
    ``distance`` target, the distance regression as the last channel); ``H, W`` divisible by the
    output stride. :meth:`set_compute` runs it under bf16 autocast and/or in channels_last memory
    format (the logits stay float32).
    """

    precision = "32"          # set_compute's (class defaults: a model pickled before them still runs)
    channels_last = False

    def __init__(self, spec: SegModelSpec):
        super().__init__()
        import segmentation_models_pytorch as smp

        archs = {"deeplabv3": smp.DeepLabV3, "deeplabv3plus": smp.DeepLabV3Plus}
        if spec.architecture not in archs:
            raise ValueError(f"unknown architecture {spec.architecture!r}; choose one of {', '.join(archs)}")
        if spec.classes not in (1, 2):
            raise ValueError(f"classes must be 1 or 2, got {spec.classes}")
        self.spec = spec
        self.net = archs[spec.architecture](
            encoder_name=spec.encoder, encoder_weights=None, encoder_output_stride=spec.output_stride,
            decoder_channels=spec.decoder_channels, classes=spec.out_channels)
        self.frozen_stages: frozenset[str] = frozenset()

    @property
    def encoder(self) -> nn.Module:
        return self.net.encoder

    def set_compute(self, precision: str = "32", channels_last: bool = False) -> "SegNet":
        """``precision``: one of :data:`histoclr.config.seg.SEG_PRECISIONS` (bf16: autocast, bf16
        convolutions, float32 weights and logits); ``channels_last``: NHWC weights and inputs
        (oneDNN's fast layout on CPU). Saved with the checkpoint, so prediction computes as validation did."""
        if precision not in SEG_PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(SEG_PRECISIONS)}, got {precision!r}")
        self.precision = precision
        self.channels_last = channels_last
        self.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.precision == "32":
            return self.net(x)
        with autocast(x.device.type, self.precision):
            return self.net(x).float()

    def train(self, mode: bool = True) -> "SegNet":
        super().train(mode)
        if mode:
            keep_frozen_norms_in_eval(self)
        return self


def build_seg_model(encoder: str = "resnet18", architecture: str = "deeplabv3", output_stride: int = 16,
                    classes: int = 2, decoder_channels: int = 256, target: str = "binary") -> SegNet:
    """A randomly initialised :class:`SegNet` (smp with ``encoder_weights=None``)."""
    return SegNet(SegModelSpec(encoder, architecture, output_stride, classes, decoder_channels, target))


def init_encoder(model: SegNet, init: str, imagenet_weights: str | Path | None = None) -> dict[str, str]:
    """Initialise ``model.encoder`` from ``init`` (``random`` | ``imagenet`` | ``simclr:PATH``).

    Returns ``{"init_source": ..., "pretrain_run_id": ...}`` (run id from the backbone metadata,
    else ``"none"``).

    Raises:
        HistoclrError: unreadable/missing file, an architecture mismatch, keys or shapes that do
            not match (all listed), or ImageNet weights unavailable offline.
    """

    arch = model.spec.encoder
    if init == "random":
        return {"init_source": "random", "pretrain_run_id": "none"}
    if init == "imagenet":
        sd = imagenet_state_dict(arch, imagenet_weights)
        source = str(imagenet_weights) if imagenet_weights else f"torchvision {arch} IMAGENET1K_V1"
        _load(model, sd, source, imagenet_weights)
        return {"init_source": source, "pretrain_run_id": "none"}
    if init.startswith("simclr:") and len(init) > len("simclr:"):
        path = Path(init.split(":", 1)[1])
        backbone = load_backbone(path)
        if backbone.arch != arch:
            raise InputFileError(path, f"backbone is a {backbone.arch} but the segmentation model's "
                                 f"encoder is {arch}; set model.encoder={backbone.arch} or use a "
                                 f"{arch} backbone")
        _load(model, backbone.state_dict, f"backbone file {path}", path)
        run_id = backbone.metadata.get("run_id")
        return {"init_source": str(path), "pretrain_run_id": str(run_id) if run_id else "none"}
    raise ValueError(f"init {init!r} must be random, imagenet or simclr:PATH")


def _load(model: SegNet, sd: Mapping[str, torch.Tensor], source: str, path) -> None:
    try:
        load_state_dict_strict(model.encoder, sd, source)
    except ValueError as e:
        if path is not None:
            raise InputFileError(path, str(e)) from None
        raise HistoclrError(str(e)) from None


# --------------------------------------------------------------------------- checkpoint file
@dataclass
class SegCheckpoint:
    """A trained model and what prediction needs to use it like training did."""

    model: SegNet
    mpp: float | None               # microns per pixel the model works at (None: native)
    window: int                     # sliding-window size in pixels
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    metadata: dict[str, Any]
    postprocess: PostprocessParams = field(default_factory=lambda: default_params("binary", method="components"))


def save_seg_checkpoint(path: str | Path, model: SegNet, *, mpp: float | None, window: int,
                        postprocess: PostprocessParams, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                        metadata: Mapping[str, Any] | None = None) -> Path:
    """Write the model's weights, spec, mpp, window, normalisation and post-processing atomically."""
    return save_tagged(path, CHECKPOINT_FORMAT, CHECKPOINT_VERSION, {
        "spec": asdict(model.spec),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.net.state_dict().items()},
        "mpp": mpp, "window": int(window), "mean": list(mean), "std": list(std),
        "postprocess": postprocess.validate().to_dict(), "metadata": dict(metadata or {}),
        "compute": {"precision": model.precision, "channels_last": model.channels_last}})


def load_seg_checkpoint(path: str | Path, device: str | torch.device = "cpu",
                        tracking_uri: str | None = None) -> SegCheckpoint:
    """Rebuild the model of a checkpoint written by :func:`save_seg_checkpoint` (eval mode).

    ``path`` is the file, or an MLflow model URI: ``models:/NAME/VERSION`` (a sweep's registered
    best cell, see ``register_as`` in the ablation config) or ``runs:/RUN_ID/PATH`` (a logged model,
    or a run's ``model/best.pt`` artifact), downloaded from ``tracking_uri`` (default: the
    configured store) and loaded as strictly as a file. A version-1 file (before instance targets)
    loads with its connected-components post-processing.

    Raises:
        InputFileError: missing, unreadable, or not a histoclr segmentation checkpoint.
        TrackingError: a URI that names no model, version, run or artifact of the store.
    """
    if is_model_uri(path):
        import tempfile

        with tempfile.TemporaryDirectory(prefix="histoclr-model-") as tmp:
            return load_seg_checkpoint(resolve_model_uri(str(path), tmp, tracking_uri), device)
    path = Path(path)
    payload = load_tagged(path, CHECKPOINT_FORMAT, CHECKPOINT_VERSION, "model checkpoint",
                          "use best.pt written by `histoclr finetune-seg`", upgrades={1: _upgrade_v1})
    try:
        spec = SegModelSpec(**payload["spec"])
        post = PostprocessParams.from_dict(payload["postprocess"])
        model = SegNet(spec)
    except (TypeError, ValueError, KeyError) as e:
        raise InputFileError(path, f"model checkpoint has an invalid spec or post-processing ({e}); "
                             "retrain it with `histoclr finetune-seg`") from None
    try:
        load_state_dict_strict(model.net, payload["state_dict"], f"checkpoint {path}")
    except ValueError as e:
        raise InputFileError(path, str(e)) from None
    try:
        model.set_compute(**payload.get("compute", {}))   # as validated (files from before it: fp32)
    except (TypeError, ValueError) as e:
        raise InputFileError(path, f"model checkpoint has an invalid compute setting ({e})") from None
    model.to(device).eval()
    return SegCheckpoint(model, payload["mpp"], payload["window"], tuple(payload["mean"]),
                         tuple(payload["std"]), payload.get("metadata", {}), post)
