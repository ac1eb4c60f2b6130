"""Every notebook's GPT-2 branch, executed in fast mode with stand-in weights of GPT-2 124M's exact
shapes in $GPT2_DIR (random values written by transformers: OpenAI's cannot be downloaded here).

nbval runs each notebook once as CI's machine finds it: offline, so with chapter 5's fallback model.
This runs the notebooks that load a pretrained GPT-2 a second time (chapter 5: its loading section),
the way a connected reader's run goes, and fails when one of them silently falls back: each must print the line of
`load_base_model` (or the distillation teacher's name) saying it took GPT-2. Chapter 7 asks for
GPT-2 355M, which the folder does not hold, so its line must also say it took 124M instead.
The chapters share one checkpoint folder in a temporary directory, in order: chapter 7's fine-tuned
stand-in is what the DPO notebook starts from, and nothing lands in the repository's checkpoints/.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

ROOT = Path(__file__).resolve().parents[2]
TOOK_124M = "Base model: OpenAI GPT-2 124M (gpt2), from GPT2_DIR"
# notebook -> what its output must contain (in the order they run: chapter 7 before DPO)
NOTEBOOKS = {
    "ch05_pretrain/ch05_pretrain.ipynb": [TOOK_124M, "largest logit difference"],
    "ch06_classify/ch06_classify.ipynb": [TOOK_124M, "Estimated cost: about"],
    "ch07_instruct/ch07_instruct.ipynb": [
        TOOK_124M + " (gpt2-medium: fast mode takes GPT-2 only from $GPT2_DIR/gpt2-medium/",
        "Estimated cost: about",
        "saved for the bonus chapters as ch07-instruct-gpt2.pt",
    ],
    "bonus_dpo/bonus_dpo.ipynb": [TOOK_124M + " (gpt2-medium: fast mode", "model: gpt2, lr 5e-06",
                                  "Estimated cost: about"],
    "bonus_distill/bonus_distill.ipynb": [TOOK_124M, "teacher: gpt2, 124.4M parameters"],
}
# Chapter 5 loads GPT-2 in one section: only its cells run, after the imports and this preamble
# (the rest of the chapter trains models that have nothing to do with GPT-2, minutes in fast mode).
SECTIONS = {"ch05_pretrain/ch05_pretrain.ipynb": "## 5.7 "}
PREAMBLE = """device = get_device()
tokenizer = gpt2_encoding()
prompt_ids = torch.tensor([tokenizer.encode("Every effort moves you")], device=device)"""


def _only_section(nb, heading: str):
    """The notebook cut to its first code cell (the imports), PREAMBLE, and the cells from the
    markdown heading `heading` to the next second-level heading."""
    start = next(i for i, c in enumerate(nb.cells) if c.cell_type == "markdown" and c.source.startswith(heading))
    end = next((i for i in range(start + 1, len(nb.cells)) if nb.cells[i].cell_type == "markdown"
                and nb.cells[i].source.startswith("## ")), len(nb.cells))
    imports = next(c for c in nb.cells if c.cell_type == "code")
    nb.cells = [imports, nbformat.v4.new_code_cell(PREAMBLE), *nb.cells[start:end]]
    return nb


def _output_text(nb) -> str:
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                parts.append(out.get("text", ""))
            elif "data" in out:
                parts.append(out["data"].get("text/plain", ""))
    return "".join(parts)


@pytest.fixture(scope="module")
def gpt2_env(gpt2_standin_dir, tmp_path_factory):
    """The environment of a connected reader's fast run: GPT2_DIR set, a fresh checkpoint folder."""
    saved = dict(os.environ)
    os.environ.update(GPT2_DIR=str(gpt2_standin_dir), FAST_DEV_RUN="1",
                      CHECKPOINT_DIR=str(tmp_path_factory.mktemp("checkpoints")))
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.mark.parametrize("notebook", list(NOTEBOOKS))
def test_the_gpt2_branch_runs(gpt2_env, notebook):
    path = ROOT / notebook
    nb = nbformat.read(path, as_version=4)
    if notebook in SECTIONS:
        nb = _only_section(nb, SECTIONS[notebook])
    client = nbclient.NotebookClient(nb, timeout=900, kernel_name="python3",
                                     resources={"metadata": {"path": str(path.parent)}})
    client.execute()  # raises CellExecutionError, with the failing cell, when a cell fails
    text = _output_text(nb)
    for expected in NOTEBOOKS[notebook]:
        assert expected in text, f"{notebook}: no {expected!r} in its output"
    fallback_lines = re.findall(r"^Base model: .*TinyStories.*$", text, flags=re.M)
    assert not fallback_lines, f"{notebook} fell back: {fallback_lines}"
