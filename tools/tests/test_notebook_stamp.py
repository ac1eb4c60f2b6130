"""Stamps: every committed notebook's outputs come from its current code, or it is listed as due.

The first three tests read the real notebooks; the rest build a tiny git repository in tmp_path."""

from __future__ import annotations

import subprocess
from pathlib import Path

import nbformat
import pytest

from tools.notebook_stamp import (
    REPO_ROOT,
    UNSTAMPED_FILE,
    due_for_rerun,
    imported_names,
    make_stamp,
    mark_stamped,
    notebooks,
    package_dependencies,
    package_hash,
    stale_cells,
    unstamped_list,
)

NOTEBOOKS = [p.as_posix() for p in notebooks()]


def read(path) -> nbformat.NotebookNode:
    return nbformat.read(REPO_ROOT / path, as_version=4)


def test_unstamped_list_names_exactly_the_notebooks_without_a_stamp():
    """A fast run's stamp does not count: its outputs are not the ones to commit."""
    listed = unstamped_list()
    unstamped = [p for p in NOTEBOOKS if read(p).metadata.get("stamp", {}).get("mode") != "full"]
    assert sorted(set(listed) - set(NOTEBOOKS)) == [], f"{UNSTAMPED_FILE} names notebooks that do not exist"
    assert sorted(set(unstamped) - set(listed)) == [], (
        f"notebooks without a full run's stamp: run them with `python -m tools.run_notebook` (not in {UNSTAMPED_FILE})")
    assert sorted(set(listed) - set(unstamped)) == [], f"stamped now: remove them from {UNSTAMPED_FILE}"
    print(f"{len(listed)} of {len(NOTEBOOKS)} notebooks are not stamped yet ({UNSTAMPED_FILE})")


@pytest.mark.parametrize("path", NOTEBOOKS)
def test_code_cells_match_the_stamp(path):
    nb = read(path)
    if not nb.metadata.get("stamp"):
        pytest.skip(f"not stamped yet (listed in {UNSTAMPED_FILE})")
    assert stale_cells(nb) == [], f"{path}: edited since its full run; rerun it with `python -m tools.run_notebook`"


@pytest.mark.parametrize("path", NOTEBOOKS)
def test_no_package_changed_since_the_stamp(path):
    nb = read(path)
    if not nb.metadata.get("stamp"):
        pytest.skip(f"not stamped yet (listed in {UNSTAMPED_FILE})")
    try:
        reasons = due_for_rerun(nb)
    except LookupError as err:  # a shallow clone: the workflow's checkout fetches the history
        pytest.skip(str(err))
    except OSError:
        pytest.skip("git is not available")
    assert reasons == [], (f"{path} is due for a rerun (or declare the commits output-neutral: a trailer "
                           "'Output-neutral: <why>' or a line in tools/output_neutral.txt)")


def test_imported_names():
    src = "import os\nfrom ch05_pretrain.fallback import x\nimport ch02_data as d, bonus_dpo.dpo\n  from .a import b\n"
    assert imported_names(src) == {"os", "ch05_pretrain", "ch02_data", "bonus_dpo"}


# A tiny repository: ch02_a (no imports), ch05_b (imports ch02_a), a notebook in ch05_b.


def git(root: Path, *args: str) -> str:
    cmd = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "commit.gpgsign=false", *args]
    return subprocess.run(cmd, cwd=root, capture_output=True, text=True, check=True).stdout.strip()


def write(root: Path, path: str, text: str) -> None:
    (root / path).parent.mkdir(parents=True, exist_ok=True)
    (root / path).write_text(text, encoding="utf-8", newline="\n")  # LF on Windows too, as git stores it


def commit(root: Path, message: str) -> None:
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", message)


@pytest.fixture
def repo(tmp_path):
    git(tmp_path, "init", "-q")
    write(tmp_path, "ch02_a/__init__.py", "X = 1\n")
    write(tmp_path, "ch05_b/__init__.py", "from ch02_a import X\n")
    write(tmp_path, "ch05_b/tests/test_b.py", "def test(): pass\n")
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# B"),
        nbformat.v4.new_code_cell("from ch05_b import X\nprint(X)"),
    ])
    nbformat.write(nb, tmp_path / "ch05_b/ch05_b.ipynb")
    commit(tmp_path, "start")
    return tmp_path


def stamp(root: Path) -> nbformat.NotebookNode:
    """What run_notebook does after a full run: stamp the notebook and write it."""
    path = root / "ch05_b/ch05_b.ipynb"
    nb = nbformat.read(path, as_version=4)
    nb.metadata["stamp"] = make_stamp(nb, 12.5, "full", root, device="cpu", torch_version="2.13.0")
    nbformat.write(nb, path)
    return nb


def test_stamp_records_cells_and_transitive_packages(repo):
    nb = stamp(repo)
    s = nb.metadata["stamp"]
    assert package_dependencies(nb, repo) == ["ch02_a", "ch05_b"]
    assert set(s["packages"]) == {"ch02_a", "ch05_b"} and len(s["code_cells"]) == 1
    assert s["commit"] == git(repo, "rev-parse", "HEAD") and s["uncommitted"] is False
    assert (s["torch"], s["device"], s["wall_time_s"], s["mode"]) == ("2.13.0", "cpu", 12.5, "full")
    assert package_hash("ch02_a", repo) == package_hash("ch02_a", repo, "HEAD")
    assert stale_cells(nb) == []
    nb.cells[1].source = "# NBVAL_CHECK_OUTPUT\n" + nb.cells[1].source
    assert stale_cells(nb) == ["cell 1 edited since the run: 'from ch05_b import X'"]
    nb.cells.append(nbformat.v4.new_code_cell("1"))
    assert "2 code cells, 1 when stamped" in stale_cells(nb)
    nb.metadata["stamp"]["mode"] = "fast"
    assert "stamped by a 'fast' run, not a full one" in stale_cells(nb)


def test_notebook_commits_and_test_changes_do_not_make_it_due(repo):
    nb = stamp(repo)
    commit(repo, "rerun the notebook")
    write(repo, "ch05_b/tests/test_b.py", "def test(): assert True\n")
    commit(repo, "a test changed")
    assert due_for_rerun(nb, repo) == []


def test_a_package_change_makes_it_due_until_declared_output_neutral(repo):
    nb = stamp(repo)
    commit(repo, "rerun the notebook")
    write(repo, "ch02_a/__init__.py", "X = 2\n")
    commit(repo, "X is 2 now")
    reasons = due_for_rerun(nb, repo)
    assert len(reasons) == 1 and reasons[0].startswith("ch02_a changed in ") and "X is 2 now" in reasons[0]
    sha = git(repo, "rev-parse", "HEAD")
    write(repo, "tools/output_neutral.txt", f"# why\n{sha[:8]} X is never printed\n")
    assert due_for_rerun(nb, repo) == []
    write(repo, "ch02_a/__init__.py", "X = 3  # a comment\n")
    commit(repo, "X is 3\n\nOutput-neutral: the notebook prints nothing of X")
    assert due_for_rerun(nb, repo) == []
    write(repo, "ch05_b/__init__.py", "from ch02_a import X  # B\n")
    commit(repo, "B changed")
    assert [r.split(" in ")[0] for r in due_for_rerun(nb, repo)] == ["ch05_b changed"]


def test_a_stamp_from_a_working_tree_committed_afterwards_is_current(repo):
    write(repo, "ch02_a/__init__.py", "X = 5\n")  # edited, run, then committed with the notebook
    nb = stamp(repo)
    assert nb.metadata["stamp"]["uncommitted"] is True
    commit(repo, "X is 5, notebook rerun")
    assert due_for_rerun(nb, repo) == []


def test_a_stamp_from_code_never_committed_is_due(repo):
    write(repo, "ch02_a/__init__.py", "X = 5\n")
    nb = stamp(repo)
    git(repo, "checkout", "--", "ch02_a/__init__.py")
    assert due_for_rerun(nb, repo) == ["ch02_a changed since the run, which ran uncommitted code (not "
                                       f"{nb.metadata['stamp']['commit'][:10]}'s)"]


def test_a_stamp_commit_missing_from_the_clone_raises_lookup_error(repo):
    nb = stamp(repo)
    nb.metadata["stamp"]["commit"] = "0" * 40
    write(repo, "ch02_a/__init__.py", "X = 2\n")
    commit(repo, "X is 2")
    with pytest.raises(LookupError):
        due_for_rerun(nb, repo)


def test_mark_stamped_shrinks_the_unstamped_list(tmp_path):
    write(tmp_path, UNSTAMPED_FILE, "# comment\na/a.ipynb\nb/b.ipynb\n")
    mark_stamped("a/a.ipynb", tmp_path)
    assert unstamped_list(tmp_path) == ["b/b.ipynb"]
    assert (tmp_path / UNSTAMPED_FILE).read_text(encoding="utf-8").startswith("# comment\n")


def test_the_hash_without_git_is_the_hash_with_git(repo, monkeypatch):
    import tools.notebook_stamp as stamp_module

    with_git = package_hash("ch05_b", repo)

    def no_git(*args):
        raise OSError("git is not installed")

    monkeypatch.setattr(stamp_module, "git", no_git)
    assert package_hash("ch05_b", repo) == with_git


def test_grading_markers_do_not_change_a_cells_hash_but_code_does():
    from tools.notebook_stamp import cell_hash

    plain = "def f(x):\n    return x + 1\n"
    marked = "def f(x):\n    ### BEGIN SOLUTION\n    return x + 1\n    ### END SOLUTION\n"
    assert cell_hash(marked) == cell_hash(plain)
    assert cell_hash(plain.replace("+ 1", "+ 2")) != cell_hash(plain)
