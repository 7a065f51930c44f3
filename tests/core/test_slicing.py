"""core.slicing and core.modules: Linear and Conv1D give the same function after every edit."""

import pytest
import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from hf_compress.core.modules import (eval_mode, in_features, is_conv1d, model_device, out_features,
                                      set_module, to_weight_layout, weight_out_in)
from hf_compress.core.slicing import keep_in_cols, keep_out_rows, zero_in_cols, zero_out_rows


def _pair(out_f=6, in_f=5, seed=0):
    torch.manual_seed(seed)
    lin = nn.Linear(in_f, out_f)
    conv = Conv1D(out_f, in_f)
    with torch.no_grad():
        conv.weight.copy_(lin.weight.t())
        conv.bias.copy_(lin.bias)
    return lin, conv


def test_weight_view_is_out_in_for_both_layouts_and_writes_through():
    lin, conv = _pair()
    assert torch.equal(weight_out_in(lin), weight_out_in(conv))
    assert (out_features(conv), in_features(conv)) == (6, 5) == (out_features(lin), in_features(lin))
    assert is_conv1d(conv) and not is_conv1d(lin)
    with torch.no_grad():
        weight_out_in(conv)[0] = 0
    assert torch.all(conv.weight[:, 0] == 0)
    mask = torch.ones(6, 5).tril()
    assert torch.equal(to_weight_layout(conv, mask), mask.t()) and to_weight_layout(lin, mask) is mask


@pytest.mark.parametrize("which", ["lin", "conv"])
def test_keep_out_rows_computes_the_kept_outputs(which):
    lin, conv = _pair()
    module = {"lin": lin, "conv": conv}[which]
    x = torch.randn(3, 5)
    full = module(x)
    rows = torch.tensor([4, 0, 2])
    keep_out_rows(module, rows)
    assert torch.allclose(module(x), full[:, rows], atol=1e-6)
    assert out_features(module) == 3 and module.weight.is_contiguous()
    assert (module.nf if which == "conv" else module.out_features) == 3


@pytest.mark.parametrize("which", ["lin", "conv"])
def test_keep_in_cols_equals_zeroing_the_dropped_inputs(which):
    lin, conv = _pair()
    module = {"lin": lin, "conv": conv}[which]
    x = torch.randn(3, 5)
    cols = torch.tensor([1, 3, 4])
    zeroed_x = torch.zeros_like(x)
    zeroed_x[:, cols] = x[:, cols]
    ref = module(zeroed_x)
    keep_in_cols(module, cols)
    assert torch.allclose(module(x[:, cols]), ref, atol=1e-6)
    assert in_features(module) == 3 and module.weight.is_contiguous()
    assert (module.nx if which == "conv" else module.in_features) == 3


def test_zeroing_is_the_same_for_both_layouts():
    lin, conv = _pair()
    for module in (lin, conv):
        zero_out_rows(module, torch.tensor([1]))
        zero_in_cols(module, torch.tensor([2, 3]))
    assert torch.equal(weight_out_in(lin), weight_out_in(conv)) and torch.equal(lin.bias, conv.bias)
    assert lin.bias[1] == 0 and torch.all(weight_out_in(lin)[1] == 0)
    assert torch.all(weight_out_in(lin)[:, 2:4] == 0)


def test_set_module_replaces_by_dotted_name():
    model = nn.Sequential(nn.Sequential(nn.Linear(2, 2)), nn.ReLU())
    set_module(model, "0.0", nn.Identity())
    set_module(model, "1", nn.Tanh())
    assert isinstance(model[0][0], nn.Identity) and isinstance(model[1], nn.Tanh)


def test_eval_mode_restores_each_modules_flag_even_on_error():
    model = nn.Sequential(nn.Dropout(), nn.Linear(2, 2))
    model.train()
    model[1].eval()  # a submodule deliberately in eval mode (a frozen part) stays so
    with pytest.raises(RuntimeError, match="boom"):
        with eval_mode(model):
            assert not model.training and not model[0].training and not torch.is_grad_enabled()
            raise RuntimeError("boom")
    assert model.training and model[0].training and not model[1].training
    with eval_mode(model, no_grad=False):
        assert torch.is_grad_enabled() and not model.training
    assert model_device(model) == torch.device("cpu") and model_device(nn.ReLU()) == torch.device("cpu")
