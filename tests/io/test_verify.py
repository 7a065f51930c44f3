"""``check_reload``: the files must reproduce the model in memory. A compiled int8 model is compared eagerly
(the reload runs eagerly, and fused rounding differs by a quantization step), and stays compiled."""

from __future__ import annotations

import pytest
import torch
from tiny_models import tiny_model

from hf_compress import quantize_int8
from hf_compress.errors import CheckpointError
from hf_compress.io.checkpoint import save_compressed
from hf_compress.io.verify import check_reload
from hf_compress.methods.int8.compile import compile_int8, is_compiled


def _rounding_compiler(monkeypatch, shift: float = 0.05):
    """A torch.compile stand-in whose compiled call rounds differently: it adds ``shift`` to the output."""

    def fake_compile(fn, dynamic=None, options=None):
        def compiled(*args, **kwargs):
            out = fn(*args, **kwargs)  # the encoder's output (a ModelOutput)
            out.last_hidden_state = out.last_hidden_state + shift
            return out
        return compiled

    monkeypatch.setattr(torch, "compile", fake_compile)


def test_a_compiled_int8_model_is_checked_eagerly_and_stays_compiled(tmp_path, monkeypatch):
    _rounding_compiler(monkeypatch)
    model = quantize_int8(tiny_model("bert", "base"), mode="w8a8", fuse=False).eval()
    compile_int8(model)
    assert is_compiled(model)
    folder = save_compressed(model, tmp_path / "out", verify=lambda f: check_reload(model, f, "feature-extraction"))
    assert (folder / "model.safetensors").is_file()
    assert is_compiled(model)  # restored after the check
    batch = {"input_ids": torch.tensor([[5, 6, 7, 8]])}
    with torch.no_grad():  # and it still runs its compiled call (the stand-in's shift shows it)
        compiled_out = model(**batch).last_hidden_state
        from hf_compress.methods.int8.compile import uncompile_int8

        uncompile_int8(model)
        eager_out = model(**batch).last_hidden_state
    torch.testing.assert_close(compiled_out - eager_out, torch.full_like(eager_out, 0.05), rtol=0, atol=1e-5)


def test_a_checkpoint_that_differs_is_still_refused(tmp_path):
    model = tiny_model("bert", "base").eval()
    other = tiny_model("bert", "base", seed=7).eval()
    with pytest.raises(CheckpointError, match="reloads to a different model"):
        save_compressed(model, tmp_path / "out", verify=lambda f: check_reload(other, f, "feature-extraction"))
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_really_compiled_w8a8_bert_saves_through_the_reload_check(tmp_path):
    model = quantize_int8(tiny_model("bert", "base"), mode="w8a8", compile=True).eval()
    assert is_compiled(model)
    save_compressed(model, tmp_path / "out", verify=lambda f: check_reload(model, f, "feature-extraction"))
    assert is_compiled(model)
