"""core.calibration and core.targets: the one calibration pass and the one target walk every method uses."""

import pytest
import torch
from torch import nn
from tiny_models import tiny_batch, tiny_model

from hf_compress import arch
from hf_compress.core.calibration import (InputHooks, capture_block_inputs, prepare_batches, run_block,
                                          run_with_input_hooks)
from hf_compress.core.checks import check_ignore
from hf_compress.core.modules import eval_mode
from hf_compress.core.targets import block_projections, find_projections, matches_ignore
from hf_compress.errors import HfCompressError, SurgeryError


class _Elsewhere(torch.Tensor):
    """A tensor standing for one on another device: only ``.to(device)`` gives a plain tensor back."""

    def to(self, *args, **kwargs):
        return self.as_subclass(torch.Tensor).to(*args, **kwargs)


def test_batches_keep_model_inputs_only_and_are_moved():
    model = tiny_model("llama")
    batch = {**{k: v.as_subclass(_Elsewhere) for k, v in tiny_batch().items()}, "labels": torch.zeros(2, 12)}
    (out,) = prepare_batches(batch, model)
    assert set(out) == {"input_ids", "attention_mask"} and all(type(v) is torch.Tensor for v in out.values())
    with pytest.raises(SurgeryError, match="batch 1 must be a dict of model inputs with 'input_ids', got list"):
        prepare_batches([tiny_batch(), [1, 2]], model, SurgeryError)
    with pytest.raises(HfCompressError, match="calibration is empty"):
        prepare_batches([], model)


def test_input_hooks_drop_padding_and_restore_the_mode():
    model = tiny_model("llama").train()
    batch = tiny_batch()
    names = ["model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.k_proj", "model.layers.1.mlp.down_proj"]
    modules = {n: model.get_submodule(n) for n in names}
    got = {}
    run_with_input_hooks(model, modules, [batch], lambda name, x, src: got.setdefault(name, (x, src)))
    n_real = int(batch["attention_mask"].sum())
    assert all(x.shape == (n_real, modules[n].in_features) for n, (x, _) in got.items())
    assert got[names[0]][1] is got[names[1]][1]  # q and k read the very same tensor
    assert model.training and all(m.training for m in model.modules())
    with pytest.raises(HfCompressError, match=r"never reached layers \['x'\]"):
        run_with_input_hooks(model, {"x": nn.Linear(32, 32)}, [batch], lambda *a: None)


def test_input_hooks_are_removed_on_exit():
    lin = nn.Linear(3, 3)
    with InputHooks({"lin": lin}, lambda *a: None) as hooks:
        lin(torch.randn(1, 3))
    assert hooks.reached == {"lin"} and not lin._forward_pre_hooks


@pytest.mark.parametrize("model_type", ["llama", "bert", "gpt2"])
def test_block_by_block_capture_reproduces_the_hidden_states(model_type):
    model = tiny_model(model_type)
    layers = arch.get_layers(model)
    batches = prepare_batches([tiny_batch(seed=0), tiny_batch(seed=1)], model)
    with eval_mode(model):
        hidden, records = capture_block_inputs(model, layers, batches)
        for i, layer in enumerate(layers[:-1]):
            hidden = [run_block(layer, hidden[b], records[i][b]) for b in range(len(batches))]
        for b, batch in enumerate(batches):
            want = model(**batch, output_hidden_states=True).hidden_states[len(layers) - 1]
            torch.testing.assert_close(hidden[b], want, rtol=1e-5, atol=1e-5)


def test_ignore_rules_are_checked_once_with_one_line_errors():
    assert check_ignore(None) == [] and check_ignore(("lm_head", "re:.*mlp.*")) == ["lm_head", "re:.*mlp.*"]
    with pytest.raises(HfCompressError, match=r"`ignore` pattern 're:\(' is not a valid regex .*; fix or remove"):
        check_ignore(["lm_head", "re:("])
    with pytest.raises(HfCompressError, match="must be a list.*got 'lm_head'"):
        check_ignore("lm_head")
    with pytest.raises(HfCompressError, match="got 3"):
        check_ignore(["a", 3])
    assert matches_ignore("model.layers.0.mlp.up_proj", ["re:.*mlp.*"])
    assert matches_ignore("x", ["Linear"], nn.Linear(1, 1)) and not matches_ignore("x", ["x.y"])


def test_one_walk_serves_whole_model_and_block_targets():
    model = tiny_model("llama")
    blocks = block_projections(model)
    assert len(blocks) == arch.num_layers(model) and all(len(b) == 7 for b in blocks)
    in_blocks = find_projections(model, ["re:.*down_proj$"], blocks_only=True)
    assert len(in_blocks) == 6 * len(blocks) and not any(n.endswith("down_proj") for n in in_blocks)
    everything = find_projections(model)
    assert "lm_head" not in everything and set(everything) == {n for b in blocks for n in b}
    assert "lm_head" in find_projections(model, ["lm_head"], output_head=True)  # untied head, asked for
    gpt2 = tiny_model("gpt2")  # lm_head is tied to the token embedding: never a target
    assert "lm_head" not in find_projections(gpt2, [], output_head=True)
    with pytest.raises(HfCompressError, match="not a valid regex"):
        find_projections(model, ["re:["])
