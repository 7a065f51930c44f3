"""GPTQ and SmoothQuant: same format, better rounding / flatter activations, function-preserving folding."""

import pytest
import torch
import torch.nn as nn
from tiny_models import tiny_batch, tiny_model

from hf_compress import Int8Linear, quantize_int8
from hf_compress.errors import QuantizationError
from hf_compress.methods.int8.format import quantize_per_channel
from hf_compress.methods.int8.gptq import collect_hessians, gptq_quantize_weight
from hf_compress.methods.int8.quantize import find_targets
from hf_compress.methods.int8.kernels import quantize_tokens
from hf_compress.methods.int8.quantize import Int8Config
from hf_compress.methods.int8.smoothquant import smooth_model, smoothing_factors, smoothing_groups
from hf_compress.methods.int8.smoothquant_search import TokenSampler, search_alpha, w8a8_error


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
    assert groups == {"llama": 3, "gpt2": 2}[model_type] * 4  # gpt2: no up -> down group (GELU between)
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


def _outlier_llama(seed=0):
    """A tiny llama whose attention-input norm and up projection each carry one outlier channel."""
    model = tiny_model("llama", seed=seed)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.input_layernorm.weight[3] *= 20
            layer.mlp.up_proj.weight[5] *= 20  # row 5 of up's output = column 5 of down's input
    return model


@pytest.mark.parametrize("model_type", ["llama", "phi3", "gpt2"])
@pytest.mark.parametrize("alpha", [0.5, "auto"])
def test_all_smoothing_groups_fold_without_changing_float_model(model_type, alpha):
    calib = [tiny_batch(batch_size=4, seq_len=16, seed=i) for i in range(2)]
    model = tiny_model(model_type)
    with torch.no_grad():
        for p in model.parameters():  # non-trivial norms and biases
            if p.dim() == 1:
                p.mul_(1 + 3 * torch.rand(p.shape, generator=torch.Generator().manual_seed(p.numel())))
        ref = model(**calib[0]).logits
    targets = find_targets(model, ["lm_head"])
    groups = smoothing_groups(model, targets)
    down = [g for g in groups if any(r.endswith("down_proj") for r in g.readers)]
    assert len(down) == (0 if model_type == "gpt2" else 4)
    if model_type == "phi3":  # fused gate_up: only the up half of its rows feeds down_proj
        assert down[0].rows == slice(64, None)
    before = {n: p.clone() for n, p in model.named_parameters()}
    assert smooth_model(model, targets, calib, alpha=alpha) == len(groups)
    with torch.no_grad():
        out = model(**calib[0]).logits
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
    if alpha == 0.5 and model_type != "gpt2":  # up -> down really folded: down's columns changed
        name = next(n for n in before if n.endswith("layers.0.mlp.down_proj.weight"))
        assert not torch.equal(dict(model.named_parameters())[name], before[name])


def test_ignored_reader_skips_its_group():
    model = tiny_model("llama")
    targets = find_targets(model, ["lm_head", "re:.*down_proj$"])
    groups = smoothing_groups(model, targets)
    assert len(groups) == 2 * 4 and not any("down_proj" in r for g in groups for r in g.readers)


def _group_inputs(model, targets, group, batches):
    sampler = TokenSampler(per_batch=10_000)
    module = targets[group.readers[0]]
    handle = module.register_forward_pre_hook(lambda _m, a: sampler.add(a[0].reshape(-1, a[0].shape[-1])))
    with torch.no_grad():
        for b in batches:
            model(**b)
    handle.remove()
    return sampler


@pytest.mark.parametrize("path", ["self_attn.q_proj", "mlp.down_proj"])
def test_alpha_search_beats_fixed_alpha_and_no_smoothing(path):
    calib = [tiny_batch(batch_size=4, seq_len=16, seed=i, padded=False) for i in range(2)]
    model = _outlier_llama()
    targets = find_targets(model, ["lm_head"])
    group = next(g for g in smoothing_groups(model, targets) if g.readers[0].endswith(f"0.{path}"))
    sampler = _group_inputs(model, targets, group, calib)
    x, weights = sampler.tokens(), [targets[n].weight.detach() for n in group.readers]
    best, s, errors = search_alpha(x, sampler.absmax, weights, smoothing_factors)
    assert errors[best] == min(errors.values()) and errors[best] <= errors[0.5]
    assert errors[best] < errors[None]  # strictly better than round-to-nearest without smoothing
    assert w8a8_error(x, weights, s) == pytest.approx(errors[best])
    # the error at s = 1 is the one of the int8 layers the model really runs
    with torch.no_grad():
        rtn = sum(float((Int8Linear.from_float(targets[n], "w8a8")(x) - targets[n](x)).pow(2).sum())
                  for n in group.readers)
    assert errors[None] == pytest.approx(rtn, rel=1e-4)


def test_token_sampler_caps_kept_tokens_but_sees_every_absmax():
    sampler = TokenSampler(per_batch=10)
    for i in range(3):
        x = torch.randn(100, 6)
        x[7, 2] = 50.0 + i  # in every batch, a row the subsample will usually miss
        sampler.add(x)
    assert sampler.tokens().shape == (30, 6) and sampler.absmax[2] == 52.0


def test_smoothquant_auto_save_load_identical_logits(tmp_path):
    from transformers import AutoModelForCausalLM

    calib = [tiny_batch(batch_size=4, seq_len=16, seed=i) for i in range(2)]
    model = quantize_int8(_outlier_llama(), mode="w8a8", smoothquant="auto", calibration=calib)
    batch = tiny_batch()
    with torch.no_grad():
        ref = model(**batch).logits
    model.save_pretrained(tmp_path / "auto")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "auto").eval()
    assert sum(isinstance(m, Int8Linear) for m in reloaded.modules()) == 28
    with torch.no_grad():
        assert torch.equal(reloaded(**batch).logits, ref)


@pytest.mark.parametrize(
    "value, match",
    [("autox", "'autox'"), (True, "True"), (0.0, "got 0.0"), (1.0, "got 1.0"), ("0.5", "'0.5'")],
)
def test_smoothquant_value_validation(value, match):
    allowed = r"`smoothquant` must be an alpha in \(0, 1\), 'auto' or None"
    with pytest.raises(QuantizationError, match=rf"{allowed}.*{match}"):
        Int8Config(smoothquant=value, calibration=[{}])
    with pytest.raises(QuantizationError, match="mode='w8a8'"):
        Int8Config(mode="w8a16", smoothquant="auto", calibration=[{}])
    with pytest.raises(QuantizationError, match="calibration"):
        Int8Config(smoothquant="auto")
    assert Int8Config(smoothquant="auto", calibration=[{}]).smoothquant == "auto"


def test_recipe_accepts_auto_and_rejects_bad_values():
    from hf_compress.errors import RecipeError
    from hf_compress.recipe.build import build_dataclass
    from hf_compress.methods.int8.config import QuantizeInt8Config

    stage = build_dataclass(QuantizeInt8Config, {"smoothquant": "auto", "method": "gptq"}, "stages[0]")
    assert stage.needs_calibration and stage.part_config(calibration=[{}]).smoothquant == "auto"
    with pytest.raises(RecipeError, match="'often'"):
        build_dataclass(QuantizeInt8Config, {"smoothquant": "often"}, "stages[0]")


def test_calibration_that_never_reaches_a_layer_is_an_error():
    model = tiny_model("llama")
    targets = find_targets(model, ["lm_head"])
    detached = {**targets, "not.in.the.model": nn.Linear(32, 32)}  # never called by the forward pass
    with pytest.raises(QuantizationError, match=r"never reached layers \['not.in.the.model'\]"):
        collect_hessians(model, detached, [tiny_batch()])  # the check lives in run_with_input_hooks,
    collect_hessians(model, targets, [tiny_batch()])  # which smooth_model shares; every real layer is reached
