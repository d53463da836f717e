"""Load YAML configs into typed dataclasses (OmegaConf structured configs)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from histoclr.errors import ConfigError
from histoclr.io import atomic_write_text

T = TypeVar("T")


def _describe(exc: OmegaConfBaseException) -> str:
    key = getattr(exc, "full_key", None)
    msg = str(exc).splitlines()[0]
    return f"{msg} (key: {key})" if key else msg


def _yaml_problem(e: yaml.YAMLError) -> str:
    """``"line 3, column 7: mapping values are not allowed here"`` (1-based), or the first line."""
    mark = getattr(e, "problem_mark", None)
    problem = getattr(e, "problem", None)
    if mark is not None and problem:
        return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"
    return str(e).splitlines()[0]


def load_config(schema: type[T], path: str | Path | None = None, overrides: Sequence[str] = ()) -> T:
    """Return a ``schema`` instance: defaults <- YAML file <- ``key=value`` overrides.

    Raises:
        ConfigError: unreadable file, unknown key, or a value of the wrong type.
    """
    if not dataclasses.is_dataclass(schema):
        raise TypeError(f"{schema!r} is not a dataclass schema")
    base = OmegaConf.structured(schema)
    layers = []
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML ({_yaml_problem(e)})") from None
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path}: cannot read the config file ({getattr(e, 'strerror', None) or e})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: top level must be a mapping of keys to values")
        layers.append((str(path), OmegaConf.create(data)))
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise ConfigError(f"override {bad[0]!r} is not of the form key=value")
    if overrides:
        for o in overrides:
            try:
                layers.append(("command line", OmegaConf.from_dotlist([o])))
            except OmegaConfBaseException as e:
                raise ConfigError(f"command-line override {o!r}: {_describe(e)}") from None
            except yaml.YAMLError as e:
                raise ConfigError(f"command-line override {o!r}: value is not valid YAML "
                                  f"({str(e).splitlines()[0]}); quote list items that contain ',', '[' or ']'") from None
    cfg = base
    for where, layer in layers:
        try:
            cfg = OmegaConf.merge(cfg, layer)
        except OmegaConfBaseException as e:
            raise ConfigError(f"{where}: {_describe(e)}") from None
    obj = OmegaConf.to_object(cfg)
    validate = getattr(obj, "validate", None)
    if callable(validate):
        validate()
    return obj  # type: ignore[return-value]


def config_to_dict(cfg: Any) -> dict:
    """A plain nested dict of a config dataclass (for YAML, checkpoints and MLflow)."""
    return OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)  # type: ignore[return-value]


def save_config(cfg: Any, path: str | Path) -> None:
    atomic_write_text(path, yaml.safe_dump(config_to_dict(cfg), sort_keys=False))


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}} -> {"a.b": 1}`` (for MLflow params)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out
