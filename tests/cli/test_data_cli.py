"""`histoclr data describe|verify` run as a user runs them (a subprocess; exit codes, messages)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def histoclr(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "histoclr", *map(str, args)],
                          check=False, capture_output=True, text=True, timeout=120)


def make_root(root: Path) -> Path:
    (root / "m/labeled/images").mkdir(parents=True)
    (root / "m/labeled/annotations").mkdir(parents=True)
    (root / "m/labeled/images/P-1.tif").write_bytes(b"II*\x00" + bytes(range(200)))
    (root / "m/labeled/annotations/P-1.xml").write_text('<Annotations MicronsPerPixel="0.25"/>')
    (root / "other").mkdir()
    (root / "other/notes.txt").write_text("hello\n")
    return root


def test_describe_then_verify_ok_changed_removed(tmp_path):
    root = make_root(tmp_path / "data")
    facts = tmp_path / "facts.yaml"
    facts.write_text("- {match: 'm/labeled/*', split: val}\n")
    manifest = tmp_path / "manifests" / "m.csv"
    r = histoclr("data", "describe", root, "--facts", facts, "--out", manifest)
    assert r.returncode == 0, r.stderr
    assert "3 files (1 annotation, 1 labeled_image, 1 other); labelled split 1 val" in r.stdout
    assert "sha256" in r.stderr  # the progress bar

    r = histoclr("data", "verify", "--root", root, manifest)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "3 ok, 0 missing, 0 changed" in r.stdout and "OK:" in r.stdout

    (root / "other/notes.txt").write_text("hello, world\n")
    (root / "m/labeled/annotations/P-1.xml").unlink()
    r = histoclr("data", "verify", "-q", "--root", root, manifest)
    assert r.returncode == 1
    lines = r.stdout.splitlines()
    assert "MISSING  m/labeled/annotations/P-1.xml" in lines
    assert "CHANGED  other/notes.txt: size 6 -> 13 bytes" in lines
    assert "1 ok, 1 missing, 1 changed" in r.stdout and "FAILED:" in r.stdout
    assert r.stderr == ""  # -q: no progress bar


def test_verify_bad_manifest_exits_2_with_one_line(tmp_path):
    root = make_root(tmp_path / "data")
    bad = tmp_path / "bad.csv"
    bad.write_text("# histoclr-data v1\npath,bytes,role\nother/notes.txt,6,other\n")
    r = histoclr("data", "verify", "--root", root, bad)
    assert r.returncode == 2
    assert r.stderr.strip() == f"error: {bad}: missing column(s): sha256, pair_id, split, " \
        "organ, mpp, mpp_source, magnification, source, licence"
    r = histoclr("data", "verify", "--root", root, tmp_path / "nope.csv")
    assert r.returncode == 2 and "nope.csv: data manifest not found" in r.stderr


def test_describe_bad_facts_exits_2(tmp_path):
    root = make_root(tmp_path / "data")
    facts = tmp_path / "facts.yaml"
    facts.write_text("- {match: '*', tissue: lung}\n")
    r = histoclr("data", "describe", root, "--facts", facts, "--out", tmp_path / "m.csv")
    assert r.returncode == 2 and "rule 1: unknown key 'tissue'" in r.stderr
    assert not (tmp_path / "m.csv").exists()


@pytest.mark.shared_data
def test_verify_real_data_against_committed_manifest(shared_data):
    manifest = REPO / "data_manifests" / "monuseg2018_cmu1.csv"
    r = histoclr("data", "verify", "--root", shared_data, manifest)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "45 ok, 0 missing, 0 changed" in r.stdout
