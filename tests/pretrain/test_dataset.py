"""Tile manifests -> filtered table, slide-level held-out split, the fault-tolerant dataset."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from histoclr.errors import ConfigError, HistoclrError
from histoclr.manifests.csvfile import ManifestError
from histoclr.pretrain.dataset import TileDataset, load_tiles, sample_per_slide, split_slides

_spec = importlib.util.spec_from_file_location("synthetic_tiles", Path(__file__).with_name("synthetic_tiles.py"))
synthetic_tiles = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(synthetic_tiles)


@pytest.fixture
def two_manifests(tmp_path):
    a = synthetic_tiles.write_manifest(tmp_path / "a", {"s1": 3, "s2": 2}, size=16, tissue=0.9)
    b = synthetic_tiles.write_manifest(tmp_path / "b", {"s3": 2}, size=16, tissue=0.3)
    return a, b


def test_load_tiles_concatenates_and_filters(two_manifests):
    a, b = two_manifests
    t = load_tiles([a, b.parent])            # a file and a folder holding tiles.csv
    assert len(t) == 7 and sorted(set(t.slide_id)) == ["s1", "s2", "s3"]
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in t.tile_path)
    assert set(t.manifest) == {str(a), str(b)}
    assert len(load_tiles([a, b, a])) == 7                     # the same tile once
    assert list(load_tiles([a, b], slides=["s2"]).slide_id) == ["s2", "s2"]
    assert sorted(set(load_tiles([a, b], min_tissue=0.5).slide_id)) == ["s1", "s2"]
    with pytest.raises(ConfigError, match="data.slides: slide.s. nope not in the manifests"):
        load_tiles([a, b], slides=["s1", "nope"])
    with pytest.raises(HistoclrError, match="no tiles left: 2 tile.*tissue_fraction >= 0.5"):
        load_tiles([b], min_tissue=0.5)
    with pytest.raises(ManifestError, match="tile manifest not found"):
        load_tiles([a.parent / "missing.csv"])


def test_split_by_slide_is_disjoint_deterministic_and_holds_one_out():
    slides = [f"s{i:02d}" for i in range(20) for _ in range(3)]      # 20 slides, 3 tiles each
    train, hold = split_slides(slides, 0.2, seed=0)
    assert len(hold) == 4 and len(train) == 16
    assert not set(train) & set(hold) and set(train) | set(hold) == set(slides)
    assert split_slides(slides, 0.2, seed=0) == (train, hold)
    assert split_slides(list(reversed(slides)), 0.2, seed=0) == (train, hold)   # order-free
    assert any(split_slides(slides, 0.2, seed=s)[1] != hold for s in range(1, 5))
    assert split_slides(["a", "b"], 0.01, seed=3)[1] != []          # at least one slide held out
    assert split_slides(["a", "b"], 0.9, seed=3)[0] != []           # at least one slide trains
    assert split_slides(["a", "a"], 0.5, seed=0) == (["a"], [])     # one slide: nothing held out
    assert split_slides(slides, 0.0, seed=0) == (sorted(set(slides)), [])
    with pytest.raises(ValueError):
        split_slides(slides, 1.0, seed=0)


def test_unreadable_tile_is_reported_flagged_and_replaced(two_manifests, caplog):
    a, _ = two_manifests
    t = load_tiles([a])
    ds = TileDataset.from_table(t)
    missing, corrupt = ds.tile_paths[1], ds.tile_paths[2]
    Path(missing).unlink()
    Path(corrupt).write_bytes(b"not an image")
    with caplog.at_level(logging.WARNING, logger="histoclr"):
        j, img = ds.image(1)
    assert j == 3 and img.dtype == np.uint8 and img.shape == (16, 16, 3)
    assert ds.n_bad == 2
    msgs = [r.getMessage() for r in caplog.records]
    assert f"{missing}: cannot read tile (file not found); skipped" in msgs
    assert any(m.startswith(f"{corrupt}: cannot read tile (UnidentifiedImageError") for m in msgs)
    caplog.clear()
    ds.image(1)
    assert not caplog.records                                    # reported once
    bad = dict(ds.bad_tiles())
    assert set(bad) == {missing, corrupt} and bad[missing] == "file not found"
    assert bad[corrupt].startswith("UnidentifiedImageError")
    for p in ds.tile_paths:
        Path(p).unlink(missing_ok=True)
    with pytest.raises(HistoclrError, match="none of the 5 tiles could be read"):
        ds[0]


def test_bad_flags_are_seen_from_dataloader_workers(two_manifests):
    a, _ = two_manifests
    ds = TileDataset.from_table(load_tiles([a]), transform=lambda img: torch.from_numpy(img.copy()))
    Path(ds.tile_paths[0]).unlink()
    loader = torch.utils.data.DataLoader(ds, batch_size=5, num_workers=1)
    (batch,) = list(loader)
    assert batch.shape == (5, 16, 16, 3)
    assert ds.n_bad == 1                                           # flagged in the worker process


def test_sample_per_slide_spreads_over_slides():
    ids = ["a"] * 10 + ["b"] * 2 + ["c"] * 5
    picked = sample_per_slide(ids, 6, seed=0)
    assert len(picked) == 6 and picked == sorted(set(picked))
    assert sorted(ids[i] for i in picked) == ["a", "a", "b", "b", "c", "c"]
    assert sample_per_slide(ids, 6, seed=0) == picked
    assert len(sample_per_slide(ids, 100, seed=0)) == 17
