"""The classifier: new head and frozen parts, each pooling position, loss, accuracy, classify, checkpoints."""

import math
from functools import partial

import pytest
import torch
import torch.nn as nn

from ch02_data import EOT_ID, gpt2_encoding
from ch04_gpt import GPTConfig, GPTModel
from ch05_pretrain import evaluate, load_model, save_checkpoint, train
from ch06_classify.classifier import (
    accuracy,
    classification_loss,
    classify,
    count_trainable,
    load_classifier,
    pool,
    save_classifier,
    to_classifier,
)
from ch06_classify.lora import LoRALinear, add_lora

V, T, C = 64, 16, 16
TINY = GPTConfig(vocab_size=V, context_length=T, emb_dim=C, n_heads=2, n_layers=2, drop_rate=0.0)
# GPT-2's vocabulary with a tiny body, for tests that go through the real tokenizer.
TINY_GPT2_VOCAB = TINY.replace(vocab_size=50257, n_layers=1)


def make_classifier(cfg=TINY, trainable="last_block", seed=0):
    torch.manual_seed(seed)
    return to_classifier(GPTModel(cfg), num_classes=2, trainable=trainable)


# --- to_classifier -------------------------------------------------------------------------------


def block_params(C: int) -> int:
    """Parameters of one GPT-2 block: attention 4C^2+4C, feed-forward 8C^2+5C, two norms 4C."""
    return 12 * C * C + 13 * C


@pytest.mark.parametrize("trainable", ["head", "last_block", "all"])
def test_to_classifier_trains_the_intended_parameters(trainable):
    model = make_classifier(trainable=trainable)
    head = C * 2 + 2
    expected = {
        "head": head,
        "last_block": head + block_params(C) + 2 * C,  # + final norm
        "all": head + 2 * C + 2 * block_params(C) + V * C + T * C,  # + token and position embeddings
    }[trainable]
    assert count_trainable(model) == expected
    trained = {name.split(".")[0] + ("." + name.split(".")[1] if name.startswith("blocks") else "")
               for name, p in model.named_parameters() if p.requires_grad}
    assert trained == {
        "head": {"out_head"},
        "last_block": {"out_head", "final_norm", "blocks.1"},
        "all": {"out_head", "final_norm", "blocks.0", "blocks.1", "tok_emb", "pos_emb"},
    }[trainable]


def test_to_classifier_replaces_and_unties_the_head():
    torch.manual_seed(0)
    model = GPTModel(TINY)
    emb = model.tok_emb.weight.detach().clone()
    assert model.out_head.weight is model.tok_emb.weight  # tied before
    to_classifier(model, num_classes=3)
    assert model.out_head.weight.shape == (3, C) and model.out_head.bias is not None
    assert model.out_head.weight is not model.tok_emb.weight
    assert torch.equal(model.tok_emb.weight, emb)  # the embedding itself is untouched
    assert model(torch.zeros(2, 5, dtype=torch.long)).shape == (2, 5, 3)


@pytest.mark.parametrize("kwargs, words", [
    ({"num_classes": 1}, "num_classes=1"),
    ({"num_classes": 2.0}, "num_classes=2.0"),
    ({"trainable": "last"}, "trainable='last'"),
])
def test_to_classifier_rejects_bad_arguments(kwargs, words):
    with pytest.raises(ValueError, match=words):
        to_classifier(GPTModel(TINY), **kwargs)


def test_to_classifier_rejects_a_model_without_gpt_parts():
    with pytest.raises(ValueError, match="GPTModel"):
        to_classifier(nn.Linear(3, 3))


# --- pooling -------------------------------------------------------------------------------------


def test_pool_reads_the_intended_positions_of_hand_made_logits():
    B, T_ = 3, 5
    # logits[b, t] = (t, 100 * b): the first number says which position was read.
    logits = torch.stack([torch.arange(T_).float(), torch.zeros(T_)], dim=-1).repeat(B, 1, 1)
    logits[:, :, 1] = 100 * torch.arange(B).float()[:, None]
    lengths = torch.tensor([5, 2, 1])
    assert pool(logits, lengths, "last")[:, 0].tolist() == [4, 4, 4]  # padding or not
    assert pool(logits, lengths, "first")[:, 0].tolist() == [0, 0, 0]
    assert pool(logits, lengths, "last_nonpad")[:, 0].tolist() == [4, 1, 0]
    assert pool(logits, lengths, "mean")[:, 0].tolist() == [2.0, 0.5, 0.0]  # mean of 0..len-1
    for pooling in ("last", "first", "mean", "last_nonpad"):
        assert pool(logits, lengths, pooling)[:, 1].tolist() == [0, 100, 200]  # rows stay apart
    assert pool(logits, None, "mean")[:, 0].tolist() == [2.0, 2.0, 2.0]  # None: no padding


def test_each_pooling_of_a_padded_batch_matches_the_unpadded_message():
    # Causal attention: padding after a message cannot change the logits at its positions, so
    # "last_nonpad" and "mean" of a padded row equal the message's own last and mean logits,
    # "first" equals the first token alone, and "last" reads the final (padding) position.
    model = make_classifier().eval()
    message = torch.tensor([5, 9, 2, 7])
    padded = torch.cat([message, torch.full((T - 4,), 0)])[None]  # (1, T)
    lengths = torch.tensor([4])
    with torch.no_grad():
        alone = model(message[None])[0]  # (4, 2)
        full = model(padded)
        torch.testing.assert_close(pool(full, lengths, "last_nonpad")[0], alone[-1])
        torch.testing.assert_close(pool(full, lengths, "mean")[0], alone.mean(0))
        torch.testing.assert_close(pool(full, lengths, "first")[0], model(message[:1][None])[0, 0])
        torch.testing.assert_close(pool(full, lengths, "last")[0], full[0, -1])
        assert not torch.allclose(full[0, -1], alone[-1])  # a pad at the end is not the message end


@pytest.mark.parametrize("lengths, words", [
    (torch.tensor([0]), "lengths=\\[0\\]"),
    (torch.tensor([6]), "lengths=\\[6\\]"),
    (torch.tensor([1, 2]), "need 1 values"),
])
def test_pool_rejects_impossible_lengths(lengths, words):
    with pytest.raises(ValueError, match=words):
        pool(torch.zeros(1, 5, 2), lengths, "mean")


def test_pool_rejects_an_unknown_pooling():
    with pytest.raises(ValueError, match="pooling='max'; choose one of last, first, mean, last_nonpad"):
        pool(torch.zeros(1, 5, 2), None, "max")


# --- loss and accuracy ---------------------------------------------------------------------------


def keyword_batches(n_batches=4, B=8, seed=0):
    """Batches whose label is 1 exactly when token 7 occurs in the message."""
    g = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(n_batches):
        ids = torch.randint(8, V, (B, T), generator=g)
        labels = torch.arange(B) % 2
        ids[labels == 1, torch.randint(0, 10, (B // 2,), generator=g)] = 7
        lengths = torch.randint(10, T + 1, (B,), generator=g)
        ids[torch.arange(T) >= lengths[:, None]] = 0  # pad id 0
        batches.append({"input_ids": ids, "labels": labels, "lengths": lengths})
    return batches


def test_classification_loss_falls_when_trained_with_chapter5_loop():
    model = make_classifier(trainable="all")
    data = keyword_batches()
    loss_fn = partial(classification_loss, pooling="last_nonpad")
    before = evaluate(model, data, loss_fn)
    assert abs(before - math.log(2)) < 0.3  # a fresh 2-class head is close to a coin flip
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    train(model, opt, data, loss_fn, epochs=5, eval_every=None, progress=False)
    assert evaluate(model, data, loss_fn) < before - 0.2


class LastTokenParity(nn.Module):
    """A stand-in model whose answer is known: class = parity of the token at each position."""

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, idx):
        odd = (idx % 2).float()
        return torch.stack([1 - odd, odd], dim=-1) + self.dummy  # (B, T, 2)


def test_accuracy_on_hand_made_batches_and_mode_is_restored():
    ids = torch.tensor([[1, 3], [2, 4], [5, 6], [8, 9]])  # last tokens: odd, even, even, odd
    loader = [
        {"input_ids": ids[:2], "labels": torch.tensor([1, 0]), "lengths": torch.tensor([2, 2])},  # 2/2
        {"input_ids": ids[2:], "labels": torch.tensor([1, 1]), "lengths": torch.tensor([2, 1])},  # 1/2
    ]
    model = LastTokenParity().train()
    assert accuracy(model, loader) == 0.75
    assert accuracy(model, loader, max_batches=1) == 1.0
    # last_nonpad reads token 8 (even) in the last row: 2/2 + 0/2
    assert accuracy(model, loader, pooling="last_nonpad") == 0.5
    assert model.training  # restored


def test_accuracy_rejects_empty_loader_and_bad_max_batches():
    model = LastTokenParity()
    with pytest.raises(ValueError, match="no examples"):
        accuracy(model, [])
    with pytest.raises(ValueError, match="max_batches=0"):
        accuracy(model, [], max_batches=0)


def test_accuracy_plugs_into_train_metrics():
    model = make_classifier()
    data = keyword_batches(n_batches=2)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    h = train(model, opt, data, classification_loss, val_loader=data, epochs=2, eval_every=2,
              metrics={"acc": partial(accuracy, max_batches=1)}, progress=False)
    assert h.step == [2, 4] and len(h["val_acc"]) == 2 and 0 <= h["train_acc"][0] <= 1


# --- classify ------------------------------------------------------------------------------------


def recorded_inputs(model):
    """Keep every input_ids tensor that `model` is called with."""
    seen = []
    model.register_forward_pre_hook(lambda module, args: seen.append(args[0].clone()))
    return seen


@pytest.mark.parametrize("text", ["", "🎉🔥 free entry!! Ünïcödé 你好", "a <|endoftext|> b",
                                  "\n\t "])
def test_classify_handles_odd_text(text):
    model = make_classifier(TINY_GPT2_VOCAB)
    seen = recorded_inputs(model)
    label, prob = classify(text, model, max_length=10)
    assert label in ("ham", "spam") and 0.5 <= prob <= 1.0
    assert seen[0].shape == (1, 10)
    if text == "":
        assert seen[0][0].tolist() == [EOT_ID] * 10  # one pad token, then padding


def test_classify_keeps_the_end_of_a_long_text():
    model = make_classifier(TINY_GPT2_VOCAB)
    seen = recorded_inputs(model)
    text = " ".join(f"word{i}" for i in range(40))
    ids = gpt2_encoding().encode(text)
    assert len(ids) > T
    classify(text, model)  # max_length None: the context window, no padding
    assert seen[-1][0].tolist() == ids[-T:]
    classify(text, model, max_length=6)
    assert seen[-1][0].tolist() == ids[-6:]


def test_classify_pads_like_training_and_matches_pooled_logits():
    model = make_classifier(TINY_GPT2_VOCAB).eval()
    seen = recorded_inputs(model)
    ids = gpt2_encoding().encode("Call now")
    for pooling in ("last", "last_nonpad", "mean"):
        label, prob = classify("Call now", model, max_length=8, pooling=pooling)
        assert seen[-1][0].tolist() == ids + [EOT_ID] * (8 - len(ids))
        with torch.no_grad():
            probs = torch.softmax(pool(model(seen[-1]), torch.tensor([len(ids)]), pooling)[0], -1)
        assert prob == pytest.approx(float(probs.max())) and label == ("ham", "spam")[int(probs.argmax())]
    assert not model.training


@pytest.mark.parametrize("kwargs, words", [
    ({"max_length": 0}, "max_length=0"),
    ({"max_length": T + 1}, "max_length=17"),
    ({"pooling": "max"}, "pooling='max'"),
    ({"class_names": ("a", "b", "c")}, "class_names="),
])
def test_classify_rejects_bad_arguments(kwargs, words):
    model = make_classifier(TINY_GPT2_VOCAB)
    with pytest.raises(ValueError, match=words):
        classify("hi", model, **kwargs)
    with pytest.raises(TypeError, match="text is a bytes"):
        classify(b"hi", model)


# --- checkpoints ---------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["plain", "lora", "bidirectional"])
def test_save_load_classifier_round_trip(tmp_path, variant):
    model = make_classifier()
    if variant == "lora":
        add_lora(model, rank=2, alpha=4)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.endswith(".B"):
                    p.normal_()  # a trained-looking update, so a lost adapter would show
    if variant == "bidirectional":
        model.set_causal(False)
    path = save_classifier(tmp_path / "clf.pt", model, max_length=12, pooling="mean")
    loaded, extra = load_classifier(path)
    assert extra == {"max_length": 12, "pooling": "mean"}
    assert not loaded.training
    idx = torch.randint(0, V, (3, T))
    with torch.no_grad():
        torch.testing.assert_close(loaded(idx), model.eval()(idx), rtol=0, atol=0)


def test_load_classifier_refuses_a_language_model_checkpoint(tmp_path):
    from ch05_pretrain import save_checkpoint
    path = save_checkpoint(tmp_path / "lm.pt", GPTModel(TINY))
    with pytest.raises(ValueError, match="not a classifier checkpoint"):
        load_classifier(path)


def test_save_classifier_rejects_reserved_extra_keys(tmp_path):
    with pytest.raises(ValueError, match="reserved"):
        save_classifier(tmp_path / "c.pt", make_classifier(), causal=False)


# --- a language model where a classifier belongs, batches of another chapter ------------------------


def spam_batch(B=2):
    return {"input_ids": torch.randint(0, V, (B, T)), "labels": torch.tensor([0, 1][:B]),
            "lengths": torch.full((B,), T)}


def test_a_language_model_is_refused_where_a_classifier_belongs(tmp_path):
    torch.manual_seed(0)
    lm = GPTModel(TINY)  # never passed through to_classifier: V logits, not 2
    with pytest.raises(ValueError, match=r"accuracy got a language model .* to_classifier\(model\)"):
        accuracy(lm, [spam_batch()])
    with pytest.raises(ValueError, match="class_logits got a language model"):
        classification_loss(lm, spam_batch())
    with pytest.raises(ValueError, match="save_classifier got a language model"):
        save_classifier(tmp_path / "lm.pt", lm)
    save_checkpoint(tmp_path / "lm.pt", lm, None, num_classes=V, lora=None, causal=True, extra={})
    with pytest.raises(ValueError, match="never passed through to_classifier"):
        load_classifier(tmp_path / "lm.pt")


def test_chapter5_load_model_refuses_a_classifier(tmp_path):
    path = save_classifier(tmp_path / "clf.pt", make_classifier())
    with pytest.raises(ValueError, match=r"is a classifier \(2 classes.*load_classifier"):
        load_model(path)


@pytest.mark.parametrize("batch, words", [
    ((torch.zeros(2, T, dtype=torch.long), torch.zeros(2, T, dtype=torch.long)), "batch is a tuple"),
    ({"input_ids": torch.zeros(2, T, dtype=torch.long)}, r"lacks \['labels'\]"),
])
def test_classification_loss_names_a_wrong_batch(batch, words):
    with pytest.raises(ValueError, match=words):
        classification_loss(make_classifier(), batch)


def test_pool_refuses_2d_logits():
    with pytest.raises(ValueError, match=r"logits has shape \(2, 5\); pool needs .* \(B, T, K\)"):
        pool(torch.zeros(2, 5), None)


@pytest.mark.parametrize("trainable", ["head", "last_block", "all"])
def test_to_classifier_after_add_lora_keeps_loras_split(trainable):
    torch.manual_seed(0)
    model = to_classifier(add_lora(GPTModel(TINY), rank=2), trainable=trainable)
    layers = [m for m in model.modules() if isinstance(m, LoRALinear)]
    assert layers
    for layer in layers:
        assert not any(p.requires_grad for p in layer.linear.parameters())
        assert layer.A.requires_grad and layer.B.requires_grad
    assert model.out_head.weight.requires_grad
