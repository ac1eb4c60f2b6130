"""The results file of `experiments.py`: one CSV row per experiment, appended as each finishes,
so an interrupted run loses at most the row in progress and a second run skips the rows done."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from ch02_data import pick

COLUMNS = ("row", "changed", "test_acc", "val_acc", "trainable_params", "seconds", "model", "epochs", "lr")
RESULTS_DIR = Path(__file__).resolve().parent / "results"


def default_out() -> Path:
    """results/experiments.csv (committed), or results/experiments-fast.csv in fast mode."""
    return RESULTS_DIR / pick(full="experiments.csv", fast="experiments-fast.csv")


def open_results(out: Path) -> set[str]:
    """Check that `out` can be written (creating its folder) and return the rows already in it.

    A last line without its newline is a row that a killed run was writing: it is removed (the
    file is rewritten atomically, and the row runs again), so the next row is never appended onto
    it. A row of another length elsewhere is refused: the file is not this script's to mend.
    """
    blocker = next((p for p in [out.parent, *out.parent.parents] if p.is_file()), None)
    if blocker is not None:
        raise ValueError(f"out={str(out)!r} lies under {str(blocker)!r}, which is a file, not a "
                         "folder; choose another path with --out")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out, "a", encoding="utf-8", newline=""):
            pass  # appending nothing: proves we may write, changes nothing
        text = out.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else e
        raise ValueError(f"out={str(out)!r} cannot be written ({reason}); choose another "
                         "file with --out") from None
    if text and not text.endswith("\n"):
        kept, _, cut = text.rpartition("\n")
        kept = kept + "\n" if kept else ""
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(kept, encoding="utf-8", newline="")
        tmp.replace(out)  # atomic: the file is never half rewritten
        print(f"{out}: removed its cut last line {cut[:60]!r} (a run stopped while writing it); "
              "that row runs again")
        text = kept
    rows = list(csv.reader(io.StringIO(text, newline="")))
    header = rows[0] if rows else None
    if header is not None and tuple(header) != COLUMNS:
        raise ValueError(f"out={str(out)!r} has columns {header}, not this script's {list(COLUMNS)}; "
                         "choose another file or delete it")
    for number, r in enumerate(rows[1:], start=2):
        if r and len(r) != len(COLUMNS):
            raise ValueError(f"out={str(out)!r} line {number} has {len(r)} fields, not "
                             f"{len(COLUMNS)}; fix or delete that line, or choose another file")
    return {r[0] for r in rows[1:] if r}


def append_result(out: Path, result: dict) -> None:
    """Append one row (a dict over COLUMNS) to `out`, writing the header first into an empty file."""
    new = out.stat().st_size == 0
    with open(out, "a", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        if new:
            writer.writeheader()
        writer.writerow(result)
