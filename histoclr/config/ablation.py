"""Typed defaults for `histoclr ablate`: the grid, the base fine-tuning config, tracking."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from histoclr.errors import ConfigError

#: Child-run metrics a sweep can pick its best cell by (higher is better).
SELECT_METRICS = ("val_aji", "val_pq", "val_dq", "val_sq", "val_f1", "best_val_dice", "val_iou")
#: What ``run_first`` may select cells by.
RUN_FIRST_KEYS = ("inits", "freezes", "label_counts", "label_fractions", "seeds")


@dataclass
class AblationConfig:
    experiment: str = "histoclr-ablation"
    sweep_name: str = "ablation"
    tracking_uri: Optional[str] = None
    # Base fine-tuning config (a FinetuneConfig YAML) and overrides applied to every cell.
    finetune_config: str = "configs/finetune/cpu.yaml"
    finetune_overrides: List[str] = field(default_factory=list)
    # The grid. init: random | imagenet | simclr:<backbone file or pretraining MLflow run id>
    inits: List[str] = field(default_factory=lambda: ["random", "imagenet", "simclr:runs/pretrain_cpu/backbone.pt"])
    freezes: List[str] = field(default_factory=lambda: ["none", "layer1-2", "all"])
    label_fractions: List[float] = field(default_factory=lambda: [0.25, 0.5, 1.0])
    # Budgets as numbers of labelled images instead (e.g. [1, 2, 10]); when given, label_fractions is unused.
    label_counts: List[int] = field(default_factory=list)
    # Sub-grids: each {freezes: [...], label_counts: [...]} (or label_fractions) replaces the
    # freezes x budgets product for its part, e.g. partial freezing only at the smallest budgets.
    grids: List[Dict[str, List[Any]]] = field(default_factory=list)
    seeds: List[int] = field(default_factory=lambda: [0, 1])
    imagenet_weights: Optional[str] = None
    out_dir: str = "runs/ablation"
    # Classical reference (haematoxylin Otsu) computed on the validation images, logged on the parent.
    classical_baseline: bool = True
    # The best cell (highest select_metric over the finished cells) is logged on its run as the MLflow
    # model `seg_model` (PyTorch, with its best.pt) and registered under this name in the Model Registry:
    # `histoclr predict --model models:/<register_as>/<version>`. None: nothing is logged or registered.
    register_as: Optional[str] = None
    select_metric: str = "val_aji"
    # A folder (e.g. docs/<sweep>_run) for one JSON record per finished cell, committed to git: a sweep
    # on a fresh MLflow store restores the recorded cells instead of training them again (their
    # snapshot's sha256 must match). None: no records.
    records_dir: Optional[str] = None
    # Cells to train before the others (still seed by seed among themselves): those matching every
    # key given, e.g. {inits: [random, "simclr:..."], freezes: [none], label_counts: [1, 2]}. Only the
    # order changes, never the cells or their keys. Empty: the grid's own order.
    run_first: Dict[str, List[Any]] = field(default_factory=dict)

    def validate(self) -> None:
        if self.select_metric not in SELECT_METRICS:
            raise ConfigError(f"ablation: select_metric {self.select_metric!r} must be one of {', '.join(SELECT_METRICS)}")
        if self.register_as is not None and (not str(self.register_as).strip() or any(c in str(self.register_as)
                                                                                      for c in "/:@")):
            raise ConfigError(f"ablation: register_as {self.register_as!r} must be a model name without '/', ':' or '@' "
                              "(or null: do not register)")
        for name in ("inits", "freezes", "label_fractions", "seeds"):
            if not getattr(self, name):
                raise ConfigError(f"ablation: '{name}' must list at least one value")
        for init in self.inits:
            if not (init in ("random", "imagenet") or init.startswith("simclr:")):
                raise ConfigError(f"ablation: init {init!r} must be random, imagenet or simclr:<file or run id>")
        for f in self.label_fractions:
            if not 0 < f <= 1:
                raise ConfigError(f"ablation: label fraction {f} must be in (0, 1]")
        for n in self.label_counts:
            if n < 1:
                raise ConfigError(f"ablation: label count {n} must be >= 1")
        for i, grid in enumerate(self.grids):
            unknown = set(grid) - {"freezes", "label_counts", "label_fractions"}
            if unknown or not grid.get("freezes") or ("label_counts" in grid) == ("label_fractions" in grid):
                raise ConfigError(f"ablation: grids[{i}] must have 'freezes' and exactly one of 'label_counts' "
                                  f"or 'label_fractions'" + (f" (unknown: {', '.join(sorted(unknown))})" if unknown else ""))
            for n in grid.get("label_counts", []):
                if int(n) < 1:
                    raise ConfigError(f"ablation: grids[{i}] label count {n} must be >= 1")
            for f in grid.get("label_fractions", []):
                if not 0 < float(f) <= 1:
                    raise ConfigError(f"ablation: grids[{i}] label fraction {f} must be in (0, 1]")
        unknown = set(self.run_first) - set(RUN_FIRST_KEYS)
        if unknown or not all(isinstance(v, list) and v for v in self.run_first.values()):
            raise ConfigError("ablation: run_first maps some of " + ", ".join(RUN_FIRST_KEYS) + " to non-empty lists"
                              + (f" (unknown: {', '.join(sorted(unknown))})" if unknown else ""))
        stray = [i for i in self.run_first.get("inits", []) if i not in self.inits]
        if stray:
            raise ConfigError(f"ablation: run_first init {stray[0]!r} is not one of the sweep's inits")
