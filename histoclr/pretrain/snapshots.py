"""Backbone snapshots at chosen steps of a pretraining run, each with the label-free checks.

``<out_dir>/snapshots/backbone_step<NNNNNN>.pt`` is a backbone file like ``backbone.pt``
(:func:`histoclr.ssl.model.save_backbone`; ``finetune-seg --init simclr:PATH`` loads it strictly)
whose metadata names the step, the run and the data it saw::

    {"step": 250, "run_id": ..., "git_commit": ..., "config": {...},
     "data": {"mode": "dense", "manifest": "<out_dir>/dense_manifest.json", "manifest_sha256": ...,
              "train_sources": [...], "holdout_sources": [...], "excluded": [...]}}

At every snapshot step except the last, the held-out checks
(:meth:`HoldoutDiagnostics.holdout_checks`) run on rank 0 and are logged to MLflow at that step
(``holdout_top1`` ... — the same metric names the end of the run logs, so MLflow shows them
against the step), with their pictures under ``diagnostics/step<NNNNNN>/``. The last step's
checks are the run's ``on_end`` diagnostics.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

from histoclr.config.loader import config_to_dict
from histoclr.ssl.model import save_backbone


def snapshot_path(out_dir: str | Path, step: int) -> Path:
    return Path(out_dir) / "snapshots" / f"backbone_step{int(step):06d}.pt"


class Snapshots:
    """The trainer's ``on_step``: keep a backbone snapshot (and run the checks) at given steps.

    Args:
        steps: snapshot steps; ``max_steps`` is always added (the last).
        max_steps: the run's last step.
        data_meta: the ``data`` entry of every snapshot's metadata.
        diagnostics: a :class:`HoldoutDiagnostics` (or ``None``: snapshots only).
        artifacts: files logged to the MLflow run at the first step of this process (the data manifest).
    """

    def __init__(self, steps, max_steps: int, data_meta: dict, diagnostics=None, artifacts=()):
        self.steps = sorted({int(s) for s in steps if int(s) <= int(max_steps)} | {int(max_steps)})
        self.max_steps = int(max_steps)
        self.data_meta = dict(data_meta)
        self.diagnostics = diagnostics
        self.written: list[Path] = []
        self._artifacts = [Path(a) for a in artifacts]

    def __call__(self, trainer, mlflow_mod: Any) -> None:
        if self._artifacts and mlflow_mod is not None:
            for a in self._artifacts:
                mlflow_mod.log_artifact(str(a))
        self._artifacts = []
        step = trainer.step
        if step not in self.steps or not trainer.dist.is_main:
            return

        path = snapshot_path(trainer.out_dir, step)
        meta = {"step": step, "run_id": trainer.run_id, "git_commit": trainer.git_commit,
                "config": config_to_dict(trainer.cfg), "data": self.data_meta}
        save_backbone(path, trainer.model.encoder, trainer.cfg.model.arch, metadata=meta)
        self.written.append(path)
        if mlflow_mod is not None:
            mlflow_mod.log_artifact(str(path), artifact_path="snapshots")
        tqdm.write(f"snapshot at step {step}: {path}", file=sys.stderr)
        if self.diagnostics is None or step == self.max_steps or not trainer.cfg.diagnostics.enabled \
                or self.diagnostics.holdout is None:
            return
        t0 = time.perf_counter()
        out = Path(trainer.out_dir) / "diagnostics" / f"step{step:06d}"
        metrics, pictures, _ = self.diagnostics.holdout_checks(trainer, out_dir=out)
        metrics["snapshot_checks_s"] = time.perf_counter() - t0
        if mlflow_mod is not None and metrics:
            mlflow_mod.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)
            for f in pictures:
                mlflow_mod.log_artifact(str(f), artifact_path=f"diagnostics/step{step:06d}")
        if "holdout_top1" in metrics:
            tqdm.write(f"step {step} held-out checks ({int(metrics['holdout_tiles'])} crops): top-1 "
                       f"{metrics['holdout_top1']:.3f} (random init {metrics['holdout_top1_random']:.3f}), "
                       f"mean rank {metrics['holdout_mean_rank']:.1f} (random "
                       f"{metrics['holdout_mean_rank_random']:.1f}), {metrics['snapshot_checks_s']:.0f} s",
                       file=sys.stderr)
