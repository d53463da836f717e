"""The background starters of the long runs (pipelines/background.sh, pretrain_long.sh), run as a
user runs them, on a copy of the scripts with a stand-in interpreter: start, "already running"
while alive, and "finished" only once the end-of-run checks are newer than the last checkpoint."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _tree(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / "pipelines").mkdir(parents=True)
    for name in ("background.sh", "pretrain_long.sh"):
        shutil.copy(REPO / "pipelines" / name, root / "pipelines" / name)
    python = root / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text('#!/usr/bin/env bash\necho "$@" >> "$(dirname "$0")/../../calls.txt"\nsleep 3\n')
    python.chmod(0o755)
    return root


def _wait_dead(pid: int, timeout: float = 20) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        stat = Path(f"/proc/{pid}/stat")
        if stat.is_file() and stat.read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return  # exited; a container without an init may never reap it
        time.sleep(0.1)
    raise AssertionError(f"pid {pid} still alive after {timeout} s")


def _start(root: Path, *overrides: str) -> str:
    out = subprocess.run(["bash", "pipelines/pretrain_long.sh", *overrides], cwd=root, capture_output=True,
                         text=True, timeout=30, check=True)
    return out.stdout.strip()


def test_pretrain_long_starts_reports_running_and_stops_once_finished(tmp_path):
    root = _tree(tmp_path)
    run = root / "runs" / "pretrain_dense_cpu"

    said = _start(root)
    assert said.startswith("started: pid ") and (run / "pid").is_file()
    assert _start(root).startswith("already running: pid ")
    _wait_dead(int((run / "pid").read_text()))
    assert (root / "calls.txt").read_text().split() == ["-m", "histoclr", "pretrain", "-c",
                                                        "configs/pretrain/cpu.yaml", "--resume", "auto"]

    # killed after the last checkpoint but before its end-of-run checks: resumed, not "finished"
    (run / "checkpoints").mkdir()
    (run / "diagnostics").mkdir()
    (run / "diagnostics" / "diagnostics.json").write_text("{}")
    (run / "checkpoints" / "last.pt").write_bytes(b"x")
    os.utime(run / "diagnostics" / "diagnostics.json", (time.time() - 60, time.time() - 60))
    assert _start(root).startswith("started: pid ")
    pid = int((run / "pid").read_text())
    os.kill(pid, 15)
    _wait_dead(pid)

    os.utime(run / "checkpoints" / "last.pt", (time.time() - 30, time.time() - 30))
    (run / "diagnostics" / "diagnostics.json").write_text("{}")  # the checks ran after the checkpoint
    assert _start(root).startswith("finished: ")


def test_an_exited_but_unreaped_process_is_not_running(tmp_path):
    child = subprocess.Popen(["true"])  # not waited for: a zombie until reaped
    deadline = time.time() + 10
    stat = Path(f"/proc/{child.pid}/stat")
    while time.time() < deadline and stat.read_text().rsplit(")", 1)[1].split()[0] != "Z":
        time.sleep(0.05)
    (tmp_path / "pid").write_text(str(child.pid))
    check = f"source {REPO / 'pipelines' / 'background.sh'}; is_running {tmp_path} && echo alive || echo gone"
    assert subprocess.run(["bash", "-c", check], capture_output=True, text=True, check=True).stdout.strip() == "gone"
    (tmp_path / "pid").write_text(str(os.getpid()))  # this test's own process: alive
    assert subprocess.run(["bash", "-c", check], capture_output=True, text=True, check=True).stdout.strip() == "alive"
    child.wait()


@pytest.mark.skipif(shutil.which("script") is None, reason="needs script(1) (util-linux) for a terminal with job control")
def test_the_pid_file_names_the_job_when_sourced_in_a_shell_with_job_control(tmp_path):
    # an interactive shell (job control on, under a pseudo-terminal from script(1)) makes each
    # background job a process-group leader, and setsid then forks: the pid file must still name the job
    inner = (f"source {REPO / 'pipelines' / 'background.sh'}; run_in_background {tmp_path} sleep 20; "
             f"sleep 0.5; is_running {tmp_path} && echo alive || echo gone")
    proc = subprocess.run(["script", "-qc", f'bash --norc -i -c "{inner}"', "/dev/null"], capture_output=True,
                          text=True, timeout=30, stdin=subprocess.DEVNULL, check=False)
    if not (tmp_path / "pid").is_file():   # no pseudo-terminal here, or a script(1) without -c
        pytest.skip(f"script(1) gave no interactive shell: {proc.stderr.strip()[:200]}")
    pid = int((tmp_path / "pid").read_text())
    try:
        assert "alive" in proc.stdout and "gone" not in proc.stdout
        assert Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:2] == [b"sleep", b"20"]
        assert os.getsid(pid) == pid   # its own session: closing the shell does not take it along
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 15)


def test_pretrain_long_passes_overrides_and_a_longer_run_gets_its_own_folder(tmp_path):
    root = _tree(tmp_path)
    said = _start(root, "out_dir=runs/longer", "train.max_steps=4000")
    assert said.startswith("started: pid ") and "runs/longer/log.txt" in said
    run = root / "runs" / "longer"
    _wait_dead(int((run / "pid").read_text()))
    assert (root / "calls.txt").read_text().split()[-2:] == ["out_dir=runs/longer", "train.max_steps=4000"]
    assert not (root / "runs" / "pretrain_dense_cpu").exists()
