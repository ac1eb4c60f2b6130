"""`python -m tools.run_notebook --all`: its order and its table, on tiny notebooks in tmp_path."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from tools import run_notebook
from tools.output_numbers import moved, numbers
from tools.rerun_all import format_table, notebook_order


def notebook(path: Path, *sources: str, outputs: list[str] | None = None) -> nbformat.NotebookNode:
    cells = [nbformat.v4.new_code_cell(src) for src in sources]
    for cell, text in zip(cells, outputs or []):
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=text)]
    nb = nbformat.v4.new_notebook(cells=cells)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        (path.parent / "__init__.py").touch()
        nbformat.write(nb, path)
    return nb


def test_producers_run_before_the_chapters_that_load_their_models(tmp_path):
    notebook(tmp_path / "ch02_data/ch02_data.ipynb", "print(1)")
    notebook(tmp_path / "ch02_data/solutions.ipynb", "print(1)")
    notebook(tmp_path / "ch03_attention/ch03_attention.ipynb", "m = get_fallback_model(verbose=False)")
    notebook(tmp_path / "ch04_gpt/ch04_gpt.ipynb", "print(4)")
    notebook(tmp_path / "ch05_pretrain/ch05_pretrain.ipynb", "m = get_fallback_model()")
    notebook(tmp_path / "ch05_pretrain/solutions.ipynb", "print(5)")
    notebook(tmp_path / "ch07_instruct/ch07_instruct.ipynb", "base = load_base_model('gpt2')")
    notebook(tmp_path / "bonus_dpo/bonus_dpo.ipynb", "m = get_instruction_model()")
    notebook(tmp_path / "bonus_distill/bonus_distill.ipynb", "print(0)")
    (tmp_path / "notes").mkdir()  # not a package: no __init__.py
    nbformat.write(nbformat.v4.new_notebook(), tmp_path / "notes/scratch.ipynb")
    assert [p.as_posix() for p in notebook_order(tmp_path)] == [
        "ch02_data/ch02_data.ipynb",
        "ch02_data/solutions.ipynb",
        "ch05_pretrain/ch05_pretrain.ipynb",  # pulled forward: chapter 3 loads its model
        "ch05_pretrain/solutions.ipynb",
        "ch03_attention/ch03_attention.ipynb",
        "ch04_gpt/ch04_gpt.ipynb",
        "ch07_instruct/ch07_instruct.ipynb",
        "bonus_distill/bonus_distill.ipynb",
        "bonus_dpo/bonus_dpo.ipynb",
    ]


def test_the_real_order_puts_chapter_5_before_3_and_7_before_the_dpo_bonus():
    order = [p.parent.name for p in notebook_order()]
    assert order.index("ch05_pretrain") < order.index("ch03_attention") < order.index("ch06_classify")
    assert order.index("ch07_instruct") < order.index("bonus_dpo")
    assert len(order) == 16


def test_numbers_read_separators_suffixes_and_percentages_but_not_identifiers():
    found = numbers("loss 3.848 on 5,145 tokens, 91.3%, 16.1M params, lr 4e-4; ch05 fp32 torch 2.13.0")
    assert [n.written for n in found] == ["3.848", "5,145", "91.3%", "16.1M", "4e-4"]
    assert [n.value for n in found][:3] == [3.848, 5145.0, 91.3]
    assert found[3].matches(16_140_000) and not found[3].matches(16_200_000)
    assert found[2].matches(0.913) and found[0].matches(3.8484) and not found[0].matches(3.85)


def test_moved_pairs_numbers_by_cell_and_position():
    before = notebook(None, "a", "b", "c", outputs=["loss 3.848, step 10\n", "acc 0.90\n", "1 2\n"])
    after = notebook(None, "a", "b", "c", outputs=["loss 3.850, step 10\n", "acc 0.95\n", "1 2 3\n"])
    assert moved(before, after, rtol=0.01) == ["cell 1: 0.90 -> 0.95 (+5.6%)", "cell 2: 2 numbers before, 3 after"]
    assert moved(before, after, rtol=0.1) == ["cell 2: 2 numbers before, 3 after"]


def test_progress_bars_on_stderr_are_not_compared():
    before, after = notebook(None, "a", outputs=["x 1\n"]), notebook(None, "a", outputs=["x 1\n"])
    before.cells[0].outputs.append(nbformat.v4.new_output("stream", name="stderr", text="100%| 5/5 [00:03, 1.5it/s]"))
    after.cells[0].outputs.append(nbformat.v4.new_output("stream", name="stderr", text="100%| 5/5 [00:09, 0.5it/s]"))
    assert moved(before, after, rtol=0.01) == []


def test_table_gives_times_and_moved_numbers():
    rows = [{"notebook": "ch02_data/ch02_data.ipynb", "seconds": 90.0, "before_s": 60.0, "moved": []},
            {"notebook": "ch05_pretrain/ch05_pretrain.ipynb", "seconds": 600.0, "before_s": None,
             "moved": [f"cell {i}: 1 -> 2 (+100.0%)" for i in range(3)]}]
    table = format_table(rows, rtol=0.01, limit=2)
    assert "| ch02_data/ch02_data.ipynb | 1.5 min | 1.0 min | 0 |" in table
    assert "| ch05_pretrain/ch05_pretrain.ipynb | 10.0 min | - | 3 |" in table
    assert table.endswith("ch05_pretrain/ch05_pretrain.ipynb:\n  cell 0: 1 -> 2 (+100.0%)\n"
                          "  cell 1: 1 -> 2 (+100.0%)\n  ... and 1 more")


def test_dry_run_prints_the_order_and_runs_nothing(capsys):
    run_notebook.main(["--all", "--dry-run"])
    lines = capsys.readouterr().out.split()
    assert lines == [p.as_posix() for p in notebook_order()]
    with pytest.raises(SystemExit):
        run_notebook.main(["--all", "ch02_data/ch02_data.ipynb"])


def test_a_run_stamps_the_notebook_reports_a_failing_one_and_prints_the_table(tmp_path, capsys, monkeypatch):
    path, failing = tmp_path / "tiny.ipynb", tmp_path / "failing.ipynb"
    notebook(path, "import math\nprint(round(math.pi, 3))", outputs=["3.0\n"])
    notebook(failing, "print(1)", "assert False, 'broken'", outputs=["1\n"])
    before = failing.read_text(encoding="utf-8")
    monkeypatch.setenv("FAST_DEV_RUN", "1")  # run() sets it for the kernel; restored after the test
    assert run_notebook.main([str(failing), str(path), "--fast", "--timeout", "120"]) == 1
    assert failing.read_text(encoding="utf-8") == before  # left as it was
    stamp = nbformat.read(path, as_version=4).metadata["stamp"]
    assert stamp["mode"] == "fast" and stamp["packages"] == {} and len(stamp["code_cells"]) == 1
    out = capsys.readouterr().out
    assert "cell 0: 3.0 -> 3.142 (+4.7%)" in out and "failed, AssertionError: broken" in out
    assert "| failed after " in out
