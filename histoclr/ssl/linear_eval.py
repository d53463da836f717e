"""Linear evaluation of a frozen encoder: features extracted once (cached), a logistic-regression
classifier trained on them at several label budgets. Knows no data set.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from histoclr.io import atomic_save

log = logging.getLogger(__name__)
CACHE_FORMAT = "histoclr-features-v1"


def encoder_fingerprint(encoder: nn.Module) -> str:
    """SHA-256 of the encoder's state dict (names, shapes, dtypes and values): its identity."""
    h = hashlib.sha256()
    for name, t in sorted(encoder.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _cache_key(fingerprint: str, data_key: str, n: int) -> str:
    return json.dumps({"format": CACHE_FORMAT, "encoder": fingerprint, "data": data_key, "n": n},
                      sort_keys=True)


def extract_features(encoder: nn.Module, dataset, batch_size: int = 256, device: str | torch.device = "cpu",
                     cache_path: str | Path | None = None, data_key: str = "", num_workers: int = 0,
                     progress: bool = True, desc: str = "features") -> tuple[np.ndarray, np.ndarray]:
    """Encoder features of every ``(x, label)`` item: ``(N, D)`` float32 and ``(N,)`` int64.

    With ``cache_path`` the result is stored as ``.npz`` keyed by the encoder's checksum, ``data_key``
    (e.g. the split and image size) and ``N``; a later call with the same key loads it instead of
    recomputing, a different key recomputes and overwrites it. The encoder runs in eval mode.
    """
    from torch.utils.data import DataLoader
    from tqdm import tqdm

    key = None
    if cache_path is not None:
        cache_path = Path(cache_path)
        key = _cache_key(encoder_fingerprint(encoder), data_key, len(dataset))
        if cache_path.is_file():
            try:
                with np.load(cache_path, allow_pickle=False) as z:
                    if str(z["key"]) == key:
                        return z["features"].astype(np.float32), z["labels"].astype(np.int64)
                log.info("%s: cache key differs (other encoder or data); recomputing", cache_path)
            except (OSError, ValueError, KeyError) as e:
                log.warning("%s: unreadable feature cache (%s); recomputing", cache_path, e)
    device = torch.device(device)
    was_training = encoder.training
    encoder.eval().to(device)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    feats, labels = [], []
    try:
        with torch.inference_mode():
            for x, y in tqdm(loader, desc=desc, unit="batch", disable=not progress):
                feats.append(encoder(x.to(device)).float().cpu().numpy())
                labels.append(np.asarray(y, dtype=np.int64))
    finally:
        encoder.train(was_training)
    features = np.concatenate(feats).astype(np.float32)
    targets = np.concatenate(labels).astype(np.int64)
    if cache_path is not None:
        def _save(tmp: Path) -> None:
            with open(tmp, "wb") as f:
                np.savez(f, features=features, labels=targets, key=np.asarray(key))

        atomic_save(cache_path, _save)
    return features, targets


def subsample_per_class(labels: np.ndarray, n_per_class: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of ``n_per_class`` items of every class, drawn deterministically from ``seed``.

    Budgets are nested: with the same seed, the items for ``n`` are a subset of those for ``m > n``.
    Raises ``ValueError`` when a class has fewer than ``n_per_class`` items.
    """
    labels = np.asarray(labels)
    if n_per_class < 1:
        raise ValueError(f"n_per_class must be >= 1, got {n_per_class}")
    rng = np.random.default_rng(seed)
    chosen = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        if len(idx) < n_per_class:
            raise ValueError(f"class {c} has {len(idx)} items, fewer than the budget {n_per_class}")
        chosen.append(idx[rng.permutation(len(idx))[:n_per_class]])
    return np.sort(np.concatenate(chosen))


def train_linear_classifier(train_feats: np.ndarray, train_labels: np.ndarray, test_feats: np.ndarray,
                            test_labels: np.ndarray, weight_decay: float = 1e-3, max_iter: int = 200,
                            num_classes: int | None = None) -> float:
    """Multinomial logistic regression on standardised features; returns the test accuracy.

    Features ``(N, D)`` are standardised with the training mean/std; the classifier is one
    ``nn.Linear(D, C)`` fit full-batch with L-BFGS (strong Wolfe line search) on cross-entropy +
    ``weight_decay/2 * ||W||^2``. Deterministic (zero init). ``num_classes`` defaults to
    ``max(label) + 1`` over both sets.
    """
    xtr = torch.as_tensor(np.asarray(train_feats), dtype=torch.float32)
    xte = torch.as_tensor(np.asarray(test_feats), dtype=torch.float32)
    ytr = torch.as_tensor(np.asarray(train_labels), dtype=torch.long)
    yte = torch.as_tensor(np.asarray(test_labels), dtype=torch.long)
    if xtr.ndim != 2 or xte.ndim != 2 or xtr.shape[1] != xte.shape[1]:
        raise ValueError(f"features must be (N, D) with the same D, got {tuple(xtr.shape)} and {tuple(xte.shape)}")
    if len(xtr) != len(ytr) or len(xte) != len(yte):
        raise ValueError("features and labels differ in length")
    if len(xte) == 0 or len(xtr) == 0:
        raise ValueError("empty training or test set")
    num_classes = num_classes or int(max(ytr.max(), yte.max())) + 1
    mean, std = xtr.mean(0), xtr.std(0, unbiased=False).clamp_min(1e-6)
    xtr, xte = (xtr - mean) / std, (xte - mean) / std
    clf = nn.Linear(xtr.shape[1], num_classes)
    nn.init.zeros_(clf.weight)
    nn.init.zeros_(clf.bias)
    opt = torch.optim.LBFGS(clf.parameters(), lr=1.0, max_iter=max_iter, history_size=20,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = nn.functional.cross_entropy(clf(xtr), ytr) + 0.5 * weight_decay * clf.weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    with torch.no_grad():
        return float((clf(xte).argmax(1) == yte).float().mean())


def linear_eval_budgets(train_feats: np.ndarray, train_labels: np.ndarray, test_feats: np.ndarray,
                        test_labels: np.ndarray, budgets: Sequence[int], seed: int = 0,
                        **classifier_kwargs) -> dict[int, float]:
    """Test accuracy of a linear classifier trained on ``n`` labels per class, for each budget ``n``."""
    num_classes = int(max(np.max(train_labels), np.max(test_labels))) + 1
    out: dict[int, float] = {}
    for n in budgets:
        idx = subsample_per_class(train_labels, int(n), seed)
        out[int(n)] = train_linear_classifier(train_feats[idx], train_labels[idx], test_feats, test_labels,
                                              num_classes=num_classes, **classifier_kwargs)
    return out


def plot_budget_bars(results: dict[str, dict[int, float]], path: str | Path,
                     title: str = "Linear evaluation", skipped: dict[str, str] | None = None,
                     chance: float | None = None) -> Path:
    """Grouped bar chart PNG: one group per label budget, one colour per arm (test accuracy in %).

    ``results`` maps arm -> {budget: accuracy in [0, 1]}; ``skipped`` arms (arm -> reason) are
    named in a footnote instead of drawn; ``chance`` (e.g. 1 / classes) is a dashed line.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = list(results)
    budgets = sorted({b for accs in results.values() for b in accs})
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(budgets) + 2), 4.2))
    width = 0.8 / max(len(arms), 1)
    for i, arm in enumerate(arms):
        xs = [j + (i - (len(arms) - 1) / 2) * width for j, b in enumerate(budgets) if b in results[arm]]
        ys = [100 * results[arm][b] for b in budgets if b in results[arm]]
        bars = ax.bar(xs, ys, width, label=arm, color=plt.cm.tab10(i))
        ax.bar_label(bars, fmt="%.0f", fontsize=7, padding=1)
    if chance is not None:
        ax.axhline(100 * chance, color="0.3", linestyle="--", linewidth=1, label="chance")
    ax.set_xticks(range(len(budgets)), [str(b) for b in budgets])
    ax.set_xlabel("labelled images per class")
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    if arms:
        ax.legend(loc="upper left", fontsize=8)
    if skipped:
        fig.text(0.01, 0.01, "skipped: " + "; ".join(f"{a} ({r})" for a, r in skipped.items()),
                 fontsize=7, color="0.4", wrap=True)
    fig.tight_layout(rect=(0, 0.05 if skipped else 0, 1, 1))
    atomic_save(path, lambda tmp: fig.savefig(tmp, dpi=120))
    plt.close(fig)
    return Path(path)
