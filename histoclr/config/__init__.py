"""Typed configuration: dataclass schemas with defaults (one module per stage) and one loader.

``load_config(Schema, path, overrides)`` merges, in order: the schema's defaults, a YAML file,
and ``key.sub=value`` overrides. Unknown keys and wrong types raise :class:`ConfigError`
naming the key.
"""

from histoclr.config.loader import config_to_dict, flatten, load_config, save_config

__all__ = ["load_config", "save_config", "config_to_dict", "flatten"]
