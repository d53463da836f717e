"""The README's layout section names every package folder and top-level module of histoclr."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_layout_lists_every_package_folder_and_module():
    readme = (REPO / "README.md").read_text()
    layout = readme[readme.index("## Layout"):]
    layout = layout[:layout.find("\n## ", 5)] if "\n## " in layout[5:] else layout
    pkg = REPO / "histoclr"
    names = [f"histoclr/{p.name}/" for p in sorted(pkg.iterdir()) if (p / "__init__.py").is_file()]
    names += [f"histoclr/{p.name}" for p in sorted(pkg.glob("*.py"))
              if p.name not in ("__init__.py", "__main__.py")]
    names += [f"{d}/" for d in ("pipelines", "benchmarks", "configs", "data_manifests", "docker", "docs", "tests")]
    missing = [n for n in names if n not in layout]
    assert not missing, f"README layout does not mention {missing}"
