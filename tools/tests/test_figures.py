"""Every chapter's diagrams: enough of them, each embedded in a notebook, each a well-formed SVG.

The targets (issue 25) follow the book's concept coverage: at least 10 diagrams per main chapter
and 6 per bonus chapter. A figure that no notebook embeds is an orphan; a link to a figure that
does not exist is a broken image on the page."""

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import nbformat
import pytest

from tools.notebook_stamp import REPO_ROOT, chapter_packages

LINK = re.compile(r"\]\((figures/[^)\s]+)\)|src=[\"'](figures/[^\"']+)[\"']")
MINIMUM = {"main": 10, "bonus": 6}


def embedded(pkg: str) -> set[str]:
    found = set()
    for path in (REPO_ROOT / pkg).glob("*.ipynb"):
        for cell in nbformat.read(path, as_version=4).cells:
            if cell.cell_type == "markdown":
                found.update(a or b for a, b in LINK.findall(cell.source))
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")  # the chat page's screenshot
    found.update(m[len(pkg) + 1:] for m in re.findall(rf"\]\(({pkg}/figures/[^)\s]+)\)", readme))
    return found


@pytest.mark.parametrize("pkg", chapter_packages())
def test_every_figure_is_embedded_and_every_link_resolves(pkg):
    on_disk = {f"figures/{p.name}" for p in (REPO_ROOT / pkg / "figures").glob("*") if p.suffix in {".svg", ".png"}}
    links = embedded(pkg)
    assert not on_disk - links, f"{pkg}: figures no notebook embeds: {sorted(on_disk - links)}"
    assert not links - on_disk, f"{pkg}: notebooks link to missing figures: {sorted(links - on_disk)}"


@pytest.mark.parametrize("pkg", chapter_packages())
def test_enough_diagrams_each_a_well_formed_svg(pkg):
    svgs = sorted((REPO_ROOT / pkg / "figures").glob("*.svg"))
    need = MINIMUM["bonus" if pkg.startswith("bonus_") else "main"]
    assert len(svgs) >= need, f"{pkg} has {len(svgs)} SVG diagrams; the target is at least {need}"
    for svg in svgs:
        root = ET.parse(svg).getroot()  # raises on malformed XML
        assert root.tag.endswith("svg") and root.get("viewBox"), f"{svg.name}: no <svg viewBox=...> root"
        assert Path(svg).stat().st_size < 60_000, f"{svg.name} is {svg.stat().st_size} bytes; keep diagrams small"
