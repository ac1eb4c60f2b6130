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
