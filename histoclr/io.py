"""Files: atomic writes, output folders, and the tagged ``torch.save`` files of every stage.

* Atomic writes: a killed process never leaves a half-written file under the final name, and a
  failed write (disk full, permissions) is one :class:`OutputFileError` naming the path and the
  cause; the previous file under that name is kept.
* :func:`ensure_output_dir` / :func:`check_output_dir`: an output folder is created (or probed)
  and checked for writability before any expensive work.
* :func:`save_tagged` / :func:`load_tagged`: the one save/load pair of every checkpoint format
  (backbone, SimCLR checkpoint, segmentation model, fine-tuning state): a dict tagged
  ``{"format": ..., "version": ...}``; reading anything else is one :class:`InputFileError` that
  names the file, what was expected and how to get it.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import pickle
import tempfile
import zipfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from histoclr.errors import InputFileError, OutputFileError

# format tag -> what it is (for "this is a ..., not a ..." messages)
FORMAT_NAMES = {
    "histoclr-backbone": "histoclr backbone file (backbone.pt of `histoclr pretrain`)",
    "histoclr-ssl-checkpoint": "histoclr SimCLR checkpoint (checkpoints/last.pt of `histoclr pretrain`)",
    "histoclr-seg-model": "histoclr segmentation model (best.pt of `histoclr finetune-seg`)",
    "histoclr-finetune-state": "histoclr fine-tuning state (last.pt of `histoclr finetune-seg`)",
}


def _a(what: str) -> str:
    return f"{'an' if what[:1].lower() in 'aeiou' else 'a'} {what}"


def _reason(e: OSError) -> str:
    return e.strerror or str(e) or type(e).__name__


def _os_error_of(e: BaseException) -> OSError | None:
    """The ``OSError`` with an errno that caused ``e`` (``e`` itself, or in its chain)."""
    seen = 0
    while e is not None and seen < 10:
        if isinstance(e, OSError) and e.errno is not None:
            return e
        e, seen = e.__cause__ or e.__context__, seen + 1
    return None


# --------------------------------------------------------------------------- folders
def _first_file_ancestor(path: Path) -> Path | None:
    for p in [path, *path.parents]:
        if p.exists() and not p.is_dir():
            return p
    return None


def ensure_output_dir(path: str | os.PathLike, what: str = "output folder") -> Path:
    """Create ``path`` (and its parents) and check that a file can be written in it.

    Raises:
        OutputFileError: one line naming the folder and why (a file in the way, no permission,
            read-only or full file system, ...).
    """
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        blocker = _first_file_ancestor(path)
        if blocker is not None:
            raise OutputFileError(path, f"cannot create the {what}: {blocker} is a file, not a folder") from None
        raise OutputFileError(path, f"cannot create the {what} ({_reason(e)})") from None
    try:
        fd, probe = tempfile.mkstemp(prefix=".histoclr-write-test.", dir=path)
        try:
            os.write(fd, b"x")
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as e:
        raise OutputFileError(path, f"the {what} is not writable ({_reason(e)})") from None
    return path


def check_output_dir(path: str | os.PathLike, what: str = "output folder") -> None:
    """:func:`ensure_output_dir`, then remove the folders it created (nothing is left behind)."""
    path = Path(path)
    missing = [p for p in [path, *path.parents] if not p.exists()]
    try:
        ensure_output_dir(path, what)
    finally:
        for p in missing:                      # deepest first
            with contextlib.suppress(OSError):
                p.rmdir()


# --------------------------------------------------------------------------- atomic writes
def _read_umask() -> int:
    """The process's umask (read by setting it and putting it back: done once, at import, so that no
    other thread ever creates a file under the temporary value)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; rename it onto ``path`` on success.

    The temporary name keeps the target's suffix so that writers that choose the format from the
    extension (PIL, matplotlib, torch) behave the same. An ``OSError`` while writing the
    temporary file becomes an :class:`OutputFileError` naming ``path``; ``path`` is untouched.
    """
    path = Path(path)
    if not path.parent.is_dir():
        ensure_output_dir(path.parent, "folder")
    existed = path.exists()
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
        os.close(fd)
    except OSError as e:
        raise OutputFileError(path, f"cannot write ({_reason(e)})", _reason(e)) from None
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_UMASK)   # mkstemp makes it 0600: give it a plain file's mode
        os.replace(tmp_path, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        e = _os_error_of(e) or e     # torch wraps a failed write in a RuntimeError
        if isinstance(e, OSError) and e.filename in (None, str(tmp_path), str(path)):
            kept = f"; the previous {path.name} is kept" if existed else ""
            hint = "; free some space and run again" if e.errno in (errno.ENOSPC, errno.EDQUOT) else ""
            raise OutputFileError(path, f"cannot write ({_reason(e)}){kept}{hint}", _reason(e)) from None
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def atomic_save(path: str | os.PathLike, save: Callable[[Path], None]) -> None:
    """Call ``save(tmp_path)`` and atomically move the result to ``path``."""
    with atomic_path(path) as tmp:
        save(tmp)


def atomic_copy(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Copy the file ``src`` to ``dst`` atomically: an interrupted copy leaves the old ``dst``."""
    import shutil

    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


# --------------------------------------------------------------------------- tagged torch files
def save_tagged(path: str | os.PathLike, fmt: str, version: int, payload: Mapping[str, Any]) -> Path:
    """Atomically ``torch.save`` ``{"format": fmt, "version": version, **payload}`` to ``path``.

    Written through a Python file object, so a full disk is an ``OSError`` (ENOSPC) that becomes
    one :class:`OutputFileError` naming ``path`` and the cause; the previous file is kept.
    """
    import torch  # heavy; io is also used by torch-free stages (tile, seg-data)

    data = {"format": fmt, "version": int(version), **payload}
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(data, f)
        f.flush()
        os.fsync(f.fileno())
    return Path(path)


def load_tagged(path: str | os.PathLike, fmt: str, version: int, what: str, hint: str, *,
                upgrades: Mapping[int, Callable[[dict], dict]] | None = None, mmap: bool = False) -> dict:
    """Load a file written by :func:`save_tagged` with format ``fmt`` (CPU, weights only).

    ``what`` names the expected file ("backbone file"), ``hint`` says how to get one.
    ``upgrades[v](payload) -> payload`` reads an older version ``v`` (the result must be ``version``).
    ``mmap=True`` maps the tensors' storage instead of reading it: cheap when only the small entries
    (the metadata) are wanted.

    Raises:
        histoclr.errors.InputFileError: one line naming the file and what was expected, whatever
            the file holds (missing, empty, random bytes, truncated, another histoclr format,
            another version).
    """
    payload = read_torch_file(path, what, hint, mmap=mmap)
    other = payload.get("format") if isinstance(payload, dict) else None
    if other != fmt:
        if other in FORMAT_NAMES:
            raise InputFileError(path, f"this is a {FORMAT_NAMES[other]}, not a {what}; {hint}")
        raise InputFileError(path, f"not a histoclr {what} (a PyTorch file without the "
                                   f"{fmt!r} tag); {hint}")
    got = payload.get("version")
    if got != version and upgrades and got in upgrades:
        payload = upgrades[got](payload)
        got = payload.get("version")
    if got != version:
        if isinstance(got, int) and got > version:
            raise InputFileError(path, f"{what} version {got} was written by a newer histoclr (this one "
                                       f"reads version {version}); upgrade histoclr")
        raise InputFileError(path, f"{what} version {got} is no longer supported (this histoclr reads "
                                   f"version {version}); {hint}")
    return payload


def read_torch_file(path: str | os.PathLike, what: str, hint: str, *, mmap: bool = False) -> Any:
    """``torch.load`` (CPU, weights only; ``mmap``: storage mapped, not read) with one
    :class:`InputFileError` naming the file and what was expected for a missing, empty, truncated
    or foreign file (tagged or not)."""
    import torch  # heavy; see save_tagged

    path = Path(path)
    if path.is_dir():
        raise InputFileError(path, f"is a folder; expected {_a(what)}; {hint}")
    if not path.is_file():
        raise InputFileError(path, f"{what} not found")
    size = path.stat().st_size
    if size == 0:
        raise InputFileError(path, f"empty file; expected {_a(what)}; {hint}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as e:  # noqa: BLE001  torch raises many types for foreign/truncated files
        if not zipfile.is_zipfile(path):
            raise InputFileError(path, f"not {_a(what)}: not a complete PyTorch file ({size} bytes; "
                                       f"truncated, or another kind of file); {hint}") from None
        detail = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        if isinstance(e, pickle.UnpicklingError) and "weights_only" in str(e):
            detail = "it holds Python objects that weights-only loading refuses"
        raise InputFileError(path, f"cannot read the {what}: corrupt or foreign PyTorch file "
                                   f"({detail}); {hint}") from None
    return payload
