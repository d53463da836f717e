"""histoclr.tracking against a real temporary MLflow store (conftest points at it)."""

import os
import time

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from histoclr.tracking import (
    TrackingError,
    check_tracking_uri,
    default_tracking_uri,
    find_runs,
    git_commit,
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
