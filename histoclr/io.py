"""Atomic writes: a killed process never leaves a half-written file under the final name."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Callable, Iterator


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; rename it onto ``path`` on success.

    The temporary name keeps the target's suffix so that writers that choose the format
    from the extension (PIL, matplotlib, torch) behave the same.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def atomic_save(path: str | os.PathLike, save: Callable[[Path], None]) -> None:
    """Call ``save(tmp_path)`` and atomically move the result to ``path``."""
    with atomic_path(path) as tmp:
        save(tmp)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def load_tagged_torch_file(path: str | os.PathLike, fmt: str, version: int, what: str,
                           hint: str) -> dict:
    """Load a ``torch.save``d dict tagged ``{"format": fmt, "version": version, ...}`` (CPU, weights only).

    Raises:
        histoclr.errors.InputFileError: missing or unreadable file, another format (``hint`` says
            how to get the right one), or another version; the message names the file.
    """
    import torch

    from histoclr.errors import InputFileError

    path = Path(path)
    if not path.is_file():
        raise InputFileError(path, f"{what} not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for truncated/foreign files
        raise InputFileError(path, f"cannot read {what} ({str(e).splitlines()[0]})") from None
    if not isinstance(payload, dict) or payload.get("format") != fmt:
        raise InputFileError(path, f"not a histoclr {what} ({hint})")
    if payload.get("version") != version:
        raise InputFileError(path, f"{what} version {payload.get('version')} is not supported")
    return payload
