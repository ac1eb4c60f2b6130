"""The experiments script: rows land in the CSV as they finish, a rerun skips them, bad paths fail first."""

import csv

import pytest
import torch

from ch04_gpt import GPTConfig, GPTModel
from ch06_classify import experiments
from ch06_classify.baseline import tfidf_baseline

# GPT-2's vocabulary (the data is tokenized with its tokenizer) on a tiny body.
TINY = GPTConfig(vocab_size=50257, context_length=16, emb_dim=16, n_heads=2, n_layers=1, drop_rate=0.0)


@pytest.fixture
def tiny_base(monkeypatch):
    """Replace the pretrained-model loader by a tiny random GPTModel and count its calls."""
    calls = []

    def load(name, device):
        calls.append(name)
        torch.manual_seed(0)
        return GPTModel(TINY).to(device), "tiny-test-model"

    monkeypatch.setenv("FAST_DEV_RUN", "1")
    monkeypatch.setattr(experiments, "load_base_model", load)
    return calls


def read_rows(path):
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def test_two_rows_are_written_then_skipped_on_a_second_run(tmp_path, tiny_base, capsys):
    out = tmp_path / "sub" / "results.csv"
    table = experiments.run_experiments(["default", "head"], out=out, device="cpu", progress=False)
    rows = read_rows(out)
    assert [r["row"] for r in rows] == ["default", "head"]
    assert list(rows[0]) == list(experiments.COLUMNS)
    assert list(table.columns) == list(experiments.COLUMNS) and len(table) == 2
    for r in rows:
        assert 0 <= float(r["test_acc"]) <= 1 and 0 <= float(r["val_acc"]) <= 1
        assert float(r["seconds"]) > 0 and r["model"] == "tiny-test-model" and r["epochs"] == "1"
    # head only: a (C -> 2) layer; last block: the block, the final norm and the head.
    assert int(rows[1]["trainable_params"]) == 16 * 2 + 2
    assert int(rows[0]["trainable_params"]) == 16 * 2 + 2 + 12 * 16 * 16 + 13 * 16 + 2 * 16
    assert tiny_base == ["gpt2"]  # load_base_model decides: GPT2_DIR in fast mode, else the fallback

    # Second run: both rows are already there, so nothing is loaded or trained.
    table = experiments.run_experiments(["default", "head"], out=out, device="cpu", progress=False)
    assert tiny_base == ["gpt2"] and len(table) == 2 and len(read_rows(out)) == 2
    assert "2 rows already in" in capsys.readouterr().out

    # A new row is appended after the old ones; the header is not repeated.
    experiments.run_experiments(["head", "tfidf"], out=out, device="cpu", progress=False)
    assert [r["row"] for r in read_rows(out)] == ["default", "head", "tfidf"]


def test_an_unwritable_out_fails_before_any_training(tmp_path, tiny_base, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder", encoding="utf-8")
    with pytest.raises(ValueError, match="out='.*a_file/results.csv' lies under .*a_file', which is a file"):
        experiments.run_experiments(["default"], out=blocker / "results.csv", device="cpu")
    assert tiny_base == []  # no model was even loaded
    # The command line says it in one line and exits with status 2.
    assert experiments.main(["--rows", "default", "--out", str(blocker / "r.csv")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: out=") and tiny_base == []


def test_a_foreign_csv_is_not_appended_to(tmp_path, tiny_base):
    out = tmp_path / "other.csv"
    out.write_text("a,b\n1,2\n", encoding="utf-8")
    with pytest.raises(ValueError, match="has columns \\['a', 'b'\\]"):
        experiments.run_experiments(["default"], out=out)
    assert out.read_text(encoding="utf-8") == "a,b\n1,2\n" and tiny_base == []


@pytest.mark.parametrize("kwargs, words", [
    ({"rows": ["defualt"]}, "rows=\\['defualt'\\]; choose from default, first"),  # codespell:ignore defualt
    ({"rows": []}, "rows=\\[\\]"),
    ({"epochs": 0}, "epochs=0"),
    ({"lr": -1.0}, "lr=-1.0"),
])
def test_bad_arguments_are_refused_in_one_sentence(tmp_path, tiny_base, kwargs, words):
    with pytest.raises(ValueError, match=words):
        experiments.run_experiments(out=tmp_path / "r.csv", **{"rows": ["default"], **kwargs})
    assert tiny_base == [] and not (tmp_path / "r.csv").exists()  # refused before anything ran


def test_every_row_name_is_unique_and_changes_one_documented_thing():
    names = [r.name for r in experiments.ROWS]
    assert len(names) == len(set(names)) and names[0] == "default"
    default = experiments.ROWS[0]
    assert (default.pooling, default.trainable, default.causal, default.lora_rank, default.pad) == (
        "last", "last_block", True, None, "fixed")


def test_tfidf_baseline_separates_obvious_spam():
    train_texts = ["win a free prize now", "call now to claim your prize", "free entry win cash",
                   "see you at lunch", "are we still on for tonight", "thanks, talk later"]
    train_labels = ["spam", "spam", "spam", "ham", "ham", "ham"]
    acc = tfidf_baseline(train_texts, train_labels, ["claim your free prize", "see you tonight"],
                         ["spam", "ham"])
    assert acc == 1.0
    with pytest.raises(ValueError, match="train_texts has 6 messages and train_labels 5"):
        tfidf_baseline(train_texts, train_labels[:5], ["x"], ["ham"])
    with pytest.raises(ValueError, match="only \\['ham'\\]"):
        tfidf_baseline(["a", "b"], ["ham", "ham"], ["x"], ["ham"])


def test_a_cut_last_line_is_removed_not_appended_to(tmp_path, tiny_base, capsys):
    # A run killed while writing a row leaves a last line without its newline.
    out = tmp_path / "results.csv"
    experiments.run_experiments(["head"], out=out, device="cpu", progress=False)
    whole = out.read_text(encoding="utf-8")
    with open(out, "a", encoding="utf-8", newline="") as f:
        f.write("tfidf,TF-IDF feat")
    table = experiments.run_experiments(["head", "tfidf"], out=out, device="cpu", progress=False)
    assert "removed its cut last line 'tfidf,TF-IDF feat'" in capsys.readouterr().out
    assert out.read_text(encoding="utf-8").startswith(whole)
    assert [r["row"] for r in read_rows(out)] == ["head", "tfidf"] and len(table) == 2


def test_a_row_of_the_wrong_length_is_refused(tmp_path, tiny_base):
    out = tmp_path / "results.csv"
    out.write_text(",".join(experiments.COLUMNS) + "\nhead,1,2\n", encoding="utf-8")
    with pytest.raises(ValueError, match="line 2 has 3 fields, not 9"):
        experiments.run_experiments(["tfidf"], out=out, device="cpu", progress=False)


def test_out_under_a_file_is_named(tmp_path, tiny_base):
    (tmp_path / "notes").write_text("x", encoding="utf-8")
    with pytest.raises(ValueError, match=r"lies under .*notes', which is a file, not a folder"):
        experiments.run_experiments(["tfidf"], out=tmp_path / "notes" / "r.csv", device="cpu",
                                    progress=False)
