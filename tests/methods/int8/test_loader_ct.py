"""Our files equal what the compressed-tensors library writes; stock transformers + that library loads them.

Skipped unless ``compressed_tensors`` is importable. This environment keeps the package out (its presence
switches ``from_pretrained`` to transformers' own loader); ``test_loader.py`` runs this file in the
interpreter named by ``HF_COMPRESS_CT_PYTHON`` instead.
"""

import json

import pytest
import torch
from safetensors.torch import load_file
from tiny_models import tiny_batch, tiny_model

pytest.importorskip("compressed_tensors")

from compressed_tensors.compressors import ModelCompressor  # noqa: E402
from compressed_tensors.quantization import (  # noqa: E402
    QuantizationArgs,
    QuantizationConfig,
    QuantizationScheme,
    apply_quantization_config,
    preset_name_to_scheme,
)
from compressed_tensors.quantization.utils import calculate_qparams  # noqa: E402

from hf_compress import Int8Linear, quantize_int8  # noqa: E402

CASES = [("llama", "causal-lm"), ("bert", "masked-lm")]


def _ct_checkpoint(model, mode, ignore, path):
    """Quantize and save with compressed-tensors' own API (llm-compressor's save path, minus calibration)."""
    if mode == "w8a8":
        scheme = preset_name_to_scheme("W8A8", ["Linear"])
    else:  # W8A16 with per-channel scales (the preset is grouped)
        scheme = QuantizationScheme(
            targets=["Linear"],
            weights=QuantizationArgs(
                num_bits=8, type="int", strategy="channel", symmetric=True, dynamic=False
            ),
        )
    apply_quantization_config(model, QuantizationConfig(config_groups={"group_0": scheme}, ignore=ignore))
    with torch.no_grad():
        for module in model.modules():
            if hasattr(module, "weight_scale"):
                w = module.weight
                scale, _ = calculate_qparams(
                    w.amin(1, keepdim=True), w.amax(1, keepdim=True), module.quantization_scheme.weights
                )
                module.weight_scale.copy_(scale)
    compressor = ModelCompressor.from_pretrained_model(model)
    compressor.compress_model(model)
    model.save_pretrained(path)
    compressor.update_config(str(path))


@pytest.mark.parametrize("model_type, task", CASES)
@pytest.mark.parametrize("mode", ["w8a8", "w8a16"])
def test_same_tensors_and_config_as_compressed_tensors(tmp_path, model_type, task, mode):
    ours = quantize_int8(tiny_model(model_type, task), mode=mode)
    ours.save_pretrained(tmp_path / "ours")
    ignore = ours.config.quantization_config["ignore"]
    _ct_checkpoint(tiny_model(model_type, task), mode, ignore, tmp_path / "theirs")
    a = load_file(tmp_path / "ours" / "model.safetensors")
    b = load_file(tmp_path / "theirs" / "model.safetensors")
    assert sorted(a) == sorted(b)
    for key in a:
        assert a[key].dtype == b[key].dtype and a[key].shape == b[key].shape, key
        assert torch.equal(a[key], b[key]), key
    qa, qb = (
        json.loads((tmp_path / d / "config.json").read_text())["quantization_config"]
        for d in ("ours", "theirs")
    )
    qa.pop("version"), qb.pop("version")
    assert qa == qb


@pytest.mark.parametrize("mode", ["w8a8", "w8a16"])
def test_stock_transformers_with_compressed_tensors_loads_ours(tmp_path, mode):
    from transformers import AutoModelForCausalLM

    ours = quantize_int8(tiny_model("llama"), mode=mode)
    ours.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)  # transformers' CompressedTensorsHfQuantizer
    assert not any(isinstance(m, Int8Linear) for m in loaded.modules())
    batch = tiny_batch()
    with torch.no_grad():
        theirs, mine = loaded(**batch).logits, ours(**batch).logits
    mask = batch["attention_mask"].bool()
    rel = (theirs - mine)[mask].abs().max() / mine[mask].abs().max()
    assert rel < 0.02  # same int8 weights; only activation rounding (bf16 / per-token int8 rules) differs
