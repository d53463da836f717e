"""Finished sweep cells as small JSON records kept in git, restored into MLflow on a fresh machine.

A sweep longer than the life of one machine loses its MLflow store with the machine. With
``records_dir`` set, the sweep writes one record per finished cell (``cells/<key>.json``: the cell
key, its run name, params, tags, every metric's history, and the sha256 of the SimCLR snapshot it
started from) and one for the parent's classical baseline (``parent.json``). A sweep started on a
store that lacks those runs restores them from the records, as FINISHED child runs tagged
``histoclr.restored_from=<original run id>``, instead of training them again. A cell's key hashes
the sha256 of the snapshot it starts from (:func:`histoclr.ablation.sweep.cell_key`), so a record
is only restored for the same weights: a rerun of the pretraining that produced different weights
trains its cells again.

Records hold numbers, not weights: a restored cell has no ``best.pt``, so it cannot be the cell
the sweep registers as a model (:func:`histoclr.ablation.sweep.best_cell` skips it).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from histoclr.errors import HistoclrError
from histoclr.io import atomic_write_json
from histoclr.seg.naming import display_init, init_sha256
from histoclr.tracking import Run, child_runs, open_run

RECORD_VERSION = 1
RESTORED_TAG = "histoclr.restored_from"
#: A run's init as its sweep names it now, where that differs from its ``init`` param: the same
#: snapshot weights (the cell key says so) at another path, e.g. a checkout or folder moved after
#: the cell trained. The report groups by it, so one snapshot is one arm.
INIT_TAG = "histoclr.init"
#: Set on a finished child of a planned cell (same run name) under a key no planned cell has (other
#: snapshot weights or config): the sweep also ends it KILLED, so no table, record or registration counts it.
SUPERSEDED_TAG = "histoclr.superseded"
#: Tags MLflow sets for the process that logged a run: not the cell's, not restored.
#: A cell's registration belongs to the store it was registered in.
_SYSTEM_TAGS = ("mlflow.parentRunId", "mlflow.runName", "mlflow.log-model.history", RESTORED_TAG,
                "histoclr.registered_model", INIT_TAG)
#: Parent-run metrics and tags that the classical baseline writes (and a restore puts back).
_PARENT_METRIC_PREFIXES = ("classical_",)
_PARENT_TAGS = ("classical_baseline", "classical_ws_params", "classical_data")


def _cell_path(records_dir: Path, key: str) -> Path:
    return Path(records_dir) / "cells" / f"{key}.json"


def _read_json(path: Path) -> dict[str, Any]:
    try:
        rec = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise HistoclrError(f"{path}: not a readable cell record ({e})") from None
    if not isinstance(rec, dict) or rec.get("version") != RECORD_VERSION:
        raise HistoclrError(f"{path}: not a version-{RECORD_VERSION} cell record")
    return rec


def _history(run, uri: str) -> dict[str, list[list[float]]]:
    """``{metric: [[step, value, timestamp_ms], ...]}`` in logging order."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    return {n: [[m.step, m.value, m.timestamp] for m in sorted(client.get_metric_history(run.info.run_id, n),
                                                                key=lambda m: (m.timestamp, m.step))]
            for n in sorted(run.data.metrics)}


def cell_record(run, key: str, init_sha: str | None, uri: str) -> dict[str, Any]:
    """The record of one FINISHED child run (an MLflow ``Run``) of cell ``key``; a run restored from
    a record names the run that was trained as its source."""
    return {"version": RECORD_VERSION, "cell_key": key, "run_name": run.info.run_name,
            "source_run_id": run.data.tags.get(RESTORED_TAG, run.info.run_id), "start_time": run.info.start_time, "end_time": run.info.end_time,
            "init_sha256": init_sha, "params": dict(sorted(run.data.params.items())),
            "tags": {k: v for k, v in sorted(run.data.tags.items()) if k not in _SYSTEM_TAGS},
            "metrics": _history(run, uri)}


def write_records(records_dir: str | Path, parent_run_id: str, planned: Sequence[tuple[Any, Any, str]],
                  cell_tag: str, uri: str) -> list[Path]:
    """Write the record of every FINISHED, not skipped child of the parent that has none yet (and
    the parent's classical baseline); the files written. ``planned``: ``(cell, fcfg, key)``."""
    records_dir = Path(records_dir)
    wanted = {key: fcfg for _, fcfg, key in planned}
    written = []
    for r in child_runs(parent_run_id, uri):
        key = r.data.tags.get(cell_tag)
        if (key not in wanted or r.info.status != "FINISHED" or r.data.tags.get("skipped") == "true"
                or _cell_path(records_dir, key).is_file()):
            continue
        atomic_write_json(_cell_path(records_dir, key), cell_record(r, key, init_sha256(wanted[key].init), uri))
        written.append(_cell_path(records_dir, key))
    parent = Run.attach(parent_run_id, uri).get()
    if parent.data.tags.get("classical_data") and not (records_dir / "parent.json").is_file():
        atomic_write_json(records_dir / "parent.json", {
            "version": RECORD_VERSION, "source_run_id": parent_run_id,
            "tags": {k: parent.data.tags[k] for k in _PARENT_TAGS if k in parent.data.tags},
            "metrics": {k: v for k, v in _history(parent, uri).items() if k.startswith(_PARENT_METRIC_PREFIXES)}})
        written.append(records_dir / "parent.json")
    return written


def _log_history(run: Run, history: dict[str, list[list[float]]]) -> None:
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    items = [Metric(name, float(v), int(ts), int(step)) for name, rows in history.items() for step, v, ts in rows]
    client = MlflowClient(run.tracking_uri)
    for i in range(0, len(items), 1000):
        client.log_batch(run.run_id, metrics=items[i:i + 1000])


def restore_records(records_dir: str | Path, experiment: str, parent: Run, planned: Sequence[tuple[Any, Any, str]],
                    cell_tag: str, echo: Callable[[str], None] = print) -> int:
    """Create a FINISHED child run for every planned cell that has a record but no FINISHED child
    yet; put the classical baseline back on a parent that lacks it. The number of cells restored.

    A cell's key hashes its snapshot's sha256, so records made from other weights (or another
    config) match no planned cell: they are counted and left alone, and those cells train."""
    records_dir = Path(records_dir)
    if not records_dir.is_dir():
        return 0
    uri = parent.tracking_uri
    finished = {r.data.tags.get(cell_tag) for r in child_runs(parent.run_id, uri) if r.info.status == "FINISHED"}
    restored = 0
    for _, fcfg, key in planned:
        path = _cell_path(records_dir, key)
        if key in finished or not path.is_file():
            continue
        rec = _read_json(path)
        if rec.get("cell_key") != key:
            raise HistoclrError(f"{path}: its cell key is not the one its file name says (edited by hand?): "
                                "delete it to train that cell again")
        if rec.get("init_sha256") != init_sha256(fcfg.init):
            raise HistoclrError(f"{path}: its snapshot sha256 is not that of {fcfg.init} now (the snapshot was "
                                "rewritten while the sweep started, or the record edited by hand): start the sweep "
                                "again once the snapshot is final, or delete the record to train that cell again")
        # the record's init may be another checkout's path to the same weights (the sha256 just
        # checked says so): the report groups by this checkout's path, set as INIT_TAG
        tags = dict(rec["tags"])   # INIT_TAG is not recorded (_SYSTEM_TAGS): it is this checkout's
        if rec["params"].get("init") != fcfg.init:
            tags[INIT_TAG] = fcfg.init
        run = open_run(experiment, rec["run_name"], tracking_uri=uri, params=rec["params"],
                       tags={**tags, cell_tag: key, RESTORED_TAG: rec["source_run_id"]},
                       parent_run_id=parent.run_id, start_time=rec.get("start_time"))
        try:
            _log_history(run, rec["metrics"])
        except BaseException:
            run.end("FAILED")        # a half-restored cell is not a finished one: the next start redoes it
            raise
        run.end("FINISHED", end_time=rec.get("end_time"))   # the times it trained, as the MLflow UI shows them
        restored += 1
    unused = {p.stem for p in (records_dir / "cells").glob("*.json")} - {key for _, _, key in planned}
    if unused:
        echo(f"{len(unused)} cell record(s) in {records_dir} match no cell of this sweep (made from other "
             "snapshot weights or another config): not restored")
        shas: dict[str, set] = {}
        for _, fcfg, _ in planned:
            shas.setdefault(display_init(fcfg.init), set()).add(init_sha256(fcfg.init))
        now = {name: next(iter(s)) for name, s in shas.items() if len(s) == 1}   # a file name that names one file
        then: dict[tuple[str, str], int] = {}
        for key in unused:
            try:
                rec = _read_json(_cell_path(records_dir, key))
            except HistoclrError:     # not restored anyway: the message is only a hint
                continue
            name, sha = display_init(str(rec.get("params", {}).get("init", "?"))), rec.get("init_sha256")
            if sha and now.get(name) and now[name] != sha:
                then[name, sha] = then.get((name, sha), 0) + 1
        for (name, sha), n in sorted(then.items()):
            echo(f"  {n} of them start from {name} with sha256 {sha[:12]}..., the file now has "
                 f"{now[name][:12]}...: those cells train again")
    parent_path = records_dir / "parent.json"
    if parent_path.is_file() and not parent.get().data.tags.get("classical_data"):
        rec = _read_json(parent_path)
        _log_history(parent, rec["metrics"])
        parent.set_tags(rec["tags"])
    if restored:
        echo(f"restored {restored} finished cell(s) from the records in {records_dir}")
    return restored
