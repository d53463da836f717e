"""The skeleton: config loading, atomic writes, the CLI entry point."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field

import pytest

from histoclr.config import flatten, load_config
from histoclr.errors import ConfigError
from histoclr.io import atomic_path, atomic_write_text


@dataclass
class _Inner:
    size: int = 224
    name: str = "a"


@dataclass
class _Schema:
    lr: float = 0.1
    inner: _Inner = field(default_factory=_Inner)


def test_config_defaults_file_and_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("lr: 0.5\ninner:\n  size: 96\n")
    cfg = load_config(_Schema, p, ["inner.name=b"])
    assert (cfg.lr, cfg.inner.size, cfg.inner.name) == (0.5, 96, "b")
    assert load_config(_Schema).inner.size == 224


@pytest.mark.parametrize("yaml_text, key", [("lrr: 1\n", "lrr"), ("inner:\n  sise: 3\n", "sise")])
def test_config_unknown_key_is_named(tmp_path, yaml_text, key):
    p = tmp_path / "c.yaml"
    p.write_text(yaml_text)
    with pytest.raises(ConfigError, match=key):
        load_config(_Schema, p)


def test_config_bad_override_and_type():
    with pytest.raises(ConfigError, match="inner.size"):
        load_config(_Schema, None, ["inner.size=big"])
    with pytest.raises(ConfigError, match="key=value"):
        load_config(_Schema, None, ["lr"])
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(_Schema, None, ["inner.name=[a=[0],b"])


def test_flatten():
    assert flatten({"a": {"b": 1, "c": {"d": 2}}, "e": 3}) == {"a.b": 1, "a.c.d": 2, "e": 3}


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    tmp_path = tmp_path / "atomic"
    target = tmp_path / "out.txt"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []
    atomic_write_text(target, "whole")
    assert target.read_text() == "whole" and len(list(tmp_path.iterdir())) == 1


def test_cli_help_runs_as_a_user_would():
    out = subprocess.run([sys.executable, "-m", "histoclr", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    assert "histoclr" in out.stdout
