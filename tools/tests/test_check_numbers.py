"""Numbers in the prose that no output shows: none beyond the known backlog, and the backlog shrinks."""

from __future__ import annotations

import nbformat

from tools.check_numbers import BASELINE_FILE, QUOTED_FILE, compare, findings, prose, read_list, unexplained
from tools.notebook_stamp import REPO_ROOT


def test_no_new_unexplained_numbers_in_the_notebooks():
    found = unexplained()
    new, gone = compare(found)
    assert new == [], (f"numbers in markdown that no output shows: print and cite them, or quote them in "
                       f"{QUOTED_FILE} (`python -m tools.check_numbers` lists them)")
    assert gone == [], f"fixed since: remove these lines from {BASELINE_FILE}"
    print(f"{sum(map(len, found.values()))} known findings in {BASELINE_FILE}, to fix in the teaching pass")


def test_the_lists_are_well_formed():
    assert read_list(REPO_ROOT / QUOTED_FILE) and read_list(REPO_ROOT / BASELINE_FILE) is not None


def test_prose_drops_code_latex_links_headings_sections_and_versions():
    md = ("## 5.3 Decoding\nSee section 5.2 and figures 3–4, `lr=4e-4`, $10^{12}$, [run](https://x.org/123),"
          " <img width=640>, PyTorch 2.4; loss 3.85\n```\nx = 99\n```")
    assert prose(md).split().count("3.85") == 1
    for gone in ("5.3", "5.2", "4e-4", "12", "123", "640", "2.4", "99"):
        assert gone not in prose(md).split(), gone


def markdown_and_output(markdown: str, output: str, code: str = "pass") -> nbformat.NotebookNode:
    cell = nbformat.v4.new_code_cell(code)
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=output)]
    return nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(markdown), cell])


def test_findings_match_outputs_code_and_the_stamped_wall_time_at_the_written_precision():
    nb = markdown_and_output("Loss 3.85 (not 3.95), accuracy 91.3%, 16.1M parameters, lr 5e-5, "
                             "9 steps in 2026, a 4.2-minute run, 5.1 as a section",
                             "val loss 3.848, acc 0.913, params 16,140,000\n", code="lr = 5e-5")
    nb.metadata["stamp"] = {"wall_time_s": 250.0}
    assert [n.written for _, n, _ in findings(nb, sections={"5.1"})] == ["3.95"]
    assert findings(nb)[-1][1].written == "5.1"


def test_a_python_literal_with_underscores_in_code_backs_the_prose():
    nb = markdown_and_output("The first 200,000 characters, then 300,000", "", code="text = text[:200_000]")
    assert [n.written for _, n, _ in findings(nb)] == ["300,000"]


def test_compare_reports_new_findings_and_baseline_lines_no_longer_found(tmp_path):
    (tmp_path / "tools").mkdir()
    (tmp_path / BASELINE_FILE).write_text("# header\na/a.ipynb 3.95 cell 0: old\na/a.ipynb 12 cell 0: fixed\n",
                                          encoding="utf-8")
    nb = markdown_and_output("loss 3.95 and 4.15 and 3.95 again", "loss 3.848\n")
    found = {"a/a.ipynb": findings(nb)}
    new, gone = compare(found, tmp_path)
    assert new == ["a/a.ipynb 4.15 cell 0: loss 3.95 and 4.15 and 3.95 again"]
    assert gone == ["a/a.ipynb 12"]
