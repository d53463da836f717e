"""Whole-slide prediction: nuclei across tile borders once, GeoJSON round trip on a multi-level slide,
the mask TIFF through OpenSlide, flat memory, resume after a crash, region = whole slide where they meet.

The 'network' is a deterministic pixelwise module (nucleus logit = darkness), so the expected
nuclei are exactly the dark discs drawn into the synthetic slides.
"""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from histoclr.errors import InputFileError
from histoclr.images import IMAGENET_MEAN, IMAGENET_STD
from histoclr.seg.annotations import rasterize_instances, read_geojson
from histoclr.seg.export import decode_ids
from histoclr.seg.model import SegCheckpoint
from histoclr.seg.postprocess import default_params
from histoclr.seg.slide_predict import predict_input, tile_cores

PINK, NUCLEUS = (235, 170, 200), (60, 30, 90)


class DarkNuclei(torch.nn.Module):
    """Two-class logits ``(B, 2, H, W)``: background 0, nucleus 20 x darkness of the normalised pixel."""

    def __init__(self):
        super().__init__()
        self.gain = torch.nn.Parameter(torch.tensor(20.0))
        self.spec = SimpleNamespace(target="binary", architecture="fake", encoder="none")

    def forward(self, x):
        dark = -x.mean(1, keepdim=True)
        return torch.cat([torch.zeros_like(dark), dark * self.gain], 1)


def fake_checkpoint(mpp: float | None, window: int = 64) -> SegCheckpoint:
    return SegCheckpoint(DarkNuclei(), mpp, window, IMAGENET_MEAN, IMAGENET_STD, {},
                         default_params("binary", method="components", min_size=4))


def draw_slide(width: int, height: int, discs, tissue=None) -> np.ndarray:
    """White glass, a pink tissue box (default: all of it but a 16 px margin) and dark discs (x, y, r)."""
    rgb = np.full((height, width, 3), 245, np.uint8)
    x0, y0, x1, y1 = tissue or (16, 16, width - 16, height - 16)
    rgb[y0:y1, x0:x1] = PINK
    for x, y, r in discs:
        yy, xx = np.mgrid[y - r:y + r + 1, x - r:x + r + 1]
        rgb[yy[0, 0]:yy[-1, 0] + 1, xx[0, 0]:xx[0, -1] + 1][(xx - x) ** 2 + (yy - y) ** 2 <= r * r] = NUCLEUS
    return rgb


def write_slide(path, rgb: np.ndarray, mpp: float, levels: int = 1):
    """A tiled pyramidal TIFF (downsamples 1, 2, 4 ...; lossless) that OpenSlide opens."""
    with tifffile.TiffWriter(path) as tw:
        for level in range(levels):
            d = 2 ** level
            im = rgb if d == 1 else cv2.resize(rgb, (rgb.shape[1] // d, rgb.shape[0] // d), interpolation=cv2.INTER_AREA)
            tw.write(im, tile=(128, 128), photometric="rgb", compression="zlib", subfiletype=1 if level else 0,
                     resolution=(1e4 / mpp / d, 1e4 / mpp / d), resolutionunit="CENTIMETER")
    return path


def read_rows(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def disc_area(r: int) -> int:
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    return int(((xx ** 2 + yy ** 2) <= r * r).sum())


def test_a_nucleus_across_tile_borders_is_reported_once_with_its_area(tmp_path):
    # tiles of 128 px: one disc on the x border, one on the y border, one on a 4-tile corner
    discs = [(128, 70, 9), (200, 256, 8), (256, 128, 10), (60, 60, 6)]
    slide = write_slide(tmp_path / "s.tif", draw_slide(400, 320, discs), mpp=0.5)
    res = predict_input(fake_checkpoint(0.5), slide, tmp_path / "out", tile=128, halo=24, progress=False)
    # 12 tiles, of which the last column (x 384-400) is glass only: not run
    assert res.mode == "slide" and len(tile_cores((400, 320), 128)) == 12 and res.tiles == 9
    rows = read_rows(res.files["csv"])
    assert len(rows) == len(discs) == res.nuclei
    found = {(round(float(r["centroid_x_px"])), round(float(r["centroid_y_px"]))): r for r in rows}
    for x, y, r in discs:
        row = found[(x, y)]
        assert float(row["area_um2"]) == pytest.approx(disc_area(r) * 0.25, rel=1e-6)
        assert float(row["centroid_x_um"]) == pytest.approx(x * 0.5, abs=0.01)
    assert [int(r["id"]) for r in rows] == list(range(1, len(discs) + 1))
    # without the halo the border discs are cut in two: the core rule alone is not what makes it right
    res = predict_input(fake_checkpoint(0.5), slide, tmp_path / "nohalo", tile=128, halo=0, progress=False)
    assert res.nuclei > len(discs)


@pytest.fixture
def multilevel(tmp_path):
    """A 3-level slide at 0.25 um/px; the model works at 0.5 (level 1 is read)."""
    rng = np.random.default_rng(3)
    discs = [(int(x), int(y), int(r)) for x, y, r in
             zip(rng.integers(60, 700, 14), rng.integers(60, 540, 14), rng.integers(10, 16, 14))]
    discs = [d for i, d in enumerate(discs)
             if all((d[0] - e[0]) ** 2 + (d[1] - e[1]) ** 2 > (d[2] + e[2] + 6) ** 2 for e in discs[:i])]
    discs += [(256, 200, 14)]          # across the border of 128-px (model) tiles: level-0 x = 256
    return write_slide(tmp_path / "ml.tif", draw_slide(768, 600, discs), mpp=0.25, levels=3), discs


def _match_iou(pred: np.ndarray, truth: np.ndarray, same_ids: bool = False) -> list[float]:
    """For each truth instance, the IoU with the prediction instance overlapping it most
    (``same_ids``: that instance must carry the truth's id)."""
    out = []
    for t in np.unique(truth[truth > 0]):
        m = truth == t
        ids, counts = np.unique(pred[m], return_counts=True)
        best = ids[np.argmax(np.where(ids > 0, counts, -1))]
        assert not same_ids or best == t, f"nucleus {t} is {best} in the other map"
        p = pred == best
        out.append((m & p).sum() / (m | p).sum())
    return out


def test_geojson_round_trip_and_mask_tiff_at_level0_on_a_multilevel_slide(multilevel, tmp_path):
    import openslide

    slide, discs = multilevel
    res = predict_input(fake_checkpoint(0.5), slide, tmp_path / "out", tile=128, halo=24, mask_tiff=True,
                        progress=False)
    assert res.nuclei == len(discs)
    settings = json.loads((tmp_path / "out" / f"{Path(slide).stem}_summary.json").read_text())["settings"]
    assert settings["geometry"]["level"] == 1      # the model's 0.5 um/px read from level 1 (0.25 um/px x 2)
    with openslide.OpenSlide(res.files["mask_tiff"]) as m:      # OpenSlide opens the mask
        assert m.level_dimensions[0] == (768, 600) and m.level_count >= 2
        assert float(m.properties["openslide.mpp-x"]) == pytest.approx(0.25)
        mask = decode_ids(np.asarray(m.read_region((0, 0), 0, (768, 600))))
        coarse = decode_ids(np.asarray(m.read_region((0, 0), 1, m.level_dimensions[1])))
    assert set(np.unique(mask)) == set(range(res.nuclei + 1))
    assert set(np.unique(coarse)) <= set(range(res.nuclei + 1)) and coarse.max() > 0
    polys = read_geojson(res.files["geojson"])
    back = rasterize_instances(polys, (600, 768))
    ious = _match_iou(mask, back, same_ids=True)     # the GeoJSON's nucleus k is the mask's id k
    assert len(ious) == res.nuclei and min(ious) >= 0.99
    # at the right level-0 place: every drawn disc is one predicted nucleus, same centre
    yy, xx = np.mgrid[:600, :768]
    for x, y, r in discs:
        inst = back[y, x]
        assert inst > 0
        cy, cx = yy[back == inst].mean(), xx[back == inst].mean()
        assert abs(cx - x) < 1.0 and abs(cy - y) < 1.0
    with open(res.files["geojson"], encoding="utf-8") as f:
        feat = json.load(f)["features"][0]
    assert feat["properties"]["objectType"] == "detection" and "Area µm^2" in feat["properties"]["measurements"]


def test_region_and_whole_slide_agree_where_they_meet(multilevel, tmp_path):
    slide, _ = multilevel
    ck = fake_checkpoint(0.5)
    whole = predict_input(ck, slide, tmp_path / "w", tile=128, halo=24, mask_tiff=True, progress=False)
    region = (100, 60, 500, 420)
    part = predict_input(ck, slide, tmp_path / "r", region=region, tile=96, halo=24, progress=False)
    x, y, w, h = region
    assert part.mode == "region" and part.name == "ml_x100_y60_w500_h420"

    def inside(rows):
        return sorted((round(float(r["centroid_x_px"]), 2), round(float(r["centroid_y_px"]), 2), r["area_um2"])
                      for r in rows
                      if x + 20 <= float(r["centroid_x_px"]) < x + w - 20 and y + 20 <= float(r["centroid_y_px"]) < y + h - 20)

    a, b = inside(read_rows(whole.files["csv"])), inside(read_rows(part.files["csv"]))
    assert a == b and len(a) >= 5
    labels = np.asarray(Image.open(part.files["mask"]))
    assert labels.shape == (h, w)
    import openslide

    with openslide.OpenSlide(whole.files["mask_tiff"]) as m:
        ref = decode_ids(np.asarray(m.read_region((x, y), 0, (w, h))))
    core = (slice(20, h - 20), slice(20, w - 20))
    assert ((labels[core] > 0) == (ref[core] > 0)).mean() > 0.999


def _peak_bytes(ck, slide, out) -> tuple[int, int]:
    """Peak traced bytes of a whole run, and from its first finished tile on (past the thumbnail
    and tissue detection, whose fixed-size arrays dominate the first)."""
    tracemalloc.start()
    peaks = []

    def after(k):
        if k == 1:
            peaks.append(tracemalloc.get_traced_memory()[1])
            tracemalloc.reset_peak()

    try:
        predict_input(ck, slide, out, tile=512, halo=16, progress=False, on_tile=after)
        return max(peaks[0], tracemalloc.get_traced_memory()[1]), tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_peak_memory_does_not_grow_with_slide_size(tmp_path):
    ck = fake_checkpoint(0.5, window=256)
    grid = lambda n: [(x, y, 7) for x in range(40, n - 40, 200) for y in range(40, n - 40, 200)]
    small = write_slide(tmp_path / "small.tif", draw_slide(1024, 1024, grid(1024)), mpp=0.5)
    big = write_slide(tmp_path / "big.tif", draw_slide(2048, 2048, grid(2048)), mpp=0.5)   # 4x the area
    warm = write_slide(tmp_path / "warm.tif", draw_slide(256, 256, grid(256)), mpp=0.5)
    predict_input(ck, warm, tmp_path / "warm", progress=False)                         # imports, caches
    (all_small, tiles_small), (all_big, tiles_big) = _peak_bytes(ck, small, tmp_path / "a"), _peak_bytes(ck, big, tmp_path / "b")
    print(f"peak traced memory, whole run: {all_small / 2**20:.2f} MiB (small), {all_big / 2**20:.2f} MiB (4x the area); "
          f"from the first tile on: {tiles_small / 2**20:.2f}, {tiles_big / 2**20:.2f} MiB")
    # a slide-sized int32 map of the big slide alone would be 16.8 MB (4x the small one's 4.2 MB)
    assert all_big < 1.1 * all_small + 5e5, (all_small, all_big)
    assert tiles_big < 1.2 * tiles_small + 5e5, (tiles_small, tiles_big)


def _outputs(res) -> dict:
    out = {k: Path(res.files[k]).read_bytes() for k in ("geojson", "csv")}
    out["overlay"] = np.asarray(Image.open(res.files["overlay"])).tobytes()
    return out


def test_killed_prediction_resumes_to_the_uninterrupted_outputs(multilevel, tmp_path):
    slide, _ = multilevel
    ck = fake_checkpoint(0.5)
    ref = predict_input(ck, slide, tmp_path / "ref", tile=128, halo=24, progress=False)

    class Killed(Exception):
        pass

    def die_after_3(k):
        if k == 3:
            raise Killed

    with pytest.raises(Killed):
        predict_input(ck, slide, tmp_path / "run", tile=128, halo=24, progress=False, on_tile=die_after_3)
    assert len(list((tmp_path / "run" / "ml.parts").glob("tile_*.npz"))) == 3
    assert not (tmp_path / "run" / "ml_summary.json").exists()
    calls = []
    res = predict_input(ck, slide, tmp_path / "run", tile=128, halo=24, progress=False, on_tile=calls.append)
    assert len(calls) == ref.tiles - 3                      # only the tiles not done before
    assert _outputs(res) == _outputs(ref) and res.nuclei == ref.nuclei
    assert not (tmp_path / "run" / "ml.parts").exists()
    calls.clear()
    again = predict_input(ck, slide, tmp_path / "run", tile=128, halo=24, progress=False, on_tile=calls.append)
    assert again.skipped and not calls and again.nuclei == ref.nuclei
    redo = predict_input(ck, slide, tmp_path / "run", tile=128, halo=24, progress=False, on_tile=calls.append,
                         overwrite=True)
    assert not redo.skipped and len(calls) == ref.tiles


def test_sigkill_mid_run_then_rerun_gives_the_uninterrupted_outputs(multilevel, tmp_path):
    slide, _ = multilevel
    ck = fake_checkpoint(0.5)
    ref = predict_input(ck, slide, tmp_path / "ref", tile=128, halo=24, progress=False)
    code = (f"import importlib.util, time\n"
            f"spec = importlib.util.spec_from_file_location('t', {str(Path(__file__))!r})\n"
            "t = importlib.util.module_from_spec(spec); spec.loader.exec_module(t)\n"
            f"t.predict_input(t.fake_checkpoint(0.5), {str(slide)!r}, {str(tmp_path / 'run')!r}, tile=128, halo=24,\n"
            "                progress=False, on_tile=lambda k: time.sleep(0.5))\n")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=tmp_path)
    parts = tmp_path / "run" / "ml.parts"
    deadline = time.monotonic() + 120
    while len(list(parts.glob("tile_*.npz"))) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(list(parts.glob("tile_*.npz")))
    assert 2 <= done < ref.tiles and not (tmp_path / "run" / "ml_summary.json").exists()
    calls = []
    res = predict_input(ck, slide, tmp_path / "run", tile=128, halo=24, progress=False, on_tile=calls.append)
    assert len(calls) == ref.tiles - done and _outputs(res) == _outputs(ref)


def test_other_settings_do_not_reuse_parts_and_errors_are_one_line(multilevel, tmp_path):
    slide, _ = multilevel
    ck = fake_checkpoint(0.5)

    def stop(k):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        predict_input(ck, slide, tmp_path / "o", tile=128, halo=24, progress=False, on_tile=stop)
    calls = []
    res = predict_input(ck, slide, tmp_path / "o", tile=128, halo=16, progress=False, on_tile=calls.append)
    assert len(calls) == res.tiles                           # another halo: every tile again
    with pytest.raises(InputFileError, match="not inside") as e:
        predict_input(ck, slide, tmp_path / "o", region=(700, 0, 100, 10), progress=False)
    assert "\n" not in str(e.value) and str(slide) in str(e.value)
    Image.fromarray(draw_slide(64, 64, [])).save(tmp_path / "nompp.png")
    with pytest.raises(InputFileError, match=r"resolution \(mpp\) is unknown") as e:
        predict_input(ck, tmp_path / "nompp.png", tmp_path / "o", progress=False)
    assert "\n" not in str(e.value)
