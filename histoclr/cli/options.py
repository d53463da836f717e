"""Option decorators shared by the commands (same name, same meaning everywhere)."""

from __future__ import annotations

from pathlib import Path

import click


def config_options(default: str | None = None, metavar: str = "[KEY=VALUE]..."):
    """``--config FILE`` plus trailing ``key=value`` overrides (``OVERRIDES...``).

    A command whose positional arguments also name inputs passes its own ``metavar`` and
    separates the inputs from the overrides itself (see ``histoclr tile``).
    """

    def deco(f):
        f = click.argument("overrides", nargs=-1, metavar=metavar)(f)
        f = click.option(
            "--config", "-c", "config_path", type=click.Path(dir_okay=False, path_type=Path),
            default=default, show_default=True,
            help="YAML config file; any key can be overridden afterwards as key.sub=value.",
        )(f)
        return f

    return deco


def workers_option(f):
    return click.option(
        "--workers", "-j", type=click.IntRange(min=1), default=1, show_default=True,
        help="Number of worker processes.",
    )(f)


def out_option(required: bool = True, help: str = "Output folder."):
    def deco(f):
        return click.option(
            "--out", "-o", type=click.Path(file_okay=False, path_type=Path), required=required,
            help=help,
        )(f)

    return deco


def tracking_uri_option(f):
    return click.option(
        "--tracking-uri", default=None, envvar="MLFLOW_TRACKING_URI",
        help="MLflow tracking URI (default: sqlite:///mlflow.db in the working directory; "
        "also read from MLFLOW_TRACKING_URI).",
    )(f)
