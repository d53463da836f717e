"""Write a named section of docs/benchmarks.md or docs/results.md, keeping the other sections.

Each benchmark (``benchmarks/``) and each recipe that reports a real run (``pipelines/``) owns one
section, delimited by ``<!-- BEGIN name -->`` / ``<!-- END name -->``, with the exact command, the
machine and the date; re-running the command replaces its section only.
"""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

from histoclr.io import atomic_write_text
from histoclr.tracking import machine_description

DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
RESULTS = DOC.parent / "results.md"
RESULTS_HEADER = "# Results\n\nReal runs on the shared MoNuSeg/SVS data; each section names its exact command and machine.\n"
HEADER = "# Benchmarks\n\nEach section is written by the script it names; re-run the command to refresh it.\n"


def write_section(name: str, body: str, command: str, machine: str | None = None,
                  doc: Path = DOC) -> Path:
    """Replace (or append) the section ``name`` of ``doc`` (docs/benchmarks.md by default)."""
    text = doc.read_text() if doc.exists() else (HEADER if doc == DOC else RESULTS_HEADER)
    section = (f"<!-- BEGIN {name} -->\n## {name}\n\n"
               f"Command: `{command}`  \nMachine: {machine or machine_description()}  \n"
               f"Date: {date.today().isoformat()}\n\n{body.rstrip()}\n<!-- END {name} -->\n")
    pattern = re.compile(rf"<!-- BEGIN {re.escape(name)} -->.*?<!-- END {re.escape(name)} -->\n?", re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: section, text)
    else:
        text = text.rstrip() + "\n\n" + section
    atomic_write_text(doc, text)
    return doc
