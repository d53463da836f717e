"""One versioned-CSV rule for every manifest: version line, columns, ragged rows, no rows."""

from __future__ import annotations

import pytest

from histoclr.manifests.csvfile import ManifestError, format_rows, read_rows
from histoclr.manifests.data import DATA
from histoclr.manifests.pairs import PAIRS
from histoclr.manifests.tiles import TILES, read_tile_manifest

FORMATS = [TILES, PAIRS, DATA]


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f.kind)
def test_round_trip_keeps_rows_and_line_numbers(tmp_path, fmt):
    rows = [{c: f"{c}{i}" for c in fmt.columns} for i in range(2)]
    p = tmp_path / "m.csv"
    p.write_text(format_rows(fmt, rows))
    assert p.read_text().splitlines()[:2] == [f"# histoclr-{fmt.kind} v{fmt.version}", ",".join(fmt.columns)]
    assert read_rows(fmt, p) == [(3, rows[0]), (4, rows[1])]


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f.kind)
@pytest.mark.parametrize("text,message", [
    ("{header}\n{row}\n", "not a histoclr {what} (first line should be '# histoclr-{kind} v1'"),
    ("# histoclr-{kind} v9\n{header}\n{row}\n",
     "{what} format version 9 is not supported (this histoclr reads version 1); re-run `histoclr"),
    ("# histoclr-{kind} v1\nfoo\n1\n", "missing column(s): "),
    ("# histoclr-{kind} v1\n{header}\n{row}\na\n", "line 4: wrong number of fields"),
    ("# histoclr-{kind} v1\n{header}\n", "{what} lists no "),
])
def test_every_format_is_strict_in_the_same_way(tmp_path, fmt, text, message):
    header = ",".join(fmt.columns)
    row = ",".join("x" for _ in fmt.columns)
    p = tmp_path / "m.csv"
    p.write_text(text.format(header=header, row=row, kind=fmt.kind))
    with pytest.raises(ManifestError) as e:
        read_rows(fmt, p)
    assert str(e.value).startswith(f"{p}: ") and message.format(what=fmt.what, kind=fmt.kind) in str(e.value)
    assert "\n" not in str(e.value)


def test_missing_file_names_the_format(tmp_path):
    with pytest.raises(ManifestError, match="tile manifest not found"):
        read_tile_manifest(tmp_path)


def test_tile_values_are_checked_with_the_line(tmp_path):
    row = {c: "0" for c in TILES.columns} | {"slide_id": "s", "slide_path": "s.svs", "tile_path": "t.png"}
    p = tmp_path / "tiles.csv"
    p.write_text(format_rows(TILES, [row, row | {"level": "one"}]))
    with pytest.raises(ManifestError, match="line 4: column 'level' must hold integers, not 'one'"):
        read_tile_manifest(p)
    p.write_text(format_rows(TILES, [row | {"mpp": "0.5", "tissue_fraction": "0.75"}]))
    df = read_tile_manifest(tmp_path)
    assert str(df["x"].dtype) == "int64" and str(df["mpp"].dtype) == "float64"
    assert df["tissue_fraction"].tolist() == [0.75] and df["tile_path"][0] == str((tmp_path / "t.png").resolve())
