"""tools.student: the marked regions become `raise NotImplementedError`; all else stays, outputs go."""

import ast

import nbformat
import pytest

from tools.student import BEGIN, END, MarkerError, REPO_ROOT, main, strip_solutions

CELL = '''class Norm(nn.Module):
    """Docstring kept."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # a comment before the markers stays
        ### BEGIN SOLUTION
        mean = x.mean(-1, keepdim=True)
        return x - mean
        ### END SOLUTION


out = Norm()(x)'''


def test_strip_solutions_keeps_signature_docstring_and_the_rest():
    source, n = strip_solutions(CELL)
    assert n == 1
    assert source == '''class Norm(nn.Module):
    """Docstring kept."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # a comment before the markers stays
        raise NotImplementedError


out = Norm()(x)'''
    ast.parse(source)


@pytest.mark.parametrize("bad", [f"{BEGIN}\nx = 1", f"x = 1\n{END}", f"{BEGIN}\n{BEGIN}\n{END}\n{END}"])
def test_unpaired_markers_are_refused(bad):
    with pytest.raises(MarkerError):
        strip_solutions(bad)


def signature(node: ast.FunctionDef | ast.ClassDef) -> str:
    """A def's arguments, return annotation and decorators, or a class's bases, as text."""
    if isinstance(node, ast.ClassDef):
        return ast.dump(ast.Tuple(node.bases))
    return ast.dump(ast.Tuple([node.args, node.returns or ast.Constant(None), *node.decorator_list]))


def marked_chapters() -> list[str]:
    return sorted(p.parent.name for p in REPO_ROOT.glob("*/*.ipynb")
                  if p.stem == p.parent.name and BEGIN in p.read_text(encoding="utf-8"))


def test_ch03_and_ch04_are_marked():
    assert {"ch03_attention", "ch04_gpt"} <= set(marked_chapters())


@pytest.mark.parametrize("chapter", marked_chapters())
def test_student_notebook_of_each_marked_chapter(chapter, tmp_path, capsys):
    assert main([chapter, "--out", str(tmp_path)]) == 0
    path = tmp_path / f"{chapter}_student.ipynb"
    student = nbformat.read(path, as_version=4)
    original = nbformat.read(REPO_ROOT / chapter / f"{chapter}.ipynb", as_version=4)
    assert len(student.cells) == len(original.cells) + 1  # one note on top
    assert student.metadata["classroom"]["chapter"] == chapter
    stubs = 0
    for mine, theirs in zip(student.cells[1:], original.cells):
        assert mine.cell_type == theirs.cell_type
        if mine.cell_type != "code":
            assert mine.source == theirs.source
            continue
        assert mine.outputs == [] and mine.execution_count is None
        assert BEGIN not in mine.source and END not in mine.source
        if BEGIN in theirs.source:
            stubs += mine.source.count("raise NotImplementedError")
            tree = ast.parse(mine.source)  # still valid Python
            originals = {n.name: n for n in ast.walk(ast.parse(theirs.source))
                         if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
            for node in ast.walk(tree):  # every signature and docstring unchanged
                if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                    assert signature(node) == signature(originals[node.name]), node.name
                    assert ast.get_docstring(node) == ast.get_docstring(originals[node.name])
        else:
            assert mine.source == theirs.source
    regions = sum(c.source.count(BEGIN) for c in original.cells if c.cell_type == "code")
    assert stubs == regions > 0
    assert f"({regions} pieces to write)" in capsys.readouterr().out
