"""The notebook tidier keeps what a reader sees and drops what only bloats the file."""

import nbformat

from tools.run_notebook import collapse_carriage_returns, tidy


def test_collapse_keeps_the_last_redraw_of_each_line():
    raw = "train:  0%|  | 0/3\rtrain: 33%|# | 1/3\rtrain: 100%|##| 3/3\r\nDone\n"
    assert collapse_carriage_returns(raw) == "train: 100%|##| 3/3\nDone\n"
    assert collapse_carriage_returns("plain\ntext") == "plain\ntext"


def test_tidy_merges_streams_drops_timestamps_and_flags_absolute_paths():
    from tools.run_notebook import REPO_ROOT

    cell = nbformat.v4.new_code_cell("print(1)")
    cell.metadata["execution"] = {"iopub.execute_input": "2026-11-29T01:00:00Z"}
    cell.outputs = [
        nbformat.v4.new_output("stream", name="stderr", text="a 0%\ra 50%"),
        nbformat.v4.new_output("stream", name="stderr", text="\ra 100%\n"),
        nbformat.v4.new_output("stream", name="stdout", text=f"saved to {REPO_ROOT}/x.pt\n"),
    ]
    nb = nbformat.v4.new_notebook(cells=[cell])
    warnings = tidy(nb)
    assert "execution" not in nb.cells[0].metadata
    assert [o.text for o in nb.cells[0].outputs] == ["a 100%\n", f"saved to {REPO_ROOT}/x.pt\n"]
    assert warnings == ["cell 0: an output prints an absolute path"]


def test_tidy_flags_a_warning_that_names_the_python_install_instead_of_hiding_it():
    import sys

    text = (f"{sys.prefix}/lib/site-packages/tqdm/auto.py:21: TqdmWarning: IProgress not found.\n"
            "Base model: the fallback\n")
    cell = nbformat.v4.new_code_cell("import x")
    cell.outputs = [nbformat.v4.new_output("stream", name="stderr", text=text)]
    nb = nbformat.v4.new_notebook(cells=[cell])
    assert tidy(nb) == ["cell 0: an output prints an absolute path"]
    assert nb.cells[0].outputs[0].text == text


def _nb(*cells):
    return nbformat.v4.new_notebook(cells=list(cells))


def test_markdown_edited_during_a_run_is_kept_and_gets_the_outputs(tmp_path):
    from tools.run_notebook import merge_into_current

    path = tmp_path / "n.ipynb"
    ran = _nb(nbformat.v4.new_markdown_cell("old text"), nbformat.v4.new_code_cell("print(1)"))
    ran.cells[1].outputs = [nbformat.v4.new_output("stream", name="stdout", text="1\n")]
    ran.metadata["stamp"] = {"mode": "full"}
    # meanwhile: the text edited, a figure cell added, a grading marker put in the code cell
    nbformat.write(_nb(nbformat.v4.new_markdown_cell("new text"), nbformat.v4.new_markdown_cell("![f](f.svg)"),
                       nbformat.v4.new_code_cell("### BEGIN SOLUTION\nprint(1)\n### END SOLUTION")), path)
    merged = merge_into_current(ran, path)
    assert [c.source for c in merged.cells[:2]] == ["new text", "![f](f.svg)"]
    assert merged.cells[2].source.startswith("### BEGIN SOLUTION")
    assert merged.cells[2].outputs[0].text == "1\n"
    assert merged.metadata["stamp"] == {"mode": "full"}


def test_code_edited_during_a_run_leaves_the_notebook_as_it_ran(tmp_path):
    from tools.run_notebook import merge_into_current

    path = tmp_path / "n.ipynb"
    ran = _nb(nbformat.v4.new_code_cell("print(1)"))
    nbformat.write(_nb(nbformat.v4.new_code_cell("print(2)")), path)
    assert merge_into_current(ran, path) is ran
