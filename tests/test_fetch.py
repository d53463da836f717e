"""`histoclr data fetch` against local servers on 127.0.0.1: a good download verifies, a wrong
checksum leaves no file, an interrupted download resumes, offline names the URL and the folder."""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import os
import socket
import subprocess
import sys
import threading
import time
from functools import partial
from pathlib import Path
from typing import ClassVar

import pytest

from histoclr.cli import main as cli_main
from histoclr.dataroot import verify_root
from histoclr.fetch import DATASETS, FetchError, RemoteFile, fetch, fetch_file, list_datasets
from histoclr.manifests.data import read_data_manifest

PAYLOAD = os.urandom(300_000)
SHA = hashlib.sha256(PAYLOAD).hexdigest()


def _file(url: str, sha: str = SHA) -> RemoteFile:
    return RemoteFile(url, "slides/test.svs", sha, len(PAYLOAD))


@pytest.fixture
def served(tmp_path, free_port):
    """`python -m http.server` on 127.0.0.1 serving slides/test.svs; yields its base URL."""
    srv = tmp_path / "srv"
    (srv / "slides").mkdir(parents=True)
    (srv / "slides" / "test.svs").write_bytes(PAYLOAD)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                             "--directory", str(srv)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            assert proc.poll() is None and time.time() < deadline, "http.server did not start"
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_good_download_verifies_and_is_described(served, tmp_path, monkeypatch):
    root = tmp_path / "root"
    monkeypatch.setitem(DATASETS, "openslide-cmu1-small", DATASETS["openslide-cmu1-small"].__class__(
        "openslide-cmu1-small", "test", "CC0-1.0", "test", (_file(f"{served}/slides/test.svs"),)))
    manifest = fetch("openslide-cmu1-small", root, progress=False)
    assert (root / "slides" / "test.svs").read_bytes() == PAYLOAD
    assert not (root / "slides" / "test.svs.part").exists()
    rows = read_data_manifest(manifest)
    assert [r["path"] for r in rows] == ["slides/test.svs"] and rows[0]["licence"] == "CC0-1.0"
    assert verify_root(root, rows, progress=False).passed
    # again: already there with the right checksum, nothing is downloaded (the server is not asked)
    fetch_file(_file("http://127.0.0.1:9/unreachable"), root, progress=False)


def test_wrong_checksum_is_one_line_and_leaves_no_file(served, tmp_path):
    root = tmp_path / "root"
    with pytest.raises(FetchError) as e:
        fetch_file(_file(f"{served}/slides/test.svs", sha="0" * 64), root, progress=False)
    msg = str(e.value)
    assert "\n" not in msg and "sha256 mismatch" in msg and f"{served}/slides/test.svs" in msg
    assert [p.name for p in (root / "slides").iterdir()] == []


def test_offline_names_the_url_and_the_folder(tmp_path, free_port):
    url = f"http://127.0.0.1:{free_port()}/slides/test.svs"      # nothing listens there
    with pytest.raises(FetchError) as e:
        fetch_file(_file(url), tmp_path / "root", progress=False)
    msg = str(e.value)
    assert "\n" not in msg and url in msg and f"place it in {tmp_path / 'root' / 'slides'}/" in msg


class _RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Serves ``Range: bytes=N-``; the first full request is cut after ``cut`` bytes."""

    cut: ClassVar[int] = 0
    ranges: ClassVar[list] = []

    def do_GET(self):
        rng = self.headers.get("Range")
        self.ranges.append(rng)
        start = int(rng.split("=")[1].rstrip("-")) if rng else 0
        body = PAYLOAD[start:]
        self.send_response(206 if rng else 200)
        self.send_header("Content-Length", str(len(body)))
        if rng:
            self.send_header("Content-Range", f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}")
        self.end_headers()
        if not rng and type(self).cut:
            self.wfile.write(body[:type(self).cut])
            self.wfile.flush()
            type(self).cut = 0
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_interrupted_download_resumes(tmp_path, free_port):
    handler = type("H", (_RangeHandler,), {"cut": 120_000, "ranges": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), partial(handler))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/slides/test.svs"
    root = tmp_path / "root"
    try:
        with pytest.raises(FetchError) as e:
            fetch_file(_file(url), root, progress=False)
        assert "interrupted" in str(e.value) and "resume" in str(e.value) and "\n" not in str(e.value)
        part = root / "slides" / "test.svs.part"
        assert part.stat().st_size == 120_000 and not (root / "slides" / "test.svs").exists()
        fetch_file(_file(url), root, progress=False)           # the same command again
        assert handler.ranges == [None, "bytes=120000-"]
        assert (root / "slides" / "test.svs").read_bytes() == PAYLOAD and not part.exists()
    finally:
        server.shutdown()
        server.server_close()


def test_list_and_cli(capsys, tmp_path):
    lines = list_datasets()
    assert any(line.startswith("openslide-cmu1-small:") and "licence" in line for line in lines)
    assert any(line.startswith("monuseg2018:") and "not fetched automatically" in line for line in lines)
    with pytest.raises(SystemExit) as e:
        cli_main(["data", "fetch", "--list"])
    assert e.value.code == 0 and "CMU-1-Small-Region.svs" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        cli_main(["data", "fetch", "monuseg2018", "--root", str(tmp_path)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and f"{tmp_path}/monuseg2018/labeled/images/" in err and len(err.splitlines()) == 1


def test_cmu1_small_listing_matches_the_shared_copy(shared_data):
    f = DATASETS["openslide-cmu1-small"].files[0]
    path = shared_data / f.path
    assert path.stat().st_size == f.bytes
    assert hashlib.sha256(path.read_bytes()).hexdigest() == f.sha256
    assert Path(f.url).name == path.name
