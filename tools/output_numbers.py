"""Numbers in a notebook's outputs and prose, as the drift table and the markdown check read them.

A number is written as `1234`, `5,145` (or in code `5_145`), `-0.57`, `4e-4`, `91.3%`, or with a suffix `16.1M`,
`124M`, `10k`, `1.5B`, `124 million` (a factor of 10^3, 10^6 or 10^9). A number inside an identifier (`ch05`,
`fp32`, `H100`) or a version (`2.13.0`) is not one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import nbformat

SUFFIX = {"k": 1e3, "K": 1e3, "M": 1e6, "B": 1e9, "thousand": 1e3, "million": 1e6, "billion": 1e9}
NUMBER = re.compile(
    r"(?<![\w.])(?P<sign>[-−])?(?P<int>\d{1,3}(?:,\d{3})+|\d{1,3}(?:_\d{3})+|\d+)(?:\.(?P<frac>\d+))?(?P<exp>[eE][-+]?\d+)?"
    r"(?:(?P<suffix>[kKMB])|[ \u00a0](?P<word>thousand|million|billion))?(?P<pct>%)?(?!\.\d)(?![\w])"
)


@dataclass(frozen=True)
class Number:
    written: str  # as in the text
    value: float  # suffix and sign applied, % kept as written (91.3% is 91.3)
    tolerance: float  # half a unit of the last written digit: what rounding may have removed
    at: int = field(default=0, compare=False)  # where it starts in the text

    def matches(self, x: float) -> bool:
        """Whether `x` printed at this number's precision reads as it (also as a fraction <-> %)."""
        return any(abs(c - self.value) <= self.tolerance * (1 + 1e-9) for c in (x, x * 100, x / 100))


def numbers(text: str) -> list[Number]:
    """Every number written in `text`, in order."""
    found = []
    for m in NUMBER.finditer(text):
        digits = m["int"].replace(",", "").replace("_", "")
        frac = m["frac"] or ""
        exp = m["exp"] or ""
        factor = SUFFIX.get(m["suffix"] or m["word"] or "", 1.0)
        value = float(f"{digits}.{frac or 0}{exp}") * factor
        step = 10.0 ** -len(frac) * (float(f"1{exp}") if exp else 1.0) * factor
        if m["sign"]:
            value = -value
        found.append(Number(m.group(0), value, step / 2, m.start()))
    return found


def output_texts(cell: nbformat.NotebookNode, streams: tuple[str, ...] = ("stdout", "stderr")) -> list[str]:
    """The text a reader sees in a code cell's outputs: streams, and the plain text of results."""
    texts = []
    for out in cell.get("outputs", []):
        if out.output_type == "stream" and out.name in streams:
            texts.append(out.text)
        elif out.output_type in ("execute_result", "display_data"):
            texts.append(str(out.get("data", {}).get("text/plain", "")))
        elif out.output_type == "error":
            texts.append(f"{out.ename}: {out.evalue}")
    return texts


def cell_numbers(nb: nbformat.NotebookNode) -> dict[int, list[Number]]:
    """{cell index: numbers in its stdout and results, in order} for the drift table (stderr holds
    progress bars and warnings, whose rates and times move on every run)."""
    return {index: [n for text in output_texts(cell, ("stdout",)) for n in numbers(text)]
            for index, cell in enumerate(nb.cells) if cell.cell_type == "code"}


def moved(before: nbformat.NotebookNode, after: nbformat.NotebookNode, rtol: float) -> list[str]:
    """Output numbers of `before` and `after` (the same cells, run twice), paired by cell and
    position, that differ by more than `rtol` relative to the larger; and cells whose count of
    numbers changed (their numbers cannot be paired)."""
    old, new = cell_numbers(before), cell_numbers(after)
    lines = []
    for index in sorted(set(old) | set(new)):
        a, b = old.get(index, []), new.get(index, [])
        if len(a) != len(b):
            lines.append(f"cell {index}: {len(a)} numbers before, {len(b)} after")
            continue
        for x, y in zip(a, b):
            scale = max(abs(x.value), abs(y.value))
            if abs(x.value - y.value) > rtol * scale:
                change = f" ({(y.value - x.value) / abs(x.value):+.1%})" if x.value else ""
                lines.append(f"cell {index}: {x.written} -> {y.written}{change}")
    return lines
