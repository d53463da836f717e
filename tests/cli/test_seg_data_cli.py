"""`histoclr seg-data check|describe` run as a user runs them (a subprocess; exit codes, lines)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
XML = ('<Annotations MicronsPerPixel="0.25"><Annotation><Regions>{}</Regions></Annotation>'
       "</Annotations>")
REGION = ('<Region Id="{i}"><Vertices><Vertex X="{x}" Y="2"/><Vertex X="{x2}" Y="2"/>'
          '<Vertex X="{x2}" Y="8"/><Vertex X="{x}" Y="8"/></Vertices></Region>')


def histoclr(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "histoclr", *map(str, args)],
                          check=False, capture_output=True, text=True, timeout=120)


def make_data(root: Path, problems: bool) -> tuple[Path, Path]:
    images, masks = root / "img", root / "ann"
    images.mkdir(parents=True)
    masks.mkdir()
    for name, n in (("A-1", 2), ("B-2", 3)):
        Image.fromarray(np.full((20, 40, 3), 200, np.uint8)).save(images / f"{name}.png")
        regions = "".join(REGION.format(i=i, x=10 * i, x2=10 * i + 5) for i in range(n))
        (masks / f"{name}.xml").write_text(XML.format(regions))
    if problems:
        Image.fromarray(np.full((20, 40, 3), 200, np.uint8)).save(images / "C-3.png")
        (masks / "D-4.xml").write_text(XML.format(""))
    return images, masks


def test_describe_then_check_manifest(tmp_path):
    images, masks = make_data(tmp_path / "data", problems=False)
    out = tmp_path / "pairs.csv"
    r = histoclr("seg-data", "describe", "--images", images, "--masks", masks,
                 "--root", tmp_path / "data", "--out", out, "--val", "B-2")
    assert r.returncode == 0, r.stderr
    assert f"wrote {out}: 2 pairs (1 train, 1 val)" in r.stdout
    lines = out.read_text().splitlines()
    assert lines[2] == "A-1,img/A-1.png,ann/A-1.xml,aperio_xml,train,0.25"
    assert lines[3] == "B-2,img/B-2.png,ann/B-2.xml,aperio_xml,val,0.25"

    r = histoclr("seg-data", "check", "--manifest", out, "--root", tmp_path / "data",
                 "--preview", tmp_path / "prev")
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"wrote 2 outline preview(s) to {tmp_path / 'prev'}" in r.stdout
    png = np.asarray(Image.open(tmp_path / "prev/B-2.png"))
    assert png.shape == (20, 40, 3)
    cyan = (png == (0, 255, 255)).all(axis=2)
    assert cyan[2, 10:16].all() and cyan[5, 10] and cyan[5, 15] and not cyan[5, 12]  # outlines
    # nuclei of 6x7 px: 22 outline px each, the one at the left edge has no left side (17)
    assert cyan.sum() == 17 + 22 + 22
    # 2 nuclei of 6x7 px in 40x20 -> 84 / 800 = 10.5%
    assert "ok       A-1  40x20  2 nuclei  coverage 10.5%  aperio_xml  split train  mpp 0.25" in r.stdout
    assert "B-2  40x20  3 nuclei" in r.stdout and "split val" in r.stdout
    assert "2 pair(s) ok, 0 problem(s)" in r.stdout
    assert "pair/s" in r.stderr  # the progress bar

    (images / "A-1.png").unlink()
    r = histoclr("seg-data", "check", "--manifest", out, "--root", tmp_path / "data", "-q")
    assert r.returncode == 1
    assert f"PROBLEM  A-1: file(s) not found: {tmp_path / 'data/img/A-1.png'}" in r.stdout
    assert "1 pair(s) ok, 1 problem(s)" in r.stdout


def test_check_dirs_lists_problems_and_exits_1(tmp_path):
    images, masks = make_data(tmp_path, problems=True)
    r = histoclr("seg-data", "check", "--images", images, "--masks", masks)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "A-1  40x20  2 nuclei" in r.stdout
    assert f"PROBLEM  image without mask: {images / 'C-3.png'}" in r.stdout
    assert f"PROBLEM  mask without image: {masks / 'D-4.xml'}" in r.stdout
    assert "2 pair(s) ok, 2 problem(s)" in r.stdout

    out = tmp_path / "p.csv"
    r = histoclr("seg-data", "describe", "--images", images, "--masks", masks, "--root", tmp_path,
                 "--out", out)
    assert r.returncode == 1 and "2 problem(s), those files left out" in r.stdout
    assert len(out.read_text().splitlines()) == 4  # header line, columns, 2 pairs


@pytest.mark.parametrize("args, message", [
    (["check"], "give either --images and --masks, or --manifest and --root"),
    (["check", "--images", "."], "--images and --masks go together"),
    (["describe", "--images", ".", "--masks", ".", "--root", ".", "--out", "x.csv",
      "--val", "nope"], "--val/--test id(s) not among the usable pairs: nope"),
])
def test_bad_arguments_one_line_exit_2(tmp_path, args, message):
    if args[0] == "describe":
        make_data(tmp_path, problems=False)
        args = [a if a != "." else str(tmp_path / ("img" if i == 2 else "ann" if i == 4 else ""))
                for i, a in enumerate(args)]
    r = histoclr("seg-data", *args)
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr.strip().splitlines()[-1] == f"error: {message}"


def test_bad_manifest_exit_2(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("# histoclr-seg-pairs v1\nimage_id,image\n")
    r = histoclr("seg-data", "check", "--manifest", bad, "--root", tmp_path)
    assert r.returncode == 2 and f"error: {bad}: missing column(s): mask," in r.stderr


@pytest.mark.shared_data
def test_check_real_val_pairs(shared_data, tmp_path):
    """The committed manifest's 3 validation rows, checked end to end on the real data."""
    lines = (REPO / "data_manifests/monuseg2018_seg_pairs.csv").read_text().splitlines()
    val = tmp_path / "val.csv"
    val.write_text("\n".join(lines[:2] + [x for x in lines[2:] if ",val," in x]) + "\n")
    r = histoclr("seg-data", "check", "--manifest", val, "--root", shared_data, "-q")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "3 pair(s) ok, 0 problem(s)" in r.stdout
    assert "TCGA-B0-5710-01Z-00-DX1  1000x1000  359 nuclei  coverage 11.7%" in r.stdout
    assert "TCGA-E2-A1B5-01Z-00-DX1  1000x1000  328 nuclei (1 degenerate skipped)" in r.stdout
