"""histoclr.io: atomic writes that fail in one line, output folders, tagged torch files."""

from __future__ import annotations

import os
import zipfile

import pytest
import torch

from histoclr.errors import InputFileError, OutputFileError
from histoclr.io import (
    atomic_write_text,
    check_output_dir,
    ensure_output_dir,
    load_tagged,
    save_tagged,
)

FMT, WHAT, HINT = "histoclr-backbone", "backbone file", "write one with `histoclr pretrain`"


def test_save_and_load_round_trip(tmp_path):
    path = save_tagged(tmp_path / "a" / "b.pt", FMT, 1, {"w": torch.arange(3.0), "meta": {"k": "v"}})
    got = load_tagged(path, FMT, 1, WHAT, HINT)
    assert got["format"] == FMT and got["version"] == 1 and torch.equal(got["w"], torch.arange(3.0))
    assert [p.name for p in path.parent.iterdir()] == ["b.pt"]      # no temporary file left


@pytest.mark.parametrize("content,expected", [
    (b"", "empty file; expected a backbone file; write one with `histoclr pretrain`"),
    (os.urandom(5000), "not a backbone file: not a complete PyTorch file (5000 bytes; truncated, or another kind of file)"),
    (b"hello\n", "not a backbone file: not a complete PyTorch file (6 bytes;"),
])
def test_foreign_files_are_one_line_naming_file_and_expectation(tmp_path, content, expected):
    path = tmp_path / "x.pt"
    path.write_bytes(content)
    with pytest.raises(InputFileError) as e:
        load_tagged(path, FMT, 1, WHAT, HINT)
    assert str(e.value).startswith(f"{path}: ") and expected in str(e.value) and "\n" not in str(e.value)


def test_truncated_other_format_and_versions(tmp_path):
    good = save_tagged(tmp_path / "good.pt", FMT, 1, {"w": torch.randn(1000)})
    data = good.read_bytes()
    (tmp_path / "half.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputFileError, match="not a complete PyTorch file"):
        load_tagged(tmp_path / "half.pt", FMT, 1, WHAT, HINT)
    with pytest.raises(InputFileError, match=r"this is a histoclr backbone file \(backbone.pt of "
                                             r"`histoclr pretrain`\), not a SimCLR checkpoint; use last.pt"):
        load_tagged(good, "histoclr-ssl-checkpoint", 1, "SimCLR checkpoint", "use last.pt")
    torch.save({"state_dict": {}}, tmp_path / "plain.pt")
    with pytest.raises(InputFileError, match="not a histoclr backbone file .*without the 'histoclr-backbone' tag"):
        load_tagged(tmp_path / "plain.pt", FMT, 1, WHAT, HINT)
    with pytest.raises(InputFileError, match="version 1 is no longer supported .*reads version 2"):
        load_tagged(good, FMT, 2, WHAT, HINT)
    newer = save_tagged(tmp_path / "new.pt", FMT, 3, {})
    with pytest.raises(InputFileError, match="version 3 was written by a newer histoclr"):
        load_tagged(newer, FMT, 2, WHAT, HINT)
    up = load_tagged(good, FMT, 2, WHAT, HINT, upgrades={1: lambda p: {**p, "version": 2, "new": 1}})
    assert up["new"] == 1
    with pytest.raises(InputFileError, match="backbone file not found"):
        load_tagged(tmp_path / "missing.pt", FMT, 1, WHAT, HINT)
    with pytest.raises(InputFileError, match="is a folder; expected a backbone file"):
        load_tagged(tmp_path, FMT, 1, WHAT, HINT)
    assert zipfile.is_zipfile(good)


def test_disk_full_names_the_path_and_keeps_the_previous_file(small_disk):
    disk = small_disk("1m")
    path = disk / "ckpt.pt"
    save_tagged(path, FMT, 1, {"w": torch.zeros(100_000)})            # 400 KB: fits
    before = path.read_bytes()
    with pytest.raises(OutputFileError) as e:
        save_tagged(path, FMT, 1, {"w": torch.ones(200_000)})          # 800 KB more: does not
    assert str(e.value) == (f"{path}: cannot write (No space left on device); the previous ckpt.pt "
                            "is kept; free some space and run again")
    assert path.read_bytes() == before and sorted(p.name for p in disk.iterdir()) == ["ckpt.pt"]
    with pytest.raises(OutputFileError, match="No space left on device"):
        atomic_write_text(disk / "big.txt", "x" * 2_000_000)
    assert not (disk / "big.txt").exists()


def test_output_folders_are_checked_in_one_line(tmp_path, readonly_dir):
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(OutputFileError, match=f"^{afile}/sub: cannot create the output folder: "
                                              f"{afile} is a file, not a folder$"):
        ensure_output_dir(afile / "sub")
    with pytest.raises(OutputFileError, match=f"^{afile}: cannot create the output folder: {afile} is a file"):
        ensure_output_dir(afile)
    with pytest.raises(OutputFileError, match=r"^/proc/histoclr-x: cannot create the output folder \("):
        ensure_output_dir("/proc/histoclr-x")
    with pytest.raises(OutputFileError, match=f"^{readonly_dir}/run: cannot create the output folder \\("):
        ensure_output_dir(readonly_dir / "run")
    with pytest.raises(OutputFileError, match=f"^{readonly_dir}: the output folder is not writable \\("):
        ensure_output_dir(readonly_dir)
    check_output_dir(tmp_path / "new" / "deeper")                       # fine, and leaves nothing
    assert not (tmp_path / "new").exists()
    assert ensure_output_dir(tmp_path / "made").is_dir()
    assert list((tmp_path / "made").iterdir()) == []


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600)])
def test_atomic_writes_get_the_mode_of_a_plain_file(tmp_path, monkeypatch, umask, mode):
    """Not mkstemp's 0600: a result in a shared folder is readable as any file the user writes."""
    monkeypatch.setattr("histoclr.io._UMASK", umask)  # the umask the process started with
    atomic_write_text(tmp_path / "result.json", "{}")
    assert (tmp_path / "result.json").stat().st_mode & 0o777 == mode


def test_atomic_copy_copies_and_a_failed_copy_keeps_the_old_file(tmp_path):
    from histoclr.io import atomic_copy

    src, dst = tmp_path / "src.png", tmp_path / "out" / "dst.png"
    dst.parent.mkdir()
    dst.write_bytes(b"old")
    src.write_bytes(b"new picture")
    atomic_copy(src, dst)
    assert dst.read_bytes() == b"new picture"
    with pytest.raises(FileNotFoundError):
        atomic_copy(tmp_path / "missing.png", dst)
    assert dst.read_bytes() == b"new picture" and list(dst.parent.iterdir()) == [dst]
