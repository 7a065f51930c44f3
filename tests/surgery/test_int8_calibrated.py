"""GPTQ and SmoothQuant: same format, better rounding / flatter activations, function-preserving folding."""

import pytest
import torch
import torch.nn as nn
from tiny_models import tiny_batch, tiny_model

from hf_compress import Int8Linear, quantize_int8
from hf_compress.errors import QuantizationError
from hf_compress.surgery.int8_format import quantize_per_channel
from hf_compress.surgery.gptq import collect_hessians, gptq_quantize_weight
from hf_compress.surgery.int8 import find_targets
from hf_compress.surgery.int8_kernels import quantize_tokens
from hf_compress.surgery.smoothquant import smooth_model, smoothing_factors


def _correlated_inputs(n=512, k=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(k, k, generator=g) / k**0.5
    return (
        torch.randn(n, 8, generator=g) @ torch.randn(8, k, generator=g)
        + 0.1 * torch.randn(n, k, generator=g) @ mix
    )  # (n, k): low-rank inputs, like real activations


def test_gptq_lowers_output_error_vs_round_to_nearest():
    torch.manual_seed(0)
    W = torch.randn(32, 64)
    X = _correlated_inputs()
    H = 2 * X.t() @ X / X.shape[0]
    q_rtn, s = quantize_per_channel(W)
    q_gptq, s_gptq = gptq_quantize_weight(W, H, damp=0.01, block_size=16)
    assert torch.equal(s, s_gptq) and q_gptq.dtype == torch.int8
    err_rtn = ((X @ (W - q_rtn * s).t()) ** 2).sum()
    err_gptq = ((X @ (W - q_gptq * s).t()) ** 2).sum()
    assert err_gptq < 0.7 * err_rtn
    # every value stays on the int8 grid of the same scale, close to RTN
    assert (q_gptq.int() - q_rtn.int()).abs().max() <= 8


def test_gptq_with_identity_hessian_is_round_to_nearest():
    W = torch.randn(8, 16)
    q, _ = gptq_quantize_weight(W, torch.eye(16), damp=0.0)
    assert torch.equal(q, quantize_per_channel(W)[0])


def test_gptq_model_lowers_layer_error_on_calibration_data():
    calib = [tiny_batch(batch_size=4, seq_len=16, seed=i) for i in range(4)]
    base = tiny_model("llama")
    targets = find_targets(base, ["lm_head"])
    hessians = collect_hessians(base, targets, calib)  # float inputs of every layer
    rtn = quantize_int8(tiny_model("llama"), mode="w8a16")
    gptq = quantize_int8(tiny_model("llama"), mode="w8a16", method="gptq", calibration=calib)
    wins = 0
    for name, module in targets.items():
        W, H = module.weight.detach(), hessians[name]
        errs = []
        for m in (rtn, gptq):
            D = W - m.get_submodule(name).dequantize()  # (out, in)
            errs.append(torch.trace(D @ H @ D.t()))  # = 2/n ||(W - W_hat) X||^2
        wins += bool(errs[1] < errs[0])
    assert wins == len(targets)
    assert gptq.config.quantization_config == rtn.config.quantization_config  # same on-disk format


def test_smoothing_factor_formula():
    act = torch.tensor([4.0, 1.0])
    w1, w2 = torch.tensor([[1.0, 0.5]]), torch.tensor([[0.25, 2.0]])
    s = smoothing_factors(act, [w1, w2], alpha=0.5)
    torch.testing.assert_close(s, torch.tensor([2.0 / 1.0, 1.0 / 2.0**0.5]))


@pytest.mark.parametrize("model_type", ["llama", "gpt2"])
def test_smoothquant_folding_preserves_float_model_and_flattens_activations(model_type):
    calib = [tiny_batch(batch_size=4, seq_len=16, seed=i) for i in range(2)]
    model = tiny_model(model_type)
    norm = model.model.layers[0].input_layernorm if model_type == "llama" else model.transformer.h[0].ln_1
    with torch.no_grad():  # give one channel an outlier, as real LLM activations have
        norm.weight[3] *= 20
        ref = model(**calib[0]).logits
    targets = find_targets(model, ["lm_head"])
    reader = next(n for n in targets if ("q_proj" in n or "c_attn" in n) and ".0." in n)
    before = _act_quant_error(model, targets[reader], calib[0])
    groups = smooth_model(model, targets, calib, alpha=0.5)
    assert groups == 2 * 4
    with torch.no_grad():
        out = model(**calib[0]).logits
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
    assert _act_quant_error(model, targets[reader], calib[0]) < before


def _act_quant_error(model, module, batch):
    """Relative error of per-token int8 activation quantization at ``module``'s input."""
    seen = []
    handle = module.register_forward_pre_hook(lambda _m, a: seen.append(a[0].reshape(-1, a[0].shape[-1])))
    with torch.no_grad():
        model(**batch)
    handle.remove()
    x = seen[0]
    xq, s = quantize_tokens(x)
    x_hat = xq.float() * s  # relative to the layer's output: scale errors by the weight columns' norms
    w = module.weight if isinstance(module, nn.Linear) else module.weight.t()
    return ((x - x_hat) @ w.t()).norm() / (x @ w.t()).norm()


def test_smoothquant_w8a8_end_to_end_and_bert_refused():
    calib = [tiny_batch(batch_size=4, seq_len=16, seed=i) for i in range(2)]
    model = quantize_int8(tiny_model("llama"), mode="w8a8", smoothquant=0.5, method="gptq", calibration=calib)
    assert sum(isinstance(m, Int8Linear) for m in model.modules()) == 28
    with pytest.raises(QuantizationError, match="pre-norm"):
        quantize_int8(tiny_model("bert"), mode="w8a8", smoothquant=0.5, calibration=calib)
