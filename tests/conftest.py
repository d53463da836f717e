"""Shared fixtures. Real data lives in ../shared/data beside the checkout (never in the repo)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("HISTOCLR_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real MoNuSeg/SVS data root; the test is skipped when it is absent."""
    if not (SHARED_DATA / "monuseg2018").is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA} (set HISTOCLR_SHARED_DATA to a copy of "
                    "shared/data to run this test)")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tiny test models run faster on one thread, and much faster when the CPU is shared."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def _mlflow_template_db(tmp_path_factory) -> Path:
    """An empty, already-migrated MLflow SQLite store (creating one costs ~5 s; copying it, ms)."""
    from mlflow.tracking import MlflowClient

    db = tmp_path_factory.mktemp("mlflow_template") / "mlflow.db"
    MlflowClient(f"sqlite:///{db}").search_experiments()
    return db


@pytest.fixture(autouse=True)
def _isolated_mlflow(tmp_path, monkeypatch, _mlflow_template_db):
    """Every test logs to its own temporary MLflow store, never to the user's mlflow.db."""
    import shutil

    shutil.copy(_mlflow_template_db, tmp_path / "mlflow.db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.chdir(tmp_path)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def free_port():
    """``free_port()``: an unused TCP port on 127.0.0.1 (for servers and torch.distributed)."""
    return _free_port


@contextlib.contextmanager
def _launch_mlflow_server(root: Path, backend_uri: str, env: dict | None = None, timeout: float = 180):
    """Run `mlflow server` on ``backend_uri`` (artifacts proxied to ``root/artifacts``) on a free
    loopback port; yields its URL; stops it and its workers (its own process group) afterwards."""
    import os
    import signal
    import subprocess
    import sys
    import time
    import urllib.request

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = root / "mlflow_server.log"
    log = open(log_path, "wb")  # noqa: SIM115 (closed in finally)
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("mlflow")), "server", "--backend-store-uri", backend_uri,
         "--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, cwd=root, start_new_session=True,
        # no async job runner (7 more processes, ~10 s more start-up; tracking does not use it)
        env={**(env if env is not None else os.environ), "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    deadline = time.time() + timeout      # the first start migrates an empty database: slow on a busy CPU
    try:
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"mlflow server did not start: {log_path.read_text()[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        deadline = time.time() + 15       # the workers leave shortly after their parent
        while time.time() < deadline:
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.2)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        log.close()


@pytest.fixture(scope="session")
def launch_mlflow_server():
    """``launch(root, backend_uri, env=None)``: a context manager running a real `mlflow server`."""
    return _launch_mlflow_server


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real `mlflow server` (SQLite backend, local artifact store) on a free loopback port."""
    root = tmp_path_factory.mktemp("mlflow_server")
    with _launch_mlflow_server(root, f"sqlite:///{root / 'backend.db'}") as url:
        yield url


@pytest.fixture
def small_disk(tmp_path):
    """``small_disk(size)``: a folder on a tmpfs of ``size`` ("160m"), for disk-full tests.

    Needs root (mount); the test is skipped otherwise. Unmounted afterwards.
    """
    import subprocess

    mounts: list[Path] = []

    def make(size: str, options: str = "") -> Path:
        if os.geteuid() != 0:
            pytest.skip("mounting a small tmpfs needs root")
        point = tmp_path / f"disk{len(mounts)}"
        point.mkdir()
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}{',' + options if options else ''}",
                            "tmpfs", str(point)], capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip()})")
        mounts.append(point)
        return point

    yield make
    for point in reversed(mounts):
        subprocess.run(["umount", "-l", str(point)], capture_output=True)


@pytest.fixture
def readonly_dir(tmp_path, small_disk):
    """A folder nothing can be written into: a read-only tmpfs as root, else a chmod 555 folder."""
    if os.geteuid() == 0:
        yield small_disk("1m", "ro")
        return
    d = tmp_path / "readonly"
    d.mkdir()
    d.chmod(0o555)
    yield d
    d.chmod(0o755)
