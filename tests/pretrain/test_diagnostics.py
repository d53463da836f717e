"""Label-free checks: views, embeddings, projection, neighbours and the pictures."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from histoclr.pretrain.diagnostics import (
    embed,
    eval_transform,
    nearest_neighbours,
    project_2d,
    same_slide_rate,
    save_embedding_map,
    save_loss_curve,
    save_neighbour_montage,
    two_views,
)
from histoclr.ssl.augment import MultiViewTransform, build_views


def _images(n: int, size: int = 40) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(n)]


def test_two_views_are_seeded_and_leave_global_rng_alone():
    views = MultiViewTransform(build_views("histology", image_size=24), 2)
    imgs = _images(3)
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a1, a2 = two_views(imgs, views, seed=5)
    assert torch.rand(1) == before                      # global torch RNG untouched
    b1, b2 = two_views(imgs, views, seed=5)
    assert a1.shape == (3, 3, 24, 24) and a1.dtype == torch.float32
    assert torch.equal(a1, b1) and torch.equal(a2, b2)
    assert not torch.equal(a1, a2)
    c1, _ = two_views(imgs, views, seed=6)
    assert not torch.equal(a1, c1)


def test_embed_uses_eval_mode_and_restores_training():
    enc = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten())
    enc.train()
    x = eval_transform(16)(image=_images(1)[0])["image"][None].repeat(5, 1, 1, 1)
    assert x.shape == (5, 3, 16, 16)
    h = embed(enc, x, batch_size=2, device=torch.device("cpu"))
    assert h.shape == (5, 4) and enc.training
    assert torch.allclose(h, h[0].expand_as(h))          # eval BN: identical inputs -> identical rows
    assert torch.equal(enc[1].running_mean, torch.zeros(4))   # no BN statistics updated


def test_project_2d_and_neighbours():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(15, 8, generator=g) * 0.05 + torch.tensor([5.0] + [0] * 7)
    b = torch.randn(15, 8, generator=g) * 0.05 - torch.tensor([5.0] + [0] * 7)
    feats = torch.cat([a, b])
    pts, method = project_2d(feats, "pca")
    assert method == "PCA" and pts.shape == (30, 2)
    assert abs(pts[:15, 0].mean() - pts[15:, 0].mean()) > 9                # the split is on PC 1
    pts, method = project_2d(feats, "auto")
    assert method == "t-SNE" and pts.shape == (30, 2) and np.isfinite(pts).all()
    assert project_2d(feats[:5], "auto")[1] == "PCA"                          # too few points for t-SNE
    with pytest.raises(ValueError):
        project_2d(feats[:1], "pca")
    _, idx = nearest_neighbours(feats, 3)
    assert idx.shape == (30, 3) and not (idx == torch.arange(30)[:, None]).any()
    assert (idx[:15] < 15).all() and (idx[15:] >= 15).all()
    assert same_slide_rate(feats, ["a"] * 15 + ["b"] * 15) == 1.0
    assert same_slide_rate(feats, ["a", "b"] * 15) < 1.0


def test_pictures_are_pngs(tmp_path):
    tmp_path = tmp_path / "pictures"
    imgs = _images(6, 32)
    feats = torch.randn(6, 4, generator=torch.Generator().manual_seed(1))
    slides = ["s1", "s1", "s1", "s2", "s2", "s2"]
    p = save_embedding_map({"trained": np.random.rand(6, 2), "random": np.random.rand(6, 2)}, slides,
                           tmp_path / "map.png")
    w, h = Image.open(p).size
    assert w > 2 * h > 0                                     # two panels side by side
    p = save_neighbour_montage(imgs, slides, feats, [0, 3], 3, tmp_path / "nn.png", title="t")
    w, h = Image.open(p).size
    assert w > h > 0                                         # 2 rows x 4 columns
    p = save_loss_curve({"loss": [(2, 3.0), (1, 4.0)], "top1": [(1, 0.1), (2, 0.3)]}, tmp_path / "loss.png")
    assert Image.open(p).format == "PNG"
    with pytest.raises(ValueError):
        save_loss_curve({"loss": []}, tmp_path / "empty.png")
    assert sorted(f.name for f in tmp_path.iterdir()) == ["loss.png", "map.png", "nn.png"]  # no temp files left
