"""Every relative link in the README and docs/ reaches a file of the repository, and its #anchor a heading
there: a page renamed or a heading reworded would otherwise leave a reader at a dead link."""

import re
from collections import Counter
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def prose_lines(page: Path) -> list[str]:
    """The page's lines outside fenced code blocks (a '# comment' in a shell block is no heading)."""
    lines, fenced = [], False
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced:
            lines.append(line)
    return lines


def heading_anchors(page: Path) -> set[str]:
    """The anchors GitHub gives the page's headings: lower case, punctuation dropped, spaces to hyphens, a
    repeated heading suffixed -1, -2, ..."""
    anchors: set[str] = set()
    seen: Counter[str] = Counter()
    for line in prose_lines(page):
        match = re.match(r"#{1,6}\s+(.+?)\s*#*\s*$", line)
        if not match:
            continue
        slug = re.sub(r"[^\w\- ]", "", match.group(1).lower()).replace(" ", "-")
        anchors.add(f"{slug}-{seen[slug]}" if seen[slug] else slug)
        seen[slug] += 1
    return anchors


def test_heading_anchors_follow_githubs_rule(tmp_path) -> None:
    page = tmp_path / "page.md"
    page.write_text("# Data (`rooms.py`, `data.py`)\n```bash\n# not a heading\n```\n## Notes\n## Notes\n")
    assert heading_anchors(page) == {"data-roomspy-datapy", "notes", "notes-1"}


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_relative_links_reach_a_file_and_heading(page: Path) -> None:
    dead = []
    for line in prose_lines(page):
        for link in LINK.findall(line):
            if re.match(r"[a-z]+:", link):  # https:, mailto:
                continue
            path, _, anchor = link.partition("#")
            target = (page.parent / path).resolve() if path else page
            if not target.exists():
                dead.append(f"{link} (no file {target})")
            elif anchor and target.suffix == ".md" and anchor not in heading_anchors(target):
                dead.append(f"{link} (no heading of {target.name} has that anchor)")
    assert not dead, f"{page.relative_to(REPO)}: dead links: {dead}"
