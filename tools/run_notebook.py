"""Execute chapter notebooks top to bottom and tidy their outputs for committing.

    python -m tools.run_notebook ch06_classify/ch06_classify.ipynb [more.ipynb ...] [--fast]
    python -m tools.run_notebook --all [--dry-run] [--rtol 0.01]

Committed notebook outputs come from full runs (FAST_DEV_RUN unset; `--fast` sets it, for a quick
check). Each notebook runs in its own folder, as Jupyter and nbval run it, and is rewritten in
place with:
- progress-bar streams collapsed to what a notebook shows at the end: tqdm redraws its bar with
  carriage returns, and the raw stream keeps every redraw (hundreds of KB for one training run);
- per-cell execution timestamps dropped (they change on every run and bloat diffs);
- a warning for every output that prints an absolute path of this machine (the checkout, the
  home folder, the Python install: a library's warning names its file there). Such a warning is
  silenced where it starts, as `ch05_pretrain.gpt2_hub` does for tqdm's missing-ipywidgets one,
  not cut from the stored output, which would hide it from the maintainer but not the reader;
- a stamp in its metadata: the code cells' and chapter packages' hashes, torch, device, wall time
  and date (tools/notebook_stamp.py; the tests fail when the code moves on without a rerun).
`--all` runs every notebook and solutions notebook, producers of cached models first
(tools/rerun_all.py; `--dry-run` prints the order); a notebook that fails is left as it was,
reported, and the others still run. At the end a table gives each notebook's
wall time, for README's chapter table, and the output numbers that moved by more than `--rtol`
against the stored run.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from tools.notebook_stamp import cell_hash, make_stamp, mark_stamped
from tools.output_numbers import moved
from tools.rerun_all import format_table, notebook_order

REPO_ROOT = Path(__file__).resolve().parent.parent


def collapse_carriage_returns(text: str) -> str:
    """What a terminal shows for `text`: in each line, only what follows the last carriage return."""
    return "\n".join(line.rstrip("\r").rsplit("\r", 1)[-1] for line in text.split("\n"))


def tidy(nb: nbformat.NotebookNode) -> list[str]:
    """Tidy `nb` in place (see the module docstring); return warnings about absolute paths."""
    warnings = []
    roots = {str(REPO_ROOT), str(REPO_ROOT.parent), str(Path.home()), sys.prefix}
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        cell.metadata.pop("execution", None)
        outputs = []
        for out in cell.outputs:
            if out.output_type == "stream":
                # Jupyter merges consecutive writes to one stream into one output area.
                if outputs and outputs[-1].output_type == "stream" and outputs[-1].name == out.name:
                    outputs[-1].text += out.text
                    continue
            outputs.append(out)
        for out in outputs:
            if out.output_type == "stream":
                out.text = collapse_carriage_returns(out.text)
            text = out.get("text", "") or str(out.get("data", {}).get("text/plain", ""))
            if any(root in text for root in roots if len(root) > 1):
                warnings.append(f"cell {index}: an output prints an absolute path")
        cell.outputs = [o for o in outputs if not (o.output_type == "stream" and not o.text)]
    return warnings


def merge_into_current(ran: nbformat.NotebookNode, path: Path) -> nbformat.NotebookNode:
    """The notebook as it is on disk now, with the outputs and stamp of `ran`.

    A run takes minutes; markdown edited meanwhile (text, a figure) is kept. If a code cell was
    added, removed or edited meanwhile, the outputs would not belong to it: `ran` is returned."""
    current = nbformat.read(path, as_version=4)
    ran_code = [c for c in ran.cells if c.cell_type == "code"]
    cur_code = [c for c in current.cells if c.cell_type == "code"]
    if [cell_hash(c.source) for c in ran_code] != [cell_hash(c.source) for c in cur_code]:
        if current != ran:
            print(f"{path.name}: code cells changed during the run; writing the notebook as it ran", file=sys.stderr)
        return ran
    for mine, theirs in zip(cur_code, ran_code):
        mine.outputs, mine.execution_count, mine.metadata = theirs.outputs, theirs.execution_count, theirs.metadata
    current.metadata["stamp"] = ran.metadata["stamp"]
    return current


def run(path: Path, fast: bool, timeout: int) -> float:
    """Execute the notebook at `path` in place; return its wall-clock time in seconds."""
    nb = nbformat.read(path, as_version=4)
    if fast:
        os.environ["FAST_DEV_RUN"] = "1"
    else:
        os.environ.pop("FAST_DEV_RUN", None)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    t0 = time.perf_counter()
    client.execute()
    seconds = time.perf_counter() - t0
    for warning in tidy(nb):
        print(f"{path.name}: {warning}", file=sys.stderr)
    nb.metadata["stamp"] = make_stamp(nb, seconds, "fast" if fast else "full", REPO_ROOT)
    nbformat.write(merge_into_current(nb, path), path)
    if not fast and path.is_relative_to(REPO_ROOT):
        mark_stamped(path.relative_to(REPO_ROOT).as_posix(), REPO_ROOT)
    return seconds


def shown(path: Path) -> str:
    """`path` relative to the repository where it lies inside it."""
    path = path.resolve()
    return path.relative_to(REPO_ROOT).as_posix() if path.is_relative_to(REPO_ROOT) else str(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Execute notebooks in place and tidy their outputs.")
    parser.add_argument("notebooks", nargs="*", type=Path)
    parser.add_argument("--all", action="store_true", help="every notebook, producers of cached models first")
    parser.add_argument("--dry-run", action="store_true", help="print the notebooks in order, run nothing")
    parser.add_argument("--fast", action="store_true", help="set FAST_DEV_RUN=1 (a quick check)")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds per cell (default 3600)")
    parser.add_argument("--rtol", type=float, default=0.01,
                        help="report output numbers that moved by more than this fraction (default 0.01)")
    args = parser.parse_args(argv)
    if args.all == bool(args.notebooks):
        parser.error("name notebooks or pass --all")
    paths = [REPO_ROOT / p for p in notebook_order(REPO_ROOT)] if args.all else args.notebooks
    for path in paths:
        if not path.is_file() or path.suffix != ".ipynb":
            parser.error(f"notebook {str(path)!r} is not an existing .ipynb file")
    if args.dry_run:
        print("\n".join(shown(path) for path in paths))
        return 0
    rows = []
    for path in paths:
        stored = nbformat.read(path, as_version=4)
        t0 = time.perf_counter()
        try:
            seconds = run(path.resolve(), args.fast, args.timeout)
        except CellExecutionError as err:  # the notebook stays as it was; the others still run
            print(err, file=sys.stderr)
            rows.append({"notebook": shown(path), "seconds": time.perf_counter() - t0, "moved": [],
                         "failed": f"{err.ename}: {err.evalue}"[:200]})
            print(f"{shown(path)}: failed ({rows[-1]['failed']})", flush=True)
            continue
        mode = "fast" if args.fast else "full"
        print(f"{shown(path)}: {seconds:.0f} s ({seconds / 60:.1f} min), {mode} mode", flush=True)
        rows.append({"notebook": shown(path), "seconds": seconds,
                     "before_s": stored.metadata.get("stamp", {}).get("wall_time_s"),
                     "moved": moved(stored, nbformat.read(path, as_version=4), args.rtol)})
    print()
    print(format_table(rows, args.rtol))
    return 1 if any(row.get("failed") for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
