"""Typed defaults for the whole pipeline (tile -> pretrain -> ablate -> report -> final model) on one data root."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

from histoclr.errors import ConfigError


@dataclass
class PipelineConfig:
    data_root: str = "../shared/data"
    out_dir: str = "runs/pipeline"
    # Slide files or folders, relative to data_root, tiled for pretraining (unlabelled + labelled images).
    slides: List[str] = field(default_factory=lambda: [
        "monuseg2018/unlabeled/images", "monuseg2018/labeled/images", "slides"])
    assume_mpp: Optional[float] = 0.2527   # only for images without resolution metadata
    tile_mpp: float = 0.5
    tile_size: int = 224
    min_tissue: float = 0.5
    workers: int = 2
    pretrain_config: str = "configs/pretrain/cpu.yaml"
    pretrain_overrides: List[str] = field(default_factory=list)
    ablation_config: str = "configs/ablation/pipeline_cpu.yaml"
    ablation_overrides: List[str] = field(default_factory=list)
    pairs: str = "data_manifests/monuseg2018_seg_pairs.csv"
    # The pipeline's product: one model fine-tuned with the full fine-tuning config on every label.
    # final_init: random | imagenet | simclr | auto (the ablation's best init by mean validation AJI)
    final_config: str = "configs/finetune/cpu.yaml"
    final_overrides: List[str] = field(default_factory=list)
    final_init: str = "auto"
    experiment: str = "histoclr-pipeline"
    tracking_uri: Optional[str] = None

    def validate(self) -> None:
        if not self.slides:
            raise ConfigError("pipeline: 'slides' must list at least one file or folder")
        if self.final_init not in ("auto", "random", "imagenet", "simclr"):
            raise ConfigError(f"pipeline: final_init={self.final_init!r} must be auto, random, imagenet or simclr")
        if self.tile_mpp <= 0 or (self.assume_mpp is not None and self.assume_mpp <= 0):
            raise ConfigError("pipeline: tile_mpp and assume_mpp must be > 0")
