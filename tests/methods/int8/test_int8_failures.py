"""int8 failures that must not be silent or leave damage: a failed quantization changes nothing, a caller's
bad input is not a compile failure, one kernel's compile failure stays with that kernel, an architecture
table that does not fit the model is reported."""

from __future__ import annotations

import dataclasses
import logging

import pytest
import torch
from tiny_models import tiny_batch, tiny_model

from hf_compress import arch, quantize_int8
from hf_compress.errors import QuantizationError
from hf_compress.methods.int8 import kernels
from hf_compress.methods.int8 import quantize as quantize_module
from hf_compress.methods.int8.compile import compile_int8, is_compiled
from hf_compress.methods.int8.layer import Int8Linear
from hf_compress.methods.int8.quantize import fuse_if_known


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _assert_unchanged(model, before):
    after = model.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(after[k], before[k]) for k in before), [k for k in before if not torch.equal(after[k], before[k])]
    assert model.training and all(m.training for m in model.modules())
    assert not any(isinstance(m, Int8Linear) for m in model.modules())
    assert getattr(model.config, "quantization_config", None) is None


def test_a_gptq_failure_midway_leaves_the_model_as_it_was(monkeypatch):
    model = tiny_model("llama").train()
    before = _state(model)

    def not_positive_definite(*args, **kwargs):
        raise torch.linalg.LinAlgError("linalg.cholesky: The factorization could not be completed")

    monkeypatch.setattr(torch.linalg, "cholesky", not_positive_definite)
    with pytest.raises(QuantizationError, match="not positive definite.*gptq_damp"):
        quantize_int8(model, mode="w8a8", method="gptq", smoothquant=0.5, calibration=[tiny_batch()])
    _assert_unchanged(model, before)  # smoothing had been folded in before GPTQ ran: it is undone


def test_a_failure_after_the_layers_were_replaced_puts_the_float_layers_back(monkeypatch):
    model = tiny_model("gpt2").train()
    before = _state(model)
    originals = {n: m for n, m in model.named_modules()}

    def broken_finish(model, config):
        raise RuntimeError("fusion broke")

    monkeypatch.setattr(quantize_module, "_finish", broken_finish)
    with pytest.raises(RuntimeError, match="fusion broke"):
        quantize_int8(model, mode="w8a8", smoothquant=0.5, calibration=[tiny_batch()])
    _assert_unchanged(model, before)
    assert all(originals[n] is m for n, m in model.named_modules())


class _Elsewhere(torch.Tensor):
    """A batch tensor standing for one on another device: only ``.to(device)`` gives the model's kind."""

    def to(self, *args, **kwargs):
        return self.as_subclass(torch.Tensor).to(*args, **kwargs)


@pytest.mark.parametrize("kwargs", [dict(method="gptq"), dict(smoothquant=0.5), dict(smoothquant="auto")])
def test_calibration_batches_are_moved_to_the_models_device(kwargs):
    model = tiny_model("llama")
    seen = []
    model.register_forward_pre_hook(
        lambda m, args, kw: seen.extend(type(v) for v in (*args, *kw.values()) if torch.is_tensor(v)),
        with_kwargs=True)
    batch = {k: v.as_subclass(_Elsewhere) for k, v in tiny_batch().items()}
    quantize_int8(model, mode="w8a8", calibration=[batch], **kwargs)
    assert seen and _Elsewhere not in seen  # every input the model got went through .to(its device)


def test_an_architecture_table_that_does_not_fit_is_reported(monkeypatch, caplog):
    model = quantize_int8(tiny_model("llama"), mode="w8a8", fuse=False)
    broken = dataclasses.replace(arch.ARCHITECTURES["llama"], mlp_in=("mlp.no_such_proj", "mlp.up_proj"))
    monkeypatch.setitem(arch.ARCHITECTURES, "llama", broken)
    with caplog.at_level(logging.WARNING):
        assert fuse_if_known(model) == {}
    assert any("no_such_proj" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING):  # a family outside the table: simply no fusion, no warning
        assert fuse_if_known(torch.nn.Sequential(torch.nn.Linear(2, 2))) == {}
    assert not caplog.records


def _wrap_errors_like_dynamo(fn, dynamic=None, options=None):
    """A torch.compile stand-in that, like dynamo, reports the traced code's own errors in its own type."""

    def compiled(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            raise torch._dynamo.exc.TorchRuntimeError(str(exc)) from exc

    return compiled


def test_a_bad_input_on_the_first_compiled_call_is_the_callers_error(monkeypatch, caplog):
    model = quantize_int8(tiny_model("bert"), mode="w8a8", fuse=False).eval()
    monkeypatch.setattr(torch, "compile", _wrap_errors_like_dynamo)
    compile_int8(model)
    with caplog.at_level(logging.WARNING), torch.inference_mode():
        with pytest.raises(RuntimeError, match=r"shape '\[-1, 32\]' is invalid"):
            model.bert.encoder(torch.zeros(2, 3, 7))  # wrong hidden width, before any successful call
        assert is_compiled(model)  # still compiled: the compiler did not fail
        model(**tiny_batch())
    assert not any("running it eagerly" in r.getMessage() for r in caplog.records)
    assert is_compiled(model)


def test_one_kernels_compile_failure_leaves_other_kernels_compiled(monkeypatch, caplog):
    monkeypatch.setattr(kernels, "_COMPILED", {})  # this test's kernels only
    ran = []

    def compile_stand_in(fn, dynamic=None, options=None):
        def compiled(x, w, *rest):
            if w.shape == (24, 48):
                raise RuntimeError("inductor: no C compiler")
            out = fn(x, w, *rest)
            ran.append(tuple(w.shape))  # a call that ran compiled
            return out

        return compiled

    monkeypatch.setattr(torch, "compile", compile_stand_in)
    broken = Int8Linear.from_float(torch.nn.Linear(48, 24), "w8a8")
    other = Int8Linear.from_float(torch.nn.Linear(32, 16), "w8a8")
    broken.use_compile = other.use_compile = True
    with caplog.at_level(logging.WARNING), torch.inference_mode():
        broken(torch.randn(3, 48))
        with pytest.raises(RuntimeError):  # the caller's wrong width reaches the kernel: not a compile failure
            kernels.int8_linear(torch.randn(3, 31), other.weight, other.weight_scale, other.bias, "w8a8", True)
        other(torch.randn(3, 32))
    status = {key[1:3]: value for key, value in kernels.kernel_status().items()}
    assert status == {(24, 48): "eager", (16, 32): "compiled"}
    assert ran == [(16, 32)]  # the other kernel still ran compiled
    assert sum("running it eagerly" in r.getMessage() for r in caplog.records) == 1
