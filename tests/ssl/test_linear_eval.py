"""Linear evaluation: feature cache, per-class subsampling, logistic regression on features."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from histoclr.ssl.linear_eval import (
    encoder_fingerprint,
    extract_features,
    linear_eval_budgets,
    subsample_per_class,
    train_linear_classifier,
)


def _blobs(n_per_class: int, num_classes: int = 4, dim: int = 16, sep: float = 6.0, seed: int = 0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(num_classes, dim)) * sep
    labels = np.repeat(np.arange(num_classes), n_per_class)
    feats = centers[labels] + rng.normal(size=(len(labels), dim))
    return feats.astype(np.float32), labels


class _Pairs(torch.utils.data.Dataset):
    def __init__(self, n: int):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 3, 8, 8, generator=g)
        self.y = torch.arange(n) % 3

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], int(self.y[i])


class _CountingEncoder(nn.Module):
    """(B, 3, 8, 8) -> (B, 5); counts forward calls."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 5), nn.BatchNorm1d(5))
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.net(x)


def test_subsample_per_class_is_balanced_deterministic_and_nested():
    labels = np.repeat(np.arange(5), 30)[np.random.default_rng(1).permutation(150)]
    a = subsample_per_class(labels, 4, seed=3)
    assert np.array_equal(a, subsample_per_class(labels, 4, seed=3))
    assert np.bincount(labels[a]).tolist() == [4] * 5
    assert np.all(np.diff(a) > 0)
    assert set(a) <= set(subsample_per_class(labels, 10, seed=3))  # budgets are nested
    assert not np.array_equal(a, subsample_per_class(labels, 4, seed=4))
    with pytest.raises(ValueError, match="fewer than the budget 31"):
        subsample_per_class(labels, 31)
    with pytest.raises(ValueError, match=">= 1"):
        subsample_per_class(labels, 0)


def test_linear_classifier_separates_blobs_and_fails_on_shuffled_labels():
    tr_x, tr_y = _blobs(20, seed=0)
    te_x, te_y = _blobs(50, seed=0)
    te_x = te_x + np.random.default_rng(9).normal(size=te_x.shape).astype(np.float32) * 0.1
    assert train_linear_classifier(tr_x, tr_y, te_x, te_y) >= 0.98
    shuffled = np.random.default_rng(2).permutation(tr_y)
    assert train_linear_classifier(tr_x, shuffled, te_x, te_y, max_iter=50) < 0.7
    with pytest.raises(ValueError, match="same D"):
        train_linear_classifier(tr_x, tr_y, te_x[:, :3], te_y)


def test_linear_eval_budgets_returns_one_accuracy_per_budget():
    tr_x, tr_y = _blobs(30, sep=1.0, seed=0)
    te_x, te_y = _blobs(100, sep=1.0, seed=0)
    accs = linear_eval_budgets(tr_x, tr_y, te_x, te_y, [1, 5, 30], seed=0, max_iter=50)
    assert list(accs) == [1, 5, 30]
    assert all(0.0 <= a <= 1.0 for a in accs.values())
    assert accs[30] > 0.5 and accs[30] >= accs[1]


def test_extract_features_caches_by_encoder_and_data_key(tmp_path):
    torch.manual_seed(0)
    enc, ds = _CountingEncoder(), _Pairs(10)
    cache = tmp_path / "feats.npz"
    f1, y1 = extract_features(enc, ds, batch_size=4, cache_path=cache, data_key="train", progress=False)
    assert f1.shape == (10, 5) and f1.dtype == np.float32 and y1.tolist() == (np.arange(10) % 3).tolist()
    assert enc.calls == 3 and enc.training  # eval mode only during extraction
    f2, y2 = extract_features(enc, ds, batch_size=4, cache_path=cache, data_key="train", progress=False)
    assert enc.calls == 3 and np.array_equal(f1, f2) and np.array_equal(y1, y2)
    extract_features(enc, ds, batch_size=4, cache_path=cache, data_key="test", progress=False)
    assert enc.calls == 6  # other data key: recomputed
    fp = encoder_fingerprint(enc)
    with torch.no_grad():
        enc.net[1].weight.add_(1.0)
    assert encoder_fingerprint(enc) != fp
    f3, _ = extract_features(enc, ds, batch_size=4, cache_path=cache, data_key="test", progress=False)
    assert enc.calls == 9 and not np.allclose(f1, f3)  # other weights: recomputed


def test_plot_budget_bars_writes_png(tmp_path):
    from PIL import Image

    from histoclr.ssl.linear_eval import plot_budget_bars

    out = plot_budget_bars({"random": {10: 0.3, 20: 0.35}, "simclr": {10: 0.5, 20: 0.6}},
                           tmp_path / "chart.png", skipped={"imagenet": "no weights offline"}, chance=0.1)
    with Image.open(out) as im:
        assert im.format == "PNG" and im.width > 300 and im.height > 200
