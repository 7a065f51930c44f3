import math

import pytest
import torch

from hf_compress import evaluation as ev
from tiny_models import VOCAB, tiny_model


class _CharTokenizer:
    """Maps each character to an id in [4, VOCAB) so perplexity can run without a downloaded tokenizer."""

    def __call__(self, text, return_tensors="pt", add_special_tokens=False):
        ids = [4 + (ord(c) % (VOCAB - 4)) for c in text]
        return {"input_ids": torch.tensor([ids])}


def test_perplexity_equals_exp_of_the_models_own_loss():
    model = tiny_model("llama")
    tok = _CharTokenizer()
    text = "abcdefghij" * 7  # 70 chars -> 4 windows of 16 (6 tokens dropped)
    ppl = ev.perplexity(model, tok, [text], max_length=16, batch_size=3, progress=False)
    ids = tok(text)["input_ids"][0][:64].view(4, 16)
    with torch.no_grad():
        loss = model(input_ids=ids, labels=ids).loss  # mean over the 4*15 predicted positions
    assert ppl == pytest.approx(math.exp(loss.item()), rel=1e-5)


def test_perplexity_refuses_text_shorter_than_a_window():
    with pytest.raises(ValueError, match="max_length=512"):
        ev.perplexity(tiny_model("gpt2"), _CharTokenizer(), ["short"], progress=False)


def test_param_count_counts_tied_weights_once():
    model = tiny_model("llama", tie_word_embeddings=True)
    unique = {id(p): p.numel() for p in model.parameters()}
    assert ev.param_count(model) == sum(unique.values())
    assert ev.param_count(model) < sum(p.numel() for p in model.state_dict().values())


def test_embedding_cosine_is_one_for_the_same_model_and_lower_for_another(batch):
    a, b = tiny_model("bert", "base", seed=0), tiny_model("bert", "base", seed=1)
    assert ev.embedding_cosine(a, a, [batch]) == pytest.approx(1.0, abs=1e-6)
    assert ev.embedding_cosine(a, b, [batch]) < 0.999


def test_mean_pooling_ignores_padding(batch):
    model = tiny_model("bert", "base")
    pooled = ev.mean_pooled(model, batch)
    n = int(batch["attention_mask"][-1].sum())
    short = {k: v[-1:, :n] for k, v in batch.items()}
    assert torch.allclose(pooled[-1], ev.mean_pooled(model, short)[0], atol=1e-5)


def test_latency_reports_a_median_per_model(batch):
    calls = []
    models = {"a": lambda **kw: calls.append("a"), "b": lambda **kw: calls.append("b")}
    result = ev.latency_side_by_side(models, batch, repeats=3, warmup=1)
    assert set(result) == {"a", "b"} and all(v >= 0 for v in result.values())
    assert calls.count("a") == calls.count("b") == 4
    assert calls[:2] == ["a", "b"] and calls[2:4] == ["b", "a"]  # order rotates


def test_accuracy_and_agreement(batch):
    assert ev.accuracy([1, 2, 0, 1], [1, 2, 1, 1]) == 0.75
    with pytest.raises(ValueError, match="same shape"):
        ev.accuracy([1, 2], [1])
    model = tiny_model("bert", "masked-lm")
    assert ev.teacher_agreement(model, model, [batch]) == 1.0


def test_write_report_replaces_atomically_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    target = tmp_path / "bench" / "table.md"
    ev.write_report(target, "| a |\n")
    assert target.read_text() == "| a |\n"

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr("os.replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        ev.write_report(target, "| b |\n")
    assert target.read_text() == "| a |\n" and sorted(p.name for p in target.parent.iterdir()) == ["table.md"]


def test_reload_check_reports_the_difference_after_save_and_reload():
    from transformers import AutoModelForCausalLM

    from tiny_models import tiny_batch

    model = tiny_model("llama")
    batch = {k: v for k, v in tiny_batch().items()}
    assert ev.reload_check(model, AutoModelForCausalLM, batch).startswith("max diff 0.0e+00, ")


@pytest.mark.parametrize("avx512_bf16, amx, expected", [(False, False, False), (True, False, True),
                                                        (False, True, True)])
def test_native_bf16_cpu_follows_the_cpu_flags(monkeypatch, avx512_bf16, amx, expected):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    assert ev.native_bf16_cpu() is expected


def test_native_bf16_cpu_is_false_when_torch_cannot_tell(monkeypatch):
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported")
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported")
    assert ev.native_bf16_cpu() is False
