"""Slide discovery: files, folders (recursive), CSV lists, unique ids, clear errors."""

from __future__ import annotations

import pytest

from histoclr.errors import HistoclrError
from histoclr.slides.inputs import find_slides


def _touch(p):
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(b"x")
    return p


def test_folder_recursive_csv_and_unique_ids(tmp_path):
    a = _touch(tmp_path / "d" / "a.svs")
    _touch(tmp_path / "d" / "notes.txt")
    _touch(tmp_path / "d" / ".hidden.svs")
    b = _touch(tmp_path / "d" / "sub" / "a.tif")         # same stem as a.svs
    c = _touch(tmp_path / "d" / "sub" / "c d.PNG")
    _touch(tmp_path / "d" / "dcm" / "1.dcm")
    _touch(tmp_path / "d" / "dcm" / "2.dcm")             # same DICOM series: one slide
    flat = find_slides([tmp_path / "d"])
    assert [s.path for s in flat] == [a]
    deep = find_slides([tmp_path / "d", a], recursive=True)   # a given twice: once
    assert sorted(s.path.name for s in deep) == ["1.dcm", "a.svs", "a.tif", "c d.PNG"]
    ids = [s.slide_id for s in deep]
    assert len(set(ids)) == 4 and "c_d" in ids and "1" in ids
    assert sum(i.startswith("a-") for i in ids) == 2         # clashing stems get a path hash
    assert ids == sorted(ids)
    lst = tmp_path / "list.csv"
    lst.write_text("path,organ\nd/sub/a.tif,x\n" + f"{c},y\n")
    assert [s.path.resolve() for s in find_slides([lst])] == [b.resolve(), c.resolve()]
    assert find_slides([lst])[0].slide_id == "a"  # unique within this run


@pytest.mark.parametrize("make, match", [
    (lambda t: [t / "missing.svs"], "no such file or folder"),
    (lambda t: [(t / "empty").mkdir() or t / "empty"], "no slide files found"),
    (lambda t: [], "no input given"),
])
def test_bad_inputs(tmp_path, make, match):
    with pytest.raises(HistoclrError, match=match):
        find_slides(make(tmp_path))


def test_csv_errors(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("file\na.svs\n")
    with pytest.raises(HistoclrError, match="'path' column"):
        find_slides([bad])
    gone = tmp_path / "gone.csv"
    gone.write_text("path\nnope.svs\n")
    with pytest.raises(HistoclrError, match="listed slide not found"):
        find_slides([gone])
