"""Execute chapter notebooks top to bottom and tidy their outputs for committing.

    python -m tools.run_notebook ch06_classify/ch06_classify.ipynb [more.ipynb ...] [--fast]

Committed notebook outputs come from full runs (FAST_DEV_RUN unset; `--fast` sets it, for a quick
check). Each notebook runs in its own folder, as Jupyter and nbval run it, and is rewritten in
place with:
- progress-bar streams collapsed to what a notebook shows at the end: tqdm redraws its bar with
  carriage returns, and the raw stream keeps every redraw (hundreds of KB for one training run);
- per-cell execution timestamps dropped (they change on every run and bloat diffs);
- a warning for every output that prints an absolute path of this machine.
The wall-clock time of each notebook is printed, for README's chapter table.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

REPO_ROOT = Path(__file__).resolve().parent.parent


def collapse_carriage_returns(text: str) -> str:
    """What a terminal shows for `text`: in each line, only what follows the last carriage return."""
    return "\n".join(line.rstrip("\r").rsplit("\r", 1)[-1] for line in text.split("\n"))


def tidy(nb: nbformat.NotebookNode) -> list[str]:
    """Tidy `nb` in place (see the module docstring); return warnings about absolute paths."""
    warnings = []
    roots = {str(REPO_ROOT), str(REPO_ROOT.parent)}
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
    nbformat.write(nb, path)
    return seconds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Execute notebooks in place and tidy their outputs.")
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--fast", action="store_true", help="set FAST_DEV_RUN=1 (a quick check)")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds per cell (default 3600)")
    args = parser.parse_args(argv)
    for path in args.notebooks:
        if not path.is_file() or path.suffix != ".ipynb":
            parser.error(f"notebook {str(path)!r} is not an existing .ipynb file")
    for path in args.notebooks:
        seconds = run(path.resolve(), args.fast, args.timeout)
        mode = "fast" if args.fast else "full"
        print(f"{path}: {seconds:.0f} s ({seconds / 60:.1f} min), {mode} mode")


if __name__ == "__main__":
    main()
