"""Cell records (`histoclr.ablation.records`): a sweep's finished cells written as JSON and restored
into a fresh MLflow store instead of trained again, only while their snapshot's sha256 still matches.

The cells are logged by a stand-in for the fine-tuning (a real MLflow child run with the params and
the step-0 result metrics and per-epoch series that `run_finetune` logs); the classical baseline is
the real one, on synthetic pairs.
"""

from __future__ import annotations

import json

import pytest
import yaml
from click.testing import CliRunner

from histoclr.ablation.records import RESTORED_TAG
from histoclr.ablation.report import collect_runs
from histoclr.ablation.sweep import best_cell, run_sweep, sync_records
from histoclr.config import load_config
from histoclr.config.ablation import AblationConfig
from histoclr.errors import HistoclrError
from histoclr.io import sha256_file
from histoclr.seg.synthetic import write_synthetic_pairs
from histoclr.tracking import Run, open_run


class FakeFinetune:
    """Logs a child run the way `run_finetune` does (params, epoch series, step-0 results); counts calls."""

    def __init__(self):
        self.trained: list[str] = []

    def __call__(self, fcfg, parent_run_id=None, extra_tags=None):
        self.trained.append(fcfg.tracking.run_name)
        aji = 0.3 + 0.01 * len(self.trained) + 0.1 * fcfg.init.startswith("simclr:")
        run = open_run(fcfg.tracking.experiment, fcfg.tracking.run_name, tracking_uri=fcfg.tracking.tracking_uri,
                       params={"init": fcfg.init, "freeze": fcfg.freeze, "label_fraction": 0.5,
                               "num_labeled": 1, "seed": fcfg.seed},
                       tags=extra_tags, parent_run_id=parent_run_id)
        for epoch in (1, 2):
            run.log_metrics({"epoch_val_aji": aji - 0.1 / epoch}, step=epoch)
        run.log_metrics({"val_aji": aji, "val_pq": aji - 0.05, "best_val_dice": aji + 0.3, "train_time_s": 12.5})
        run.end("FINISHED")
        return {"train_time_s": 12.5}


@pytest.fixture
def sweep_cfg(tmp_path):
    from histoclr.ssl.model import build_encoder, save_backbone

    pairs = write_synthetic_pairs(tmp_path / "data")
    snap = save_backbone(tmp_path / "snap.pt", build_encoder("resnet18"), "resnet18", {"run_id": "pre1"})
    ft = {"pairs": str(pairs), "data_root": str(tmp_path / "data"), "model": {"encoder": "resnet18"},
          "data": {"mpp": None, "crop_size": 64}}
    (tmp_path / "ft.yaml").write_text(yaml.safe_dump(ft))
    sweep = {"experiment": "recorded", "sweep_name": "recorded", "finetune_config": str(tmp_path / "ft.yaml"),
             "inits": ["random", f"simclr:{snap}"], "freezes": ["none"], "label_counts": [1], "seeds": [0, 1],
             "out_dir": str(tmp_path / "ablation"), "classical_baseline": True, "register_as": None,
             "records_dir": str(tmp_path / "records")}
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(sweep))
    return load_config(AblationConfig, tmp_path / "sweep.yaml"), snap


def _table(parent_id, uri):
    runs = collect_runs(parent_id, uri)
    return sorted(zip(runs["init"], runs["seed"], runs["val_aji"].round(6), runs["val_pq"].round(6)))


def test_a_fresh_store_restores_recorded_cells_instead_of_training_them(sweep_cfg, tmp_path):
    from mlflow.tracking import MlflowClient

    cfg, snap = sweep_cfg
    uri_a, uri_b = f"sqlite:///{tmp_path / 'a.db'}", f"sqlite:///{tmp_path / 'b.db'}"
    first = FakeFinetune()
    res_a = run_sweep(cfg, tracking_uri=uri_a, cell_runner=first, echo=lambda s: None)
    assert len(first.trained) == 4 and len(res_a.finished) == 4
    cells = sorted((tmp_path / "records" / "cells").glob("*.json"))
    assert len(cells) == 4 and (tmp_path / "records" / "parent.json").is_file()
    rec = json.loads(cells[0].read_text())
    assert rec["metrics"]["epoch_val_aji"][0][0] == 1 and "mlflow.parentRunId" not in rec["tags"]

    said, second = [], FakeFinetune()
    res_b = run_sweep(cfg, tracking_uri=uri_b, cell_runner=second, echo=said.append)
    assert second.trained == [] and len(res_b.reused) == 4, said
    assert any("restored 4 finished cell(s)" in s for s in said)
    assert "classical baseline: already on the parent run, for the same images, split and mpp" in said
    assert _table(res_b.parent_run_id, uri_b) == _table(res_a.parent_run_id, uri_a)
    client_a, client_b = MlflowClient(uri_a), MlflowClient(uri_b)
    pa, pb = client_a.get_run(res_a.parent_run_id).data, client_b.get_run(res_b.parent_run_id).data
    assert pb.metrics["classical_ws_aji"] == pa.metrics["classical_ws_aji"]
    assert pb.tags["classical_data"] == pa.tags["classical_data"]
    child = next(r for r in client_b.search_runs([client_b.get_experiment_by_name("recorded").experiment_id])
                 if r.data.tags.get("mlflow.parentRunId") == res_b.parent_run_id)
    assert child.data.tags[RESTORED_TAG] in {r.info.run_id for r in client_a.search_runs(
        [client_a.get_experiment_by_name("recorded").experiment_id])}
    assert [m.step for m in client_b.get_metric_history(child.info.run_id, "epoch_val_aji")] == [1, 2]
    source = client_a.get_run(child.data.tags[RESTORED_TAG]).info       # dated when it trained, not restored
    assert (child.info.start_time, child.info.end_time) == (source.start_time, source.end_time)
    assert best_cell(res_b.parent_run_id, "val_aji", uri_b) is None      # numbers only: nothing to register

    # the snapshot changes (a pretraining rerun with other weights): its cells train again, random's do not
    from histoclr.ssl.model import build_encoder, save_backbone

    old_sha = sha256_file(snap)
    save_backbone(snap, build_encoder("resnet18"), "resnet18", {"run_id": "pre2"})
    said, third = [], FakeFinetune()
    run_sweep(cfg, tracking_uri=f"sqlite:///{tmp_path / 'c.db'}", cell_runner=third, echo=said.append)
    assert len(third.trained) == 2 and all("simclr:" in name for name in third.trained), third.trained
    assert any("2 cell record(s) in" in s and "match no cell of this sweep" in s for s in said), said
    assert any(s.startswith(f"  2 of them start from simclr:{snap.name} with sha256 {old_sha[:12]}..., the file "
                            f"now has {sha256_file(snap)[:12]}...") for s in said), said


def test_sync_writes_the_records_of_a_running_sweep_and_rejects_a_broken_one(sweep_cfg, tmp_path):
    cfg, _ = sweep_cfg
    uri = f"sqlite:///{tmp_path / 'a.db'}"
    records = tmp_path / "records"
    cfg.records_dir = None                      # a sweep started without records (as one already running)
    res = run_sweep(cfg, tracking_uri=uri, cell_runner=FakeFinetune(), echo=lambda s: None)
    assert not records.exists()
    from mlflow.tracking import MlflowClient

    MlflowClient(uri).update_run(res.parent_run_id, status="RUNNING")   # as if it were still running
    cfg.records_dir = str(records)
    written = sync_records(cfg, tracking_uri=uri, echo=lambda s: None)
    assert len(written) == 5 and len(list((records / "cells").glob("*.json"))) == 4
    assert Run.attach(res.parent_run_id, uri).get().info.status == "RUNNING"
    assert sync_records(cfg, tracking_uri=uri, echo=lambda s: None) == []     # nothing new

    edited = sorted((records / "cells").glob("*.json"))[1]
    rec = json.loads(edited.read_text())
    edited.write_text(json.dumps({**rec, "init_sha256": "0" * 64 if rec["init_sha256"] is None else None}))
    with pytest.raises(HistoclrError, match=f"{edited}: its snapshot sha256 is not that of "):
        run_sweep(cfg, tracking_uri=f"sqlite:///{tmp_path / 'e.db'}", cell_runner=FakeFinetune(), echo=lambda s: None)
    edited.write_text(json.dumps(rec))

    broken = sorted((records / "cells").glob("*.json"))[0]
    broken.write_text("{not json")
    with pytest.raises(HistoclrError, match=f"{broken}: not a readable cell record"):
        run_sweep(cfg, tracking_uri=f"sqlite:///{tmp_path / 'b.db'}", cell_runner=FakeFinetune(), echo=lambda s: None)


def test_ablate_sync_records_needs_a_records_dir(sweep_cfg, tmp_path):
    from histoclr.cli import cli

    cfg_path = tmp_path / "sweep.yaml"
    out = CliRunner().invoke(cli, ["ablate", str(cfg_path), "records_dir=null", "--sync-records"])
    assert out.exit_code != 0 and "records_dir is not set" in out.output, out.output
    out = CliRunner().invoke(cli, ["ablate", str(cfg_path), "--sync-records"])
    assert out.exit_code != 0 and "no sweep 'recorded' in experiment 'recorded'" in out.output, out.output


def test_a_checkout_elsewhere_restores_under_its_own_snapshot_path(sweep_cfg, tmp_path):
    import shutil

    from mlflow.tracking import MlflowClient

    cfg, snap = sweep_cfg
    run_sweep(cfg, tracking_uri=f"sqlite:///{tmp_path / 'a.db'}", cell_runner=FakeFinetune(), echo=lambda s: None)
    moved = tmp_path / "other_checkout" / "snap.pt"        # the same weights at another path
    moved.parent.mkdir()
    shutil.copyfile(snap, moved)
    cfg.inits = ["random", f"simclr:{moved}"]
    uri = f"sqlite:///{tmp_path / 'b.db'}"
    fresh = FakeFinetune()
    res = run_sweep(cfg, tracking_uri=uri, cell_runner=fresh, echo=lambda s: None)
    assert fresh.trained == [] and len(res.reused) == 4
    runs = collect_runs(res.parent_run_id, uri)
    assert set(runs["init"]) == {"random", f"simclr:{moved.resolve()}"}   # the report groups by this checkout's path
    params = {r.data.params["init"] for r in MlflowClient(uri).search_runs(
        [MlflowClient(uri).get_experiment_by_name("recorded").experiment_id]) if "init" in r.data.params}
    assert params == {"random", f"simclr:{snap.resolve()}"}      # the params stay as the cell was trained

    cfg.inits = ["random", f"simclr:{snap}", f"simclr:{moved}"]   # two names for one snapshot: one cell
    with pytest.raises(HistoclrError, match="are the same cell"):
        run_sweep(cfg, tracking_uri=f"sqlite:///{tmp_path / 'c.db'}", cell_runner=FakeFinetune(), echo=lambda s: None)


def test_sync_does_not_restore_into_a_running_sweep(sweep_cfg, tmp_path):
    from mlflow.tracking import MlflowClient

    cfg, _ = sweep_cfg
    run_sweep(cfg, tracking_uri=f"sqlite:///{tmp_path / 'a.db'}", cell_runner=FakeFinetune(), echo=lambda s: None)
    uri = f"sqlite:///{tmp_path / 'b.db'}"       # another machine's store, its sweep running with no cell yet
    from histoclr.ablation.sweep import SWEEP_TAG, _sweep_key

    parent = open_run(cfg.experiment, cfg.sweep_name, tracking_uri=uri, tags={SWEEP_TAG: _sweep_key(cfg)})
    said = []
    sync_records(cfg, tracking_uri=uri, echo=said.append)
    assert any("the sweep is running: records written only" in s for s in said), said
    children = [r for r in MlflowClient(uri).search_runs([parent.get().info.experiment_id])
                if r.data.tags.get("mlflow.parentRunId") == parent.run_id]
    assert children == []      # the running sweep would train them too: nothing restored under it


def test_a_restore_closes_the_cut_off_run_of_the_cell_it_restores(sweep_cfg, tmp_path):
    """A cell cut off on this store (its child left RUNNING) but finished on another machine is
    restored from its record; the cut-off child is closed as KILLED, not left RUNNING for ever."""
    from mlflow.tracking import MlflowClient

    cfg, _ = sweep_cfg
    run_sweep(cfg, tracking_uri=f"sqlite:///{tmp_path / 'a.db'}", cell_runner=FakeFinetune(), echo=lambda s: None)

    uri = f"sqlite:///{tmp_path / 'b.db'}"
    class CutOff(FakeFinetune):            # the first cell's process dies: its run stays RUNNING
        def __call__(self, fcfg, parent_run_id=None, extra_tags=None):
            open_run(fcfg.tracking.experiment, "cut off", tracking_uri=uri, tags=extra_tags,
                     parent_run_id=parent_run_id)
            raise KeyboardInterrupt

    records = cfg.records_dir
    cfg.records_dir = None
    with pytest.raises(KeyboardInterrupt):
        run_sweep(cfg, tracking_uri=uri, cell_runner=CutOff(), echo=lambda s: None)
    cfg.records_dir = records
    again = FakeFinetune()
    run_sweep(cfg, tracking_uri=uri, cell_runner=again, echo=lambda s: None)
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("recorded").experiment_id])
    cut = [r for r in runs if r.info.run_name == "cut off"]
    assert again.trained == [] and len(cut) == 1 and cut[0].info.status == "KILLED"


def test_sync_restores_into_a_stopped_sweep_and_a_half_restore_is_redone(sweep_cfg, tmp_path, monkeypatch):
    """`--sync-records` on a sweep that is not running restores the recorded cells; a restore that
    breaks half-way leaves that cell FAILED (not FINISHED with half its numbers), redone next time."""
    from mlflow.tracking import MlflowClient

    import histoclr.ablation.records as records_mod

    cfg, _ = sweep_cfg
    run_sweep(cfg, tracking_uri=f"sqlite:///{tmp_path / 'a.db'}", cell_runner=FakeFinetune(), echo=lambda s: None)
    uri = f"sqlite:///{tmp_path / 'b.db'}"

    def broken(fcfg, parent_run_id=None, extra_tags=None):
        raise RuntimeError("no GPU today")

    records = cfg.records_dir
    cfg.records_dir = None                              # this store's sweep: all 4 cells failed
    assert len(run_sweep(cfg, tracking_uri=uri, cell_runner=broken, echo=lambda s: None).failed) == 4
    cfg.records_dir = records

    real, calls = records_mod._log_history, []

    def fails_once(run, history):
        calls.append(run.run_id)
        if len(calls) == 2:
            raise OSError("database is locked")
        real(run, history)

    monkeypatch.setattr(records_mod, "_log_history", fails_once)
    with pytest.raises(OSError, match="database is locked"):
        sync_records(cfg, tracking_uri=uri, echo=lambda s: None)
    client = MlflowClient(uri)
    assert client.get_run(calls[1]).info.status == "FAILED"
    said = []
    sync_records(cfg, tracking_uri=uri, echo=said.append)
    assert "restored 3 finished cell(s) from the records in " + records in said, said
    finished = [r for r in client.search_runs([client.get_experiment_by_name("recorded").experiment_id])
                if r.info.status == "FINISHED" and RESTORED_TAG in r.data.tags]
    assert len(finished) == 4


def test_a_failed_record_write_warns_and_the_sweep_goes_on(sweep_cfg, tmp_path):
    cfg, _ = sweep_cfg
    (tmp_path / "blocked").write_text("a file where the records folder should be")
    cfg.records_dir = str(tmp_path / "blocked")
    said = []
    res = run_sweep(cfg, tracking_uri=f"sqlite:///{tmp_path / 'a.db'}", cell_runner=FakeFinetune(), echo=said.append)
    assert len(res.finished) == 4
    assert any(s.startswith(f"warning: cell records not written to {tmp_path / 'blocked'}") for s in said), said


def test_cells_of_a_moved_snapshot_stay_one_arm_in_the_same_store(sweep_cfg, tmp_path):
    """The snapshot file moves after its cells trained (same weights, another path): resuming the
    sweep in the same MLflow store trains nothing, and the report groups old and new cells as one
    init, named by the path the sweep uses now."""
    import shutil

    cfg, snap = sweep_cfg
    uri = f"sqlite:///{tmp_path / 'a.db'}"
    cfg.seeds = [0]
    run_sweep(cfg, tracking_uri=uri, cell_runner=FakeFinetune(), echo=lambda s: None)
    moved = tmp_path / "moved" / "snap.pt"
    moved.parent.mkdir()
    shutil.move(snap, moved)
    cfg.inits, cfg.seeds = ["random", f"simclr:{moved}"], [0, 1]
    more = FakeFinetune()
    res = run_sweep(cfg, tracking_uri=uri, cell_runner=more, echo=lambda s: None)
    assert len(res.reused) == 2 and len(more.trained) == 2            # seed 0 kept, seed 1 trained
    runs = collect_runs(res.parent_run_id, uri)
    assert sorted(set(runs["init"])) == ["random", f"simclr:{moved.resolve()}"]
    assert (runs["init"] != "random").sum() == 2


def test_a_narrower_grid_leaves_finished_cells_alone(sweep_cfg, tmp_path):
    """Only a planned cell trained from other weights or config is superseded: a grid that lists
    fewer seeds keeps the finished cells of the others."""
    cfg, _ = sweep_cfg
    uri = f"sqlite:///{tmp_path / 'a.db'}"
    first = run_sweep(cfg, tracking_uri=uri, cell_runner=FakeFinetune(), echo=lambda s: None)
    cfg.seeds = [0]
    again = FakeFinetune()
    said = []
    res = run_sweep(cfg, tracking_uri=uri, cell_runner=again, echo=said.append)
    assert res.parent_run_id == first.parent_run_id and again.trained == [] and len(res.reused) == 2
    assert not any("superseded" in s for s in said), said
    assert len(collect_runs(res.parent_run_id, uri)) == 4
