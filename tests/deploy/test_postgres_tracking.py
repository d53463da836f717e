"""The team tracking server for real: Debian's PostgreSQL (a throwaway cluster on loopback) behind
`mlflow server`, a short `histoclr pretrain` and a short `histoclr finetune-seg` (from that backbone)
logging to it, then params, metrics and artifacts read back through MlflowClient and the runs counted
in PostgreSQL itself. `make test` installs the server binaries when it can (`make postgres`)."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PG_ROOT = Path("/usr/lib/postgresql")
DB_USER = "histoclr"

TINY_PRETRAIN = [
    "model.arch=resnet18", "model.proj_hidden_dim=32", "model.proj_out_dim=16", "views.image_size=32",
    "train.batch_size=4", "train.num_workers=0", "train.precision=32", "train.device=cpu",
    "train.channels_last=false", "train.log_every=1", "train.max_steps=2", "optim.name=adamw",
    "optim.lr=0.001", "data.holdout_fraction=0.34", "diagnostics.batch_size=8",
    "diagnostics.projection=pca",   # t-SNE would add ~10 s
    "tracking.experiment=pg-pretrain", "tracking.run_name=pg-pretrain"]


def _load_synthetic_tiles():
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "synthetic_tiles", REPO / "tests" / "pretrain" / "synthetic_tiles.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _pg_bin() -> Path:
    """Debian's server binaries (the newest installed major version), else fail on CI / skip."""
    found = sorted((d for d in PG_ROOT.glob("*/bin") if (d / "initdb").exists() and (d / "pg_ctl").exists()),
                   key=lambda d: int(d.parent.name) if d.parent.name.isdigit() else 0)
    if found:
        return found[-1]
    reason = (f"PostgreSQL server binaries not found under {PG_ROOT}/*/bin (run `make postgres` as root "
              "or with passwordless sudo, or `sudo apt-get install postgresql`)")
    if os.environ.get("CI"):
        pytest.fail(f"CI is set, so this test must run: {reason}")
    pytest.skip(reason)


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _clean_env() -> dict[str, str]:
    """This environment without MLflow settings (conftest points MLFLOW_TRACKING_URI at SQLite)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return env


@pytest.fixture(scope="module")
def pg_mlflow(launch_mlflow_server, free_port):
    """``(mlflow_url, postgres_port, root)``: a fresh PostgreSQL cluster and an `mlflow server` on it.

    Both listen on 127.0.0.1 only (PostgreSQL's Unix socket goes to a private directory); both are
    stopped, and checked to be gone, afterwards."""
    pg_bin = _pg_bin()
    as_pg: list[str] = []
    pg_user = None
    if os.geteuid() == 0:   # PostgreSQL refuses to run as root: run the server as Debian's `postgres`
        try:
            pg_user = pwd.getpwnam("postgres")
        except KeyError:
            pytest.fail("running as root but there is no `postgres` user to run the server as")
        as_pg = ["runuser", "-u", "postgres", "--"]
    # under /tmp itself (not pytest's 0700 tmp tree) so that the postgres user can reach it
    root = Path(tempfile.mkdtemp(prefix="histoclr-pg-", dir="/tmp"))
    data, sock, pg_log = root / "pgdata", root / "sock", root / "postgres.log"
    sock.mkdir()
    if pg_user is not None:
        for p in (root, sock):
            os.chown(p, pg_user.pw_uid, pg_user.pw_gid)
    pg_port = free_port()
    env = _clean_env()
    pg_started = False

    def run(cmd: list, **kw) -> subprocess.CompletedProcess:
        r = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env, cwd=root,
                           timeout=120, **kw)
        assert r.returncode == 0, f"{' '.join(map(str, cmd))}:\n{r.stdout}\n{r.stderr}"
        return r

    try:
        run([*as_pg, pg_bin / "initdb", "-D", data, "-U", DB_USER, "--auth=trust", "-E", "UTF8",
             "--locale=C", "--no-sync"])
        try:
            pg_started = True
            run([*as_pg, pg_bin / "pg_ctl", "-D", data, "-l", pg_log, "-w", "-t", "60", "-o",
                 f"-h 127.0.0.1 -p {pg_port} -k {sock} -c fsync=off", "start"])
        except AssertionError as e:
            log = pg_log.read_text() if pg_log.exists() else ""
            raise AssertionError(f"{e}\n{log[-2000:]}") from None
        run([pg_bin / "createdb", "-h", "127.0.0.1", "-p", str(pg_port), "-U", DB_USER, "mlflow"])

        # +psycopg2: SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3, which is not installed
        with launch_mlflow_server(root, f"postgresql+psycopg2://{DB_USER}@127.0.0.1:{pg_port}/mlflow",
                                  env) as url:
            yield url, pg_port, root
    finally:
        left = []
        if pg_started:
            subprocess.run([*as_pg, pg_bin / "pg_ctl", "-D", data, "-m", "fast", "-w", "stop"],
                           check=False, capture_output=True, env=env, cwd=root, timeout=60)
            if (data / "postmaster.pid").exists():
                left.append(f"PostgreSQL still running from {data}")
        if _port_open(pg_port):
            left.append(f"something still listens on 127.0.0.1:{pg_port}")
        if not left:
            shutil.rmtree(root, ignore_errors=True)
        assert not left, f"{left} (logs kept in {root})"


def _histoclr(*args, cwd: Path) -> str:
    r = subprocess.run([sys.executable, "-m", "histoclr", *map(str, args)], check=False,
                       capture_output=True, text=True, cwd=cwd, env=_clean_env(), timeout=300)
    assert r.returncode == 0, f"histoclr {args[0]} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}"
    return r.stdout + r.stderr


def _only_run(client, experiment: str):
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"experiment {experiment} not on the server"
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.status == "FINISHED"
    return run


def _artifacts(client, run_id: str, path: str | None = None) -> set[str]:
    return {a.path for a in client.list_artifacts(run_id, path)}


@pytest.mark.slow   # `make test` runs the slow tests too (no -m selection in the pytest config)
def test_pretrain_and_finetune_log_to_mlflow_server_on_postgres(pg_mlflow, tmp_path):
    import psycopg2
    from mlflow.tracking import MlflowClient

    url, pg_port, server_root = pg_mlflow
    manifest = _load_synthetic_tiles().write_manifest(tmp_path / "tiles", {"sa": 4, "sb": 4, "sc": 4},
                                                      size=48)
    _histoclr("pretrain", *TINY_PRETRAIN, f"data.manifests=[{manifest}]", f"out_dir={tmp_path / 'pre'}",
              "--tracking-uri", url, cwd=tmp_path)
    assert (tmp_path / "pre" / "backbone.pt").is_file()

    from histoclr.seg.synthetic import write_synthetic_pairs

    pairs = write_synthetic_pairs(tmp_path / "seg", n=2, size=128)
    cfg = tmp_path / "ft.yaml"
    cfg.write_text(f"""
pairs: {pairs}
data_root: {tmp_path / 'seg'}
model: {{encoder: resnet18, architecture: deeplabv3, decoder_channels: 16}}
data: {{mpp: null, crop_size: 64}}
train: {{epochs: 1, steps_per_epoch: 2, batch_size: 2, overlays: 1, device: cpu, val_batch_size: 2}}
tracking: {{experiment: pg-finetune, run_name: pg-finetune}}
""")
    _histoclr("finetune-seg", "--config", cfg, "--init", f"simclr:{tmp_path / 'pre' / 'backbone.pt'}",
              "--freeze", "stem,layer1-2", "--seed", "1", "--out", tmp_path / "ft", "--no-progress",
              "--tracking-uri", url, cwd=tmp_path)
    assert (tmp_path / "ft" / "best.pt").is_file()

    client = MlflowClient(url)
    pre = _only_run(client, "pg-pretrain")
    assert pre.data.params["model.arch"] == "resnet18"
    assert pre.data.params["train.max_steps"] == "2"
    assert pre.data.params["data.train_tiles"] == "8"
    assert [h.step for h in client.get_metric_history(pre.info.run_id, "loss")] == [1, 2]
    assert "holdout_top1" in pre.data.metrics
    assert {"backbone.pt", "config.yaml"} <= _artifacts(client, pre.info.run_id)
    assert "diagnostics/loss_curve.png" in _artifacts(client, pre.info.run_id, "diagnostics")

    ft = _only_run(client, "pg-finetune")
    p = ft.data.params
    assert (p["init"], p["freeze"], p["encoder"], p["model.architecture"], p["seed"]) == (
        f"simclr:{tmp_path / 'pre' / 'backbone.pt'}", "stem,layer1-2", "resnet18", "deeplabv3", "1")
    assert p["pretrain_run_id"] == pre.info.run_id   # the backbone's run, as logged on the server
    assert {"best_val_dice", "val_iou", "val_aji", "train_time_s"} <= set(ft.data.metrics)
    assert 0 <= ft.data.metrics["best_val_dice"] <= 1
    assert {"config.yaml", "metrics.json", "model"} <= _artifacts(client, ft.info.run_id)
    assert "model/best.pt" in _artifacts(client, ft.info.run_id, "model")
    # the artifact bytes went through the server's proxy into its --artifacts-destination
    local = client.download_artifacts(ft.info.run_id, "model/best.pt", str(tmp_path / "dl"))
    assert Path(local).read_bytes() == (tmp_path / "ft" / "best.pt").read_bytes()
    assert list((server_root / "artifacts").rglob("best.pt"))

    # and the runs live in PostgreSQL (not in some file store next to the server)
    conn = psycopg2.connect(host="127.0.0.1", port=pg_port, user=DB_USER, dbname="mlflow")
    try:
        cur = conn.cursor()
        cur.execute("select count(*) from runs")
        assert cur.fetchone()[0] == 2
        cur.execute("select r.run_uuid, r.status from runs r join experiments e "
                    "on e.experiment_id = r.experiment_id where e.name = %s", ("pg-finetune",))
        assert cur.fetchall() == [(ft.info.run_id, "FINISHED")]
    finally:
        conn.close()
    assert not list(server_root.glob("*.db")) and not (server_root / "mlruns").exists()
