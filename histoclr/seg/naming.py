"""What a fine-tuning run is called: ``init=... freeze=... labels=... seed=...`` (MLflow run names,
sweep cells, report rows). Plain strings; imports nothing heavy."""

from __future__ import annotations

from pathlib import Path


def display_init(init: str) -> str:
    """``simclr:<file name>`` for a backbone path (``simclr:<run id>`` stays), else the init."""
    return f"simclr:{Path(init.split(':', 1)[1]).name}" if init.startswith("simclr:") else init


def budget_label(label_fraction: float | None, num_labeled: int | None) -> str:
    """``3img`` for a budget in images, ``50%`` for a fraction, ``all`` for neither."""
    if num_labeled is not None:
        return f"{int(num_labeled)}img"
    return "all" if label_fraction is None else f"{float(label_fraction) * 100:g}%"


def finetune_run_name(init: str, freeze: str, label_fraction: float | None, num_labeled: int | None,
                      seed: int) -> str:
    """``init=simclr:backbone.pt freeze=layer1-2 labels=50% seed=0``."""
    return (f"init={display_init(init)} freeze={freeze} labels={budget_label(label_fraction, num_labeled)} "
            f"seed={seed}")
