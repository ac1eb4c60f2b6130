"""Grade a notebook: run it in fast mode and report, piece by piece, whether the chapter's checks pass.

    python -m tools.grade NOTEBOOK [--timeout SECONDS]

The pieces and their checks come from the notebook itself: a code cell holding `# GRADE: piece` (or
`# GRADE: piece, other`) is one of that piece's checks, the chapter's own "written on the page, checked
equal to the module" cell. The notebook runs top to bottom in fast mode (FAST_DEV_RUN=1) up to its last
graded cell, going on after errors; a piece passes when every one of its check cells runs without an
error. For a failure the line says why: not implemented (which function raised NotImplementedError),
wrong values (the failing assert, with the numbers it compared: the largest difference for
`torch.allclose`/`torch.equal`, both sides of a comparison), or the error raised. Exit status 0 only when
every piece passes.

A student notebook (from `python -m tools.student`) runs in its chapter's folder, wherever it is.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
from nbclient import NotebookClient

REPO_ROOT = Path(__file__).resolve().parent.parent
GRADE_LINE = re.compile(r"^#\s*GRADE:\s*(.+?)\s*$", re.MULTILINE)

# Run in the notebook's kernel after a check cell failed: where it failed and, for an assert, the numbers
# it compared. Prints one JSON line. IPython keeps the last exception in sys.last_traceback.
_DIAGNOSE = r'''
def _classroom_diagnose():
    import ast, json, linecache, sys
    report = {}
    tb = getattr(sys, "last_traceback", None)
    frames = []
    while tb is not None:
        frames.append((tb.tb_frame, tb.tb_lineno))
        tb = tb.tb_next
    if not frames:
        return report
    inner = frames[-1][0]
    owner = type(inner.f_locals["self"]).__name__ + "." if "self" in inner.f_locals else ""
    report["where"] = owner + inner.f_code.co_name
    cell = [(f, n) for f, n in frames if f.f_code.co_name == "<module>"]
    if not cell or not isinstance(getattr(sys, "last_value", None), AssertionError):
        return report
    frame, lineno = cell[-1]
    source = "".join(linecache.getlines(frame.f_code.co_filename))
    node = next((a for a in ast.walk(ast.parse(source)) if isinstance(a, ast.Assert)
                 and a.lineno <= lineno <= a.end_lineno), None)
    if node is None:
        return report

    def value(expr):
        return eval(compile(ast.Expression(expr), "<grade>", "eval"), frame.f_globals, frame.f_locals)

    def show(v):
        if hasattr(v, "numel") and v.numel() == 1:
            v = v.item()
        if hasattr(v, "shape"):
            return f"a tensor of shape {tuple(v.shape)}"
        return f"{v:.3g}" if isinstance(v, float) else repr(v)[:80]

    def explain(test):
        if isinstance(test, ast.BoolOp) and isinstance(test.op, ast.And):
            for part in test.values:
                if not value(part):
                    return explain(part)
        text = ast.unparse(test)
        if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
            return f"{text} is false"
        if (isinstance(test, ast.Call) and isinstance(test.func, ast.Attribute)
                and test.func.attr in ("allclose", "equal", "isclose") and len(test.args) == 2):
            a, b = value(test.args[0]), value(test.args[1])
            if tuple(a.shape) != tuple(b.shape):
                return f"{text} is false: shapes {tuple(a.shape)} and {tuple(b.shape)} differ"
            diff = (a.double() - b.double()).abs().max().item()
            return f"{text} is false: largest difference {diff:.3g}"
        if isinstance(test, ast.Compare) and len(test.comparators) == 1:
            left, right = test.left, test.comparators[0]
            parts = [f"{ast.unparse(e)} = {show(value(e))}" for e in (left, right)
                     if not isinstance(e, ast.Constant)]
            return f"{text} is false: " + ", ".join(parts) if parts else f"{text} is false"
        return f"{text} is false"

    try:
        report["assert"] = explain(node.test)
    except Exception as e:  # the explanation itself failed: say which assert failed, no numbers
        report["assert"] = f"{ast.unparse(node.test)} is false ({type(e).__name__} while measuring by how much)"
    return report


try:
    print(__import__("json").dumps(_classroom_diagnose()))
except Exception:
    print("{}")
del _classroom_diagnose
'''


@dataclass
class Piece:
    name: str
    cells: list[int] = field(default_factory=list)  # indices of its check cells (reported counting from 1)
    failures: list[str] = field(default_factory=list)


def graded_pieces(nb: nbformat.NotebookNode) -> dict[str, Piece]:
    """{piece: Piece}, in the order the pieces are first checked."""
    pieces: dict[str, Piece] = {}
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        for match in GRADE_LINE.finditer(cell.source):
            for name in (n.strip() for n in match.group(1).split(",")):
                pieces.setdefault(name, Piece(name)).cells.append(i)
    return pieces


def notebook_folder(path: Path, nb: nbformat.NotebookNode) -> Path:
    """Where the notebook runs: its chapter's folder for a student notebook, else its own folder."""
    chapter = nb.metadata.get("classroom", {}).get("chapter")
    if chapter and (REPO_ROOT / chapter).is_dir():
        return REPO_ROOT / chapter
    return path.resolve().parent


def _error(cell) -> dict | None:
    return next((o for o in cell.get("outputs", []) if o.get("output_type") == "error"), None)


def _reason(error: dict, diagnosis: dict, first_error: int | None) -> str:
    ename, evalue = error.get("ename", "Error"), error.get("evalue", "")
    where = diagnosis.get("where", "")
    if ename == "NotImplementedError":
        if where == "<module>":  # a piece written at the cell's top level, not in a function
            return "not implemented (the cell raises NotImplementedError)"
        return f"not implemented ({where} raises NotImplementedError)" if where else "not implemented"
    if ename == "AssertionError":
        why = diagnosis.get("assert") or "an assert failed"
        return "wrong values: " + why + (f" ({evalue})" if evalue else "")
    inside = f" (in {where})" if where and where != "<module>" else ""
    after = f", after an error in cell {first_error + 1}" if first_error is not None else ""
    return f"error: {ename}: {evalue.splitlines()[0] if evalue else ''}{inside}{after}"


def grade(path: Path, timeout: int = 600) -> tuple[dict[str, Piece], float]:
    """Run the notebook at `path` in fast mode up to its last graded cell; return the pieces and seconds."""
    nb = nbformat.read(path, as_version=4)
    pieces = graded_pieces(nb)
    if not pieces:
        return pieces, 0.0
    last = max(i for p in pieces.values() for i in p.cells)
    checks = {i: [p for p in pieces.values() if i in p.cells] for i in range(last + 1)}
    env = dict(os.environ, FAST_DEV_RUN="1",  # the kernel's environment: fast mode, the chapters importable
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])))
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", allow_errors=True,
                            resources={"metadata": {"path": str(notebook_folder(path, nb))}})
    diagnose = nbformat.v4.new_code_cell(_DIAGNOSE)
    first_error = None
    start = time.perf_counter()
    with client.setup_kernel(env=env):
        for i, cell in enumerate(nb.cells[: last + 1]):
            if cell.cell_type != "code":
                continue
            client.execute_cell(cell, i, store_history=True)
            error = _error(cell)
            if error is None:
                continue
            if checks[i]:
                diagnose.outputs = []
                client.execute_cell(diagnose, i, store_history=False)
                text = "".join(o.get("text", "") for o in diagnose.outputs if o.get("output_type") == "stream")
                try:
                    diagnosis = json.loads(text.strip().splitlines()[-1])
                except (ValueError, IndexError):
                    diagnosis = {}
                for piece in checks[i]:
                    piece.failures.append(f"cell {i + 1}: " + _reason(error, diagnosis, first_error))
            if first_error is None:
                first_error = i
    return pieces, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebook", type=Path, help="a student notebook, or a chapter notebook")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per cell (default 600)")
    args = parser.parse_args(argv)
    pieces, seconds = grade(args.notebook, args.timeout)
    if not pieces:
        print(f"{args.notebook} has no '# GRADE: piece' cells: nothing to grade", file=sys.stderr)
        return 2
    for p in pieces.values():
        print(f"FAIL  {p.name}: {p.failures[0]}" if p.failures else f"pass  {p.name}")
        for more in p.failures[1:]:
            print(f"      {'':{len(p.name)}}  {more}")
    passed = sum(not p.failures for p in pieces.values())
    print(f"{passed} of {len(pieces)} pieces pass ({seconds:.0f} s, fast mode)")
    return 0 if passed == len(pieces) else 1


if __name__ == "__main__":
    sys.exit(main())
