"""Sparse checkpoints are stock dense checkpoints with zeros: saved, reloaded in a fresh process without
hf_compress, and combined with int8."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file
from tiny_models import tiny_batch, tiny_model
from transformers import AutoModelForCausalLM

from hf_compress import quantize_int8, sparsify
from hf_compress.methods.int8.quantize import Int8Linear
from hf_compress.methods.sparsity.masks import masked_modules

_RELOAD = textwrap.dedent("""
    import json, sys, torch
    from transformers import AutoModelForCausalLM
    expected = torch.load(sys.argv[1], weights_only=True)
    result = {}
    for case in sys.argv[2:]:
        model, info = AutoModelForCausalLM.from_pretrained(f"{case}", output_loading_info=True)
        with torch.no_grad():
            logits = model(input_ids=expected["input_ids"], attention_mask=expected["attention_mask"]).logits
        state = model.state_dict()
        zeros = expected[case + ".zeros"]
        result[case] = {
            "max_abs_diff": float((logits - expected[case + ".logits"]).abs().max()),
            "same_zeros": all(torch.equal(state[k] == 0, v) for k, v in zeros.items()),
            "n_checked": len(zeros),
            "missing": sorted(info["missing_keys"]), "unexpected": sorted(info["unexpected_keys"]),
            "sparsity_config": model.config.sparsity_config,
            "quantized": getattr(model, "hf_quantizer", None) is not None
                         or hasattr(model.config, "quantization_config"),
        }
    result["hf_compress_imported"] = any(m.split(".")[0] == "hf_compress" for m in sys.modules)
    print(json.dumps(result))
""")


def _sparse_models() -> dict:
    return {
        "llama": sparsify(tiny_model("llama"), method="wanda", pattern="2:4", calibration=[tiny_batch()]),
        "gpt2": sparsify(tiny_model("gpt2"), sparsity=0.3, scope="per_layer"),
    }


def test_save_is_stock_dense_and_reloads_in_fresh_process(tmp_path):
    batch = tiny_batch()
    expected = dict(batch)
    for case, model in _sparse_models().items():
        with torch.no_grad():  # a stray edit of a pruned entry: saving must still write the zero
            next(iter(masked_modules(model).values())).weight.data.view(-1)[0] = 5.0
        model.save_pretrained(tmp_path / case)
        tiny_model(case).save_pretrained(tmp_path / f"dense-{case}")
        saved = load_file(tmp_path / case / "model.safetensors")
        dense = load_file(tmp_path / f"dense-{case}" / "model.safetensors")
        assert set(saved) == set(dense)  # no weight_orig / weight_mask / sparsity_mask leftovers
        assert all(saved[k].shape == dense[k].shape and saved[k].dtype == dense[k].dtype for k in saved)
        zeros = {n + ".weight": m.sparsity_mask.logical_not() for n, m in masked_modules(model).items()}
        for key, pruned in zeros.items():
            assert torch.equal(saved[key] == 0, pruned), key  # zeros where pruned, and only there
        with open(tmp_path / case / "config.json") as f:
            config = json.load(f)
        assert "quantization_config" not in config
        assert config["sparsity_config"] == model.config.sparsity_config
        expected[case + ".zeros"] = zeros
        with torch.no_grad():
            expected[case + ".logits"] = model(**batch).logits
    torch.save(expected, tmp_path / "expected.pt")

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    proc = subprocess.run([sys.executable, "-c", _RELOAD, "expected.pt", "llama", "gpt2"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result.pop("hf_compress_imported") is False
    for case, r in result.items():
        assert r["same_zeros"] and r["n_checked"] > 0, case
        assert r["max_abs_diff"] < 1e-5, case
        assert r["missing"] == [] and r["unexpected"] == [], case
        assert r["quantized"] is False, case  # the sparsity_config key does not trigger a quantizer
    assert result["llama"]["sparsity_config"]["sparsity_structure"] == "2:4"
    assert result["llama"]["sparsity_config"]["global_sparsity"] == pytest.approx(0.5)
    # floor(0.3 * numel) zeros per layer
    assert result["gpt2"]["sparsity_config"]["global_sparsity"] == pytest.approx(0.3, abs=1e-3)


@pytest.mark.parametrize("mode", ["w8a16", "w8a8"])
def test_int8_after_sparsify_keeps_zeros_exactly(mode, tmp_path):
    model = sparsify(tiny_model("llama"), method="magnitude", pattern="2:4")
    pruned = {n: m.sparsity_mask.logical_not() for n, m in masked_modules(model).items()}
    quantize_int8(model, mode=mode)
    modules = dict(model.named_modules())
    for name, mask in pruned.items():
        layer = modules[name]
        assert isinstance(layer, Int8Linear), name
        assert (layer.weight[mask] == 0).all() and (layer.dequantize()[mask] == 0).all(), name
        assert (layer.weight[~mask] != 0).float().mean() > 0.95, name  # rounding adds few zeros itself
    assert model.config.sparsity_config["sparsity_structure"] == "2:4"
    model.save_pretrained(tmp_path / "int8")  # compressed-tensors layout, reloaded by hf_compress's loader
    reloaded = dict(AutoModelForCausalLM.from_pretrained(tmp_path / "int8").named_modules())
    for name, mask in pruned.items():
        assert isinstance(reloaded[name], Int8Linear), name
        assert torch.equal(reloaded[name].weight, modules[name].weight), name
    assert reloaded[""].config.sparsity_config == model.config.sparsity_config


def test_gptq_after_sparsify_keeps_zeros():
    model = sparsify(tiny_model("llama"), method="magnitude", pattern="2:4")
    pruned = {n: m.sparsity_mask.logical_not() for n, m in masked_modules(model).items()}
    quantize_int8(model, mode="w8a16", method="gptq", calibration=[tiny_batch(4, 12, seed=1)])
    modules = dict(model.named_modules())
    assert all((modules[n].weight[mask] == 0).all() for n, mask in pruned.items())
