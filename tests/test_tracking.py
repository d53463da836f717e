"""histoclr.tracking against a real temporary MLflow store (conftest points at it)."""

import os
import time

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from histoclr.tracking import (
    MACHINE_TAG,
    TrackingError,
    check_tracking_uri,
    default_tracking_uri,
    find_runs,
    git_commit,
    machine_description,
    resolve_tracking_uri,
    run_exists,
    start_run,
)


def _client() -> MlflowClient:
    return MlflowClient(os.environ["MLFLOW_TRACKING_URI"])


def test_tracking_uri_resolution(monkeypatch, tmp_path):
    assert resolve_tracking_uri("http://example:5000") == "http://example:5000"
    assert resolve_tracking_uri() == os.environ["MLFLOW_TRACKING_URI"]
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert resolve_tracking_uri() == default_tracking_uri() == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"


# --------------------------------------------------------------------------- start_run / Run
def test_start_run_logs_through_the_run_object_and_ends_finished(tmp_path):
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "a.txt").write_text("a")
    with start_run("exp-s", "first", params={"lr": 0.1, "long": "y" * 7000}, tags={"stage": "x"}) as run:
        run.log_metrics({"loss": 2.0}, step=1)
        run.log_metric("loss", 1.0, step=2)
        run.log_artifact(tmp_path / "folder", "dir")
        run.set_tags({"extra": 3})
    got = _client().get_run(run.run_id)
    assert got.info.status == "FINISHED" and got.info.run_name == "first"
    assert got.data.params["lr"] == "0.1" and len(got.data.params["long"]) == 6000
    assert got.data.tags["stage"] == "x" and got.data.tags["extra"] == "3"
    assert got.data.tags["git_commit"] == (git_commit() or "unknown")
    assert got.data.tags[MACHINE_TAG] == machine_description() and " CPU cores (" in got.data.tags[MACHINE_TAG]
    assert [m.step for m in _client().get_metric_history(run.run_id, "loss")] == [1, 2]
    assert [f.path for f in _client().list_artifacts(run.run_id, "dir")] == ["dir/a.txt"]
    assert [r.info.run_id for r in find_runs("exp-s", tags={"stage": "x"})] == [run.run_id]
    assert mlflow.active_run() is None        # no global state: a parent can stay open


def test_start_run_statuses_resume_and_parent():
    with pytest.raises(ValueError), start_run("exp-t", "bad") as bad:
        raise ValueError("x")
    with pytest.raises(KeyboardInterrupt), start_run("exp-t", "stopped") as stopped:
        raise KeyboardInterrupt
    assert _client().get_run(bad.run_id).info.status == "FAILED"
    assert _client().get_run(stopped.run_id).info.status == "KILLED"
    with start_run("exp-t", "parent") as parent:
        with start_run("exp-t", "child", parent_run_id=parent.run_id, params={"a": 1}) as child:
            pass
        assert _client().get_run(parent.run_id).info.status == "RUNNING"
    assert [r.info.run_id for r in find_runs("exp-t", parent_run_id=parent.run_id)] == [child.run_id]
    with start_run("exp-t", params={"a": 2}, run_id=child.run_id) as again:
        again.log_metric("m", 1.0)
    got = _client().get_run(child.run_id)
    assert got.info.status == "FINISHED" and got.data.params == {"a": "1"}
    assert run_exists(child.run_id) and not run_exists("0" * 32) and not run_exists(None)


def test_disabled_run_does_nothing(tmp_path):
    with start_run("exp-off", "nothing", enabled=False) as run:
        run.log_metrics({"loss": 1.0}, step=1)
        run.log_artifact(tmp_path / "missing.txt")
        run.set_tags({"a": 1})
    assert run.run_id is None and not run.enabled
    assert _client().get_experiment_by_name("exp-off") is None


def test_unreachable_server_is_one_line_within_seconds(free_port):
    uri = f"http://127.0.0.1:{free_port()}"
    t0 = time.perf_counter()
    with pytest.raises(TrackingError) as e:
        check_tracking_uri(uri, timeout=2)
    assert time.perf_counter() - t0 < 5
    assert str(e.value).startswith(f"MLflow tracking server {uri} is unreachable (")
    assert "\n" not in str(e.value)


def test_sqlite_store_in_a_missing_folder_is_refused(tmp_path):
    ok = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert check_tracking_uri(ok) == ok
    with pytest.raises(TrackingError, match="folder .*nope does not exist"):
        check_tracking_uri(f"sqlite:///{tmp_path / 'nope' / 'mlflow.db'}")


def test_server_check_passes_for_a_live_server(mlflow_server):
    assert check_tracking_uri(mlflow_server) == mlflow_server


# --------------------------------------------------------------------------- the UI: experiment kind, links
def test_experiments_are_tagged_as_model_training_and_linked_to_their_runs_view():
    from histoclr.tracking import (
        EXPERIMENT_KIND_TAG,
        TRAINING_KIND,
        experiment_links,
        experiment_url,
        runs_link,
    )

    with start_run("exp-ui", "a"):
        pass
    client = _client()
    exp = client.get_experiment_by_name("exp-ui")
    assert exp.tags[EXPERIMENT_KIND_TAG] == TRAINING_KIND == "custom_model_development"
    # an experiment made by plain MLflow (or an older histoclr) is tagged once histoclr logs to it
    old = client.create_experiment("exp-old")
    assert EXPERIMENT_KIND_TAG not in client.get_experiment(old).tags
    with start_run("exp-old", "b"):
        pass
    assert client.get_experiment(old).tags[EXPERIMENT_KIND_TAG] == TRAINING_KIND

    assert experiment_url("7", "http://h:5000/") == "http://h:5000/#/experiments/7/runs?workflowType=machine_learning"
    line = runs_link("exp-ui")
    assert line == (f"MLflow runs of exp-ui: http://127.0.0.1:5000/#/experiments/{exp.experiment_id}/runs"
                    "?workflowType=machine_learning (start the UI with `histoclr ui`)")
    assert runs_link(experiment_id=exp.experiment_id, ui_url="http://x:1") == (
        f"MLflow runs of exp-ui: http://x:1/#/experiments/{exp.experiment_id}/runs?workflowType=machine_learning")
    with pytest.raises(TrackingError, match="no MLflow experiment 'nope'"):
        runs_link("nope")
    untagged = client.create_experiment("exp-untagged")
    with start_run("exp-untagged", "c"):
        pass
    client.delete_experiment_tag(untagged, EXPERIMENT_KIND_TAG)
    links = experiment_links(ui_url="http://127.0.0.1:5001")
    assert f"exp-untagged: http://127.0.0.1:5001/#/experiments/{untagged}/runs?workflowType=machine_learning" in links
    assert client.get_experiment(untagged).tags[EXPERIMENT_KIND_TAG] == TRAINING_KIND
    assert not any(x.startswith("Default:") for x in links)       # no runs: not listed


def test_histoclr_ui_prints_the_runs_links(monkeypatch, mlflow_server):
    from click.testing import CliRunner

    from histoclr.cli import cli

    with start_run("exp-cli", "a"):
        pass
    exp_id = _client().get_experiment_by_name("exp-cli").experiment_id
    started = []
    monkeypatch.setattr(os, "execv", lambda exe, argv: started.append(argv))
    out = CliRunner().invoke(cli, ["ui", "--port", "5055"]).output
    assert f"exp-cli: http://127.0.0.1:5055/#/experiments/{exp_id}/runs?workflowType=machine_learning" in out
    assert started and started[0][1:] == ["ui", "--backend-store-uri", os.environ["MLFLOW_TRACKING_URI"],
                                          "--host", "127.0.0.1", "--port", "5055"]
    with start_run("exp-remote", "a", tracking_uri=mlflow_server):
        pass
    remote_id = MlflowClient(mlflow_server).get_experiment_by_name("exp-remote").experiment_id
    out = CliRunner().invoke(cli, ["ui", "--tracking-uri", mlflow_server]).output
    assert f"exp-remote: {mlflow_server}/#/experiments/{remote_id}/runs?workflowType=machine_learning" in out
    assert len(started) == 1                       # nothing started for a server


def test_unknown_model_uri_is_one_line(tmp_path):
    from histoclr.tracking import is_model_uri, resolve_model_uri

    assert is_model_uri("models:/x/1") and is_model_uri("runs:/abc/model") and not is_model_uri("best.pt")
    for uri, why in (("models:/nope/1", "nope"), ("runs:/" + "0" * 32 + "/model/best.pt", "0" * 32)):
        with pytest.raises(TrackingError) as e:
            resolve_model_uri(uri, tmp_path / "dl")
        assert str(e.value).startswith(f"{uri}: not found in the MLflow store ") and why in str(e.value)
        assert "\n" not in str(e.value)


def test_result_metrics_reads_the_step0_result_of_runs_logged_the_old_way(tmp_path):
    from mlflow import MlflowClient

    from histoclr.tracking import result_metrics

    uri = f"sqlite:///{tmp_path / 'r.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("results")
    old = client.create_run(exp).info.run_id   # epochs and the result under one name (before epoch_val_*)
    for step, v in ((1, 0.36), (2, 0.37), (3, 0.35)):
        client.log_metric(old, "val_aji", v, step=step)
    client.log_metric(old, "val_aji", 0.3776, step=0)       # the selected, tuned result, logged last
    client.log_metric(old, "best_val_dice", 0.645, step=0)
    assert client.get_run(old).data.metrics["val_aji"] == 0.35      # what MLflow calls latest: the last epoch
    assert result_metrics(client.get_run(old), ["val_aji", "best_val_dice", "val_pq"], uri) == \
        {"val_aji": 0.3776, "best_val_dice": 0.645}

    new = client.create_run(exp).info.run_id
    for step, v in ((1, 0.36), (2, 0.35)):
        client.log_metric(new, "epoch_val_aji", v, step=step)
    client.log_metric(new, "val_aji", 0.38, step=0)
    assert result_metrics(client.get_run(new), ["val_aji"], uri) == {"val_aji": 0.38}

    mixed = client.create_run(exp).info.run_id  # started the old way, resumed after the rename
    client.log_metric(mixed, "val_aji", 0.36, step=1)
    client.log_metric(mixed, "epoch_val_aji", 0.35, step=2)
    client.log_metric(mixed, "val_aji", 0.39, step=0)
    assert client.get_run(mixed).data.metrics["val_aji"] == 0.36
    assert result_metrics(client.get_run(mixed), ["val_aji"], uri) == {"val_aji": 0.39}
