"""Typed defaults for the STL-10 recipe (pipelines/stl10_simclr.py): SimCLR on the unlabeled
split, then linear evaluation of random / SimCLR / ImageNet encoders at several label budgets.

``pretrain`` is a full :class:`SSLConfig` (STL-10 defaults: ResNet-18, natural views at 96 px)
plus ``backbone``; its ``tracking.experiment``, ``tracking.tracking_uri`` and ``out_dir`` are set
by the recipe from the top-level ``experiment``, ``tracking_uri`` and ``out_dir`` so that every
run lands in one experiment.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from histoclr.config.ssl import ModelConfig, SSLConfig, ViewsConfig
from histoclr.errors import ConfigError

ARMS = ("random", "simclr", "imagenet")


@dataclass
class STL10DataConfig:
    root: str = "data/stl10"                 # folder that holds (or will hold) stl10_binary/
    download: bool = True                    # download when missing (needs the internet)
    unlabeled_limit: int | None = None    # pretrain on the first N unlabeled images only
    test_per_class: int | None = None     # class-balanced test subset (STL-10 has 800 per class)


@dataclass
class STL10PretrainConfig(SSLConfig):
    model: ModelConfig = field(default_factory=lambda: ModelConfig(arch="resnet18", proj_hidden_dim=512))
    views: ViewsConfig = field(default_factory=lambda: ViewsConfig(recipe="natural", image_size=96))
    backbone: str | None = None           # reuse this backbone file and skip pretraining


@dataclass
class LinearEvalConfig:
    arms: list[str] = field(default_factory=lambda: list(ARMS))
    budgets: list[int] = field(default_factory=lambda: [10, 20, 50, 100, 200, 500])  # labels per class
    image_size: int | None = None         # None: pretrain.views.image_size
    batch_size: int = 256                    # feature extraction
    num_workers: int = 0
    device: str = "auto"                     # auto | cpu | cuda
    weight_decay: float = 1e-3               # L2 on the logistic-regression weights
    max_iter: int = 200                      # L-BFGS iterations
    seed: int = 0                            # label subsampling and the random-init arm
    imagenet_weights: str | None = None   # local torchvision .pth; else torchvision's download
    imagenet_download: bool = True           # false: without imagenet_weights the arm is skipped


@dataclass
class STL10Config:
    experiment: str = "histoclr-stl10"
    run_name: str = "stl10-simclr"
    tracking_uri: str | None = None
    out_dir: str = "runs/stl10"
    data: STL10DataConfig = field(default_factory=STL10DataConfig)
    pretrain: STL10PretrainConfig = field(default_factory=STL10PretrainConfig)
    eval: LinearEvalConfig = field(default_factory=LinearEvalConfig)

    def validate(self) -> None:
        e, d = self.eval, self.data
        if not e.arms:
            raise ConfigError("eval.arms must list at least one of " + ", ".join(ARMS))
        for arm in e.arms:
            if arm not in ARMS:
                raise ConfigError(f"eval.arms: {arm!r} is not one of {', '.join(ARMS)}")
        if len(set(e.arms)) != len(e.arms):
            raise ConfigError("eval.arms lists an arm twice")
        if not e.budgets or any(b < 1 for b in e.budgets):
            raise ConfigError(f"eval.budgets must be labels per class >= 1, got {e.budgets}")
        if e.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"eval.device={e.device!r} is not one of auto, cpu, cuda")
        if e.batch_size < 1 or e.max_iter < 1 or e.weight_decay < 0 or e.num_workers < 0:
            raise ConfigError("eval: batch_size and max_iter must be >= 1, weight_decay and num_workers >= 0")
        if e.image_size is not None and e.image_size < 8:
            raise ConfigError(f"eval.image_size must be >= 8, got {e.image_size}")
        for key, value in (("data.unlabeled_limit", d.unlabeled_limit), ("data.test_per_class", d.test_per_class)):
            if value is not None and value < 1:
                raise ConfigError(f"{key} must be >= 1 or null, got {value}")
        try:
            self.pretrain.validate()
        except ConfigError as err:
            raise ConfigError(f"pretrain.{err}") from None
