"""`histoclr ablate`: run a grid of fine-tuning cells as child runs of one MLflow parent run.

Resumable: a cell is identified by a hash of its full fine-tuning config (a SimCLR init by its
file's sha256); re-running the same sweep skips cells whose child run FINISHED and reruns failed or
unfinished ones. A failing cell is marked FAILED with its error as a tag and does not stop the
others. Arms that cannot run here (``imagenet`` without weights) become FINISHED children tagged
``skipped=true`` with the reason. With ``records_dir`` set, finished cells are also written as JSON
records for git, and a sweep on a fresh MLflow store restores them instead of training them again
(:mod:`histoclr.ablation.records`).

Runs are named for what they are: the parent by ``sweep_name``, each cell
``init=... freeze=... labels=... seed=...`` (:func:`histoclr.seg.naming.finetune_run_name`), and
every child, skipped and failed ones included, has the params of ``PARAM_NAMES``. With
``register_as`` set, the best finished cell by ``select_metric`` is logged on its run as the MLflow
model ``seg_model`` and registered under that name (:func:`register_best`).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from histoclr.ablation.records import INIT_TAG, RESTORED_TAG, SUPERSEDED_TAG, restore_records, write_records
from histoclr.config import config_to_dict, flatten, load_config
from histoclr.config.ablation import AblationConfig
from histoclr.config.seg import FinetuneConfig
from histoclr.errors import HistoclrError
from histoclr.io import ensure_output_dir
from histoclr.manifests.pairs import read_pairs_manifest
from histoclr.progress import progress_bar
from histoclr.seg.baseline import classical_references
from histoclr.seg.model import load_seg_checkpoint
from histoclr.seg.naming import display_init, finetune_run_name, init_identity
from histoclr.seg.train import BEST, run_finetune, select_pairs
from histoclr.ssl.model import imagenet_state_dict, load_backbone
from histoclr.tracking import (
    Run,
    check_tracking_uri,
    child_runs,
    download_artifact,
    find_artifact,
    find_runs,
    log_model,
    open_run,
    record_run,
    result_metrics,
    run_exists,
)

SWEEP_TAG = "histoclr.sweep_key"
CELL_TAG = "histoclr.cell_key"
PARAM_NAMES = ("init", "freeze", "label_fraction", "num_labeled", "seed", "encoder", "target", "pretrain_run_id")
METRIC_NAMES = ("val_aji", "val_pq", "val_dq", "val_sq", "val_f1", "best_val_dice", "val_iou", "train_time_s")
MODEL_NAME = "seg_model"                    # the MLflow model logged on the best cell's run
BEST_RUN_TAG = "histoclr.best_run_id"
REGISTERED_TAG = "histoclr.registered_model"


@dataclass(frozen=True)
class Cell:
    """One point of the grid."""

    init: str
    freeze: str
    label_fraction: float | None
    seed: int
    num_labeled: int | None = None      # a budget in images (then label_fraction is None)

    @property
    def label(self) -> str:
        """The cell's run name, e.g. ``init=simclr:backbone.pt freeze=layer1-2 labels=50% seed=0``."""
        return finetune_run_name(self.init, self.freeze, self.label_fraction, self.num_labeled, self.seed)


@dataclass
class SweepResult:
    parent_run_id: str
    experiment_id: str
    finished: list[Cell] = field(default_factory=list)
    reused: list[Cell] = field(default_factory=list)
    skipped: list[Cell] = field(default_factory=list)
    failed: list[tuple[Cell, str]] = field(default_factory=list)
    registered: str | None = None       # models:/NAME/VERSION of the best cell, when registered
    register_error: str | None = None


def expand_grid(cfg: AblationConfig) -> list[Cell]:
    """All cells, seed by seed: the whole grid for the first seed comes first, so a sweep stopped
    early still compares every init x freeze x budget once. The cells ``run_first`` selects come
    before the others, seed by seed among themselves.

    Budgets are ``label_counts`` (images) when given, else ``label_fractions``; ``grids`` replaces the
    ``freezes`` x budgets product by the union of its parts."""
    parts = cfg.grids or [{"freezes": cfg.freezes,
                           **({"label_counts": cfg.label_counts} if cfg.label_counts
                              else {"label_fractions": cfg.label_fractions})}]
    budgets = []                      # (label_fraction, num_labeled, freeze), in order, no repeats
    for part in parts:
        values = ([(None, int(n)) for n in part["label_counts"]] if "label_counts" in part
                  else [(float(f), None) for f in part["label_fractions"]])
        for (lf, n), f in itertools.product(values, part["freezes"]):
            if (lf, n, f) not in budgets:
                budgets.append((lf, n, f))
    cells = [Cell(i, f, lf, int(s), n) for s, (lf, n, f), i in itertools.product(cfg.seeds, budgets, cfg.inits)]
    if cfg.run_first and not any(_runs_first(c, cfg.run_first) for c in cells):
        raise HistoclrError(f"ablation: run_first {cfg.run_first} selects no cell of the grid (a value not in it, "
                            "or label_counts against a label_fractions grid?)")
    return sorted(cells, key=lambda c: not _runs_first(c, cfg.run_first))     # stable: first ones, then the rest


def _runs_first(cell: Cell, run_first: dict[str, list]) -> bool:
    """Whether ``cell`` matches every key of the config's ``run_first``."""
    values = {"inits": cell.init, "freezes": cell.freeze, "label_counts": cell.num_labeled,
              "label_fractions": cell.label_fraction, "seeds": cell.seed}
    return bool(run_first) and all(values[k] in v for k, v in run_first.items())


def _hash(obj: Any) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


# --------------------------------------------------------------------------- cell configs
def cell_config(cfg: AblationConfig, cell: Cell, overrides: Sequence[str], tracking_uri: str,
                init_value: str):
    """The FinetuneConfig of one cell: base file <- sweep overrides <- CLI overrides <- the cell."""

    fcfg = load_config(FinetuneConfig, cfg.finetune_config, [*cfg.finetune_overrides, *overrides])
    fcfg.init = init_value
    fcfg.freeze = cell.freeze
    fcfg.label_fraction = cell.label_fraction
    fcfg.num_labeled = cell.num_labeled
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
    """Hash of everything that changes a cell's result (not where it logs or writes). A SimCLR init
    counts by its file's sha256, not its path: the same snapshot in another checkout is the same
    cell, and a rerun of the pretraining that made other weights is another cell."""

    d = config_to_dict(fcfg)
    d.pop("tracking", None)
    d.pop("out_dir", None)
    d["init"] = init_identity(fcfg.init)
    return _hash(d)


def resolve_init(init: str, tracking_uri: str, cache_dir: Path) -> tuple[str, str]:
    """``simclr:<file or run id>`` -> (``simclr:<local file>``, pretraining run id)."""
    if not init.startswith("simclr:"):
        return init, "none"
    ref = init.split(":", 1)[1]
    path = Path(ref)
    if path.is_file():
        return f"simclr:{path.resolve()}", str(load_backbone(path, weights=False).metadata.get("run_id") or "none")
    if not run_exists(ref, tracking_uri):
        raise HistoclrError(f"{init}: neither a backbone file nor an MLflow run id in this tracking store")
    found = find_artifact(ref, "backbone.pt", tracking_uri)
    if found is None:
        raise HistoclrError(f"{init}: pretraining run {ref} has no backbone.pt artifact")
    local = download_artifact(ref, found, cache_dir / ref, tracking_uri)
    return f"simclr:{local.resolve()}", ref


def imagenet_unavailable_reason(encoder: str, weights: str | None) -> str | None:
    """Why the ImageNet arm cannot run here, or None when weights can be had."""

    try:
        imagenet_state_dict(encoder, weights)
    except HistoclrError as e:
        return str(e)
    return None


# --------------------------------------------------------------------------- the sweep
def _parent_run(cfg: AblationConfig, sweep_key: str, uri: str) -> tuple[Run, bool]:
    """The sweep's parent run: the newest one with this sweep key (set RUNNING again), else a new one."""

    runs = find_runs(cfg.experiment, uri, tags={SWEEP_TAG: sweep_key}, max_results=1)
    if runs:
        return open_run(cfg.experiment, tracking_uri=uri, run_id=runs[0].info.run_id), True
    return open_run(cfg.experiment, cfg.sweep_name, tracking_uri=uri, params=flatten(config_to_dict(cfg)),
                    tags={SWEEP_TAG: sweep_key, "histoclr.kind": "ablation-parent"}), False


def _sweep_key(cfg: AblationConfig) -> str:
    return _hash({"experiment": cfg.experiment, "sweep": cfg.sweep_name})


def _plan(cfg: AblationConfig, overrides: Sequence[str], uri: str, out_dir: Path):
    """``(inits, planned)``: each init resolved to ``(init value, pretraining run id)``, and every
    cell of the grid as ``(cell, fine-tuning config, cell key)``."""
    inits = {init: resolve_init(init, uri, out_dir / "backbones") for init in cfg.inits}
    planned = []
    for cell in expand_grid(cfg):
        fcfg = cell_config(cfg, cell, overrides, uri, inits[cell.init][0])
        key = cell_key(fcfg)
        twin = next((c for c, _, k in planned if k == key), None)
        if twin is not None:   # e.g. two inits naming files with the same weights
            raise HistoclrError(f"ablation: cells {twin.label!r} and {cell.label!r} are the same cell "
                                "(same config and same snapshot weights): list each init once")
        fcfg.out_dir = str(out_dir / "cells" / key[:12])
        planned.append((cell, fcfg, key))
    named: dict[str, str] = {}
    for init in cfg.inits:   # other weights under one file name: run names and report arms would merge them
        first = named.setdefault(display_init(init), init)
        if first != init:
            raise HistoclrError(f"ablation: inits {first!r} and {init!r} have the same file name, so their cells "
                                "would share run names and report arms: link or copy one under another name")
    return inits, planned


def sync_records(cfg: AblationConfig, overrides: Sequence[str] = (), tracking_uri: str | None = None,
                 echo: Callable[[str], None] = print) -> list[Path]:
    """Without training anything: restore the recorded cells the sweep's MLflow parent lacks (not
    while the sweep runs), and write the records of its finished cells that have none
    (``records_dir``); the files written. Safe while the sweep runs (its status is left as it is)."""
    if not cfg.records_dir:
        raise HistoclrError("ablation: records_dir is not set in the sweep config (e.g. records_dir: docs/<sweep>_run)")
    uri = check_tracking_uri(tracking_uri or cfg.tracking_uri)
    _, planned = _plan(cfg, overrides, uri, ensure_output_dir(cfg.out_dir))
    runs = find_runs(cfg.experiment, uri, tags={SWEEP_TAG: _sweep_key(cfg)}, max_results=1)
    if not runs:
        raise HistoclrError(f"no sweep {cfg.sweep_name!r} in experiment {cfg.experiment!r} of {uri}: "
                            "run `histoclr ablate` with this config first")
    parent = Run.attach(runs[0].info.run_id, uri)
    if parent.get().info.status == "RUNNING":   # the running sweep would not see restored cells: it would train them too
        echo("the sweep is running: records written only; restore happens when the sweep (re)starts")
    else:
        restore_records(cfg.records_dir, cfg.experiment, parent, planned, CELL_TAG, echo)
    written = write_records(cfg.records_dir, parent.run_id, planned, CELL_TAG, uri)
    echo(f"{len(written)} record(s) written to {cfg.records_dir}")
    return written


def run_sweep(cfg: AblationConfig, overrides: Sequence[str] = (), tracking_uri: str | None = None,
              cell_runner: Callable | None = None, echo: Callable[[str], None] = print) -> SweepResult:
    """Run every cell of the grid that has not FINISHED yet; returns what happened to each."""
    if cell_runner is None:
        cell_runner = run_finetune

    # ---- cheap checks first: an unreachable store or unwritable folder fails before any work
    uri = check_tracking_uri(tracking_uri or cfg.tracking_uri)
    out_dir = ensure_output_dir(cfg.out_dir)

    # ---- resolve the cells before anything runs: bad configs fail here, not half-way
    inits, planned = _plan(cfg, overrides, uri, out_dir)
    parent, resumed = _parent_run(cfg, _sweep_key(cfg), uri)
    parent_id = parent.run_id
    echo(f"{'resuming' if resumed else 'started'} sweep {cfg.sweep_name!r}: parent run {parent_id}, "
         f"{len(planned)} cells, tracking {uri}")
    result = SweepResult(parent_id, parent.get().info.experiment_id)
    parent.set_tags({"cells_total": len(planned)})  # known from the start: a report of a running sweep says "n of N"
    try:
        _supersede_replanned(parent, planned, uri, echo)
        if cfg.records_dir:   # cells finished on another machine: restored, not trained again
            restore_records(cfg.records_dir, cfg.experiment, parent, planned, CELL_TAG, echo)
        _run_cells(cfg, planned, inits, parent, uri, cell_runner, result, echo)
    except KeyboardInterrupt:
        parent.end("KILLED")
        raise
    except BaseException:
        parent.end("FAILED")
        raise
    parent.set_tags({"cells_total": len(planned), "cells_failed": len(result.failed),
                     "cells_skipped": len(result.skipped)})
    if cfg.register_as:
        try:
            result.registered = register_best(parent, cfg.register_as, cfg.select_metric, out_dir, uri, echo)
        except Exception as e:  # noqa: BLE001  the cells stand; the failure is reported and tagged
            result.register_error = f"{type(e).__name__}: {e}"
            parent.set_tags({"register_error": result.register_error})
            echo(f"could not register the best cell as {cfg.register_as!r}: {result.register_error}")
    parent.end("FINISHED")
    return result


def best_cell(parent_run_id: str, metric: str, tracking_uri: str):
    """``(run, value)``: the finished, not skipped child run (MLflow ``Run``) with the highest result
    ``metric``, and that value; None when no cell has one. Cells restored from records
    (:mod:`histoclr.ablation.records`) have no weights here and are not candidates."""
    done = [(r, result_metrics(r, [metric], tracking_uri).get(metric)) for r in child_runs(parent_run_id, tracking_uri)
            if r.info.status == "FINISHED" and r.data.tags.get("skipped") != "true"
            and RESTORED_TAG not in r.data.tags]   # restored from a record: numbers only, no weights
    done = [(r, v) for r, v in done if v is not None]
    return max(reversed(done), key=lambda rv: rv[1], default=None)   # ties: the oldest


def register_best(parent: Run, name: str, metric: str, out_dir: Path, uri: str, echo) -> str | None:
    """Log the sweep's best cell (by ``metric``) as the MLflow model ``seg_model`` on its run, with
    ``best.pt`` as an extra file, an input example and a signature, and register it as ``name``;
    returns ``models:/NAME/VERSION`` (None when no cell finished). Already registered from that
    same run by this sweep: nothing new is registered."""
    found = best_cell(parent.run_id, metric, uri)
    if found is None:
        echo(f"no finished cell to register as {name!r}")
        return None
    best, value = found
    run_id, tags = best.info.run_id, parent.get().data.tags
    if tags.get(BEST_RUN_TAG) == run_id and tags.get(REGISTERED_TAG, "").startswith(f"models:/{name}/"):
        echo(f"best cell by {metric}: {best.info.run_name} (already registered as {tags[REGISTERED_TAG]})")
        return tags[REGISTERED_TAG]
    import numpy as np
    import torch

    found = find_artifact(run_id, BEST, uri)
    if found is None:
        raise HistoclrError(f"best cell run {run_id} has no {BEST} artifact")
    ckpt_path = download_artifact(run_id, found, out_dir / "registered" / run_id, uri)
    ckpt = load_seg_checkpoint(ckpt_path)
    example = np.random.default_rng(0).standard_normal((1, 3, ckpt.window, ckpt.window)).astype(np.float32)
    with torch.no_grad():
        output = ckpt.model(torch.from_numpy(example)).numpy()
    info = log_model(run_id, ckpt.model, name=MODEL_NAME, checkpoint=ckpt_path, input_example=example,
                     output_example=output, register_as=name, tracking_uri=uri)
    registered = info["registered"]
    parent.set_tags({BEST_RUN_TAG: run_id, REGISTERED_TAG: registered, "histoclr.best_metric": metric,
                     f"histoclr.best_{metric}": f"{value:.4f}"})
    Run.attach(run_id, uri).set_tags({REGISTERED_TAG: registered})
    echo(f"best cell by {metric} ({value:.4f}): {best.info.run_name}; registered as "
         f"{registered}: histoclr predict --model {registered} IMAGES...")
    return registered


def _run_cells(cfg, planned, inits, parent: Run, uri: str, cell_runner, result: SweepResult, echo) -> None:
    parent_id = parent.run_id
    encoder = planned[0][1].model.encoder
    imagenet_reason = None
    if "imagenet" in cfg.inits:
        imagenet_reason = imagenet_unavailable_reason(encoder, cfg.imagenet_weights)

    if cfg.classical_baseline:
        _log_classical_baseline(parent, planned[0][1], echo)

    def save_records() -> None:   # each finished cell's numbers, in git-sized files
        if cfg.records_dir:
            try:
                write_records(cfg.records_dir, parent_id, planned, CELL_TAG, uri)
            except Exception as e:  # noqa: BLE001  the cells stand in MLflow; --sync-records writes them later
                echo(f"warning: cell records not written to {cfg.records_dir} ({e}); "
                     "`histoclr ablate CONFIG --sync-records` writes them later")

    save_records()

    durations: list[float] = []   # seconds of each cell trained (or resumed) and finished here
    by_key: dict[str, list] = {}   # the parent's children (one query), by cell
    for r in child_runs(parent_id, uri):
        by_key.setdefault(r.data.tags.get(CELL_TAG), []).append(r)
    left = sum(1 for cell, _, key in planned  # the cells still to train: what the ETA prices
               if not any(r.info.status == "FINISHED" for r in by_key.get(key, []))
               and not (cell.init == "imagenet" and imagenet_reason))
    bar = progress_bar(planned, desc="ablation", unit="cell")
    for i, (cell, fcfg, key) in enumerate(bar, 1):
        previous = by_key.get(key, [])
        for r in previous:  # a killed process leaves RUNNING children behind (also beside a restored cell)
            if r.info.status == "RUNNING":
                Run.attach(r.info.run_id, uri).end("KILLED")
        done = next((r for r in previous if r.info.status == "FINISHED"), None)
        if done is not None:
            moved = done.data.params.get("init", fcfg.init) != fcfg.init or INIT_TAG in done.data.tags
            if moved and done.data.tags.get(INIT_TAG) != fcfg.init:
                Run.attach(done.info.run_id, uri).set_tags({INIT_TAG: fcfg.init})   # same weights, moved file
            (result.skipped if done.data.tags.get("skipped") == "true" else result.reused).append(cell)
            continue
        if cell.init == "imagenet" and imagenet_reason:
            record_run(cfg.experiment, cell.label, "FINISHED", tracking_uri=uri,
                       params=_record_params(cell, fcfg, inits[cell.init][1]),
                       tags={CELL_TAG: key, "skipped": "true", "skip_reason": imagenet_reason},
                       parent_run_id=parent_id)
            result.skipped.append(cell)
            echo(f"[{i}/{len(planned)}] skipped {cell.label}: {imagenet_reason}")
            continue
        _check_unchanged(fcfg, key)
        eta = (sum(durations) / len(durations)) * left if durations else None
        left -= 1
        echo(f"[{i}/{len(planned)}] {cell.label}" + (f" (about {eta / 60:.0f} min left)" if eta else ""))
        t0, trained_s = time.time(), 0.0
        try:
            out = cell_runner(fcfg, parent_run_id=parent_id, extra_tags={CELL_TAG: key, "histoclr.kind": "ablation-cell"})
            trained_s = float(out.get("train_time_s", 0.0)) if isinstance(out, dict) else 0.0
        except Exception as e:  # noqa: BLE001  one failing cell must not stop the others
            msg = f"{type(e).__name__}: {e}"
            failed_runs = [r for r in find_runs(cfg.experiment, uri, tags={CELL_TAG: key}, parent_run_id=parent_id)
                           if r.info.status in ("FAILED", "RUNNING")]
            if failed_runs:
                child = Run.attach(failed_runs[0].info.run_id, uri)
                child.set_tags({"error": msg, "traceback": traceback.format_exc()[-5000:]})
                if failed_runs[0].info.status == "RUNNING":
                    child.end("FAILED")
            else:  # it failed before it could open its run: record it anyway
                record_run(cfg.experiment, cell.label, "FAILED", tracking_uri=uri,
                           params=_record_params(cell, fcfg, inits[cell.init][1]),
                           tags={CELL_TAG: key, "error": msg}, parent_run_id=parent_id)
            result.failed.append((cell, msg))
            echo(f"[{i}/{len(planned)}] FAILED {cell.label}: {msg}")
        else:
            result.finished.append(cell)
            _check_unchanged(fcfg, key)   # before its record names the weights it started from
            save_records()
            # a cell resumed from its checkpoint takes seconds here: its cost for the ETA is its training time
            durations.append(max(time.time() - t0, trained_s))


def _supersede_replanned(parent: Run, planned, uri: str, echo) -> None:
    """End KILLED (tagged :data:`SUPERSEDED_TAG`) the finished children of a planned cell (same run
    name: init file name, freeze, budget, seed) under a key no planned cell has: cells of a
    snapshot since rewritten with other weights (or of a changed config) would otherwise stand
    beside the new ones in the same arm of the report. Children of cells the grid no longer lists are left as they are."""
    by_name = {cell.label: key for cell, _, key in planned}
    keys = set(by_name.values())
    old = [r for r in child_runs(parent.run_id, uri)
           if r.info.status == "FINISHED" and r.info.run_name in by_name and r.data.tags.get(CELL_TAG) not in keys]
    for r in old:
        run = Run.attach(r.info.run_id, uri)
        run.set_tags({SUPERSEDED_TAG: "its cell is planned now with other snapshot weights or config"})
        run.end("KILLED")
    if old:
        echo(f"{len(old)} finished cell(s) of this sweep were trained from other snapshot weights or another config "
             "than planned now: ended KILLED, tagged histoclr.superseded, left out of the tables")


def _check_unchanged(fcfg, key: str) -> None:
    """Stop the sweep when a cell's snapshot file was rewritten since the sweep planned it (e.g. by
    a pretraining run writing the same path): its cells are keyed by the weights they start from."""
    if cell_key(fcfg) != key:
        raise HistoclrError(f"{fcfg.init}: the snapshot changed while the sweep ran (its cells "
                            "are keyed by its sha256): wait for the pretraining to finish, then start the sweep again")


def _record_params(cell: Cell, fcfg, pretrain_run_id: str) -> dict[str, Any]:
    """The compared params of a cell recorded without training (skipped, or failed before its run
    opened), under the names and with the budget values its training would have logged."""
    params = {"init": cell.init, "freeze": cell.freeze, "label_fraction": cell.label_fraction,
              "seed": cell.seed, "encoder": fcfg.model.encoder, "pretrain_run_id": pretrain_run_id,
              "target": fcfg.model.target, "num_labeled": cell.num_labeled if cell.num_labeled is not None else "none"}
    try:
        chosen, _, pool = select_pairs(fcfg)
    except HistoclrError:
        return params
    params["num_labeled"] = len(chosen)
    if cell.label_fraction is None:
        params["label_fraction"] = round(len(chosen) / pool, 4)
    return params


def _log_classical_baseline(parent: Run, fcfg, echo) -> None:
    """The haematoxylin-Otsu references on the validation images (same mpp as the model), as instances:
    connected components (``classical_*``) and split by the distance watershed whose parameters are
    chosen on the training images, as a model's are (``classical_ws_*``). A resumed sweep whose parent
    run has them for the same images, split and mpp (tag ``classical_data``) does not compute them
    again (minutes of watershed search on a CPU)."""
    try:
        pairs = read_pairs_manifest(fcfg.pairs, fcfg.data_root)
        data_key = _hash({"mpp": fcfg.data.mpp, "pairs": [(p.image_id, str(p.image_path), str(p.mask_path), p.split)
                                                          for p in pairs]})
        if parent.get().data.tags.get("classical_data") == data_key:
            echo("classical baseline: already on the parent run, for the same images, split and mpp")
            return
        refs = classical_references([p for p in pairs if p.split in ("train", "")],
                                    [p for p in pairs if p.split == "val"], fcfg.data.mpp)
        parent.log_metrics({**{f"classical_{k}": v for k, v in refs["otsu"].items()},
                            **{f"classical_ws_{k}": v for k, v in refs["otsu_watershed"].items()}})
        parent.set_tags({"classical_baseline": "haematoxylin (rgb2hed) Otsu + small-object removal; "
                                              "classical_ws_*: + distance-transform watershed",
                         "classical_ws_params": json.dumps(refs["watershed_params"], sort_keys=True),
                         "classical_data": data_key})
    except HistoclrError as e:
        echo(f"classical baseline not computed: {e}")
