"""The docs-section writer replaces its own section and keeps the others."""

from __future__ import annotations

from histoclr.docs_sections import write_section


def test_section_is_appended_then_replaced_in_place(tmp_path):
    doc = tmp_path / "results.md"
    doc.write_text("# Results\n\nintro\n")
    write_section("A", "first body", "cmd a", machine="m", doc=doc)
    write_section("B", "b body", "cmd b", machine="m", doc=doc)
    write_section("A", "second body", "cmd a2", machine="m", doc=doc)
    text = doc.read_text()
    assert text.startswith("# Results\n\nintro\n")
    assert "first body" not in text and text.count("<!-- BEGIN A -->") == 1
    assert text.index("second body") < text.index("b body")  # A stays where it was
    assert "Command: `cmd a2`  \nMachine: m  \n" in text
