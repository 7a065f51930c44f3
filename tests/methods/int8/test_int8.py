"""Int8Linear numerics, the packing format, and quantize_int8 on tiny bert / gpt2 / llama."""

import pytest
import torch
import torch.nn as nn
from tiny_models import tiny_batch, tiny_model
from transformers.pytorch_utils import Conv1D

from hf_compress import Int8Linear, quantize_int8
from hf_compress.errors import QuantizationError
from hf_compress.methods.int8.format import pack_int8, quantize_per_channel, unpack_int8
from hf_compress.methods.int8.kernels import kernel_status, w8a8_kernel
from hf_compress.methods.int8.quantize import Int8Config, find_targets, matches_ignore
from hf_compress.methods.int8.kernels import SMALL_M


def _linear(in_f=48, out_f=24, seed=0):
    torch.manual_seed(seed)
    lin = nn.Linear(in_f, out_f)
    with torch.no_grad():
        lin.weight[3, 5] = 1.5  # an outlier widens one row's step only
    return lin


def _bound(x, layer, mode):
    """|y - y_ref| <= (s_w / 2) sum|x| + (s_x / 2) sum|w_hat| (+ float rounding), per output; fbgemm's
    7-bit activations (see methods/int8/fbgemm.py) have twice the step: s_x sum|w_hat|."""
    x64 = x.double().reshape(-1, x.shape[-1])
    w_hat = layer.dequantize().double()  # (out, in)
    s_w = layer.weight_scale.double().t()  # (1, out)
    bound = s_w / 2 * x64.abs().sum(1, keepdim=True)
    if mode == "w8a8":
        s_x = x64.abs().amax(1, keepdim=True) / 127
        step = 1.0 if w8a8_kernel() == "fbgemm" else 0.5
        bound = bound + s_x * step * w_hat.abs().sum(1)[None, :]
    else:  # 16-bit activations: bf16 rounding of x, and of the product
        bound = bound + 2**-8 * (x64.abs() @ w_hat.abs().t()) * 2
    return bound + 1e-5


@pytest.mark.parametrize("mode", ["w8a8", "w8a16"])
@pytest.mark.parametrize("rows", [1, SMALL_M + 5])  # both w8a16 kernels
def test_int8linear_error_within_quantization_step(mode, rows):
    lin = _linear()
    x = torch.randn(rows, 48) * 3
    layer = Int8Linear.from_float(lin, mode)
    assert layer.weight.dtype == torch.int8 and layer.weight.shape == (24, 48)
    err = (layer(x).double() - lin(x).double()).abs()
    assert (err <= _bound(x, layer, mode)).all()
    # and it really is quantized: the float layer's exact output is not reproduced
    assert err.max() > 0


def test_w8a8_matches_fake_quant_reference(use_w8a8_kernel):
    use_w8a8_kernel("int_mm")  # the exact reference; fbgemm's 7-bit rounding: test_int8_kernels.py
    lin = _linear()
    layer = Int8Linear.from_float(lin, "w8a8")
    x = torch.randn(2, 5, 48)
    xs = x.double().abs().amax(-1, keepdim=True) / 127
    x_hat = torch.round(x.double() / xs) * xs
    ref = x_hat @ layer.dequantize().double().t() + lin.bias.double()
    torch.testing.assert_close(layer(x).double(), ref, rtol=1e-5, atol=1e-5)
    assert layer(x).shape == (2, 5, 24)


@pytest.mark.parametrize("mode", ["w8a8", "w8a16"])
def test_conv1d_equals_transposed_linear(mode):
    conv = Conv1D(24, 48)
    lin = nn.Linear(48, 24)
    with torch.no_grad():
        lin.weight.copy_(conv.weight.t())
        lin.bias.copy_(torch.randn(24))
        conv.bias.copy_(lin.bias)
    x = torch.randn(3, 48)
    a, b = Int8Linear.from_float(conv, mode), Int8Linear.from_float(lin, mode)
    assert torch.equal(a.weight, b.weight) and torch.equal(a(x), b(x))


def test_scale_rule_and_rounding():
    w = torch.tensor([[0.5, -1.0, 0.25, 0.0], [0.0, 0.0, 0.0, 0.0]])
    q, s = quantize_per_channel(w)
    assert torch.allclose(s[0], torch.tensor([1.0 / 127.5]))
    assert q[0].tolist() == [64, -127, 32, 0]  # 63.75 -> 64; -1 / fp32(1/127.5) = -127.49999 -> -127
    assert q[1].tolist() == [0, 0, 0, 0] and s[1].item() > 0  # an all-zero row gets eps, not 0


@pytest.mark.parametrize("cols", [8, 30, 1])
def test_pack_roundtrip_and_byte_layout(cols):
    q = torch.randint(-128, 128, (5, cols), dtype=torch.int8)
    packed = pack_int8(q)
    assert packed.dtype == torch.int32 and packed.shape == (5, (cols + 3) // 4)
    assert torch.equal(unpack_int8(packed, (5, cols)), q)
    # word 0 of row 0 = sum_i (q_i + 128) << 8i over the first four values (zero padded)
    u = [int(v) + 128 for v in q[0, :4].tolist()] + [0] * 3
    word = sum(b << (8 * i) for i, b in enumerate(u[:4]))
    assert (int(packed[0, 0]) & 0xFFFFFFFF) == word


def test_unpack_rejects_wrong_dtype_and_shape():
    with pytest.raises(QuantizationError, match="int32"):
        unpack_int8(torch.zeros(2, 2, dtype=torch.int64), (2, 8))
    with pytest.raises(QuantizationError, match="weight_shape"):
        unpack_int8(torch.zeros(2, 2, dtype=torch.int32), (2, 12))


@pytest.mark.parametrize("mode", ["w8a8", "w8a16"])
def test_state_dict_layout_and_plain_load_state_dict(mode):
    layer = Int8Linear.from_float(_linear(), mode)
    sd = layer.state_dict()
    expected = (
        {"weight", "weight_scale", "bias"}
        if mode == "w8a8"
        else {"weight_packed", "weight_shape", "weight_scale", "bias"}
    )
    assert set(sd) == expected
    fresh = Int8Linear(48, 24, mode=mode)
    fresh.load_state_dict(sd)
    assert torch.equal(fresh.weight, layer.weight) and torch.equal(fresh.weight_scale, layer.weight_scale)


@pytest.mark.parametrize("model_type", ["bert", "gpt2", "llama"])
@pytest.mark.parametrize("mode", ["w8a8", "w8a16"])
def test_quantize_tiny_models(model_type, mode):
    model = tiny_model(model_type)
    batch = tiny_batch()
    with torch.no_grad():
        ref = model(**batch).logits
    float_layers = {n for n, m in model.named_modules() if isinstance(m, (nn.Linear, Conv1D))}
    targets = set(find_targets(model, ["lm_head"]))
    quantize_int8(model, mode=mode)
    int8 = {n for n, m in model.named_modules() if isinstance(m, Int8Linear)}
    assert int8 == targets and len(int8) >= 4 * 4
    with torch.no_grad():
        out = model(**batch).logits
    mask = batch["attention_mask"].bool()
    rel = (out - ref)[mask].abs().max() / ref[mask].abs().max()
    assert 0 < rel < 0.05
    qc = model.config.quantization_config
    assert qc["format"] == {"w8a8": "int-quantized", "w8a16": "pack-quantized"}[mode]
    assert sorted(qc["ignore"]) == sorted(float_layers - int8)


def test_tied_output_head_and_embeddings_stay_float():
    model = tiny_model("gpt2")  # lm_head is tied to wte
    quantize_int8(model, mode="w8a8", ignore=[])
    assert isinstance(model.lm_head, nn.Linear) and model.lm_head.weight is model.transformer.wte.weight
    assert model.config.quantization_config["ignore"] == ["lm_head"]


def test_ignore_names_regex_and_class():
    assert matches_ignore("model.layers.0.mlp.up_proj", ["re:.*mlp.*"])
    assert not matches_ignore("model.layers.0.self_attn.q_proj", ["re:.*mlp.*", "q_proj"])
    assert matches_ignore("lm_head", ["lm_head"]) and matches_ignore("x", ["Linear"], nn.Linear(1, 1))
    model = tiny_model("llama")
    quantize_int8(model, mode="w8a16", ignore=["lm_head", "re:.*mlp\\.down_proj$"])
    assert isinstance(model.model.layers[0].mlp.down_proj, nn.Linear)
    assert isinstance(model.model.layers[0].mlp.up_proj, Int8Linear)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(mode="w4a16"), "mode"),
        (dict(method="awq"), "method"),
        (dict(method="gptq"), "calibration"),
        (dict(mode="w8a16", smoothquant=0.5, calibration=[{}]), "smoothquant"),
        (dict(smoothquant=1.5, calibration=[{}]), "alpha"),
        (dict(ignore="lm_head"), "ignore"),
    ],
)
def test_config_validation(kwargs, match):
    with pytest.raises(QuantizationError, match=match):
        Int8Config(**kwargs)


def test_nothing_to_quantize_is_an_error():
    with pytest.raises(QuantizationError, match="no nn.Linear"):
        quantize_int8(tiny_model("llama"), ignore=["Linear"])


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["w8a8", "w8a16"])
def test_compiled_kernels_match_eager(mode):
    lin = _linear()
    eager, compiled = Int8Linear.from_float(lin, mode), Int8Linear.from_float(lin, mode)
    compiled.use_compile = True
    with torch.inference_mode():
        for rows in (64, 1, 37):  # the row count is dynamic: one compile serves all
            x = torch.randn(rows, 48)
            ref = eager(x)
            if mode == "w8a8" and w8a8_kernel() == "fbgemm":  # both within one 7-bit step of x w_hat^T, but
                # inductor's last bits of the row mapping may round some activations the other way
                step = x.abs().amax(1, keepdim=True) / 127 * eager.dequantize().abs().sum(1)[None, :]
                assert ((compiled(x) - ref).abs() <= 2 * step + 1e-4).all()
                continue
            tol = 1e-5 if mode == "w8a8" else 2**-7 * ref.abs().max().item()  # bf16 rounding may differ
            torch.testing.assert_close(compiled(x), ref, rtol=tol, atol=tol)
    # the compiled kernel ran: not an eager fallback (which would make this compare eager with eager)
    used = {k: v for k, v in kernel_status().items() if k[0] == mode and k[1:3] == (24, 48)}
    assert used and set(used.values()) == {"compiled"}


@pytest.mark.parametrize("emulated", [True, False])
def test_dense_w8a16_computes_in_fp32_where_bf16_is_emulated(monkeypatch, emulated):
    """Above SMALL_M rows on a CPU without native bf16, W8A16 multiplies in fp32 (emulated bf16 is ~4x slower
    there): exactly x @ dequant(W)^T + b in fp32; with native bf16 it stays a bf16 product."""
    from hf_compress.methods.int8 import kernels

    monkeypatch.setattr(kernels, "_emulated_bf16", lambda: emulated)
    lin = _linear()
    layer = Int8Linear.from_float(lin, "w8a16")
    x = torch.randn(SMALL_M + 5, 48) * 3
    w = layer.dequantize().float()
    fp32 = torch.nn.functional.linear(x, w, lin.bias)
    w16 = layer.weight.bfloat16() * layer.weight_scale.bfloat16()  # dequantized in bf16, as the kernel does
    bf16 = (torch.nn.functional.linear(x.bfloat16(), w16) + lin.bias.bfloat16()).float()
    out = layer(x)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, fp32 if emulated else bf16, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(fp32, bf16, rtol=1e-5, atol=1e-5)  # the two really differ at this tolerance
