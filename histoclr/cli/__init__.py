"""The ``histoclr`` command line: one small module per command, loaded lazily.

Each command module imports only click at import time and imports its heavy dependencies
(torch, openslide, mlflow) inside the command, so ``histoclr --help`` is fast.
"""

from __future__ import annotations

import importlib
import sys

import click

from histoclr import __version__
from histoclr.errors import HistoclrError

# name -> "module:attribute". A command is listed here only once it works.
COMMANDS: dict[str, str] = {
    "tile": "histoclr.cli.tile:tile",
    "data": "histoclr.cli.data:data",
    "pretrain": "histoclr.cli.pretrain:pretrain",
    "finetune-seg": "histoclr.cli.finetune_seg:finetune_seg",
    "predict": "histoclr.cli.predict:predict",
    "seg-data": "histoclr.cli.seg_data:seg_data",
    "ablate": "histoclr.cli.ablate:ablate",
    "report": "histoclr.cli.report:report",
    "ui": "histoclr.cli.ui:ui",
}


class LazyGroup(click.Group):
    """A click group whose sub-commands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        return getattr(importlib.import_module(module_name), attr)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except HistoclrError as e:
            click.echo(f"error: {e}", err=True)
            ctx.exit(2)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="histoclr")
def cli() -> None:
    """histoclr: SimCLR pretraining on whole-slide images and label-efficient segmentation.

    The pipeline is: tile slides -> pretrain SimCLR on the tiles -> fine-tune DeepLabV3
    on a few masks -> compare baselines and ablations in MLflow.
    """


def main(argv: list[str] | None = None) -> None:
    cli.main(args=argv, prog_name="histoclr")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
