"""The versioned CSV file every histoclr manifest is, with one strictness rule.

A manifest's first line is ``# histoclr-<kind> v<N>``, then a CSV header and one row per item.
Reading it (:func:`read_rows`) is strict in one way for every kind:

- the first line must name the kind, and its version must be the one this histoclr reads
  (anything else is a one-line error that says what to do);
- the header must hold every column of the format (extra columns are kept);
- every row must have as many fields as the header, and there must be at least one row;
- each format then checks its values row by row, naming the file and the line.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from histoclr.errors import InputFileError


class ManifestError(InputFileError):
    """A manifest that cannot be used (wrong kind or version, missing columns, bad values)."""


@dataclass(frozen=True)
class CsvFormat:
    """One manifest format: its kind and version (the first line), columns and wording.

    ``what`` names the file in messages ("tile manifest"), ``items`` its rows ("tiles"),
    ``remedy`` says what to do about a version this histoclr does not read.
    """

    kind: str
    version: int
    columns: tuple[str, ...]
    what: str
    items: str
    remedy: str = ""

    @property
    def first_line(self) -> str:
        return f"# histoclr-{self.kind} v{self.version}"


def format_rows(fmt: CsvFormat, rows: Iterable[Mapping]) -> str:
    """The text of a manifest: the version line, the header and ``rows`` (extra keys ignored)."""
    buf = io.StringIO()
    buf.write(fmt.first_line + "\n")
    w = csv.DictWriter(buf, fieldnames=fmt.columns, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow(r)
    return buf.getvalue()


def read_rows(fmt: CsvFormat, path: str | Path) -> list[tuple[int, dict[str, str]]]:
    """Read ``path`` by the rule above; ``[(line number, row)]`` with the values as strings.

    Raises:
        ManifestError: missing file, another kind or version, missing columns, a ragged row or
            no rows, naming the file (and the line).
    """
    path = Path(path)
    if not path.is_file():
        raise ManifestError(path, f"{fmt.what} not found")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ManifestError(path, f"cannot read {fmt.what} ({e})") from None
    first, _, body = text.partition("\n")
    first = first.strip()
    magic = fmt.first_line[:-len(str(fmt.version))]
    if not first.startswith(magic):
        raise ManifestError(path, f"not a histoclr {fmt.what} (first line should be "
                            f"'{fmt.first_line}', found {first[:60]!r})")
    version = first[len(magic):].strip()
    if version != str(fmt.version):
        raise ManifestError(path, f"{fmt.what} format version {version} is not supported (this "
                            f"histoclr reads version {fmt.version})"
                            + (f"; {fmt.remedy}" if fmt.remedy else ""))
    reader = csv.DictReader(io.StringIO(body))
    try:
        header = reader.fieldnames or []
        missing = [c for c in fmt.columns if c not in header]
        if missing:
            raise ManifestError(path, f"missing column(s): {', '.join(missing)}")
        rows = []
        for row in reader:
            line = reader.line_num + 1  # +1 for the version line
            if None in row or any(v is None for v in row.values()):
                raise ManifestError(path, f"line {line}: wrong number of fields")
            rows.append((line, row))
    except csv.Error as e:
        raise ManifestError(path, f"cannot parse CSV ({e})") from None
    if not rows:
        raise ManifestError(path, f"{fmt.what} lists no {fmt.items}")
    return rows
