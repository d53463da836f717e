"""What a fine-tuning run is called: ``init=... freeze=... labels=... seed=...`` (MLflow run names,
sweep cells, report rows), and what its init is for a result (a snapshot by its sha256). Plain
strings and file hashes; imports nothing heavy."""

from __future__ import annotations

import functools
from pathlib import Path

from histoclr.errors import InputFileError
from histoclr.io import sha256_file


def display_init(init: str) -> str:
    """``simclr:<file name>`` for a backbone path (``simclr:<run id>`` stays), else the init."""
    return f"simclr:{Path(init.split(':', 1)[1]).name}" if init.startswith("simclr:") else init


def budget_label(label_fraction: float | None, num_labeled: int | None) -> str:
    """``3img`` for a budget in images, ``50%`` for a fraction, ``all`` for neither."""
    if num_labeled is not None:
        return f"{int(num_labeled)}img"
    return "all" if label_fraction is None else f"{float(label_fraction) * 100:g}%"


def finetune_run_name(init: str, freeze: str, label_fraction: float | None, num_labeled: int | None,
                      seed: int) -> str:
    """``init=simclr:backbone.pt freeze=layer1-2 labels=50% seed=0``."""
    return (f"init={display_init(init)} freeze={freeze} labels={budget_label(label_fraction, num_labeled)} "
            f"seed={seed}")


def init_sha256(init: str) -> str | None:
    """sha256 of the backbone file of ``simclr:<file>`` (read once per file version in a process);
    None for inits without a file (random, imagenet)."""
    if not init.startswith("simclr:"):
        return None
    path = Path(init.split(":", 1)[1])
    try:
        st = path.stat()
    except FileNotFoundError:
        raise InputFileError(path, "backbone file not found") from None    # as loading it says
    except OSError as e:
        raise InputFileError(path, f"backbone file not readable ({e.strerror})") from None
    return _sha256_cached(str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


@functools.lru_cache(maxsize=64)
def _sha256_cached(path: str, size: int, mtime_ns: int, ctime_ns: int, inode: int) -> str:
    return sha256_file(path)


def init_identity(init: str) -> str:
    """What an init is for a result: ``simclr-sha256:<hex>`` for a backbone file (its weights, not its
    path, so a moved checkout or a copied snapshot is the same start), else the init itself."""
    sha = init_sha256(init)
    return init if sha is None else f"simclr-sha256:{sha}"
