"""tools.grade: every marked chapter's student notebook fails on every piece; a chapter notebook passes.

Grading executes notebooks in fast mode up to their last graded cell. Measured on a shared 2-core CPU
(student and chapter notebook together): ch03 16 s, ch02 32 s, DPO 63 s, ch06 68 s, ch04 84 s,
distillation 91 s, ch07 128 s, ch05 135 s (212 s with the machine's load average at 11); about 10.4 min
for the eight chapters. That is half of CI's 20 minutes, so the chapter notebooks are graded through
one chapter only: a chapter notebook passes the grader exactly when its graded cells raise nothing in
fast mode, and nbval executes every chapter notebook in fast mode in the same test run, so a graded
cell that fails there fails CI (`test_every_chapter_notebook_runs_under_nbval` keeps it that way)."""

from pathlib import Path

import pytest

from tools import grade
from tools.student import REPO_ROOT, main as write_student
from tools.tests.test_student import marked_chapters


def test_a_wrong_value_is_reported_with_by_how_much(tmp_path):
    import nbformat

    cells = ["import torch\n# GRADE: ok\nassert torch.equal(torch.ones(2), torch.ones(2))",
             "# GRADE: close\nassert torch.allclose(torch.ones(3), torch.full((3,), 1.5), atol=1e-6)",
             "diff = 0.25\n# GRADE: small\nassert diff < 1e-5",
             "def f():\n    raise NotImplementedError\n\n\n# GRADE: stub\nf()",
             "# GRADE: later\nprint(undefined_name)",
             "def g(x):\n    return x @ x\n\n\n# GRADE: shapes\ng(torch.ones(2, 3))",
             "# GRADE: top_level\nx = 1\nraise NotImplementedError"]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    path = tmp_path / "toy.ipynb"
    nbformat.write(nb, path)
    pieces, _ = grade.grade(path)
    failures = {name: p.failures for name, p in pieces.items()}
    assert failures["ok"] == []
    assert failures["close"] == ["cell 2: wrong values: torch.allclose(torch.ones(3), torch.full((3,), 1.5), "
                                 "atol=1e-06) is false: largest difference 0.5"]
    assert failures["small"] == ["cell 3: wrong values: diff < 1e-05 is false: diff = 0.25"]
    assert failures["stub"] == ["cell 4: not implemented (f raises NotImplementedError)"]
    assert failures["later"] == ["cell 5: error: NameError: name 'undefined_name' is not defined, "
                                 "after an error in cell 2"]
    assert failures["shapes"][0].startswith("cell 6: error: RuntimeError: mat1 and mat2 shapes cannot be multiplied")
    assert failures["shapes"][0].endswith("(in g), after an error in cell 2")
    assert failures["top_level"] == ["cell 7: not implemented (the cell raises NotImplementedError)"]


@pytest.mark.parametrize("chapter", marked_chapters())
def test_student_notebook_fails_every_piece(chapter, tmp_path, capsys):
    assert write_student([chapter, "--out", str(tmp_path)]) == 0
    assert grade.main([str(tmp_path / f"{chapter}_student.ipynb")]) == 1
    student = capsys.readouterr().out.splitlines()
    pieces = grade.graded_pieces(__import__("nbformat").read(REPO_ROOT / chapter / f"{chapter}.ipynb", 4))
    failed = [line for line in student if line.startswith("FAIL  ")]
    assert len(failed) == len(pieces) > 0, student
    assert all("not implemented" in line for line in failed), student
    assert student[-1].startswith(f"0 of {len(pieces)} pieces pass")


def test_a_chapter_notebook_passes_every_piece(capsys):
    chapter = "ch03_attention"  # the quickest to grade (16 s)
    pieces = grade.graded_pieces(__import__("nbformat").read(REPO_ROOT / chapter / f"{chapter}.ipynb", 4))
    assert grade.main([str(REPO_ROOT / chapter / f"{chapter}.ipynb")]) == 0
    chapter_out = capsys.readouterr().out.splitlines()
    assert [line for line in chapter_out if line.startswith("pass  ")] == [f"pass  {p}" for p in pieces]


def test_every_notebook_is_collected_by_the_test_command_cell_by_cell():
    """What README's `pytest` collects, notebooks only (the unit-test modules left out to keep it
    quick): every chapter and solutions notebook in git, each with one nbval item per code cell.
    A notebook dropped by a conftest ignore, an `addopts` deselect or a missing testpath fails."""
    import json
    import subprocess
    import sys

    tracked = subprocess.run(["git", "ls-files", "*.ipynb"], cwd=REPO_ROOT, capture_output=True, text=True,
                             check=True).stdout.split()
    # A chapter is a top-level folder holding a notebook of its own name (ch06_classify/ch06_classify.ipynb).
    chapters = {Path(p).parent.name for p in tracked if p.count("/") == 1 and Path(p).stem == Path(p).parent.name}
    notebooks = sorted(p for p in tracked if Path(p).parts[0] in chapters)
    assert len(chapters) == 8 and {f"{c}/solutions.ipynb" for c in chapters} <= set(notebooks), notebooks
    out = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "--ignore-glob=*.py"],
                         cwd=REPO_ROOT, capture_output=True, text=True, timeout=300).stdout
    collected = {}
    for line in out.splitlines():
        if ".ipynb::" in line:
            path = line.split("::")[0]
            collected[path] = collected.get(path, 0) + 1
    for path in notebooks:
        cells = json.loads((REPO_ROOT / path).read_text(encoding="utf-8"))["cells"]
        n_code = sum(c["cell_type"] == "code" and "".join(c["source"]).strip() != "" for c in cells)
        assert collected.get(path) == n_code, (path, collected.get(path), n_code)
