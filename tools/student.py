"""Write a chapter's student notebook: the pieces to write become `raise NotImplementedError`.

    python -m tools.student CHAPTER [--out DIR]

CHAPTER is a chapter folder (`ch04_gpt`). The chapter notebook marks, inside its code cells, the code a
student writes with two comment lines, as nbgrader does:

        def forward(self, x):
            ### BEGIN SOLUTION
            ...the chapter's code...
            ### END SOLUTION

The student notebook keeps every cell, every signature, docstring and comment outside the markers, and
replaces each marked region by `raise NotImplementedError` at the region's indentation; all outputs and
execution counts are cleared. The cells that check a piece carry `# GRADE: piece` lines, kept as they
are, which `python -m tools.grade` reads. The file is written to DIR (default: the chapter folder, so
figures and relative paths work) as `<chapter>_student.ipynb`, which git ignores: it is always
generated from the chapter notebook, never kept as a second copy.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat

REPO_ROOT = Path(__file__).resolve().parent.parent
BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
STUB = "raise NotImplementedError"


class MarkerError(ValueError):
    """The solution markers of a cell do not pair up."""


def strip_solutions(source: str) -> tuple[str, int]:
    """`source` with each marked region replaced by the stub; returns (new source, regions replaced)."""
    out, inside, regions = [], False, 0
    for line in source.split("\n"):
        marker = line.strip()
        if marker == BEGIN:
            if inside:
                raise MarkerError(f"{BEGIN} inside another solution region")
            inside, regions = True, regions + 1
            out.append(line[: len(line) - len(line.lstrip())] + STUB)
        elif marker == END:
            if not inside:
                raise MarkerError(f"{END} without {BEGIN}")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise MarkerError(f"{BEGIN} without {END}")
    return "\n".join(out), regions


def chapter_notebook(chapter: str | Path) -> Path:
    """The chapter notebook for a chapter folder name or path (`ch04_gpt`, `./ch04_gpt/`)."""
    folder = Path(chapter)
    if folder.suffix == ".ipynb":
        return folder
    if not folder.is_dir():
        folder = REPO_ROOT / folder
    path = folder / f"{folder.resolve().name}.ipynb"
    if not path.is_file():
        raise FileNotFoundError(f"no chapter notebook {path}; give a chapter folder such as ch04_gpt")
    return path


def student_notebook(path: Path) -> tuple[nbformat.NotebookNode, int]:
    """The student version of the chapter notebook at `path` and the number of regions replaced."""
    nb = nbformat.read(path, as_version=4)
    total = 0
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        try:
            cell.source, n = strip_solutions(cell.source)
        except MarkerError as e:
            raise MarkerError(f"{path.name}, cell {i}: {e}") from None
        total += n
        cell.outputs, cell.execution_count = [], None
        cell.metadata.pop("execution", None)
    chapter = path.resolve().parent.name
    nb.metadata["classroom"] = {"chapter": chapter, "generated_from": f"{chapter}/{path.name}"}
    intro = nbformat.v4.new_markdown_cell(
        f"**Student version of `{chapter}/{path.name}`**, written by `python -m tools.student {chapter}`. "
        "Each cell that raises `NotImplementedError` is a piece for you to write; the cells marked "
        f"`# GRADE: piece` check it. Grade the notebook with `python -m tools.grade {chapter}_student.ipynb`."
    )
    nb.cells.insert(0, intro)
    return nb, total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("chapter", help="chapter folder, e.g. ch04_gpt")
    parser.add_argument("--out", type=Path, default=None, help="folder to write into (default: the chapter folder)")
    args = parser.parse_args(argv)
    path = chapter_notebook(args.chapter)
    nb, regions = student_notebook(path)
    if regions == 0:
        print(f"{path} has no {BEGIN} markers: nothing for a student to write", file=sys.stderr)
        return 1
    out_dir = args.out or path.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"{path.parent.resolve().name}_student.ipynb"
    nbformat.write(nb, out)
    print(f"wrote {out} ({regions} pieces to write)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
