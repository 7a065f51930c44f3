"""The CPU W8A8 matmul chosen per CPU (methods/int8/kernels.py) and fbgemm's per-token path (fbgemm.py)."""

import copy

import pytest
import torch
import torch.nn as nn
from tiny_models import tiny_batch, tiny_model

from hf_compress import Int8Linear, quantize_int8
from hf_compress.errors import QuantizationError
from hf_compress.methods.int8 import fbgemm, kernels
from hf_compress.methods.int8.kernels import quantize_tokens, set_w8a8_kernel, w8a8_linear
from hf_compress.methods.int8.format import quantize_per_channel

AVX2 = {"architecture": "x86_64", "avx2": True, "avx512_vnni": False, "avx_vnni": False, "amx_int8": False}


@pytest.mark.parametrize(
    "caps, expected",
    [
        (AVX2, "fbgemm"),  # AVX2 only: _int_mm is a scalar loop there
        ({**AVX2, "avx512_vnni": True}, "int_mm"),
        ({**AVX2, "avx_vnni": True}, "int_mm"),
        ({**AVX2, "amx_int8": True}, "int_mm"),
        ({**AVX2, "avx2": False}, "int_mm"),
        ({"architecture": "aarch64"}, "int_mm"),  # today's behaviour off x86
    ],
)
def test_the_kernel_follows_the_cpu(monkeypatch, caps, expected):
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: caps)
    monkeypatch.setattr(kernels, "fbgemm_available", lambda: True)
    assert kernels._detect_cpu_kernel() == expected
    assert kernels.w8a8_kernel("cuda") == "int_mm"


def test_a_bad_kernel_name_is_refused(monkeypatch, use_w8a8_kernel):
    with pytest.raises(QuantizationError, match=r"`set_w8a8_kernel\(name\)` must be one of .*got 'cublas'"):
        set_w8a8_kernel("cublas")
    monkeypatch.setenv("HF_COMPRESS_W8A8_KERNEL", "vnni")
    with pytest.raises(QuantizationError, match="`HF_COMPRESS_W8A8_KERNEL` must be one of .*got 'vnni'"):
        set_w8a8_kernel(None)
    monkeypatch.setattr(kernels, "fbgemm_available", lambda: False)
    with pytest.raises(QuantizationError, match="no fbgemm engine; use 'int_mm'"):
        set_w8a8_kernel("fbgemm")


def _layer(k, n, seed=0, outliers=True):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n, k, generator=g) * 0.05
    q, s = quantize_per_channel(w)
    return q, s, torch.randn(n, generator=g)


def _x(m, k, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(m, k, generator=g) * 3
    x[:, :3] *= 10  # outlier channels, as in transformer activations
    return x


@pytest.mark.parametrize("m, k, n", [(1, 48, 24), (13, 384, 96), (64, 37, 20), (5, 1536, 16)])
def test_fbgemm_is_within_its_rounding_of_the_reference(use_w8a8_kernel, m, k, n):
    """Reference: per-token int8 (absmax / 127) times the int8 weight, exact int32 sums. fbgemm's activation
    step is twice the reference's (7 bits), so per output |y - y_ref| <= (1/2 + 1) s_x sum|w_hat|."""
    use_w8a8_kernel("fbgemm")
    q, s, b = _layer(k, n)
    x = _x(m, k)
    packed = fbgemm.packed_count()
    y = w8a8_linear(x, q, s, b)
    assert fbgemm.packed_count() == packed + 1  # fbgemm ran, not the reference
    xq, xs = quantize_tokens(x)
    ref = (xq.double() @ q.double().t()) * xs.double() * s.double().t() + b.double()
    w_hat = q.double() * s.double()
    bound = 1.5 * xs.double() * w_hat.abs().sum(1)[None, :] + 1e-4
    assert ((y.double() - ref).abs() <= bound).all()
    rel = (y.double() - ref).norm() / ref.norm()
    assert rel < 0.1  # typical error is a few % of the reference's, far inside the worst case


def test_fbgemm_output_of_a_token_does_not_depend_on_the_batch(use_w8a8_kernel):
    use_w8a8_kernel("fbgemm")
    q, s, b = _layer(64, 32)
    x = _x(9, 64)
    x[4] = x[4].abs() * 0.01  # a one-sided, small row next to large two-sided ones
    whole = w8a8_linear(x, q, s, b)
    for i in range(9):
        assert torch.equal(w8a8_linear(x[i : i + 1], q, s, b), whole[i : i + 1])


def test_fbgemm_repacks_after_the_weights_change_in_place(use_w8a8_kernel):
    use_w8a8_kernel("fbgemm")
    torch.manual_seed(0)
    a, b = Int8Linear.from_float(nn.Linear(32, 16), "w8a8"), Int8Linear.from_float(nn.Linear(32, 16), "w8a8")
    x = torch.randn(4, 32)
    with torch.inference_mode():
        a(x)  # packs a's weights
    a.load_state_dict(b.state_dict())  # in place: same tensors, new values
    with torch.inference_mode():
        assert torch.equal(a(x), b(x))


def test_fbgemm_runs_with_gradients_enabled_and_passes_them_straight_through(use_w8a8_kernel):
    """A plain ``model(**batch)`` (no ``torch.no_grad``) must take the same kernel as under no_grad."""
    use_w8a8_kernel("fbgemm")
    q, s, b = _layer(48, 24)
    x = _x(6, 48).requires_grad_()
    y = w8a8_linear(x, q, s, b)
    with torch.no_grad():
        assert torch.equal(y, w8a8_linear(x, q, s, b))
    y.sum().backward()
    w_hat = q.float() * s.float()
    torch.testing.assert_close(x.grad, w_hat.sum(0).expand_as(x), rtol=0.05, atol=0.05)


@pytest.mark.parametrize("model_type", ["bert", "llama"])
def test_default_and_loaded_w8a8_use_fbgemm_and_agree_with_the_reference(use_w8a8_kernel, tmp_path,
                                                                       model_type):
    from transformers import AutoModel

    import hf_compress  # noqa: F401 - the int8 loader

    use_w8a8_kernel("int_mm")
    base = tiny_model(model_type, "base").eval()
    batch = {k: v for k, v in tiny_batch().items() if k != "labels"}
    reference = quantize_int8(copy.deepcopy(base), mode="w8a8")
    with torch.inference_mode():
        ref = reference(**batch).last_hidden_state
    use_w8a8_kernel("fbgemm")
    model = quantize_int8(copy.deepcopy(base), mode="w8a8")
    model.save_pretrained(tmp_path)
    loaded = AutoModel.from_pretrained(tmp_path).eval()
    packed = fbgemm.packed_count()
    with torch.inference_mode():
        out, out_loaded = model(**batch).last_hidden_state, loaded(**batch).last_hidden_state
    assert fbgemm.packed_count() > packed
    assert torch.equal(out, out_loaded)
    cos = torch.nn.functional.cosine_similarity(out.flatten(1), ref.flatten(1)).min()
    assert cos > 0.99, cos
