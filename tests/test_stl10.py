"""STL-10 loading through torchvision on a tiny data set written in the official binary layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from histoclr.errors import HistoclrError, InputFileError
from histoclr.stl10 import STL10Labeled, STL10Views, load_stl10, write_stl10_split

CLASSES = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]


def write_tiny_stl10(root: Path, n_unlabeled: int = 8, n_train_per_class: int = 3,
                     n_test_per_class: int = 2, seed: int = 0) -> dict[str, np.ndarray]:
    """A tiny STL-10 in the official layout; returns the HWC images (and labels) per split.

    Labelled images get a class-dependent brightness so that a linear probe has signal.
    """
    rng = np.random.default_rng(seed)
    out = {"unlabeled": rng.integers(0, 256, size=(n_unlabeled, 96, 96, 3), dtype=np.uint8)}
    write_stl10_split(root, "unlabeled", out["unlabeled"])
    for split, n in (("train", n_train_per_class), ("test", n_test_per_class)):
        labels = rng.permutation(np.repeat(np.arange(10), n))
        noise = rng.integers(0, 64, size=(len(labels), 96, 96, 3), dtype=np.uint8)
        out[split], out[f"{split}_labels"] = (noise + (labels * 20)[:, None, None, None]).astype(np.uint8), labels
        write_stl10_split(root, split, out[split], labels)
    folder = root / "stl10_binary"
    (folder / "class_names.txt").write_text("\n".join(CLASSES) + "\n")
    n_train = 10 * n_train_per_class
    (folder / "fold_indices.txt").write_text(
        "\n".join(" ".join(str(i) for i in range(f, n_train, 10)) for f in range(10)) + "\n")
    return out


def test_splits_read_back_exactly(tmp_path):
    written = write_tiny_stl10(tmp_path)
    train = load_stl10(tmp_path, "train", download=False)
    assert train.data.shape == (30, 3, 96, 96) and train.classes == CLASSES
    assert np.array_equal(train.labels, written["train_labels"])
    views = STL10Views(load_stl10(tmp_path, "unlabeled"), transform=lambda img: [img, img], indices=[5, 2])
    assert len(views) == 2
    a, _ = views[0]
    assert a.shape == (96, 96, 3) and a.dtype == np.uint8 and a.flags["C_CONTIGUOUS"]
    assert np.array_equal(a, written["unlabeled"][5]) and np.array_equal(views.image(1), written["unlabeled"][2])


def test_labeled_adapter_resizes_and_normalises(tmp_path):
    from histoclr.images import IMAGENET_MEAN, IMAGENET_STD

    written = write_tiny_stl10(tmp_path)
    test = load_stl10(tmp_path, "test")
    full = STL10Labeled(test, image_size=96)
    x, y = full[3]
    assert tuple(x.shape) == (3, 96, 96) and y == written["test_labels"][3]
    expected = (written["test"][3].transpose(2, 0, 1) / 255.0 - np.reshape(IMAGENET_MEAN, (3, 1, 1))) \
        / np.reshape(IMAGENET_STD, (3, 1, 1))
    assert np.allclose(x.numpy(), expected, atol=1e-5)
    small = STL10Labeled(test, image_size=32, indices=[3, 7])
    assert len(small) == 2 and tuple(small[0][0].shape) == (3, 32, 32)
    assert small.targets.tolist() == written["test_labels"][[3, 7]].tolist()


def test_offline_download_is_one_line_naming_data_root(tmp_path, monkeypatch):
    from torchvision.datasets import STL10

    # "No network", honestly: nothing listens on the discard port of the loopback interface.
    monkeypatch.setattr(STL10, "url", "http://127.0.0.1:9/stl10_binary.tar.gz")
    with pytest.raises(HistoclrError) as e:
        load_stl10(tmp_path / "nowhere", "unlabeled", download=True)
    msg = str(e.value)
    assert "\n" not in msg and "--data-root" in msg and "could not be downloaded" in msg
    assert "URLError" in msg and str(tmp_path / "nowhere") in msg
    with pytest.raises(HistoclrError, match="download disabled.*--data-root"):
        load_stl10(tmp_path / "nowhere", "train", download=False)


def test_truncated_file_is_named(tmp_path):
    write_tiny_stl10(tmp_path)
    x = tmp_path / "stl10_binary" / "test_X.bin"
    x.write_bytes(x.read_bytes()[:-100])
    with pytest.raises(InputFileError, match="test_X.bin.*not a whole number"):
        load_stl10(tmp_path, "test")
    with pytest.raises(ValueError, match="unknown STL-10 split"):
        load_stl10(tmp_path, "validation")


def test_writer_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="needs labels"):
        write_stl10_split(tmp_path, "train", np.zeros((2, 96, 96, 3), np.uint8))
    with pytest.raises(ValueError, match=r"\(N, 96, 96, 3\) uint8"):
        write_stl10_split(tmp_path, "unlabeled", np.zeros((2, 3, 96, 96), np.uint8))
