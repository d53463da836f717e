"""`histoclr tile` run as a user runs it: exit codes, one-line errors, resume after SIGKILL,
and the real MoNuSeg/SVS data."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from histoclr.cli import cli
from histoclr.manifests.tiles import read_tile_manifest
from histoclr.slides.synthetic import render_region, write_pyramid_tiff


def run(*args):
    return CliRunner().invoke(cli, ["tile", *map(str, args)])


def histoclr(*args, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "histoclr", "tile", *map(str, args)],
                          check=False, capture_output=True, text=True, timeout=timeout)


def snapshot(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def pyramid(tmp_path_factory):
    p = tmp_path_factory.mktemp("pyr") / "pyr.tif"
    return write_pyramid_tiff(p, 2048, 1536, mpp=0.25, tissue=[(0, 0, 1024, 1536)], levels=3)


def test_help_describes_the_options():
    r = CliRunner().invoke(cli, ["tile", "--help"])
    assert r.exit_code == 0
    for text in ("SLIDES... [KEY=VALUE]...", "--assume-mpp", "µm/px",
                 "--recursive", "--min-tissue", "--workers", "resumes", "Exit status"):
        assert text in r.output
    assert "tile" in CliRunner().invoke(cli, ["--help"]).output


def test_plain_image_needs_assume_mpp(tmp_path):
    png = tmp_path / "plain.png"
    Image.fromarray(render_region(0, 0, 600, 600, 1, tissue=[(0, 0, 600, 600)])).save(png)
    r = run(png, "--out", tmp_path / "a", "--tile-size", 64)
    assert r.exit_code == 1
    assert f"error: {png}: no resolution metadata" in r.stderr and "--assume-mpp" in r.stderr
    # the re-run the error asks for, into the same --out (nothing was tiled with the old options)
    r = run(png, "--out", tmp_path / "a", "--tile-size", 64, "--assume-mpp", 0.25,
            "tissue.thumbnail_size=256")
    assert r.exit_code == 0, r.output
    assert "1 ok, 0 failed; 16 tiles" in r.stdout   # 600 px at 0.25 -> 300 px at 0.5: 4 x 4 tiles
    df = read_tile_manifest(tmp_path / "a")
    assert set(df.read_size) == {128} and set(df.level) == {0}
    slides = (tmp_path / "a" / "slides.csv").read_text()
    assert ",0.25,assumed,plain-png,16,ok," in slides


@pytest.mark.parametrize("args, message", [
    (["--tile-size", 0], "tile_size must be > 0"),
    (["--mpp", 0], "mpp must be > 0"),
    (["--min-tissue", 1.5], "min_tissue"),
    (["tisue.thumbnail_size=5"], "tisue"),
    (["MISSING"], "missing.svs: no such file or folder"),
    (["EMPTY"], "no slide files found"),
])
def test_bad_options_fail_before_any_work(tmp_path, pyramid, args, message):
    (tmp_path / "empty").mkdir()
    args = [{"MISSING": tmp_path / "missing.svs", "EMPTY": tmp_path / "empty"}.get(a, a) for a in args]
    r = run(pyramid, *args, "--out", tmp_path / "out")
    assert r.exit_code == 2
    assert r.stderr.startswith("error: ") and message in r.stderr and len(r.stderr.splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_corrupt_file_among_good_ones(tmp_path, pyramid):
    bad = tmp_path / "bad.svs"
    bad.write_bytes(b"II*\x00" + os.urandom(3000))
    r = histoclr(pyramid, bad, "--out", tmp_path / "out", "--tile-size", 128, "tissue.thumbnail_size=512")
    assert r.returncode == 1
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(bad) in errors[0]
    assert "Traceback" not in r.stderr
    assert "2 slide(s): 1 ok, 1 failed; 24 tiles" in r.stdout
    assert not [p for p in (tmp_path / "out").rglob("*") if ".tmp" in p.name]
    assert len(read_tile_manifest(tmp_path / "out")) == 24


def test_resume_after_sigkill_gives_the_same_output(tmp_path, pyramid):
    slides = tmp_path / "slides"
    slides.mkdir()
    # s1 is small and done first; the kill lands while the larger s2/s3 are being tiled
    write_pyramid_tiff(slides / "s1.tif", 1024, 768, mpp=0.25, tissue=[(0, 0, 512, 768)], levels=2)
    for name in ("s2", "s3"):
        shutil.copy(pyramid, slides / f"{name}.tif")
    args = [slides, "--mpp", 0.25, "--tile-size", 64, "tissue.thumbnail_size=512"]
    ref = run(*args, "--out", tmp_path / "ref")
    assert ref.exit_code == 0, ref.output
    assert "3 slide(s): 3 ok, 0 failed; 864 tiles" in ref.stdout

    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "histoclr", "tile", *map(str, args), "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not list((out / ".parts").glob("[!.]*.json")) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be interrupted"
    assert not (out / "tiles.csv").exists()  # interrupted part-way
    assert 1 <= len(list((out / ".parts").glob("[!.]*.json"))) < 3

    resumed = histoclr(*args, "--out", out)
    assert resumed.returncode == 0, resumed.stderr
    assert "already done" in resumed.stdout
    assert snapshot(out) == snapshot(tmp_path / "ref")


@pytest.mark.shared_data
def test_real_svs_and_monuseg_at_0_5_mpp(shared_data, tmp_path):
    svs = shared_data / "slides" / "CMU-1-Small-Region.svs"
    images = sorted((shared_data / "monuseg2018" / "labeled" / "images").glob("*.tif"))[:3]
    r = histoclr(svs, *images, "--mpp", 0.5, "--assume-mpp", 0.2527, "--out", tmp_path / "out",
                 "tissue.thumbnail_size=1024")
    assert r.returncode == 0, r.stderr
    df = read_tile_manifest(tmp_path / "out")
    counts = df.groupby("slide_id").size().to_dict()
    # the SVS (0.499 µm/px, 2220x2967) has ~9x13 grid positions at 0.5 µm/px, about a third tissue
    assert 20 <= counts["CMU-1-Small-Region"] <= 80
    # a MoNuSeg image (1000 px at 0.2527 µm/px) holds 2x2 tiles of 443 px, all tissue
    assert [counts[p.stem] for p in images] == [4, 4, 4]
    assert set(df[df.slide_id != "CMU-1-Small-Region"].read_size) == {443}
    slides = (tmp_path / "out" / "slides.csv").read_text()
    assert ",0.499,metadata,aperio," in slides and slides.count(",0.2527,assumed,plain-tiff,") == 3
    from skimage.color import rgb2hsv

    for path in df.tile_path:
        rgb = np.asarray(Image.open(path))
        assert rgb.shape == (224, 224, 3)
        assert rgb2hsv(rgb)[..., 1].mean() > 0.1 and rgb.mean() < 225   # tissue, not glass
    assert (tmp_path / "out" / "qc" / "CMU-1-Small-Region.png").is_file()
