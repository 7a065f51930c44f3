"""Block-level torch.compile of int8 models (hf_compress.methods.int8.compile)."""

from __future__ import annotations

import copy
import logging

import pytest
import torch
from tiny_models import tiny_batch, tiny_model

from hf_compress import quantize_int8
from hf_compress.methods.int8 import compile as int8_compile
from hf_compress.methods.int8.compile import compile_int8, is_compiled, uncompile_int8
from hf_compress.methods.int8.layer import Int8Linear


@pytest.mark.parametrize(
    "model_type, expected",
    [("bert", ["encoder"]), ("distilbert", ["transformer"]), ("llama", [f"layers.{i}" for i in range(4)]),
     ("gpt2", [f"h.{i}" for i in range(4)])],
)
def test_compiles_the_block_loop_for_encoders_and_each_block_for_decoders(model_type, expected):
    assert [n for n, _ in int8_compile._compile_targets(tiny_model(model_type))] == expected


def test_a_failed_compile_warns_once_and_runs_eagerly(monkeypatch, caplog):
    model = quantize_int8(tiny_model("llama", "causal-lm"), mode="w8a8", fuse=False).eval()
    batch = tiny_batch()
    with torch.inference_mode():
        reference = model(**batch).logits
    calls = []

    def broken_compile(fn, dynamic=None, options=None):
        def compiled(*args, **kwargs):
            calls.append(1)
            raise torch._dynamo.exc.BackendCompilerFailed("inductor", RuntimeError("no C compiler"))

        return compiled

    monkeypatch.setattr(torch, "compile", broken_compile)
    compile_int8(model)
    assert is_compiled(model)
    with caplog.at_level(logging.WARNING), torch.inference_mode():
        out = model(**batch).logits
        again = model(**batch).logits
    torch.testing.assert_close(out, reference, rtol=0, atol=0)
    torch.testing.assert_close(again, reference, rtol=0, atol=0)
    assert len(calls) == 4  # each block tried its compiled call once, then fell back for good
    assert sum("running it eagerly" in r.message for r in caplog.records) == 4
    assert not is_compiled(model)


def test_caller_errors_after_a_successful_compile_are_not_swallowed(monkeypatch):
    model = quantize_int8(tiny_model("bert"), mode="w8a8", fuse=False).eval()
    monkeypatch.setattr(torch, "compile", lambda fn, dynamic=None, options=None: fn)  # "compiles" to the eager call
    compile_int8(model)
    with torch.inference_mode():
        model(**tiny_batch())
        with pytest.raises(RuntimeError, match=r"shape '\[-1, 32\]' is invalid"):
            model.bert.encoder(torch.zeros(2, 3, 7))  # wrong hidden width: the caller's error surfaces
    assert is_compiled(model)
    uncompile_int8(model)
    assert not is_compiled(model)


@pytest.mark.slow
@pytest.mark.parametrize("model_type", ["bert", "gpt2", "llama"])
def test_compiled_int8_model_matches_eager_and_saves_the_same_checkpoint(model_type, tmp_path):
    task = "base" if model_type == "bert" else "causal-lm"
    base = tiny_model(model_type, task).eval()
    eager = quantize_int8(tiny_model(model_type, task).eval(), mode="w8a8", fuse=False)
    compiled = quantize_int8(base, mode="w8a8", compile=True)
    assert is_compiled(compiled)
    assert not any(m.use_compile for m in compiled.modules() if isinstance(m, Int8Linear))
    batch = tiny_batch()
    with torch.inference_mode():
        for rows in (batch, {k: v[:1] for k, v in batch.items()}):  # a second shape: dynamic, no error
            ref = eager(**rows)[0]
            out = compiled(**rows)[0]
            # same int8 arithmetic; a fused reduction may round a rare activation tie the other way
            torch.testing.assert_close(out, ref, rtol=0, atol=2e-2 * ref.abs().max().item())
    assert is_compiled(compiled)
    assert compiled.state_dict().keys() == eager.state_dict().keys()
    for key, value in eager.state_dict().items():
        torch.testing.assert_close(compiled.state_dict()[key], value, rtol=0, atol=0)


@pytest.mark.slow
def test_compiled_llama_generates_the_same_tokens():
    eager = quantize_int8(tiny_model("llama", "causal-lm").eval(), mode="w8a8", fuse=False)
    compiled = quantize_int8(tiny_model("llama", "causal-lm").eval(), mode="w8a8", compile=True)
    prompt = tiny_batch()["input_ids"][:1, :5]
    with torch.inference_mode():
        want = eager.generate(prompt, max_new_tokens=6, do_sample=False)
        got = compiled.generate(prompt, max_new_tokens=6, do_sample=False)
    assert torch.equal(got, want)
    assert is_compiled(compiled)  # it ran compiled, it did not fall back


@pytest.mark.slow
def test_every_block_of_a_deep_decoder_runs_compiled():
    """Blocks share their forward code: without a code object of their own, dynamo's recompile limit (8)
    would leave every block after the 8th running eagerly, silently."""
    layers = 10
    model = quantize_int8(tiny_model("llama", "causal-lm", num_hidden_layers=layers).eval(), mode="w8a8",
                          compile=True)
    torch._dynamo.reset()
    before = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    prompt = tiny_batch()["input_ids"][:1, :5]
    with torch.inference_mode():
        model.generate(prompt, max_new_tokens=3, do_sample=False)
    compiled_graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"] - before
    assert compiled_graphs >= layers  # at least one graph per block


def test_a_deep_copy_of_a_compiled_model_runs_its_own_weights(monkeypatch):
    """nn.Module drops ``_compiled_call_impl`` when copied: the copy runs eagerly on its own weights (a shared
    compiled closure would silently run the original's)."""
    monkeypatch.setattr(torch, "compile", lambda fn, dynamic=None, options=None: fn)  # eager stand-in
    model = quantize_int8(tiny_model("bert"), mode="w8a8", fuse=False).eval()
    compile_int8(model)
    twin = copy.deepcopy(model)
    assert is_compiled(model) and not is_compiled(twin)
    with torch.no_grad():
        for m in twin.modules():
            if isinstance(m, Int8Linear) and m.bias is not None:
                m.bias.add_(1.0)  # the copy's weights only
    batch = tiny_batch()
    with torch.inference_mode():
        original, copied = model(**batch)[0], twin(**batch)[0]
    assert not torch.allclose(original, copied)
