"""`histoclr ablate`: run a grid of fine-tuning cells as child runs of one MLflow parent run.

Resumable: a cell is identified by a hash of its full fine-tuning config; re-running the same
sweep skips cells whose child run FINISHED and reruns failed or unfinished ones. A failing cell is
marked FAILED with its error as a tag and does not stop the others. Arms that cannot run here
(``imagenet`` without weights) become FINISHED children tagged ``skipped=true`` with the reason.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from histoclr.config.ablation import AblationConfig
from histoclr.errors import HistoclrError

SWEEP_TAG = "histoclr.sweep_key"
CELL_TAG = "histoclr.cell_key"
PARAM_NAMES = ("init", "freeze", "label_fraction", "num_labeled", "seed", "encoder", "pretrain_run_id")
METRIC_NAMES = ("best_val_dice", "val_iou", "val_aji", "train_time_s")


@dataclass(frozen=True)
class Cell:
    """One point of the grid."""

    init: str
    freeze: str
    label_fraction: float
    seed: int

    @property
    def label(self) -> str:
        return f"init={self.init} freeze={self.freeze} labels={self.label_fraction:g} seed={self.seed}"


@dataclass
class SweepResult:
    parent_run_id: str
    experiment_id: str
    finished: list[Cell] = field(default_factory=list)
    reused: list[Cell] = field(default_factory=list)
    skipped: list[Cell] = field(default_factory=list)
    failed: list[tuple[Cell, str]] = field(default_factory=list)


def expand_grid(cfg: AblationConfig) -> list[Cell]:
    """All cells, seed by seed: the whole grid for the first seed comes first, so a sweep stopped
    early still compares every init x freeze x budget once."""
    return [Cell(i, f, float(lf), int(s)) for s, lf, f, i in
            itertools.product(cfg.seeds, cfg.label_fractions, cfg.freezes, cfg.inits)]


def _hash(obj: Any) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


# --------------------------------------------------------------------------- cell configs
def cell_config(cfg: AblationConfig, cell: Cell, overrides: Sequence[str], tracking_uri: str,
                init_value: str):
    """The FinetuneConfig of one cell: base file <- sweep overrides <- CLI overrides <- the cell."""
    from histoclr.config import load_config
    from histoclr.config.seg import FinetuneConfig

    fcfg = load_config(FinetuneConfig, cfg.finetune_config, [*cfg.finetune_overrides, *overrides])
    fcfg.init = init_value
    fcfg.freeze = cell.freeze
    fcfg.label_fraction = cell.label_fraction
    fcfg.num_labeled = None
    fcfg.seed = cell.seed
    if cfg.imagenet_weights:
        fcfg.imagenet_weights = cfg.imagenet_weights
    fcfg.tracking.experiment = cfg.experiment
    fcfg.tracking.tracking_uri = tracking_uri
    fcfg.tracking.run_name = cell.label
    validate = getattr(fcfg, "validate", None)
    if callable(validate):
        validate()
    return fcfg


def cell_key(fcfg) -> str:
    """Hash of everything that changes a cell's result (not where it logs or writes)."""
    from histoclr.config import config_to_dict

    d = config_to_dict(fcfg)
    d.pop("tracking", None)
    d.pop("out_dir", None)
    return _hash(d)


def resolve_init(init: str, client, cache_dir: Path) -> tuple[str, str]:
    """``simclr:<file or run id>`` -> (``simclr:<local file>``, pretraining run id)."""
    if not init.startswith("simclr:"):
        return init, "none"
    ref = init.split(":", 1)[1]
    path = Path(ref)
    if path.is_file():
        from histoclr.ssl.model import load_backbone

        return f"simclr:{path.resolve()}", str(load_backbone(path).metadata.get("run_id") or "none")
    try:
        run = client.get_run(ref)
    except Exception:
        raise HistoclrError(f"{init}: neither a backbone file nor an MLflow run id in this tracking store") from None
    found = _find_artifact(client, run.info.run_id, "backbone.pt")
    if found is None:
        raise HistoclrError(f"{init}: pretraining run {ref} has no backbone.pt artifact")
    dst = cache_dir / ref
    dst.mkdir(parents=True, exist_ok=True)
    local = client.download_artifacts(run.info.run_id, found, str(dst))
    return f"simclr:{Path(local).resolve()}", ref


def _find_artifact(client, run_id: str, name: str, path: str | None = None) -> str | None:
    for info in client.list_artifacts(run_id, path):
        if info.is_dir:
            hit = _find_artifact(client, run_id, name, info.path)
            if hit:
                return hit
        elif Path(info.path).name == name:
            return info.path
    return None


def imagenet_unavailable_reason(encoder: str, weights: str | None) -> str | None:
    """Why the ImageNet arm cannot run here, or None when weights can be had."""
    from histoclr.ssl.model import imagenet_state_dict

    try:
        imagenet_state_dict(encoder, weights)
    except HistoclrError as e:
        return str(e)
    return None


# --------------------------------------------------------------------------- the sweep
def _parent_run(client, experiment_id: str, sweep_key: str, cfg: AblationConfig, tracking_uri: str):
    from histoclr.config import config_to_dict, flatten
    from histoclr.tracking import _params_for_mlflow, git_commit

    runs = client.search_runs([experiment_id], filter_string=f"tags.`{SWEEP_TAG}` = '{sweep_key}'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    if runs:
        run = runs[0]
        client.update_run(run.info.run_id, status="RUNNING")
        return run.info.run_id, True
    run = client.create_run(experiment_id, run_name=cfg.sweep_name,
                            tags={SWEEP_TAG: sweep_key, "histoclr.kind": "ablation-parent",
                                  "git_commit": git_commit() or "unknown"})
    for k, v in _params_for_mlflow(flatten(config_to_dict(cfg))).items():
        client.log_param(run.info.run_id, k, v)
    return run.info.run_id, False


def _children_for(client, experiment_id: str, parent_id: str, key: str):
    return client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{CELL_TAG}` = '{key}' and tags.`mlflow.parentRunId` = '{parent_id}'",
        order_by=["attributes.start_time DESC"])


def _record_child(client, experiment_id, parent_id, key, cell: Cell, fcfg_params: dict,
                  status: str, tags: dict) -> str:
    run = client.create_run(experiment_id, run_name=cell.label,
                            tags={"mlflow.parentRunId": parent_id, CELL_TAG: key, **tags})
    for k, v in fcfg_params.items():
        client.log_param(run.info.run_id, k, str(v))
    client.set_terminated(run.info.run_id, status=status)
    return run.info.run_id


def run_sweep(cfg: AblationConfig, overrides: Sequence[str] = (), tracking_uri: str | None = None,
              cell_runner: Callable | None = None, echo: Callable[[str], None] = print) -> SweepResult:
    """Run every cell of the grid that has not FINISHED yet; returns what happened to each."""
    import mlflow
    from mlflow.tracking import MlflowClient
    from tqdm import tqdm

    from histoclr.tracking import resolve_tracking_uri

    if cell_runner is None:
        from histoclr.seg.train import run_finetune as cell_runner

    uri = resolve_tracking_uri(tracking_uri or cfg.tracking_uri)
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(cfg.experiment)
    experiment_id = exp.experiment_id if exp else client.create_experiment(cfg.experiment)
    out_dir = Path(cfg.out_dir)

    # ---- resolve the cells before anything runs: bad configs fail here, not half-way
    cells = expand_grid(cfg)
    inits = {init: resolve_init(init, client, out_dir / "backbones") for init in cfg.inits}
    planned = []
    for cell in cells:
        fcfg = cell_config(cfg, cell, overrides, uri, inits[cell.init][0])
        fcfg.out_dir = str(out_dir / "cells" / cell_key(fcfg)[:12])
        planned.append((cell, fcfg, cell_key(fcfg)))
    sweep_key = _hash({"experiment": cfg.experiment, "sweep": cfg.sweep_name})
    parent_id, resumed = _parent_run(client, experiment_id, sweep_key, cfg, uri)
    echo(f"{'resuming' if resumed else 'started'} sweep {cfg.sweep_name!r}: parent run {parent_id}, "
         f"{len(planned)} cells, tracking {uri}")
    result = SweepResult(parent_id, experiment_id)

    encoder = planned[0][1].model.encoder
    imagenet_reason = None
    if "imagenet" in cfg.inits:
        imagenet_reason = imagenet_unavailable_reason(encoder, cfg.imagenet_weights)

    if cfg.classical_baseline:
        _log_classical_baseline(client, parent_id, planned[0][1], echo)

    # ---- the cells
    durations: list[float] = []
    bar = tqdm(planned, desc="ablation", unit="cell")
    for i, (cell, fcfg, key) in enumerate(bar, 1):
        base_params = {"init": cell.init, "freeze": cell.freeze, "label_fraction": cell.label_fraction,
                       "seed": cell.seed, "encoder": fcfg.model.encoder,
                       "pretrain_run_id": inits[cell.init][1]}
        previous = _children_for(client, experiment_id, parent_id, key)
        if any(r.info.status == "FINISHED" for r in previous):
            done = next(r for r in previous if r.info.status == "FINISHED")
            (result.skipped if done.data.tags.get("skipped") == "true" else result.reused).append(cell)
            continue
        for r in previous:  # a killed process leaves RUNNING children behind
            if r.info.status == "RUNNING":
                client.set_terminated(r.info.run_id, status="KILLED")
        if cell.init == "imagenet" and imagenet_reason:
            _record_child(client, experiment_id, parent_id, key, cell, {**base_params, "num_labeled": "none"},
                          "FINISHED", {"skipped": "true", "skip_reason": imagenet_reason[:5000]})
            result.skipped.append(cell)
            echo(f"[{i}/{len(planned)}] skipped {cell.label}: {imagenet_reason}")
            continue
        eta = (sum(durations) / len(durations)) * (len(planned) - i + 1) if durations else None
        echo(f"[{i}/{len(planned)}] {cell.label}" + (f" (about {eta / 60:.0f} min left)" if eta else ""))
        t0 = time.time()
        try:
            cell_runner(fcfg, parent_run_id=parent_id, extra_tags={CELL_TAG: key, "histoclr.kind": "ablation-cell"})
        except Exception as e:  # one failing cell must not stop the others
            msg = f"{type(e).__name__}: {e}"
            failed_runs = [r for r in _children_for(client, experiment_id, parent_id, key)
                           if r.info.status in ("FAILED", "RUNNING")]
            if failed_runs:
                run_id = failed_runs[0].info.run_id
                client.set_tag(run_id, "error", msg[:5000])
                client.set_tag(run_id, "traceback", traceback.format_exc()[-5000:])
                if failed_runs[0].info.status == "RUNNING":
                    client.set_terminated(run_id, status="FAILED")
            else:  # it failed before it could open its run: record it anyway
                _record_child(client, experiment_id, parent_id, key, cell, {**base_params, "num_labeled": "none"},
                              "FAILED", {"error": msg[:5000]})
            result.failed.append((cell, msg))
            echo(f"[{i}/{len(planned)}] FAILED {cell.label}: {msg}")
        else:
            result.finished.append(cell)
        durations.append(time.time() - t0)

    client.set_tag(parent_id, "cells_total", str(len(planned)))
    client.set_tag(parent_id, "cells_failed", str(len(result.failed)))
    client.set_tag(parent_id, "cells_skipped", str(len(result.skipped)))
    client.set_terminated(parent_id, status="FINISHED")
    return result


def _log_classical_baseline(client, parent_id: str, fcfg, echo) -> None:
    """Haematoxylin-Otsu reference on the validation images (same mpp as the model)."""
    try:
        from histoclr.seg.baseline import hed_otsu_segment
        from histoclr.seg.dataset import load_pair
        from histoclr.seg.metrics import segmentation_metrics
        from histoclr.seg.pairs import read_pairs_manifest

        pairs = [p for p in read_pairs_manifest(fcfg.pairs, fcfg.data_root) if p.split == "val"]
        mpp = getattr(getattr(fcfg, "data", None), "mpp", None)
        scores: dict[str, list[float]] = {}
        for pair in pairs:
            lp = load_pair(pair, mpp)
            m = segmentation_metrics(hed_otsu_segment(lp.image), lp.mask, lp.instances)
            for k, v in m.items():
                scores.setdefault(k, []).append(float(v))
        for k, vals in scores.items():
            client.log_metric(parent_id, f"classical_{k}", sum(vals) / len(vals))
        client.set_tag(parent_id, "classical_baseline", "haematoxylin (rgb2hed) Otsu + small-object removal")
    except HistoclrError as e:
        echo(f"classical baseline not computed: {e}")
