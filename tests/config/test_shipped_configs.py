"""Every YAML file shipped under configs/ loads into its stage's schema and validates."""

from __future__ import annotations

from pathlib import Path

import pytest

from histoclr.config import load_config
from histoclr.config.ablation import AblationConfig
from histoclr.config.pipeline import PipelineConfig
from histoclr.config.pretrain import PretrainConfig
from histoclr.config.seg import FinetuneConfig
from histoclr.config.stl10 import STL10Config
from histoclr.config.tile import TileConfig
from histoclr.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
SCHEMAS = {"tile": TileConfig, "pretrain": PretrainConfig, "finetune": FinetuneConfig,
           "ablation": AblationConfig, "pipeline": PipelineConfig, "stl10": STL10Config}
FILES = sorted((REPO / "configs").glob("*/*.yaml"))


def test_every_config_folder_has_a_schema():
    assert FILES and {f.parent.name for f in FILES} <= set(SCHEMAS)


@pytest.mark.parametrize("path", FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_shipped_config_loads_and_validates(path):
    # pretraining configs name no data: the manifests are given on the command line
    overrides = ["data.manifests=[tiles/tiles.csv]"] if path.parent.name == "pretrain" else []
    cfg = load_config(SCHEMAS[path.parent.name], path, overrides)
    assert cfg is not None


@pytest.mark.parametrize("path", sorted((REPO / "configs" / "ablation").glob("*.yaml")), ids=lambda p: p.name)
def test_ablation_cells_build_valid_finetune_configs(path):
    abl = load_config(AblationConfig, path)
    cfg = load_config(FinetuneConfig, REPO / abl.finetune_config, abl.finetune_overrides)
    cfg.validate()


def test_finetune_precision_is_checked_and_the_cpu_config_uses_bf16_channels_last():
    cfg = load_config(FinetuneConfig, REPO / "configs/finetune/cpu.yaml")
    assert (str(cfg.train.precision), cfg.train.channels_last) == ("bf16", True)
    with pytest.raises(ConfigError, match=r"train\.precision='fp16' is not one of bf16, 32"):
        load_config(FinetuneConfig, REPO / "configs/finetune/cpu.yaml", ["train.precision=fp16"])
