"""Numbers in the notebooks' prose that no output (or code) of the notebook shows.

    python -m tools.check_numbers [notebook ...] [--write-baseline]

A number the markdown quotes from a run goes stale when the run changes; one the reader cannot
find in any output cannot be checked. For each notebook this lists the numbers in markdown cells
that match no number in its outputs or code cells, at the precision written (3.85 matches an
output 3.848; 91.3% matches 0.913; 16.1M matches 16,140,000).

Not read as numbers: code spans, code blocks, LaTeX, links' targets, HTML tags, headings, section
and figure numbers ("section 5.3", "figure 2", and any number written as one of the chapter's
section headings is: "5.3"), versions (2.13.0, "PyTorch 2.4"), years (1900-2099 written alone),
whole numbers below 10, and numbers inside identifiers (ch05, fp32). A notebook's stamped wall
time counts as an output (in seconds and minutes).

Two lists explain the rest:
- tools/quoted_numbers.txt: numbers quoted from elsewhere (the book's published figures, a
  paper's) and constants (GPT-2's vocabulary size), one `<notebook or *> <number> <why>` a line,
  the number as written without spaces (124million);
- tools/numbers_baseline.txt: the findings known when this check came, each to be fixed by citing
  its cell or quoting it (the teaching pass). The test fails on a finding in neither list, and on
  a baseline line no longer found (remove it: the list only shrinks). `--write-baseline`
  rewrites the baseline from the current findings (read its diff before committing it).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import nbformat

from tools.notebook_stamp import REPO_ROOT, notebooks
from tools.output_numbers import Number, numbers, output_texts

QUOTED_FILE = "tools/quoted_numbers.txt"
BASELINE_FILE = "tools/numbers_baseline.txt"

_NOT_PROSE = [
    re.compile(r"```.*?```", re.S),  # code blocks
    re.compile(r"`[^`]*`"),  # code spans
    re.compile(r"\$\$.*?\$\$", re.S),  # display LaTeX
    re.compile(r"\$[^$\n]+\$"),  # inline LaTeX
    re.compile(r"\]\([^)]*\)"),  # link and image targets
    re.compile(r"https?://\S+"),
    re.compile(r"<[^>\n]+>"),  # HTML tags (their attributes: widths, ids)
    re.compile(r"^#+ .*$", re.M),  # headings: "## 5.3 Decoding"
    re.compile(r"(?i)\b(?:pytorch|torch|python|cuda|numpy|llama|phi|gemma|qwen)[ -]\d+(?:\.\d+)*"),  # versions
    re.compile(r"(?i)(?:\b(?:sections?|chapters?|figures?|fig\.|exercises?|cells?|tables?|equations?|eq\.|"
               r"appendix|steps? \d+ (?:and|to)|listings?)|§)\s*\d+(?:\.\d+)*"
               r"(?:\s*(?:[-–—,/]|and|or|to)\s*\d+(?:\.\d+)*)*"),
]


def prose(markdown: str) -> str:
    """The markdown with the parts not read as numbers (see the module docstring) blanked."""
    for pattern in _NOT_PROSE:
        markdown = pattern.sub(" ", markdown)
    return markdown


def counts(n: Number) -> bool:
    """Whether a number in prose is worth checking: not a year, not a whole number below 10 (with
    or without a suffix: the "8" of "8B")."""
    digits = re.match(r"[-−]?([\d,]+)(\.\d+|[eE])?", n.written)
    if digits[2]:
        return True
    whole = int(digits[1].replace(",", ""))
    return whole >= 10 and not (n.written.rstrip("%").isdigit() and 1900 <= whole <= 2099)


HEADING = re.compile(r"^#+\s*\**([A-Z]?\d*(?:\.\d+)+)\b", re.M)


def section_numbers(nbs: list[nbformat.NotebookNode]) -> set[str]:
    """Section numbers in the notebooks' headings: "## 5.3 Decoding" gives "5.3"."""
    return {m for nb in nbs for cell in nb.cells if cell.cell_type == "markdown" for m in HEADING.findall(cell.source)}


def key(n: Number) -> str:
    """A number as the list files write it: as in the text, without spaces (124million)."""
    return "".join(n.written.split())


def findings(nb: nbformat.NotebookNode, sections: set[str] = frozenset()) -> list[tuple[int, Number, str]]:
    """(markdown cell index, number, the words around it) for each unmatched number in prose."""
    seen = [n.value for cell in nb.cells if cell.cell_type == "code"
            for text in [*output_texts(cell), cell.source] for n in numbers(text)]
    wall = nb.metadata.get("stamp", {}).get("wall_time_s")
    if wall:
        seen += [wall, wall / 60]
    found = []
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "markdown":
            continue
        text = prose(cell.source)
        for n in numbers(text):
            if counts(n) and n.written not in sections and not any(n.matches(x) for x in seen):
                around = " ".join(text[:n.at].split()[-6:] + text[n.at:].split()[:5])  # whole words
                found.append((index, n, around))
    return found


def read_list(path: Path) -> set[tuple[str, str]]:
    """(notebook or *, number as written) from a list file: `<notebook> <number> <rest>` lines."""
    entries = set()
    if path.is_file():
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip() or line.startswith("#"):
                continue
            parts = line.split(maxsplit=2)
            if len(parts) < 3:
                raise ValueError(f"{path.name}:{number}: expected '<notebook> <number> <why or where>'")
            entries.add((parts[0], parts[1]))
    return entries


def unexplained(root: Path = REPO_ROOT, paths: list[Path] | None = None) -> dict[str, list[tuple[int, Number, str]]]:
    """{notebook: findings not quoted in tools/quoted_numbers.txt}, every notebook listed."""
    quoted = read_list(root / QUOTED_FILE)
    result = {}
    for path in paths if paths is not None else notebooks(root):
        name = path.as_posix()
        nb = nbformat.read(root / path, as_version=4)
        chapter = [nbformat.read(other, as_version=4) for other in sorted((root / path).parent.glob("*.ipynb"))]
        result[name] = [f for f in findings(nb, section_numbers(chapter))
                        if (name, key(f[1])) not in quoted and ("*", key(f[1])) not in quoted]
    return result


def baseline_lines(found: dict[str, list[tuple[int, Number, str]]]) -> list[str]:
    lines = []
    for name, items in found.items():
        firsts = {}
        for index, n, around in items:
            firsts.setdefault(key(n), f"{name} {key(n)} cell {index}: {around}")
        lines.extend(firsts.values())
    return lines


def compare(found: dict[str, list[tuple[int, Number, str]]], root: Path = REPO_ROOT) -> tuple[list[str], list[str]]:
    """(findings missing from the baseline, baseline lines no longer found)."""
    baseline = read_list(root / BASELINE_FILE)
    current = {(name, key(n)) for name, items in found.items() for _, n, _ in items}
    new = [line for line in baseline_lines(found) if tuple(line.split()[:2]) not in baseline]
    gone = sorted(f"{name} {written}" for name, written in baseline - current if name in found)
    return new, gone


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Numbers in the notebooks' markdown that no output shows.")
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: every notebook")
    parser.add_argument("--write-baseline", action="store_true", help=f"rewrite {BASELINE_FILE}")
    args = parser.parse_args(argv)
    paths = [p.resolve().relative_to(REPO_ROOT) for p in args.notebooks] or None
    found = unexplained(REPO_ROOT, paths)
    for name, items in found.items():
        print(f"{name}: {len(items)}")
        for index, n, around in items:
            print(f"  cell {index}: {n.written:>8}  {around}")
    if args.write_baseline:
        header = [line for line in (REPO_ROOT / BASELINE_FILE).read_text(encoding="utf-8").splitlines()
                  if line.startswith("#")] if (REPO_ROOT / BASELINE_FILE).is_file() else []
        (REPO_ROOT / BASELINE_FILE).write_text("\n".join(header + baseline_lines(found)) + "\n", encoding="utf-8")
        return 0
    new, gone = compare(found)
    for line in new:
        print(f"new, in neither {QUOTED_FILE} nor {BASELINE_FILE}: {line}", file=sys.stderr)
    for line in gone:
        print(f"no longer found, remove from {BASELINE_FILE}: {line}", file=sys.stderr)
    return 1 if new or gone else 0


if __name__ == "__main__":
    sys.exit(main())
