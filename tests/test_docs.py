"""The README and docs/ stay true: the two commands CI relies on, the example taken verbatim from
the shipped files, and every relative link and anchor resolving."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import ROOT

README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
EXAMPLE = ROOT / "examples" / "my_experiment"
# [text](target) and ![alt](target); a target is cut at its first space (an optional title).
_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)[^)]*\)")


def blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", text, re.S | re.M)


def section(text: str, heading: str) -> str:
    return text.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]


def test_the_quickstart_is_the_two_commands_and_ci_runs_the_test_one() -> None:
    quickstart = section(README.read_text(), "Quickstart")
    commands = [line.split("#")[0].strip() for line in blocks(quickstart, "bash")[0].splitlines()]
    assert commands == ["make sweep", "make test"]
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert "make test" in ci


def _code(line: str) -> str:
    """A line without its trailing comment (none of the example's strings holds a '#')."""
    return line.split("  #")[0].rstrip()


def test_the_readme_sweep_file_is_the_shipped_one() -> None:
    shown = blocks(section(README.read_text(), "A sweep of your own"), "yaml")[0].splitlines()
    shipped = (EXAMPLE / "wine.yaml").read_text().splitlines()
    assert shown == [line for line in shipped if not line.startswith("#")]


def test_the_readme_experiment_is_the_shipped_class_without_imports_and_comments() -> None:
    shown = blocks(section(README.read_text(), "A sweep of your own"), "python")[0].splitlines()
    source = (EXAMPLE / "wine.py").read_text().splitlines()
    body = source[next(i for i, line in enumerate(source) if line.startswith("class WineMLP")) :]
    kept = [
        _code(line)
        for line in body
        if not line.strip().startswith(("#", "from ", "import ")) and line.strip()
    ]
    assert [line for line in shown if line.strip()] == kept


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.S | re.M)  # code is not headings
    return {slug(m.group(1)) for m in re.finditer(r"^#+ (.+)$", text, re.M)}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page: Path) -> None:
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.S | re.M)
    broken = []
    for target in _LINK.findall(text):
        if re.match(r"[a-z]+:", target):
            continue  # http(s), mailto: not checked here
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target}: no {file}")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{target}: no heading #{anchor} in {file.name}")
    assert not broken, broken


def test_every_docs_page_is_linked_from_the_readme() -> None:
    linked = {Path(t.partition("#")[0]).name for t in _LINK.findall(README.read_text())}
    assert {p.name for p in PAGES[1:]} <= linked
