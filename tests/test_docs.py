"""Every citation of a ``docs/`` page in the code, the tests and the benchmarks names a section that exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
SOURCES = sorted(p for folder in ("src", "tests", "benchmarks") for p in (ROOT / folder).rglob("*.py"))

NUMBER = r"\d+(?:\.\d+)*"
REF = rf"(?:{NUMBER}|O\d+|oracle \d+|section {NUMBER})"
CITATION = re.compile(rf"docs/(\w+)\.md((?: {REF}(?:(?:-| and ){NUMBER})?)?)")


def anchor(ref: str) -> str:
    """The HTML anchor a reference points at: ``6.5`` -> ``sec-6.5``, ``O6`` -> ``o6``, ``oracle 5`` -> ``oracle-5``."""
    if ref.startswith("O"):
        return "o" + ref[1:]
    if ref.startswith("oracle "):
        return "oracle-" + ref.split()[1]
    return "sec-" + ref.removeprefix("section ")


def citations() -> list[tuple[str, str, list[str]]]:
    """``(where, page, anchors)`` for every ``docs/<page>.md [ref]`` in the Python sources."""
    found = []
    for path in SOURCES:
        text = path.read_text(encoding="utf-8")
        for match in CITATION.finditer(text):
            page, tail = match.group(1), match.group(2).strip()
            line = text.count("\n", 0, match.start()) + 1
            refs = re.split(r"-| and ", tail) if tail else []
            found.append((f"{path.relative_to(ROOT)}:{line}", page, [anchor(r) for r in refs]))
    return found


def test_the_sources_cite_the_docs_pages():
    pages = {page for _, page, _ in citations()}
    assert {"solvers", "likelihood", "bfn"} <= pages


@pytest.mark.parametrize(("where", "page", "anchors"), citations(), ids=lambda v: v if isinstance(v, str) else None)
def test_cited_section_exists(where, page, anchors):
    doc = DOCS / f"{page}.md"
    assert doc.is_file(), f"{where} cites docs/{page}.md, which does not exist"
    text = doc.read_text(encoding="utf-8")
    for name in anchors:
        assert f'<a id="{name}"></a>' in text, f"{where} cites {name!r}, which docs/{page}.md does not define"


def test_links_between_docs_pages_resolve():
    for doc in sorted(DOCS.glob("*.md")):
        for target in re.findall(r"\]\(([\w.-]+\.md)\)", doc.read_text(encoding="utf-8")):
            assert (DOCS / target).is_file(), f"{doc.name} links to missing {target}"


def test_the_readme_layout_names_every_module():
    """README's "Layout" block names every package and module of ``src/bfn`` (``pkg/`` or ``name.py``)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = readme.split("## Layout", 1)[1].split("```", 2)[1]
    package = ROOT / "src" / "bfn"
    expected = [f"src/bfn/{p.name}/" for p in package.iterdir() if (p / "__init__.py").is_file()]
    expected += [f"src/bfn/{p.name}" for p in package.glob("*.py") if p.name not in ("__init__.py", "__main__.py")]
    for folder in (p for p in package.iterdir() if (p / "__init__.py").is_file()):
        expected += [p.name for p in folder.glob("*.py") if p.name != "__init__.py"]
    assert [name for name in expected if name not in block] == []
