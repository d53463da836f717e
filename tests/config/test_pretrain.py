"""PretrainConfig: the SSL config groups plus data/diagnostics; the shipped YAML files."""

from __future__ import annotations

from pathlib import Path

import pytest

from histoclr.config.loader import load_config
from histoclr.config.pretrain import PretrainConfig
from histoclr.config.ssl import SSLConfig
from histoclr.errors import ConfigError

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "pretrain"


def test_defaults_extend_the_ssl_config():
    cfg = load_config(PretrainConfig, None, ["data.manifests=[a.csv]"])
    assert isinstance(cfg, SSLConfig)
    assert cfg.views.recipe == "histology" and cfg.model.arch == "resnet50"
    assert cfg.data.manifests == ["a.csv"] and cfg.data.holdout_fraction == 0.2
    assert cfg.out_dir == "runs/pretrain"


@pytest.mark.parametrize("name", ["cpu.yaml", "gpu_resnet50.yaml"])
def test_shipped_configs_load(name):
    cfg = load_config(PretrainConfig, CONFIGS / name, ["data.manifests=[t/tiles.csv]"])
    if name == "cpu.yaml":
        assert (cfg.model.arch, cfg.views.image_size, cfg.optim.name, cfg.train.device) == \
            ("resnet18", 96, "adamw", "cpu")
    else:
        assert (cfg.model.arch, cfg.views.image_size, cfg.optim.name, cfg.train.precision,
                cfg.train.channels_last) == ("resnet50", 224, "lars", "bf16", True)
        assert cfg.train.batch_size >= 512


@pytest.mark.parametrize("override,message", [
    (None, "data.manifests is empty"),
    ("data.min_tissue=1.5", "data.min_tissue must be in"),
    ("data.holdout_fraction=1.0", "data.holdout_fraction must be in"),
    ("diagnostics.projection=umap", "diagnostics.projection='umap' is not one of"),
    ("diagnostics.max_tiles=1", "diagnostics.max_tiles must be >= 2"),
    ("views.recipe=nope", "views.recipe='nope' is not one of"),
    ("data.bogus=1", "bogus"),
])
def test_invalid_values_name_the_key(override, message):
    overrides = [] if override is None else ["data.manifests=[a]", override]
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        load_config(PretrainConfig, None, overrides)
