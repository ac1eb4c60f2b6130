"""The order `python -m tools.run_notebook --all` runs the notebooks in, and the table it prints.

Some notebooks load what another chapter's notebook trains and caches: chapter 5 pretrains the
TinyStories fallback model (`get_fallback_model`, also reached through `load_base_model`), and
chapter 7 saves the instruction-tuned model (`get_instruction_model`). Run in another order, a
notebook would train that model itself (its time then counts the training) or, as chapter 3
does, skip the section that needs it. So a notebook that calls a producer's function runs after
the producing chapter's notebooks; otherwise chapters keep their order, each chapter's notebook
before its solutions.
"""

from __future__ import annotations

from pathlib import Path

import nbformat

from tools.notebook_stamp import REPO_ROOT, chapter_packages, code_sources

# chapter package -> functions whose first call trains and caches what that chapter's notebook makes
PRODUCERS = {
    "ch05_pretrain": ("get_fallback_model", "load_base_model"),
    "ch07_instruct": ("get_instruction_model",),
}


def chapter_key(pkg: str) -> tuple[bool, str]:
    """Chapters first (ch02 ... ch07), then the bonus chapters."""
    return pkg.startswith("bonus_"), pkg


def needs(pkg: str, root: Path = REPO_ROOT) -> set[str]:
    """The producing chapters whose functions the package's notebooks call."""
    found = set()
    for path in sorted((root / pkg).glob("*.ipynb")):
        source = "\n".join(code_sources(nbformat.read(path, as_version=4)))
        found.update(producer for producer, names in PRODUCERS.items()
                     if producer != pkg and any(f"{name}(" in source for name in names))
    return found


def notebook_order(root: Path = REPO_ROOT) -> list[Path]:
    """Every notebook (relative to `root`): producers before the chapters that load their models."""
    packages = sorted(chapter_packages(root), key=chapter_key)
    order: list[str] = []
    visiting: list[str] = []

    def visit(pkg: str) -> None:
        if pkg in order:
            return
        if pkg in visiting:
            raise ValueError("notebooks need each other's models: " + " -> ".join([*visiting, pkg]))
        visiting.append(pkg)
        for producer in sorted(needs(pkg, root), key=chapter_key):
            if producer in packages:
                visit(producer)
        visiting.pop()
        order.append(pkg)

    for pkg in packages:
        visit(pkg)
    paths = []
    for pkg in order:
        main = Path(pkg) / f"{pkg}.ipynb"
        others = sorted(p.relative_to(root) for p in (root / pkg).glob("*.ipynb") if p.name != main.name)
        paths.extend(([main] if (root / main).is_file() else []) + others)
    return paths


def format_table(rows: list[dict], rtol: float, limit: int = 25) -> str:
    """A markdown table of the runs (notebook, wall time, time before, numbers moved beyond rtol),
    then each notebook's moved numbers (at most `limit` lines each)."""
    lines = [
        f"| notebook | wall time | stored run | output numbers moved by more than {rtol:.0%} |",
        "|---|---|---|---|",
    ]
    for row in rows:
        before = f"{row['before_s'] / 60:.1f} min" if row.get("before_s") else "-"
        wall = f"failed after {row['seconds'] / 60:.1f} min" if row.get("failed") else f"{row['seconds'] / 60:.1f} min"
        lines.append(f"| {row['notebook']} | {wall} | {before} | {len(row['moved'])} |")
    for row in rows:
        if row.get("failed"):
            lines.append(f"\n{row['notebook']}: failed, {row['failed']}")
        if row["moved"]:
            lines.append(f"\n{row['notebook']}:")
            lines.extend(f"  {line}" for line in row["moved"][:limit])
            if len(row["moved"]) > limit:
                lines.append(f"  ... and {len(row['moved']) - limit} more")
    return "\n".join(lines)
