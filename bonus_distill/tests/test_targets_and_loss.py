"""The stored teacher targets and the distillation loss, on tiny models (no data, no network)."""

import json
import os

import pytest
import torch
import torch.nn.functional as F

from bonus_distill import (
    HEADER_BYTES,
    DistillDataset,
    DistillLoss,
    TeacherTargets,
    distill_loss,
    n_positions_for,
    precompute_teacher,
    read_header,
    teacher_generated_tokens,
    windows_loader,
)
from ch02_data import EOT_ID
from ch04_gpt import GPTConfig, GPTModel
from ch05_pretrain import NoTargetsError, train

V, T = 50, 8


def tiny(seed=0, vocab=V, context=16):
    torch.manual_seed(seed)
    return GPTModel(GPTConfig(vocab_size=vocab, context_length=context, emb_dim=16, n_heads=2,
                              n_layers=1, drop_rate=0.0)).eval()


@pytest.fixture
def corpus():
    return torch.randint(0, V, (8 * T + 3,), generator=torch.Generator().manual_seed(1))


def batch_of(dataset, n=None):
    loader = windows_loader(dataset, batch_size=n or len(dataset), shuffle=False)
    return next(iter(loader))


def test_file_round_trips_exactly(tmp_path, corpus):
    teacher = tiny()
    header = precompute_teacher(teacher, corpus, tmp_path / "t.bin", k=5, context_length=T,
                                batch_size=3, progress=False)
    targets = TeacherTargets(tmp_path / "t.bin")
    assert len(targets) == header["n_positions"] == n_positions_for(len(corpus), T) == 8 * T
    assert header["file_bytes"] == HEADER_BYTES + 4 * 5 * len(targets)  # 4k bytes per position
    with torch.no_grad():
        live = torch.log_softmax(teacher(corpus[: 8 * T].view(8, T)).float(), -1).flatten(0, 1)
    lp, ids = live.topk(5, dim=-1)
    for i in (0, 7, 8, 63):  # first, last of a window, first of the next, last
        got_ids, got_lp = targets[i]
        assert torch.equal(got_ids, ids[i])
        assert torch.equal(got_lp, lp[i].half().float())  # exactly the fp16 of the live value
    w_ids, w_lp = targets.window(8, 8)
    assert torch.equal(w_ids, ids[8:16]) and torch.equal(w_lp, lp[8:16].half().float())
    assert read_header(tmp_path / "t.bin")["teacher"]["config"]["vocab_size"] == V


def test_stored_full_vocabulary_loss_equals_live_kl(tmp_path, corpus):
    """k = V: the stored targets hold the whole distribution, so the loss is the ordinary KL."""
    teacher, student = tiny(0), tiny(1)
    precompute_teacher(teacher, corpus, tmp_path / "t.bin", k=V, context_length=T, batch_size=4,
                       progress=False)
    batch = batch_of(DistillDataset(corpus, TeacherTargets(tmp_path / "t.bin")))
    for temperature in (1.0, 2.0, 4.0):
        stored = DistillLoss(temperature, alpha=1.0)(student, batch)
        s_logits, t_logits = student(batch["inputs"]), teacher(batch["inputs"])
        live = F.kl_div(torch.log_softmax(s_logits / temperature, -1).flatten(0, 1),
                        torch.log_softmax(t_logits / temperature, -1).flatten(0, 1),
                        log_target=True, reduction="batchmean") * temperature ** 2
        assert stored.item() == pytest.approx(live.item(), rel=2e-3, abs=1e-4)


def test_loss_is_zero_when_student_is_teacher(tmp_path, corpus):
    teacher = tiny(0)
    precompute_teacher(teacher, corpus, tmp_path / "t.bin", k=V, context_length=T, batch_size=8,
                       progress=False)
    batch = batch_of(DistillDataset(corpus, TeacherTargets(tmp_path / "t.bin")))
    assert abs(DistillLoss(temperature=1.0, alpha=1.0)(teacher, batch).item()) < 1e-5
    assert DistillLoss(temperature=1.0, alpha=1.0)(tiny(1), batch).item() > 1e-3  # random models are near uniform


def test_top_k_loss_with_student_equal_teacher_is_the_missing_mass(tmp_path, corpus):
    """With k < V the student is pulled towards a distribution with no tail: even the teacher
    itself pays -log(its own top-k mass), the bias the sampled variant avoids."""
    teacher = tiny(0)
    precompute_teacher(teacher, corpus, tmp_path / "t.bin", k=3, context_length=T, batch_size=8,
                       progress=False)
    batch = batch_of(DistillDataset(corpus, TeacherTargets(tmp_path / "t.bin")))
    loss = DistillLoss(temperature=1.0, alpha=1.0)(teacher, batch)
    log_p = torch.log_softmax(teacher(batch["inputs"]), -1)
    top_mass = log_p.topk(3, -1).values.exp().sum(-1)
    # KL(p_k || q) with p_k = p / mass on the top ids and q = p: sum p_k log(1/mass) = -log mass
    assert loss.item() == pytest.approx((-top_mass.log()).mean().item(), rel=1e-2)


def test_sampled_targets_are_unbiased_and_top_k_is_not(tmp_path):
    torch.manual_seed(0)
    logits = torch.randn(4, V) * 2
    from bonus_distill.targets import _sample_rows

    p = torch.softmax(logits, -1)
    total = torch.zeros_like(p)
    draws = 400
    gen = torch.Generator().manual_seed(0)
    for _ in range(draws):
        ids, logw = _sample_rows(torch.log_softmax(logits, -1), 8, 1.0, gen)
        w = logw.exp()  # padding slots carry weight 0
        assert torch.allclose(w.sum(-1), torch.ones(4))
        total.scatter_add_(1, ids, w)
    assert (total / draws - p).abs().max().item() < 0.04  # the mean target is p itself
    top_p, top_i = p.topk(8, -1)
    truncated = torch.zeros_like(p).scatter(1, top_i, top_p / top_p.sum(-1, keepdim=True))
    assert (truncated - p).abs().max().item() > 0.04  # renormalised top-k moves mass to the top


def test_sampled_file_and_its_temperature(tmp_path, corpus):
    header = precompute_teacher(tiny(), corpus, tmp_path / "s.bin", k=6, context_length=T,
                                batch_size=8, sampled=True, temperature=2.0, progress=False)
    assert header["sampled"] and header["temperature"] == 2.0
    targets = TeacherTargets(tmp_path / "s.bin")
    ids, lp = targets.window(0, len(targets))
    assert torch.allclose(lp.exp().sum(-1), torch.ones(len(targets)), atol=2e-3)
    assert DistillLoss.for_targets(targets, temperature=2.0).sampled
    with pytest.raises(ValueError, match=r"temperature=1\.0.*T=2"):
        DistillLoss.for_targets(targets, temperature=1.0)


def test_per_token_mean_does_not_depend_on_sequence_length():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, V)
    ids = torch.randint(0, V, (2, 5, 4))
    lps = torch.randn(2, 5, 4).log_softmax(-1)
    targets = torch.randint(0, V, (2, 5))
    short = distill_loss(logits, ids, lps, targets)
    long = distill_loss(logits.repeat(1, 3, 1), ids.repeat(1, 3, 1), lps.repeat(1, 3, 1),
                        targets.repeat(1, 3))
    assert long.item() == pytest.approx(short.item(), rel=1e-6)
    # masked positions (-100) count in neither term
    padded = torch.cat([targets, torch.full((2, 3), -100)], 1)

    def pad(x):
        return torch.cat([x, x[:, :3]], 1)

    assert distill_loss(pad(logits), pad(ids), pad(lps), padded).item() == pytest.approx(
        short.item(), rel=1e-6)
    with pytest.raises(NoTargetsError):
        distill_loss(logits, ids, lps, torch.full((2, 5), -100))


def test_alpha_mixes_the_two_terms():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, V)
    ids, lps = torch.randint(0, V, (2, 5, 4)), torch.randn(2, 5, 4).log_softmax(-1)
    targets = torch.randint(0, V, (2, 5))
    ce = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
    kd = distill_loss(logits, ids, lps, targets, temperature=2.0, alpha=1.0)
    assert distill_loss(logits, ids, lps, targets, 2.0, 0.0).item() == pytest.approx(ce.item(), rel=1e-6)
    mixed = distill_loss(logits, ids, lps, targets, 2.0, 0.3)
    assert mixed.item() == pytest.approx(0.3 * kd.item() + 0.7 * ce.item(), rel=1e-5)


def test_truncated_damaged_or_mismatched_files_are_refused(tmp_path, corpus):
    path = tmp_path / "t.bin"
    precompute_teacher(tiny(), corpus, path, k=4, context_length=T, batch_size=8, progress=False)
    other = corpus.clone()
    other[5] = (other[5] + 1) % V
    with pytest.raises(ValueError, match=r"t\.bin was computed for a corpus of 67 tokens, sha256 "
                                         r"\w+, but the corpus given has 67 tokens, sha256"):
        DistillDataset(other, TeacherTargets(path))
    with pytest.raises(ValueError, match="corpus given has 60 tokens"):
        TeacherTargets(path).check_corpus(corpus[:60])
    data = path.read_bytes()
    (tmp_path / "cut.bin").write_bytes(data[:-10])
    with pytest.raises(ValueError, match="truncated"):
        TeacherTargets(tmp_path / "cut.bin")
    (tmp_path / "junk.bin").write_bytes(b"x" * 5000)
    with pytest.raises(ValueError, match="not a teacher-targets file"):
        TeacherTargets(tmp_path / "junk.bin")
    with pytest.raises(FileNotFoundError, match="no such targets file"):
        TeacherTargets(tmp_path / "missing.bin")


def test_an_interrupted_pass_leaves_no_file(tmp_path, corpus):
    teacher = tiny()
    calls = {"n": 0}
    original = teacher.forward

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    teacher.forward = failing
    with pytest.raises(KeyboardInterrupt):
        precompute_teacher(teacher, corpus, tmp_path / "t.bin", k=4, context_length=T,
                           batch_size=2, progress=False)
    assert list(tmp_path.iterdir()) == []  # neither the file nor its .partial


@pytest.mark.parametrize("kwargs, message", [
    ({"k": 0}, r"k=0; use an integer >= 1"),
    ({"k": V + 1}, rf"k={V + 1}; use at most the vocabulary size, {V}"),
    ({"context_length": 2.5}, r"context_length=2\.5; use an integer >= 1"),
    ({"batch_size": -1}, r"batch_size=-1; use an integer >= 1"),
    ({"temperature": 0.0, "sampled": True}, r"temperature=0\.0; use a finite number > 0"),
])
def test_bad_precompute_arguments(tmp_path, corpus, kwargs, message):
    args = dict(k=4, context_length=T, batch_size=2, progress=False) | kwargs
    with pytest.raises(ValueError, match=message):
        precompute_teacher(tiny(), corpus, tmp_path / "t.bin", **args)


def test_bad_paths_and_corpora(tmp_path, corpus):
    with pytest.raises(ValueError, match="does not exist; create it first"):
        precompute_teacher(tiny(), corpus, tmp_path / "no" / "t.bin", k=2, context_length=T,
                           batch_size=2, progress=False)
    with pytest.raises(ValueError, match="one window needs context_length \\+ 1 = 9"):
        precompute_teacher(tiny(), corpus[:8], tmp_path / "t.bin", k=2, context_length=T,
                           batch_size=2, progress=False)
    with pytest.raises(ValueError, match="uint16 ids hold at most 65536"):
        precompute_teacher(tiny(vocab=70_000), corpus, tmp_path / "t.bin", k=2,
                           context_length=T, batch_size=2, progress=False)


@pytest.mark.parametrize("kwargs, message", [
    ({"temperature": 0}, r"temperature=0; use a finite number > 0"),
    ({"temperature": float("nan")}, r"temperature=nan"),
    ({"alpha": 1.5}, r"alpha=1\.5; use a number in \[0, 1\]"),
])
def test_bad_loss_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DistillLoss(**kwargs)


def test_shapes_and_batches_are_checked():
    with pytest.raises(ValueError, match="shapes do not match"):
        distill_loss(torch.zeros(2, 5, V), torch.zeros(2, 4, 3, dtype=torch.long),
                     torch.zeros(2, 4, 3), torch.zeros(2, 5, dtype=torch.long))
    with pytest.raises(ValueError, match=r"the batch lacks \['teacher_ids', 'teacher_logprobs'\]"):
        DistillLoss()(tiny(), {"inputs": torch.zeros(1, 4, dtype=torch.long),
                               "targets": torch.zeros(1, 4, dtype=torch.long)})


def test_train_learns_from_stored_targets_without_the_teacher(tmp_path, corpus):
    teacher = tiny(0)
    precompute_teacher(teacher, corpus, tmp_path / "t.bin", k=8, context_length=T, batch_size=8,
                       progress=False)
    del teacher  # from here on only the file speaks for it
    dataset = DistillDataset(corpus, TeacherTargets(tmp_path / "t.bin"))
    student = tiny(1).train()
    loss_fn = DistillLoss(temperature=2.0, alpha=1.0)
    batch = batch_of(dataset)
    before = loss_fn(student, batch).item()
    optimizer = torch.optim.AdamW(student.parameters(), lr=1e-2)
    train(student, optimizer, windows_loader(dataset, 4, seed=0), loss_fn, epochs=15,
          eval_every=None, progress=False, seed=0)
    assert loss_fn(student.eval(), batch).item() < 0.8 * before  # 7.3 -> 5.1 when written


def test_teacher_generated_tokens_start_stories():
    teacher = tiny(0, vocab=50257, context=32)
    ids = teacher_generated_tokens(teacher, 100, row_tokens=9, batch_size=4, progress=False)
    assert ids.shape == (100,) and ids.dtype == torch.int64
    assert ids[0].item() == EOT_ID and ids[40].item() == EOT_ID  # rows of 1 + 9 tokens
    again = teacher_generated_tokens(teacher, 100, row_tokens=9, batch_size=4, progress=False)
    assert torch.equal(ids, again)  # seeded


def test_the_first_k_slots_of_a_top_k_file_are_a_top_k_file(tmp_path, corpus):
    teacher = tiny()
    precompute_teacher(teacher, corpus, tmp_path / "8.bin", k=8, context_length=T, batch_size=8,
                       progress=False)
    precompute_teacher(teacher, corpus, tmp_path / "3.bin", k=3, context_length=T, batch_size=8,
                       progress=False)
    narrowed, own = TeacherTargets(tmp_path / "8.bin", k=3), TeacherTargets(tmp_path / "3.bin")
    for a, b in zip(narrowed.window(0, len(own)), own.window(0, len(own))):
        assert torch.equal(a, b)
    assert narrowed.bytes_per_position == own.bytes_per_position == 12
    with pytest.raises(ValueError, match="k=9; 8.bin stores 8 per position, so use at most 8"):
        TeacherTargets(tmp_path / "8.bin", k=9)
    precompute_teacher(teacher, corpus, tmp_path / "s.bin", k=4, context_length=T, batch_size=8,
                       sampled=True, progress=False)
    with pytest.raises(ValueError, match="holds draws, whose slots are not ranked"):
        TeacherTargets(tmp_path / "s.bin", k=2)


def test_a_folder_as_path_is_refused_before_the_teacher_runs(tmp_path, corpus):
    teacher = tiny()
    calls = []
    teacher.register_forward_hook(lambda *args: calls.append(1))
    (tmp_path / "out").mkdir()
    with pytest.raises(ValueError, match=r"path='.*out' is a folder; give the file to write"):
        precompute_teacher(teacher, corpus, tmp_path / "out", k=2, context_length=T,
                           batch_size=2, progress=False)
    assert calls == []  # nothing was computed, so nothing was thrown away


def test_a_hand_edited_header_of_the_same_size_is_refused(tmp_path, corpus):
    precompute_teacher(tiny(), corpus, tmp_path / "t.bin", k=4, context_length=T, batch_size=8,
                       progress=False)
    header = read_header(tmp_path / "t.bin")
    header.update(k=8, n_positions=header["n_positions"] // 2)  # the same 4 * k * n bytes
    raw = (tmp_path / "t.bin").read_bytes()
    text = b"GPT-DISTILL-TARGETS v1\n" + json.dumps(header, sort_keys=True).encode() + b"\n"
    (tmp_path / "t.bin").write_bytes(text.ljust(HEADER_BYTES, b" ") + raw[HEADER_BYTES:])
    with pytest.raises(ValueError, match="header does not describe a layout"):
        TeacherTargets(tmp_path / "t.bin")


def test_a_file_truncated_while_open_raises_instead_of_crashing(tmp_path, corpus):
    precompute_teacher(tiny(), corpus, tmp_path / "t.bin", k=4, context_length=T, batch_size=8,
                       progress=False)
    targets = TeacherTargets(tmp_path / "t.bin")
    targets.window(0, T)
    os.truncate(tmp_path / "t.bin", HEADER_BYTES + 16)  # a reader of its mapped pages got SIGBUS
    with pytest.raises(ValueError, match=r"shrank to 4,112 bytes .* while it was open"):
        targets.window(T * 4, T)
    with pytest.raises(ValueError, match="shrank"):
        targets[len(targets) - 1]


def test_sampled_targets_need_the_loss_made_for_them(tmp_path, corpus):
    precompute_teacher(tiny(), corpus, tmp_path / "s.bin", k=6, context_length=T, batch_size=8,
                       sampled=True, temperature=2.0, progress=False)
    targets = TeacherTargets(tmp_path / "s.bin")
    batch = batch_of(DistillDataset(corpus, targets), 2)
    with pytest.raises(ValueError, match="for top-k targets but the batch holds sampled ones"):
        DistillLoss()(tiny(), batch)
    assert torch.isfinite(DistillLoss.for_targets(targets, temperature=2.0)(tiny(), batch))
    precompute_teacher(tiny(), corpus, tmp_path / "t.bin", k=6, context_length=T, batch_size=8,
                       progress=False)
    top = batch_of(DistillDataset(corpus, TeacherTargets(tmp_path / "t.bin")), 2)
    with pytest.raises(ValueError, match="for sampled targets but the batch holds top-k ones"):
        DistillLoss(sampled=True)(tiny(), top)


def test_validation_and_test_stories_are_separate_halves_of_the_held_out_text():
    from bonus_distill import load_corpus

    corpus = load_corpus(1000)  # the data mirror or the cached download
    val, test = corpus.val_ids, corpus.test_ids
    assert len(corpus.train_ids) == 1000
    assert 0.4 < len(val) / (len(val) + len(test)) < 0.6
    assert int(test[0]) == EOT_ID  # the cut falls on a story boundary: test starts at a marker
    assert not torch.equal(val[:64], test[:64])


def test_a_student_reports_a_test_loss_only_when_given_test_stories(corpus):
    from bonus_distill import train_student
    from ch02_data import GPTDataset

    cfg = GPTConfig(vocab_size=V, context_length=T, emb_dim=16, n_heads=2, n_layers=1, drop_rate=0.0)
    dataset = GPTDataset(corpus, max_length=T, stride=T)
    val, test = corpus[:3 * T + 1], corpus[3 * T:]
    common = dict(cfg=cfg, dataset=dataset, loss_fn=lambda m, b: F.cross_entropy(
        m(b[0]).flatten(0, 1), b[1].flatten()), val_ids=val, steps=2, batch_size=2, progress=False)
    without = train_student("a", **common)
    with_test = train_student("a", test_ids=test, **common)
    assert without.test_loss is None and "test loss" not in without.row()
    assert with_test.val_loss == pytest.approx(without.val_loss)  # same seed, same run
    assert with_test.test_loss is not None and with_test.test_loss != pytest.approx(with_test.val_loss)
    assert with_test.row()["test loss"] == round(with_test.test_loss, 3)
