"""Per-layer float fallback: the int8 sensitivity score equals a naive computation, the most sensitive layers
stay float (and stay float after save -> load), and bad values are refused before the model changes."""

import copy

import pytest
import torch
from tiny_models import tiny_batch, tiny_model

from hf_compress import Int8Linear, quantize_int8
from hf_compress.errors import QuantizationError
from hf_compress.methods.int8.layer import Int8Linear as _Layer
from hf_compress.methods.int8.quantize import find_targets
from hf_compress.methods.int8.sensitivity import int8_sensitivity

CALIB = [tiny_batch(batch_size=2, seq_len=12, seed=i) for i in range(2)]  # 2 x 18 valid tokens (< cap)


def _naive_sensitivity(model, targets, mode):
    """Every input of every target captured with plain hooks, then sum ||int8(x) - x W^T||^2 / sum ||x W^T||^2
    in float64, padding dropped by hand."""
    seen = {n: [] for n in targets}
    handles = [m.register_forward_pre_hook(lambda mod, a, n=n: seen[n].append(a[0].detach()))
               for n, m in targets.items()]
    with torch.no_grad():
        for batch in CALIB:
            model(**batch, use_cache=False)
    for h in handles:
        h.remove()
    out = {}
    for name, module in targets.items():
        valid = torch.cat([b["attention_mask"].reshape(-1).bool() for b in CALIB])
        x = torch.cat([t.reshape(-1, t.shape[-1]) for t in seen[name]])[valid]
        with torch.no_grad():
            ref = module(x).double()
            q = _Layer.from_float(module, mode)(x).double()
        out[name] = float((q - ref).pow(2).sum() / ref.pow(2).sum())
    return out


@pytest.mark.parametrize("mode", ["w8a16", "w8a8"])
@pytest.mark.parametrize("model_type", ["llama", "gpt2"])
def test_sensitivity_equals_a_naive_computation(mode, model_type):
    model = tiny_model(model_type).eval()
    targets = find_targets(model, ["lm_head"])
    got = int8_sensitivity(model, targets, CALIB, mode)
    expected = _naive_sensitivity(model, targets, mode)
    assert got.keys() == expected.keys()
    for name in got:
        assert got[name] == pytest.approx(expected[name], rel=1e-4), name


LAYER = "model.layers.2"
QKV = [f"{LAYER}.self_attn.{p}_proj" for p in "qkv"]


def _sensitive_attention(mode):
    """A llama computing the same function, whose layer-2 q/k/v int8 hurts most: channel 0 of their input
    (the input norm's weight) is scaled by ``f`` and their weights' column 0 by 1/f. W8A8: f = 1000, an
    activation outlier that coarsens every token's int8 step; W8A16: f = 1/1000, a weight outlier that
    coarsens every row's step while contributing little to the output."""
    model, f = tiny_model("llama").eval(), 1000.0 if mode == "w8a8" else 1e-3
    with torch.no_grad():
        model.get_submodule(f"{LAYER}.input_layernorm").weight[0] *= f
        for name in QKV:
            model.get_submodule(name).weight[:, 0] /= f
    return model


@pytest.mark.parametrize("mode", ["w8a16", "w8a8"])
def test_the_most_sensitive_layers_stay_float_and_reload_float(mode, tmp_path):
    from transformers import AutoModelForCausalLM

    model = _sensitive_attention(mode)
    n_targets = len(find_targets(model, ["lm_head"]))
    scores = int8_sensitivity(model, find_targets(model, ["lm_head"]), CALIB, mode)
    assert set(sorted(scores, key=scores.get)[-3:]) == set(QKV)
    quantize_int8(model, mode=mode, float_fallback=3, calibration=CALIB)
    assert all(type(model.get_submodule(n)) is torch.nn.Linear for n in QKV)
    assert sum(isinstance(m, Int8Linear) for m in model.modules()) == n_targets - 3
    assert set(QKV) <= set(model.config.quantization_config["ignore"])
    batch = tiny_batch()
    with torch.no_grad():
        ref = model(**batch).logits
    model.save_pretrained(tmp_path / "fb")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "fb").eval()
    assert all(type(reloaded.get_submodule(n)) is torch.nn.Linear for n in QKV)
    with torch.no_grad():
        assert torch.equal(reloaded(**batch).logits, ref)


@pytest.mark.parametrize("mode", ["w8a16", "w8a8"])
def test_fallback_lowers_the_output_error(mode):
    model = _sensitive_attention(mode)
    batch = tiny_batch()
    with torch.no_grad():
        ref = model(**batch).logits
    errors = []
    for count in (0, 3):
        q = quantize_int8(copy.deepcopy(model), mode=mode, float_fallback=count, calibration=CALIB)
        with torch.no_grad():
            errors.append(float((q(**batch).logits - ref).pow(2).mean()))
    assert errors[1] < errors[0] / 2


@pytest.mark.parametrize("value, match", [(-1, "got -1"), (True, "got True"), (1.5, "got 1.5"),
                                          (10**6, "less than the 28 layers")])
def test_bad_fallback_is_refused_with_the_model_unchanged(value, match):
    model = tiny_model("llama").eval()
    state = copy.deepcopy(model.state_dict())
    with pytest.raises(QuantizationError, match=match) as info:
        quantize_int8(model, mode="w8a8", float_fallback=value, calibration=CALIB)
    assert "\n" not in str(info.value) and "float_fallback" in str(info.value)
    assert not any(isinstance(m, Int8Linear) for m in model.modules())
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_fallback_without_calibration_is_refused():
    with pytest.raises(QuantizationError, match="`calibration` must be"):
        quantize_int8(tiny_model("llama"), mode="w8a8", float_fallback=2)


def test_recipe_stage_takes_float_fallback_and_calibrates():
    from hf_compress.errors import RecipeError
    from hf_compress.methods.int8.config import QuantizeInt8Config

    cfg = QuantizeInt8Config(mode="w8a8", float_fallback=2)
    assert cfg.needs_calibration and cfg.part_config(calibration=CALIB).float_fallback == 2
    with pytest.raises(RecipeError, match="`float_fallback` must be an int >= 0") as info:
        QuantizeInt8Config(float_fallback=-1)
    assert "\n" not in str(info.value)
