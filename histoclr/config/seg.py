"""Typed defaults for nucleus-segmentation fine-tuning (`histoclr finetune-seg`, the ablation cells).

DeepLabV3 (segmentation-models-pytorch) on a torchvision ResNet encoder initialised from a SimCLR
backbone file (``init=simclr:PATH``), ImageNet weights (``imagenet``) or at random (``random``).
Training uses random augmented crops at ``data.mpp`` microns per pixel; validation runs on the
whole validation images by sliding window. Steps = ``train.epochs * train.steps_per_epoch``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Optional

from histoclr.config.ssl import PRECISIONS, TrackingConfig
from histoclr.errors import ConfigError

ENCODERS = ("resnet18", "resnet34", "resnet50")     # histoclr.ssl.model.ENCODER_ARCHS
ARCHITECTURES = ("deeplabv3", "deeplabv3plus")
OPTIMIZERS = ("adamw", "sgd")
DEVICES = ("auto", "cpu", "cuda")
STAGES: tuple[str, ...] = ("stem", "layer1", "layer2", "layer3", "layer4")  # ResNet encoder stages (histoclr.seg.freeze)
TARGETS = ("binary", "contour", "distance")                         # histoclr.seg.targets.TARGETS
POSTPROCESS_METHODS = ("components", "watershed", "contour", "distance")   # histoclr.seg.postprocess.METHODS
SELECT_METRICS = ("aji", "pq", "dice", "f1")
#: Fine-tuning has no GradScaler: fp16 is pretraining's only (histoclr.precision)
SEG_PRECISIONS = tuple(p for p in PRECISIONS if p != "fp16")
_RANGE = re.compile(r"^layer([1-4])-(?:layer)?([1-4])$")


def parse_freeze_spec(spec: str) -> set[str]:
    """``"stem,layer1-2"`` -> ``{"stem", "layer1", "layer2"}``; ``none`` -> empty; ``all`` -> every stage.

    Raises:
        ValueError: an unknown part; the message lists the valid names.
    """
    if not isinstance(spec, str):
        raise ValueError(f"freeze spec must be a string, got {spec!r}")
    parts = [p.strip().lower() for p in spec.split(",")]
    alone = [p for p in parts if p in ("none", "all")]
    if alone and len(parts) > 1:
        raise ValueError(f"invalid freeze spec {spec!r}: {alone[0]!r} stands alone (give none, all, or a "
                         "list of stages such as stem,layer1-2)")
    out: set[str] = set()
    for part in parts:
        if part == "none":
            continue
        if part == "all":
            out.update(STAGES)
        elif part in STAGES:
            out.add(part)
        elif (m := _RANGE.match(part)) and int(m.group(1)) <= int(m.group(2)):
            out.update(f"layer{i}" for i in range(int(m.group(1)), int(m.group(2)) + 1))
        else:
            raise ValueError(f"invalid freeze spec {spec!r} (bad part {part!r}); valid: none, all, "
                             f"{', '.join(STAGES)}, ranges like layer1-3, and comma lists like stem,layer1-2")
    return out


@dataclass
class SegModelConfig:
    encoder: str = "resnet50"
    architecture: str = "deeplabv3"     # deeplabv3 | deeplabv3plus
    output_stride: int = 16             # 8 or 16 (dilated layer4 / layer3+4)
    classes: int = 2                    # binary target: 2: softmax, cross-entropy + Dice | 1: sigmoid, BCE + Dice
    decoder_channels: int = 256
    dice_weight: float = 1.0            # loss = CE (or BCE) + dice_weight * Dice
    target: str = "binary"              # binary | contour (bg/interior/boundary) | distance (mask + distance map)
    boundary_width: int = 2             # contour target: boundary band inside each nucleus (px at data.mpp)
    distance_weight: float = 1.0        # distance target: + distance_weight * MSE of the distance channel


@dataclass
class SegPostprocessConfig:
    """Instance post-processing (histoclr.seg.postprocess); sizes in px at data.mpp.

    ``tune``: after training, grid-search these parameters on the *training* images (never the
    validation images) for the best checkpoint; the chosen ones are stored in ``best.pt`` and used by
    ``histoclr predict``. ``method: auto`` picks the target's own (binary -> watershed).
    """

    method: str = "auto"                # auto | components | watershed | contour | distance
    fg_threshold: float = 0.5
    marker_threshold: float = 0.3
    h: float = 1.0
    sigma: float = 1.0
    min_size: int = 16
    min_marker_size: int = 4
    tune: bool = True


@dataclass
class SegDataConfig:
    mpp: Optional[float] = 0.5          # microns per pixel the model sees (None: native resolution)
    crop_size: int = 256                # training crop and validation/prediction window (pixels)
    augment: bool = True
    num_workers: int = 0


@dataclass
class SegTrainConfig:
    epochs: int = 10
    steps_per_epoch: int = 20
    batch_size: int = 8
    optimizer: str = "adamw"            # adamw | sgd (momentum 0.9)
    lr: float = 1e-3                    # decoder/head LR; unfrozen encoder stages get lr * encoder_lr_mult
    weight_decay: float = 1e-4
    warmup_steps: int = 0
    min_lr_ratio: float = 0.01          # cosine floor as a fraction of the peak LR
    grad_clip: float = 0.0              # max global grad norm; 0 = off
    patience: int = 0                   # early stopping after this many epochs without a better selection metric; 0 = off
    select_metric: str = "aji"          # validation metric that picks best.pt: aji | pq | dice | f1
    val_overlap: float = 0.25           # sliding-window overlap (fraction of the window)
    val_batch_size: int = 4
    overlays: int = 3                   # validation images drawn as overlay PNGs at the best epoch
    resume: bool = True                 # continue from out_dir/last.pt when it belongs to the same config
    device: str = "auto"                # auto | cpu | cuda
    precision: str = "32"               # 32 | bf16 (autocast: CPUs with amx_bf16/avx512_bf16, GPUs)
    channels_last: bool = False         # NHWC memory format (faster convolutions on CPU with bf16)
    threads: Optional[int] = None       # torch CPU threads (None: torch's default); 1 is fastest on a busy CPU
    sync_batchnorm: bool = False        # under torchrun on GPUs: BatchNorm statistics over the global batch


@dataclass
class FinetuneConfig:
    init: str = "random"                # random | imagenet | simclr:PATH (a backbone file)
    imagenet_weights: Optional[str] = None
    freeze: str = "none"                # none | all | stem,layer1-2 ... (histoclr.seg.freeze)
    encoder_lr_mult: float = 1.0
    num_labeled: Optional[int] = None   # labelled training images (at most one of the two sizes)
    label_fraction: Optional[float] = None
    seed: int = 0
    out_dir: str = "runs/finetune"
    pairs: str = "data_manifests/monuseg2018_seg_pairs.csv"
    data_root: str = "../shared/data"
    model: SegModelConfig = field(default_factory=SegModelConfig)
    data: SegDataConfig = field(default_factory=SegDataConfig)
    train: SegTrainConfig = field(default_factory=SegTrainConfig)
    postprocess: SegPostprocessConfig = field(default_factory=SegPostprocessConfig)
    tracking: TrackingConfig = field(default_factory=lambda: TrackingConfig(experiment="histoclr-finetune"))

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first invalid key."""
        m, d, t = self.model, self.data, self.train
        if not (self.init in ("random", "imagenet") or (self.init.startswith("simclr:") and len(self.init) > 7)):
            raise ConfigError(f"init={self.init!r} must be random, imagenet or simclr:PATH")
        try:
            parse_freeze_spec(self.freeze)
        except ValueError as e:
            raise ConfigError(f"freeze: {e}") from None
        if self.encoder_lr_mult < 0:
            raise ConfigError(f"encoder_lr_mult must be >= 0, got {self.encoder_lr_mult}")
        if self.num_labeled is not None and self.label_fraction is not None:
            raise ConfigError("give at most one of num_labeled and label_fraction")
        if self.num_labeled is not None and self.num_labeled < 1:
            raise ConfigError(f"num_labeled must be >= 1, got {self.num_labeled}")
        if self.label_fraction is not None and not 0 < self.label_fraction <= 1:
            raise ConfigError(f"label_fraction must be in (0, 1], got {self.label_fraction}")
        _choice("model.encoder", m.encoder, ENCODERS)
        _choice("model.architecture", m.architecture, ARCHITECTURES)
        _choice("train.optimizer", t.optimizer, OPTIMIZERS)
        _choice("train.device", t.device, DEVICES)
        _choice("train.precision", str(t.precision), SEG_PRECISIONS)
        _choice("train.select_metric", t.select_metric, SELECT_METRICS)
        _choice("model.target", m.target, TARGETS)
        _choice("postprocess.method", self.postprocess.method, ("auto",) + POSTPROCESS_METHODS)
        pp = self.postprocess
        if m.boundary_width < 1 or m.distance_weight < 0:
            raise ConfigError("model: boundary_width must be >= 1 and distance_weight >= 0")
        if not 0 < pp.fg_threshold < 1 or not -1 < pp.marker_threshold < 1:
            raise ConfigError("postprocess: fg_threshold must be in (0, 1) and marker_threshold in (-1, 1)")
        if pp.h <= 0 or pp.sigma < 0 or pp.min_size < 0 or pp.min_marker_size < 0:
            raise ConfigError("postprocess: h must be > 0; sigma, min_size and min_marker_size >= 0")
        if (pp.method == "contour" and m.target != "contour") or (pp.method == "distance" and m.target != "distance"):
            raise ConfigError(f"postprocess.method={pp.method} needs model.target={pp.method}, not {m.target}")
        if m.output_stride not in (8, 16):
            raise ConfigError(f"model.output_stride must be 8 or 16, got {m.output_stride}")
        if m.classes not in (1, 2):
            raise ConfigError(f"model.classes must be 1 (sigmoid) or 2 (softmax), got {m.classes}")
        if m.dice_weight < 0 or m.decoder_channels < 1:
            raise ConfigError("model: dice_weight must be >= 0 and decoder_channels >= 1")
        if d.mpp is not None and d.mpp <= 0:
            raise ConfigError(f"data.mpp must be > 0 (or null for native resolution), got {d.mpp}")
        if d.crop_size < 32 or d.crop_size % 32:
            raise ConfigError(f"data.crop_size must be a multiple of 32 (>= 32), got {d.crop_size}")
        if d.num_workers < 0:
            raise ConfigError(f"data.num_workers must be >= 0, got {d.num_workers}")
        for key, value in (("train.epochs", t.epochs), ("train.steps_per_epoch", t.steps_per_epoch),
                           ("train.val_batch_size", t.val_batch_size)):
            if value < 1:
                raise ConfigError(f"{key} must be >= 1, got {value}")
        if t.batch_size < 2:
            raise ConfigError(f"train.batch_size must be >= 2 (the ASPP pooling branch uses BatchNorm), "
                              f"got {t.batch_size}")
        if t.lr <= 0 or t.weight_decay < 0 or t.grad_clip < 0:
            raise ConfigError("train: lr must be > 0, weight_decay and grad_clip >= 0")
        if t.threads is not None and t.threads < 1:
            raise ConfigError(f"train.threads must be >= 1 (or null), got {t.threads}")
        if t.warmup_steps < 0 or t.patience < 0 or t.overlays < 0:
            raise ConfigError("train: warmup_steps, patience and overlays must be >= 0")
        if not 0 <= t.min_lr_ratio <= 1:
            raise ConfigError(f"train.min_lr_ratio must be in [0, 1], got {t.min_lr_ratio}")
        if not 0 <= t.val_overlap < 1:
            raise ConfigError(f"train.val_overlap must be in [0, 1), got {t.val_overlap}")


def _choice(key: str, value: str, choices) -> None:
    if value not in choices:
        raise ConfigError(f"{key}={value!r} is not one of {', '.join(choices)}")
