"""MLflow tracking: the one way histoclr talks to MLflow (an embedded SQLite store by default).

Default store: ``sqlite:///<cwd>/mlflow.db`` (no server needed; ``mlflow ui`` opens it). A team
server is used by passing its URI or setting ``MLFLOW_TRACKING_URI``. Runs are driven through the
client API (no global "active run"), so a parent run stays open while its children run.

Usage (every stage)::

    from histoclr.tracking import check_tracking_uri, run_exists, start_run

    uri = check_tracking_uri(cfg.tracking.tracking_uri)   # once, before data/model work:
                                                          # HistoclrError naming the URI if unreachable
    run_id = saved_id if run_exists(saved_id, uri) else None       # resume a checkpoint's run
    with start_run(cfg.tracking.experiment, cfg.tracking.run_name, tracking_uri=uri,
                   params=params, tags=tags, run_id=run_id, parent_run_id=parent_id,
                   enabled=cfg.tracking.enabled and dist.is_main) as run:
        run.log_metrics({"loss": 0.3}, step=1)   # every method is a no-op when enabled=False
        run.log_artifact(out / "best.pt", "model")         # a file or a folder
        run.set_tags({"note": "..."}); run.run_id          # None when tracking is off
    # the run ends FINISHED; FAILED on an exception; KILLED on Ctrl-C. Params are logged only for
    # a new run (resumed runs keep theirs), as strings cut to 6000 characters (truncate_params).

Also: ``open_run`` (same arguments; a :class:`Run` to ``end(status)`` yourself, e.g. a sweep's
parent), ``Run.attach(run_id, uri)`` (a handle on an existing run), ``find_runs(experiment, uri,
tags=..., parent_run_id=...)`` (newest first), ``record_run`` (a child created and ended at once,
e.g. a skipped cell), ``find_artifact``/``download_artifact``.

The MLflow UI: every experiment histoclr creates or logs to is tagged ``mlflow.experimentKind=
custom_model_development`` (model training, so MLflow 3 opens it on its runs table rather than the
GenAI overview); ``experiment_url`` / ``runs_link`` give the direct link to its runs view
(``<ui>/#/experiments/<id>/runs?workflowType=machine_learning``).

Models: ``log_model`` logs a PyTorch model (with its checkpoint file as an extra file) on a run and
registers it; ``resolve_model_uri`` turns ``models:/NAME/VERSION`` or ``runs:/RUN_ID/PATH`` into a
local checkpoint file (what ``histoclr.seg.model.load_seg_checkpoint`` does with such a URI).
"""

from __future__ import annotations

import contextlib
import functools
import os
import platform
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from histoclr.errors import HistoclrError

DEFAULT_DB = "mlflow.db"
#: ``key=value,key=value``: tags every run gets (the pipeline's demo sets ``demo=true``).
RUN_TAGS_ENV = "HISTOCLR_RUN_TAGS"
MAX_PARAM_CHARS = 6000
#: The machine a run was created on (:func:`machine_description`): a sweep spread over several
#: machines says which cells ran where.
MACHINE_TAG = "histoclr.machine"
CHECK_TIMEOUT_S = 5.0
#: The experiment tag that selects MLflow 3's UI mode, and its value for model-training work.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
TRAINING_KIND = "custom_model_development"
#: The UI's URL parameter that selects the model-training (runs table) view.
WORKFLOW_PARAM = "workflowType=machine_learning"
#: Where `histoclr ui` serves a local store by default.
LOCAL_UI_URL = "http://127.0.0.1:5000"
MODEL_URI_SCHEMES = ("models:/", "runs:/")


class TrackingError(HistoclrError):
    """The tracking store cannot be used (unreachable server, unwritable SQLite folder)."""


def default_tracking_uri(workdir: str | Path | None = None) -> str:
    return f"sqlite:///{Path(workdir or Path.cwd()).resolve() / DEFAULT_DB}"


def resolve_tracking_uri(uri: str | None = None) -> str:
    """Explicit ``uri`` > ``MLFLOW_TRACKING_URI`` > the local SQLite store."""
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()


def env_tags() -> dict[str, str]:
    """The tags of ``HISTOCLR_RUN_TAGS`` (``key=value,...``; items without ``=`` are ignored)."""
    items = (t.partition("=") for t in os.environ.get(RUN_TAGS_ENV, "").split(","))
    return {k.strip(): v.strip() for k, sep, v in items if sep and k.strip()}


@functools.lru_cache(maxsize=1)
def machine_description() -> str:
    """One line: CPU cores and model, memory, OS and Python version."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kb / 2**20:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    return f"{os.cpu_count()} CPU cores ({cpu}){mem}, {platform.system()} {platform.release()}, Python {platform.python_version()}"


def git_commit(repo: str | Path | None = None) -> str | None:
    """The current git commit of the histoclr checkout (``None`` outside a checkout)."""
    repo = Path(repo) if repo else Path(__file__).resolve().parents[1]
    try:
        out = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=10, check=True)
        sha = out.stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                               check=False, capture_output=True, text=True, timeout=10).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def truncate_params(params: Mapping[str, Any]) -> dict[str, str]:
    """Params as MLflow strings (``None`` -> ``"None"``), each cut to 6000 characters."""
    out = {}
    for k, v in params.items():
        s = "None" if v is None else str(v)
        out[str(k)] = s if len(s) <= MAX_PARAM_CHARS else s[:MAX_PARAM_CHARS - 3] + "..."
    return out



# --------------------------------------------------------------------------- reachability
def check_tracking_uri(uri: str | None = None, timeout: float = CHECK_TIMEOUT_S) -> str:
    """Resolve ``uri`` and check that its store answers within ``timeout`` seconds; returns it.

    HTTP(S): a request to ``<uri>/health`` (any HTTP answer counts); SQLite: the database's folder
    exists and is writable; PostgreSQL/MySQL: the port accepts a connection.

    Raises:
        TrackingError: one line naming the URI and the cause.
    """
    uri = resolve_tracking_uri(uri)
    parsed = urllib.parse.urlparse(uri)
    scheme = parsed.scheme.split("+")[0]
    hint = "start it, or pass another --tracking-uri (or set MLFLOW_TRACKING_URI)"
    if scheme in ("http", "https"):
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout):
                pass
        except urllib.error.HTTPError:
            pass                       # it answered (e.g. 401/404 behind a proxy): reachable
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            if isinstance(reason, (socket.timeout, TimeoutError)):
                reason = f"no answer within {timeout:g} s"
            raise TrackingError(f"MLflow tracking server {uri} is unreachable ({_reason(reason)}); "
                                f"{hint}") from None
    elif scheme == "sqlite":
        db = uri[len("sqlite:///"):] if uri.startswith("sqlite:///") else ""
        if db and db != ":memory:":
            folder = Path(db).parent
            if not folder.is_dir():
                raise TrackingError(f"MLflow tracking store {uri}: folder {folder} does not exist")
            if not os.access(folder, os.W_OK) and not os.access(db, os.W_OK):
                raise TrackingError(f"MLflow tracking store {uri}: folder {folder} is not writable")
    elif scheme in ("postgresql", "mysql", "mssql") and parsed.hostname:
        port = parsed.port or {"postgresql": 5432, "mysql": 3306, "mssql": 1433}[scheme]
        try:
            with socket.create_connection((parsed.hostname, port), timeout=timeout):
                pass
        except OSError as e:
            shown = uri.replace(f":{parsed.password}@", ":***@") if parsed.password else uri
            raise TrackingError(f"MLflow tracking store {shown} is unreachable ({_reason(e)}); "
                                f"{hint}") from None
    return uri


def _reason(e: Any) -> str:
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return str(e).splitlines()[0] if str(e) else type(e).__name__


# --------------------------------------------------------------------------- runs
def _client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(uri)


class Run:
    """A handle on one MLflow run; with ``run_id=None`` (tracking off) every method does nothing."""

    def __init__(self, run_id: str | None = None, tracking_uri: str | None = None):
        self.run_id = run_id
        self.tracking_uri = resolve_tracking_uri(tracking_uri) if run_id else tracking_uri
        self._client = _client(self.tracking_uri) if run_id else None

    @classmethod
    def attach(cls, run_id: str, tracking_uri: str | None = None) -> Run:
        """A handle on the existing run ``run_id`` (no status change)."""
        return cls(run_id, tracking_uri)

    @property
    def enabled(self) -> bool:
        return self.run_id is not None

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        if not self.enabled or not metrics:
            return
        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        items = [Metric(k, float(v), ts, int(step or 0)) for k, v in metrics.items()]
        for i in range(0, len(items), 1000):
            self._client.log_batch(self.run_id, metrics=items[i:i + 1000])

    def log_metric(self, key: str, value: float, step: int | None = None) -> None:
        self.log_metrics({key: value}, step)

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log new params (MLflow refuses to change a logged param's value)."""
        if not self.enabled or not params:
            return
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in truncate_params(params).items()]
        for i in range(0, len(items), 100):
            self._client.log_batch(self.run_id, params=items[i:i + 100])

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        if not self.enabled or not tags:
            return
        from mlflow.entities import RunTag

        self._client.log_batch(self.run_id, tags=[RunTag(k, str(v)[:5000]) for k, v in tags.items()])

    def set_tag(self, key: str, value: Any) -> None:
        self.set_tags({key: value})

    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        """Upload a file, or a folder's contents, under ``artifact_path``."""
        if not self.enabled:
            return
        path = Path(path)
        if path.is_dir():
            self._client.log_artifacts(self.run_id, str(path), artifact_path)
        else:
            self._client.log_artifact(self.run_id, str(path), artifact_path)

    log_artifacts = log_artifact

    def end(self, status: str = "FINISHED", end_time: int | None = None) -> None:
        """Mark the run ``FINISHED``, ``FAILED`` or ``KILLED`` (at ``end_time``, ms since the epoch; now)."""
        if self.enabled:
            self._client.set_terminated(self.run_id, status=status, end_time=end_time)

    def get(self):
        """The MLflow ``Run`` entity (info, data), or None when tracking is off."""
        return self._client.get_run(self.run_id) if self.enabled else None


NO_RUN = Run()


def _experiment_id(client, name: str) -> str:
    """The id of experiment ``name`` (created when missing), tagged as model-training work."""
    exp = client.get_experiment_by_name(name)
    if exp is None:
        try:
            return client.create_experiment(name, tags={EXPERIMENT_KIND_TAG: TRAINING_KIND})
        except Exception:  # created meanwhile by another process
            exp = client.get_experiment_by_name(name)
            if exp is None:
                raise
    _tag_training(client, exp)
    return exp.experiment_id


def _tag_training(client, exp) -> None:
    """Tag an experiment made before histoclr tagged them (or by plain MLflow) as model training."""
    if EXPERIMENT_KIND_TAG not in (exp.tags or {}):
        client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, TRAINING_KIND)


# --------------------------------------------------------------------------- the UI
def ui_base_url(tracking_uri: str | None = None) -> str:
    """The UI of a store: the tracking server itself, or what `histoclr ui` serves for a local one."""
    uri = resolve_tracking_uri(tracking_uri)
    return uri.rstrip("/") if uri.startswith(("http://", "https://")) else LOCAL_UI_URL


def experiment_url(experiment_id: str, ui_url: str) -> str:
    """The direct link to an experiment's runs table in the model-training view of MLflow's UI."""
    return f"{ui_url.rstrip('/')}/#/experiments/{experiment_id}/runs?{WORKFLOW_PARAM}"


def runs_link(experiment: str | None = None, tracking_uri: str | None = None, ui_url: str | None = None,
              *, experiment_id: str | None = None) -> str:
    """``MLflow runs of <experiment>: <url>`` (for a local store with how to start the UI) for the
    experiment of that name (or id); tags it as model training if it is not yet.

    Raises:
        TrackingError: no such experiment in the store."""
    from mlflow.exceptions import MlflowException

    uri = resolve_tracking_uri(tracking_uri)
    client = _client(uri)
    try:
        exp = client.get_experiment(experiment_id) if experiment_id else client.get_experiment_by_name(experiment)
    except MlflowException:
        exp = None
    if exp is None:
        raise TrackingError(f"no MLflow experiment {experiment_id or experiment!r} in {uri}")
    _tag_training(client, exp)
    local = ui_url is None and not uri.startswith(("http://", "https://"))
    return (f"MLflow runs of {exp.name}: {experiment_url(exp.experiment_id, ui_url or ui_base_url(uri))}"
            + (" (start the UI with `histoclr ui`)" if local else ""))


def experiment_links(tracking_uri: str | None = None, ui_url: str | None = None) -> list[str]:
    """``<name>: <url>`` for every active experiment with runs (tagging untagged ones as model training)."""
    uri = resolve_tracking_uri(tracking_uri)
    client = _client(uri)
    base = ui_url or ui_base_url(uri)
    out = []
    for exp in client.search_experiments():
        if not client.search_runs([exp.experiment_id], max_results=1):
            continue
        _tag_training(client, exp)
        out.append(f"{exp.name}: {experiment_url(exp.experiment_id, base)}")
    return out


def open_run(experiment: str, run_name: str | None = None, *, tracking_uri: str | None = None,
             params: Mapping[str, Any] | None = None, tags: Mapping[str, Any] | None = None,
             run_id: str | None = None, parent_run_id: str | None = None, enabled: bool = True,
             start_time: int | None = None) -> Run:
    """Create a run (or set the existing ``run_id`` RUNNING again); the caller calls ``end()``.

    A new run gets ``params`` (truncated), ``tags``, the git commit (``git_commit``), the machine
    (:data:`MACHINE_TAG`) and, with
    ``parent_run_id``, the ``mlflow.parentRunId`` tag; ``start_time`` (ms since the epoch) dates a
    run logged after the fact. A resumed run keeps its params.
    """
    if not enabled:
        return NO_RUN
    import mlflow

    uri = resolve_tracking_uri(tracking_uri)
    mlflow.set_tracking_uri(uri)       # for code that opens MlflowClient() without a URI
    client = _client(uri)
    if run_id is not None:
        client.update_run(run_id, status="RUNNING")
        run = Run(run_id, uri)
        run.set_tags({**env_tags(), **(tags or {})})
        return run
    all_tags = {"git_commit": git_commit() or "unknown", MACHINE_TAG: machine_description(), **env_tags(),
                **{k: str(v) for k, v in (tags or {}).items()}}
    if parent_run_id:
        all_tags["mlflow.parentRunId"] = parent_run_id
    created = client.create_run(_experiment_id(client, experiment), run_name=run_name, tags=all_tags,
                                start_time=start_time)
    run = Run(created.info.run_id, uri)
    run.log_params(params or {})
    return run


@contextlib.contextmanager
def start_run(experiment: str, run_name: str | None = None, **kwargs) -> Iterator[Run]:
    """:func:`open_run` as a context: ends FINISHED, FAILED on an exception, KILLED on Ctrl-C."""
    run = open_run(experiment, run_name, **kwargs)
    try:
        yield run
    except KeyboardInterrupt:
        run.end("KILLED")
        raise
    except BaseException:
        with contextlib.suppress(Exception):   # the original error matters more
            run.end("FAILED")
        raise
    run.end("FINISHED")


def record_run(experiment: str, run_name: str, status: str, *, tracking_uri: str | None = None,
               params: Mapping[str, Any] | None = None, tags: Mapping[str, Any] | None = None,
               parent_run_id: str | None = None) -> str:
    """A run created and ended at once with ``status`` (a skipped or never-started cell); its id."""
    run = open_run(experiment, run_name, tracking_uri=tracking_uri, params=params, tags=tags,
                   parent_run_id=parent_run_id)
    run.end(status)
    return run.run_id


def run_exists(run_id: str | None, tracking_uri: str | None = None) -> bool:
    """Whether ``run_id`` is a run of this store (False for None, deleted or foreign runs)."""
    if not run_id:
        return False
    from mlflow.exceptions import MlflowException

    try:
        run = _client(resolve_tracking_uri(tracking_uri)).get_run(run_id)
    except MlflowException:
        return False
    return run.info.lifecycle_stage != "deleted"


def find_runs(experiment: str, tracking_uri: str | None = None, *, tags: Mapping[str, str] | None = None,
              parent_run_id: str | None = None, max_results: int = 1000) -> list:
    """Runs of ``experiment`` with all ``tags`` (and that parent), newest first (MLflow ``Run``s)."""
    client = _client(resolve_tracking_uri(tracking_uri))
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    wanted = dict(tags or {})
    if parent_run_id:
        wanted["mlflow.parentRunId"] = parent_run_id
    filt = " and ".join(f"tags.`{k}` = '{v}'" for k, v in wanted.items())
    return list(client.search_runs([exp.experiment_id], filter_string=filt,
                                   order_by=["attributes.start_time DESC"], max_results=max_results))


def child_runs(parent_run_id: str, tracking_uri: str | None = None, max_results: int = 10000) -> list:
    """The child runs of ``parent_run_id`` (any status), newest first (MLflow ``Run``s)."""
    client = _client(resolve_tracking_uri(tracking_uri))
    parent = client.get_run(parent_run_id)
    return list(client.search_runs([parent.info.experiment_id],
                                   filter_string=f"tags.`mlflow.parentRunId` = '{parent_run_id}'",
                                   order_by=["attributes.start_time DESC"], max_results=max_results))


def result_metrics(run, names, tracking_uri: str | None = None) -> dict[str, float]:
    """A fine-tuning run's result metrics ``{name: value}`` (those of ``names`` it has).

    The result is logged at step 0 at the end of the run, and that entry is what this returns. Runs
    logged before the per-epoch series were renamed ``epoch_val_*`` (or started that way and resumed
    after) also have epochs under the ``val_*`` names at steps >= 1, so MLflow's "latest" value can
    be an epoch's; the ``val_*`` names are therefore read from their history, one query each.
    """
    m = run.data.metrics
    out = {n: m[n] for n in names if n in m}
    client = _client(resolve_tracking_uri(tracking_uri))
    for n in [n for n in out if n.startswith("val_")]:
        at0 = [h for h in client.get_metric_history(run.info.run_id, n) if h.step == 0]
        if at0:
            out[n] = max(at0, key=lambda h: h.timestamp).value
    return out


def metric_history(run_id: str, names, tracking_uri: str | None = None) -> dict[str, list[tuple[int, float]]]:
    """``{name: [(step, value), ...]}`` of a run's logged metrics."""
    client = _client(resolve_tracking_uri(tracking_uri))
    return {n: [(m.step, m.value) for m in client.get_metric_history(run_id, n)] for n in names}


def find_artifact(run_id: str, name: str, tracking_uri: str | None = None,
                  path: str | None = None) -> str | None:
    """The artifact path of the first file called ``name`` in the run (depth first), or None."""
    client = _client(resolve_tracking_uri(tracking_uri))
    for info in client.list_artifacts(run_id, path):
        if info.is_dir:
            hit = find_artifact(run_id, name, tracking_uri, info.path)
            if hit:
                return hit
        elif Path(info.path).name == name:
            return info.path
    return None


def download_artifact(run_id: str, artifact_path: str, dst: str | os.PathLike,
                      tracking_uri: str | None = None) -> Path:
    """Download one artifact of a run into folder ``dst``; the local path."""
    Path(dst).mkdir(parents=True, exist_ok=True)
    return Path(_client(resolve_tracking_uri(tracking_uri)).download_artifacts(run_id, artifact_path, str(dst)))


# --------------------------------------------------------------------------- models
def is_model_uri(ref: str | os.PathLike) -> bool:
    """Whether ``ref`` is an MLflow model URI (``models:/...`` or ``runs:/...``), not a file path."""
    return isinstance(ref, str) and ref.startswith(MODEL_URI_SCHEMES)


def log_model(run_id: str, model, *, name: str, checkpoint: str | os.PathLike, input_example,
              output_example, register_as: str | None = None, tracking_uri: str | None = None,
              requirements: tuple[str, ...] = ("torch", "torchvision", "segmentation-models-pytorch",
                                               "histoclr")) -> dict[str, str]:
    """Log a PyTorch ``model`` on the (finished) run ``run_id`` as MLflow model ``name`` and, with
    ``register_as``, register it; returns ``{"model_uri", "registered"}`` (``registered``:
    ``models:/NAME/VERSION`` or ``""``).

    The model's signature comes from ``input_example`` and ``output_example`` (numpy arrays), the
    checkpoint file travels with it as an extra file (so ``resolve_model_uri`` finds it), and its
    requirements are the installed versions of ``requirements`` (no inference by reloading it).
    The run keeps its status."""
    import importlib.metadata

    import mlflow
    import mlflow.pytorch
    from mlflow.models import infer_signature

    uri = resolve_tracking_uri(tracking_uri)
    mlflow.set_tracking_uri(uri)
    client = _client(uri)
    status = client.get_run(run_id).info.status
    pins = []
    for pkg in requirements:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            pins.append(f"{pkg}=={importlib.metadata.version(pkg)}")
    with mlflow.start_run(run_id=run_id):
        info = mlflow.pytorch.log_model(
            model, name=name, input_example=input_example,
            signature=infer_signature(input_example, output_example), extra_files=[str(checkpoint)],
            pip_requirements=pins, serialization_format="pickle", registered_model_name=register_as)
    client.set_terminated(run_id, status=status)
    version = getattr(info, "registered_model_version", None)
    return {"model_uri": info.model_uri,
            "registered": f"models:/{register_as}/{version}" if register_as and version else ""}


def resolve_model_uri(uri: str, dst: str | os.PathLike, tracking_uri: str | None = None,
                      filename: str = "best.pt") -> Path:
    """Download what ``uri`` names into folder ``dst`` and return the checkpoint file in it.

    ``models:/NAME/VERSION`` (or ``models:/NAME@ALIAS``), or ``runs:/RUN_ID/PATH`` where PATH is a
    model logged by :func:`log_model` or an artifact: the checkpoint file itself or a folder with
    one ``filename`` in it.

    Raises:
        TrackingError: one line: no such model, version, run or artifact in the store.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    store = resolve_tracking_uri(tracking_uri)
    mlflow.set_tracking_uri(store)
    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dst)))
    except (MlflowException, OSError) as e:
        raise TrackingError(f"{uri}: not found in the MLflow store {store} ({_reason(e)})") from None
    if local.is_file():
        return local
    found = sorted(local.rglob(filename))
    if len(found) != 1:
        raise TrackingError(f"{uri}: expected one {filename} in it, found {len(found)}; give the URI "
                            f"of a model registered by `histoclr ablate` or of a {filename} artifact")
    return found[0]
