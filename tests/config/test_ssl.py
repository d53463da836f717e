"""SSLConfig: defaults (SimCLR paper), YAML + overrides, validation errors naming the key."""

import pytest

from histoclr.config.loader import load_config
from histoclr.config.ssl import OptimConfig, SSLConfig, warmup_steps
from histoclr.errors import ConfigError


def test_defaults_follow_the_paper():
    cfg = load_config(SSLConfig)
    assert (cfg.model.arch, cfg.model.proj_hidden_dim, cfg.model.proj_out_dim) == ("resnet50", 2048, 128)
    assert (cfg.optim.name, cfg.optim.lr, cfg.optim.lr_scaling, cfg.optim.weight_decay) == ("lars", 0.3, "linear", 1e-6)
    assert cfg.loss.temperature == 0.5 and cfg.views.params == {}


def test_yaml_and_overrides_with_view_params(tmp_path):
    path = tmp_path / "ssl.yaml"
    path.write_text("model:\n  arch: resnet18\nviews:\n  recipe: natural\n  image_size: 96\n"
                    "  params:\n    scale: [0.2, 1.0]\ntrain:\n  precision: 32\n")
    cfg = load_config(SSLConfig, path, ["views.params.hflip_p=0.0", "train.batch_size=64"])
    assert cfg.views.params == {"scale": [0.2, 1.0], "hflip_p": 0.0}
    assert cfg.train.precision == "32" and cfg.train.batch_size == 64 and cfg.model.arch == "resnet18"


@pytest.mark.parametrize("override,match", [
    ("train.precision=fp16", "needs a GPU"),
    ("train.batch_size=1", "train.batch_size must be >= 2"),
    ("views.recipe=cartoon", "views.recipe='cartoon' is not one of"),
    ("model.arch=vit", "model.arch='vit' is not one of"),
    ("optim.name=adam", "optim.name='adam' is not one of"),
    ("optim.lr_scaling=log", "optim.lr_scaling"),
    ("loss.temperature=0", "loss.temperature must be > 0"),
    ("views.n_views=3", "views.n_views must be 2"),
    ("optim.warmup_fraction=1.5", "optim.warmup_fraction"),
])
def test_invalid_values_name_the_key(override, match):
    overrides = [override] + (["train.device=cpu"] if "fp16" in override else [])
    with pytest.raises(ConfigError, match=match):
        load_config(SSLConfig, overrides=overrides)


def test_unknown_key_is_a_config_error():
    with pytest.raises(ConfigError, match="lrr"):
        load_config(SSLConfig, overrides=["optim.lrr=0.1"])


def test_warmup_fraction_overrides_steps():
    assert warmup_steps(OptimConfig(warmup_steps=10), 1000) == 10
    assert warmup_steps(OptimConfig(warmup_steps=10, warmup_fraction=0.05), 1000) == 50


def test_config_names_match_the_stage_registries():
    """config/ holds plain names and imports no stage; the stages' registries must match them."""
    from histoclr.config import seg, ssl
    from histoclr.ssl.augment import VIEW_RECIPES
    from histoclr.ssl.model import ENCODER_ARCHS

    assert ssl.VIEW_RECIPES == tuple(VIEW_RECIPES)
    assert set(ssl.ARCHS) == set(ENCODER_ARCHS) and set(seg.ENCODERS) <= set(ENCODER_ARCHS)
