"""MLflow tracking: an embedded local store by default, any tracking URI on request.

Default store: ``sqlite:///<cwd>/mlflow.db`` (no server needed; ``mlflow ui`` opens it).
A team server is used by passing its URI or setting ``MLFLOW_TRACKING_URI``.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path
from typing import Any, Iterator, Mapping

DEFAULT_DB = "mlflow.db"


def default_tracking_uri(workdir: str | Path | None = None) -> str:
    return f"sqlite:///{Path(workdir or Path.cwd()).resolve() / DEFAULT_DB}"


def resolve_tracking_uri(uri: str | None = None) -> str:
    """Explicit ``uri`` > ``MLFLOW_TRACKING_URI`` > the local SQLite store."""
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()


def git_commit(repo: str | Path | None = None) -> str | None:
    """The current git commit of the histoclr checkout (``None`` outside a checkout)."""
    repo = Path(repo) if repo else Path(__file__).resolve().parents[1]
    try:
        out = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=10, check=True)
        sha = out.stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def _params_for_mlflow(params: Mapping[str, Any]) -> dict[str, str]:
    out = {}
    for k, v in params.items():
        s = "None" if v is None else str(v)
        out[k] = s if len(s) <= 6000 else s[:5997] + "..."
    return out


@contextlib.contextmanager
def mlflow_run(experiment: str, run_name: str | None = None, tracking_uri: str | None = None,
               params: Mapping[str, Any] | None = None, tags: Mapping[str, str] | None = None,
               run_id: str | None = None, parent_run_id: str | None = None) -> Iterator[Any]:
    """Start (or resume, with ``run_id``) an MLflow run; yields the active run.

    Logs ``params`` (flattened strings) and ``tags`` plus the git commit as ``git_commit``.
    The run ends FINISHED on success, FAILED on an exception, KILLED on Ctrl-C.
    """
    import mlflow

    mlflow.set_tracking_uri(resolve_tracking_uri(tracking_uri))
    if run_id is None:
        mlflow.set_experiment(experiment)
    all_tags = {"git_commit": git_commit() or "unknown"}
    all_tags.update(tags or {})
    if parent_run_id:
        all_tags["mlflow.parentRunId"] = parent_run_id
    run = mlflow.start_run(run_id=run_id, run_name=None if run_id else run_name, tags=all_tags)
    try:
        if params and run_id is None:
            mlflow.log_params(_params_for_mlflow(params))
        yield run
    except KeyboardInterrupt:
        mlflow.end_run(status="KILLED")
        raise
    except BaseException:
        mlflow.end_run(status="FAILED")
        raise
    else:
        mlflow.end_run(status="FINISHED")
