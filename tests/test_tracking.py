"""histoclr.tracking.mlflow_run against a real temporary MLflow store (conftest points at it)."""

import os

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from histoclr.tracking import default_tracking_uri, git_commit, mlflow_run, resolve_tracking_uri


def _client() -> MlflowClient:
    return MlflowClient(os.environ["MLFLOW_TRACKING_URI"])


def test_run_logs_params_metrics_artifacts_and_git_tag(tmp_path):
    art = tmp_path / "note.txt"
    art.write_text("hello")
    with mlflow_run("exp-a", "run-1", params={"train.lr": 0.3, "model.arch": "resnet18", "none": None},
                    tags={"stage": "pretrain"}) as run:
        mlflow.log_metrics({"loss": 2.5}, step=1)
        mlflow.log_metrics({"loss": 1.5}, step=2)
        mlflow.log_artifact(str(art))
    got = _client().get_run(run.info.run_id)
    assert got.info.status == "FINISHED"
    assert got.info.run_name == "run-1"
    assert got.data.params == {"train.lr": "0.3", "model.arch": "resnet18", "none": "None"}
    assert got.data.tags["stage"] == "pretrain"
    assert got.data.tags["git_commit"] == (git_commit() or "unknown")
    history = _client().get_metric_history(run.info.run_id, "loss")
    assert [(m.step, m.value) for m in history] == [(1, 2.5), (2, 1.5)]
    assert [f.path for f in _client().list_artifacts(run.info.run_id)] == ["note.txt"]
    assert _client().get_experiment(got.info.experiment_id).name == "exp-a"


def test_exception_marks_run_failed():
    with pytest.raises(RuntimeError, match="boom"), mlflow_run("exp-b", "bad") as run:
        raise RuntimeError("boom")
    assert _client().get_run(run.info.run_id).info.status == "FAILED"
    assert mlflow.active_run() is None


def test_keyboard_interrupt_marks_run_killed():
    with pytest.raises(KeyboardInterrupt), mlflow_run("exp-b", "interrupted") as run:
        raise KeyboardInterrupt
    assert _client().get_run(run.info.run_id).info.status == "KILLED"


def test_resume_continues_the_same_run_without_relogging_params():
    with mlflow_run("exp-c", "first", params={"a": 1}) as run:
        mlflow.log_metric("loss", 1.0, step=1)
    with mlflow_run("exp-c", params={"a": 2}, run_id=run.info.run_id) as again:
        mlflow.log_metric("loss", 0.5, step=2)
    assert again.info.run_id == run.info.run_id
    got = _client().get_run(run.info.run_id)
    assert got.data.params == {"a": "1"} and got.info.status == "FINISHED"
    assert [m.step for m in _client().get_metric_history(run.info.run_id, "loss")] == [1, 2]
    assert len(_client().search_runs([got.info.experiment_id])) == 1


def test_parent_run_and_long_params_are_truncated():
    with mlflow_run("exp-d", "parent") as parent:
        pass
    with mlflow_run("exp-d", "child", params={"long": "x" * 7000},
                    parent_run_id=parent.info.run_id) as child:
        pass
    got = _client().get_run(child.info.run_id)
    assert got.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert len(got.data.params["long"]) == 6000 and got.data.params["long"].endswith("...")


def test_tracking_uri_resolution(monkeypatch, tmp_path):
    assert resolve_tracking_uri("http://example:5000") == "http://example:5000"
    assert resolve_tracking_uri() == os.environ["MLFLOW_TRACKING_URI"]
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert resolve_tracking_uri() == default_tracking_uri() == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
