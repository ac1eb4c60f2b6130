"""The stamp a full run leaves in a notebook, and the two checks that read it.

`tools.run_notebook` writes `metadata["stamp"]` into every notebook it runs:

    code_cells   sha256 of each code cell's source, in order
    packages     {chapter package: hash of its code} for every package the notebook imports,
                 directly or through another package (a ch07 notebook runs ch05's `train`)
    commit       git HEAD when it ran; uncommitted: whether those packages differed from HEAD
    torch, device, wall_time_s, date (UTC), mode ("full" or "fast")

A package's hash is sha256 over the git blob ids of its .py files, tests/ left out. Blob ids
(not the files' bytes) let the same hash be computed from the working tree and from any commit;
the notebooks and results/ in the folder are left out, so committing a rerun notebook does not
change the hash it stamped.

Checks (`python -m tools.notebook_stamp` lists each notebook's state): `stale_cells` (a code
cell edited after the run) and `due_for_rerun` (a package changed after the run by a commit not
declared output-neutral; HEAD's code is judged, uncommitted edits are not). A commit is declared
output-neutral by a trailer line `Output-neutral: <why>` in its message, or, after the fact, by
a line `<commit> <why>` in tools/output_neutral.txt.
"""

from __future__ import annotations

import hashlib
import os
import platform
import re
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import nbformat

REPO_ROOT = Path(__file__).resolve().parent.parent
NEUTRAL_FILE = "tools/output_neutral.txt"
UNSTAMPED_FILE = "tools/unstamped.txt"
TRAILER = re.compile(r"^Output-neutral:\s*\S", re.MULTILINE)
_IMPORT = re.compile(r"^[ \t]*(?:from[ \t]+(\w+)|import[ \t]+([\w \t,.]+))", re.MULTILINE)


def chapter_packages(root: Path = REPO_ROOT) -> list[str]:
    """The chapter packages (ch02_data ... bonus_distill): top-level folders with an __init__.py."""
    return sorted(p.parent.name for p in root.glob("*/__init__.py")
                  if re.fullmatch(r"ch\d\d_\w+|bonus_\w+", p.parent.name))


def notebooks(root: Path = REPO_ROOT) -> list[Path]:
    """Every chapter notebook and solutions notebook, as paths relative to `root`."""
    return sorted(nb.relative_to(root) for pkg in chapter_packages(root) for nb in (root / pkg).glob("*.ipynb"))


def imported_names(source: str) -> set[str]:
    """Top-level module names that `source` imports (`from a.b import c`, `import a, b as d`)."""
    names = set()
    for frm, imp in _IMPORT.findall(source):
        if frm:
            names.add(frm)
        else:
            names.update(part.split()[0].split(".")[0] for part in imp.split(",") if part.split())
    return names


def code_sources(nb: nbformat.NotebookNode) -> list[str]:
    return [cell.source for cell in nb.cells if cell.cell_type == "code"]


def package_dependencies(nb: nbformat.NotebookNode, root: Path = REPO_ROOT) -> list[str]:
    """The chapter packages the notebook's code runs: those it imports, and theirs, transitively."""
    known = set(chapter_packages(root))
    todo = [name for src in code_sources(nb) for name in imported_names(src) if name in known]
    seen: set[str] = set()
    while todo:
        pkg = todo.pop()
        if pkg in seen:
            continue
        seen.add(pkg)
        for path, _ in _package_files(root, pkg):
            text = (root / path).read_text(encoding="utf-8")
            todo.extend(name for name in imported_names(text) if name in known)
    return sorted(seen)


def _counts(path: str) -> bool:
    """Whether a file (path relative to the repository) is part of its package's code."""
    parts = Path(path).parts
    return path.endswith(".py") and "tests" not in parts[1:-1] and "__pycache__" not in parts


def _package_files(root: Path, pkg: str) -> list[tuple[str, str]]:
    """(path, git blob id) of the package's code files in the working tree.

    `git hash-object` applies git's filters (a Windows checkout's CRLF endings are hashed as the
    committed LF ones); without git, the bytes are hashed as git would hash them unfiltered."""
    paths = [p.relative_to(root).as_posix() for p in sorted((root / pkg).rglob("*.py"))]
    paths = [path for path in paths if _counts(path)]
    if not paths:
        return []
    try:
        blobs = git(root, "hash-object", "--", *paths).split()
    except (OSError, subprocess.CalledProcessError):
        blobs = []
        for path in paths:
            data = (root / path).read_bytes()
            blobs.append(hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest())
    return list(zip(paths, blobs))


def _combine(files: list[tuple[str, str]]) -> str:
    return hashlib.sha256("".join(f"{path} {blob}\n" for path, blob in sorted(files)).encode()).hexdigest()[:16]


def package_hash(pkg: str, root: Path = REPO_ROOT, commit: str | None = None) -> str:
    """The hash of a package's code in the working tree (commit None) or at `commit`."""
    if commit is None:
        return _combine(_package_files(root, pkg))
    listing = git(root, "ls-tree", "-r", commit, "--", pkg)
    files = []
    for line in listing.splitlines():
        meta, path = line.split("\t", 1)
        if _counts(path):
            files.append((path, meta.split()[2]))
    return _combine(files)


def git(root: Path, *args: str) -> str:
    """Run git in `root`; return its stdout (raise CalledProcessError on failure)."""
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout.strip()


def head_commit(root: Path = REPO_ROOT) -> str | None:
    try:
        return git(root, "rev-parse", "HEAD")
    except (OSError, subprocess.CalledProcessError):
        return None


def describe_device() -> str:
    """What the notebook's kernel would pick, as chapter 5's get_device does: cuda > mps > cpu."""
    import torch

    wanted = os.environ.get("DEVICE", "").strip()
    if (not wanted or wanted.startswith("cuda")) and torch.cuda.is_available():
        return f"cuda ({torch.cuda.get_device_name(0)})"
    if (not wanted or wanted == "mps") and torch.backends.mps.is_available():
        return "mps"
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


# The classroom kit's grading markers (tools/student.py) are comments that change no output, so
# adding or moving them does not make a stored run stale.
_MARKER = re.compile(r"[ \t]*### (BEGIN|END) SOLUTION[ \t]*")


def cell_hash(source: str) -> str:
    """sha256 of a code cell's source, grading-marker lines left out."""
    if "### " in source:
        source = "\n".join(line for line in source.split("\n") if not _MARKER.fullmatch(line))
    return hashlib.sha256(source.encode("utf-8")).hexdigest()


def make_stamp(nb: nbformat.NotebookNode, seconds: float, mode: str, root: Path = REPO_ROOT,
               device: str | None = None, torch_version: str | None = None) -> dict:
    """The stamp for `nb` just executed (see the module docstring)."""
    if torch_version is None:
        import torch

        torch_version = torch.__version__
    packages = {pkg: package_hash(pkg, root) for pkg in package_dependencies(nb, root)}
    commit = head_commit(root)
    uncommitted = commit is None or any(package_hash(pkg, root, commit) != h for pkg, h in packages.items())
    return {
        "code_cells": [cell_hash(src) for src in code_sources(nb)],
        "packages": packages,
        "commit": commit,
        "uncommitted": uncommitted,
        "torch": torch_version,
        "device": device if device is not None else describe_device(),
        "wall_time_s": round(seconds, 1),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "mode": mode,
    }


def stale_cells(nb: nbformat.NotebookNode) -> list[str]:
    """Why the stamp does not match the notebook's code cells (empty: it matches)."""
    stamp = nb.metadata.get("stamp")
    if not stamp:
        return ["no stamp: rerun it with `python -m tools.run_notebook`"]
    problems = []
    if stamp.get("mode") != "full":
        problems.append(f"stamped by a {stamp.get('mode')!r} run, not a full one")
    code = [(index, cell) for index, cell in enumerate(nb.cells) if cell.cell_type == "code"]
    stamped = stamp.get("code_cells", [])
    if len(code) != len(stamped):
        problems.append(f"{len(code)} code cells, {len(stamped)} when stamped")
    for (index, cell), digest in zip(code, stamped):
        if cell_hash(cell.source) != digest:
            lines = [line for line in cell.source.splitlines() if line.strip() and "NBVAL_" not in line]
            first = lines[0].strip()[:60] if lines else ""
            problems.append(f"cell {index} edited since the run: {first!r}")
    return problems


def unstamped_list(root: Path = REPO_ROOT) -> list[str]:
    """tools/unstamped.txt: the notebooks allowed to have no stamp yet (paths relative to root)."""
    path = root / UNSTAMPED_FILE
    if not path.is_file():
        return []
    lines = (line.split("#", 1)[0].strip() for line in path.read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line]


def mark_stamped(notebook: str, root: Path = REPO_ROOT) -> None:
    """Drop `notebook` (relative to root, posix) from tools/unstamped.txt, keeping the comments."""
    path = root / UNSTAMPED_FILE
    if notebook in unstamped_list(root):
        kept = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip() != notebook]
        path.write_text("\n".join(kept) + "\n", encoding="utf-8")


def neutral_commits(root: Path = REPO_ROOT) -> dict[str, str]:
    """tools/output_neutral.txt: {commit (7+ hex digits): why}."""
    path = root / NEUTRAL_FILE
    entries = {}
    if path.is_file():
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            commit, _, why = line.partition(" ")
            if not re.fullmatch(r"[0-9a-f]{7,40}", commit) or not why.strip():
                raise ValueError(f"{NEUTRAL_FILE}:{number}: expected '<commit> <why>', got {line!r}")
            entries[commit] = why.strip()
    return entries


def _declared(root: Path, commit: str, neutral: dict[str, str]) -> bool:
    if any(commit.startswith(prefix) for prefix in neutral):
        return True
    return bool(TRAILER.search(git(root, "log", "-1", "--format=%B", commit)))


def changes_since(root: Path, pkg: str, since: str, stamped: str, neutral: dict[str, str]) -> list[str]:
    """Commits after `since` that moved `pkg` away from the stamped hash without a declaration.

    Walks from HEAD back to the newest commit whose package hash is the stamped one (the stamp
    may come from a working tree committed after `since`); a commit that leaves the package's
    code as it was (a notebook or a test changed) counts as nothing."""
    revs = git(root, "rev-list", "--topo-order", f"{since}..HEAD", "--", pkg).split()
    undeclared = []
    hashes: dict[str, str] = {}

    def at(commit: str) -> str:
        if commit not in hashes:
            hashes[commit] = package_hash(pkg, root, commit)
        return hashes[commit]

    for commit in revs:
        if at(commit) == stamped:
            return undeclared
        parents = git(root, "rev-list", "--parents", "-n", "1", commit).split()[1:]
        if parents and all(at(parent) == at(commit) for parent in parents):
            continue
        if not _declared(root, commit, neutral):
            subject = git(root, "log", "-1", "--format=%s", commit)
            undeclared.append(f"in {commit[:10]} {subject[:70]}")
    if at(since) != stamped:
        undeclared.append(f"since the run, which ran uncommitted code (not {since[:10]}'s)")
    return undeclared


def due_for_rerun(nb: nbformat.NotebookNode, root: Path = REPO_ROOT) -> list[str]:
    """Why the notebook's outputs may no longer match its packages' code (empty: they match).

    Raises LookupError when the stamp's commit is not in this clone (a shallow clone)."""
    stamp = nb.metadata.get("stamp") or {}
    since = stamp.get("commit")
    neutral = neutral_commits(root)
    reasons = []
    for pkg, stamped in sorted(stamp.get("packages", {}).items()):
        if package_hash(pkg, root, "HEAD") == stamped:
            continue
        if not since:
            reasons.append(f"{pkg} changed; the stamp names no commit")
            continue
        try:
            git(root, "cat-file", "-e", f"{since}^{{commit}}")
        except subprocess.CalledProcessError:
            raise LookupError(f"the stamp's commit {since[:10]} is not in this clone") from None
        for change in changes_since(root, pkg, since, stamped, neutral):
            reasons.append(f"{pkg} changed {change}")
    return reasons


def main() -> int:
    """`python -m tools.notebook_stamp`: each notebook's state (current, edited, due, unstamped)."""
    bad = 0
    for path in notebooks():
        nb = nbformat.read(REPO_ROOT / path, as_version=4)
        if not nb.metadata.get("stamp"):
            print(f"{path.as_posix()}: not stamped")
            continue
        try:
            problems = stale_cells(nb) + due_for_rerun(nb)
        except LookupError as err:
            problems = [str(err)]
        stamp = nb.metadata["stamp"]
        print(f"{path.as_posix()}: {'; '.join(problems) or 'current'} (run {stamp.get('date')}, "
              f"{stamp.get('wall_time_s', 0) / 60:.1f} min on {stamp.get('device')})")
        bad += bool(problems)
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
