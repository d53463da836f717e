"""Typed defaults for SimCLR pretraining (`histoclr pretrain`, the STL-10 pipeline).

Defaults follow the SimCLR paper (Chen et al. 2020): ResNet-50, 2-layer 2048-d MLP head to 128-d,
NT-Xent at temperature 0.5, LARS with lr = 0.3 * global_batch / 256, weight decay 1e-6,
linear warm-up then cosine decay. ``train.batch_size`` is PER PROCESS; the global batch is
``batch_size * world_size``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from histoclr.errors import ConfigError

ARCHS = ("resnet18", "resnet34", "resnet50")      # histoclr.ssl.model.ENCODER_ARCHS
OPTIMIZERS = ("lars", "adamw", "sgd")
LR_SCALINGS = ("linear", "sqrt", "none")
PRECISIONS = ("bf16", "fp16", "32")
DEVICES = ("auto", "cpu", "cuda")
VIEW_RECIPES = ("natural", "histology")          # histoclr.ssl.augment.VIEW_RECIPES


@dataclass
class ModelConfig:
    arch: str = "resnet50"
    proj_hidden_dim: int = 2048
    proj_out_dim: int = 128
    proj_layers: int = 2


@dataclass
class LossConfig:
    temperature: float = 0.5


@dataclass
class OptimConfig:
    name: str = "lars"                 # lars | adamw | sgd
    lr: float = 0.3                    # base lr, scaled by lr_scaling with the GLOBAL batch
    lr_scaling: str = "linear"         # linear: lr*B/256 | sqrt: lr*sqrt(B) (paper, small batches) | none
    weight_decay: float = 1e-6
    momentum: float = 0.9              # lars/sgd momentum (adamw: beta1)
    lars_eta: float = 0.001            # LARS trust coefficient
    exclude_bn_bias_from_wd_and_lars: bool = True
    warmup_steps: int = 10
    warmup_fraction: float | None = None   # when set, warm-up = round(fraction * max_steps) steps
    min_lr_ratio: float = 0.0          # cosine floor as a fraction of the peak lr


@dataclass
class ViewsConfig:
    recipe: str = "histology"          # a recipe of histoclr.ssl.augment.build_views
    image_size: int = 224
    n_views: int = 2
    params: dict[str, Any] = field(default_factory=dict)   # extra kwargs for build_views


@dataclass
class TrainConfig:
    max_steps: int = 1000
    batch_size: int = 256              # per process
    num_workers: int = 4
    pin_memory: bool = True            # only used on CUDA
    persistent_workers: bool = True
    prefetch_factor: int = 2
    precision: str = "bf16"            # bf16 (autocast, CPU or GPU) | fp16 (GPU, GradScaler) | 32
    channels_last: bool = True
    seed: int = 0
    deterministic: bool = False        # torch.use_deterministic_algorithms + cudnn.deterministic
    checkpoint_every: int = 500        # steps; 0 = only at the end
    log_every: int = 10
    sync_batchnorm: bool = False       # DDP on CUDA only (torch has no CPU SyncBatchNorm)
    device: str = "auto"               # auto | cpu | cuda
    grad_clip: float = 0.0             # max global grad norm; 0 = off
    compile: bool = False              # torch.compile the model


@dataclass
class TrackingConfig:
    tracking_uri: str | None = None     # None: MLFLOW_TRACKING_URI or sqlite:///./mlflow.db
    experiment: str = "histoclr"
    run_name: str | None = None
    enabled: bool = True


@dataclass
class SSLConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    views: ViewsConfig = field(default_factory=ViewsConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    out_dir: str = "runs/ssl"

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first invalid key."""
        m, o, v, t = self.model, self.optim, self.views, self.train
        _choice("model.arch", m.arch, ARCHS)
        _choice("optim.name", o.name, OPTIMIZERS)
        _choice("optim.lr_scaling", o.lr_scaling, LR_SCALINGS)
        _choice("train.precision", str(t.precision), PRECISIONS)
        _choice("train.device", t.device, DEVICES)
        _choice("views.recipe", v.recipe, VIEW_RECIPES)
        for key, value in (("model.proj_hidden_dim", m.proj_hidden_dim), ("model.proj_out_dim", m.proj_out_dim),
                           ("model.proj_layers", m.proj_layers), ("views.image_size", v.image_size),
                           ("train.max_steps", t.max_steps), ("train.log_every", t.log_every),
                           ("train.prefetch_factor", t.prefetch_factor)):
            if value < 1:
                raise ConfigError(f"{key} must be >= 1, got {value}")
        if self.loss.temperature <= 0:
            raise ConfigError(f"loss.temperature must be > 0, got {self.loss.temperature}")
        if o.lr <= 0:
            raise ConfigError(f"optim.lr must be > 0, got {o.lr}")
        if o.weight_decay < 0 or o.lars_eta <= 0 or not 0 <= o.momentum < 1:
            raise ConfigError("optim: weight_decay must be >= 0, lars_eta > 0 and momentum in [0, 1)")
        if o.warmup_steps < 0:
            raise ConfigError(f"optim.warmup_steps must be >= 0, got {o.warmup_steps}")
        if o.warmup_fraction is not None and not 0 <= o.warmup_fraction < 1:
            raise ConfigError(f"optim.warmup_fraction must be in [0, 1), got {o.warmup_fraction}")
        if not 0 <= o.min_lr_ratio <= 1:
            raise ConfigError(f"optim.min_lr_ratio must be in [0, 1], got {o.min_lr_ratio}")
        if v.n_views != 2:
            raise ConfigError(f"views.n_views must be 2 (NT-Xent pairs two views), got {v.n_views}")
        if t.batch_size < 2:
            raise ConfigError(f"train.batch_size must be >= 2 (negatives come from the batch), got {t.batch_size}")
        if t.num_workers < 0 or t.checkpoint_every < 0 or t.grad_clip < 0:
            raise ConfigError("train: num_workers, checkpoint_every and grad_clip must be >= 0")
        if str(t.precision) == "fp16" and t.device == "cpu":
            raise ConfigError("train.precision=fp16 needs a GPU; use bf16 or 32 on CPU")


def warmup_steps(optim: OptimConfig, max_steps: int) -> int:
    """The number of linear warm-up steps (``warmup_fraction`` wins over ``warmup_steps``)."""
    if optim.warmup_fraction is not None:
        return round(optim.warmup_fraction * max_steps)
    return optim.warmup_steps


def _choice(key: str, value: str, choices) -> None:
    if value not in choices:
        raise ConfigError(f"{key}={value!r} is not one of {', '.join(choices)}")
