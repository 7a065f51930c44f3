"""drop_layers for every family: the saved model reloads with stock transformers (a fresh process that never
imports hf_compress) and computes what the original computes with the dropped layers replaced by identity."""

import pytest
import torch
from fresh_reload import reload_fresh, save_case
from tiny_models import ALL_MODEL_TYPES, ENCODER_TYPES, tiny_batch, tiny_model

from hf_compress import arch, drop_layers

# case name -> (model_type, config overrides, layers to drop)
CASES = {t: (t, {}, [0, 2]) for t in ALL_MODEL_TYPES}
CASES.update(
    {
        # the sliding window must be shorter than the 12-token batch for layer types to matter
        "gemma2-window": ("gemma2", {"sliding_window": 4}, [1]),
        "gemma3-pattern": ("gemma3_text", {"sliding_window": 4, "sliding_window_pattern": 2}, [0, 1]),
        "gemma3-full-only": ("gemma3_text", {"sliding_window": 4, "sliding_window_pattern": 2}, [0, 2]),
        "qwen2-window": (
            "qwen2",
            {"use_sliding_window": True, "sliding_window": 4, "max_window_layers": 2},
            [0, 3],
        ),
        "gpt2-inverse-scale": ("gpt2", {"scale_attn_by_inverse_layer_idx": True}, [0, 2]),
    }
)


def identity_reference(model, drop, batch):
    """Logits of ``model`` with the layers ``drop`` replaced by identity (forward hooks)."""
    layers = arch.get_layers(model)

    def identity(module, args, kwargs, output):
        x = args[0] if args else kwargs["hidden_states"]
        return (x,) + tuple(output[1:]) if isinstance(output, tuple) else x

    handles = [layers[i].register_forward_hook(identity, with_kwargs=True) for i in drop]
    kwargs = {} if model.config.model_type in ENCODER_TYPES else {"use_cache": False}
    try:
        with torch.no_grad():
            return model(**batch, **kwargs).logits
    finally:
        for h in handles:
            h.remove()


def test_dropped_models_reload_with_stock_transformers(tmp_path):
    batch = tiny_batch()
    torch.save(batch, tmp_path / "batch.pt")
    expected_layers = {}
    for name, (model_type, overrides, drop) in CASES.items():
        model = tiny_model(model_type, **overrides)
        reference = identity_reference(model, drop, batch)
        drop_layers(model, drop)
        # the live model already matches, before any save
        causal = model_type not in ENCODER_TYPES
        with torch.no_grad():
            live = model(**batch, **({"use_cache": False} if causal else {})).logits
        torch.testing.assert_close(live, reference, atol=1e-5, rtol=0, msg=name)
        for new, layer in enumerate(arch.get_layers(model)):
            idx = [m.layer_idx for m in layer.modules() if isinstance(getattr(m, "layer_idx", None), int)]
            assert set(idx) <= {new} and (idx or model_type == "distilbert"), (name, idx)
        save_case(tmp_path / name, model, batch)
        expected_layers[name] = 4 - len(drop)

    results = reload_fresh(tmp_path)
    assert sorted(results) == sorted(CASES)
    for name, out in results.items():
        assert out["config"][arch.ARCHITECTURES[CASES[name][0]].num_layers_key] == expected_layers[name], name
        assert out["logits_diff"] <= 1e-5, (name, out)
        if CASES[name][0] not in ENCODER_TYPES:
            assert out["same_tokens"], (name, out)
            assert out["scores_diff"] <= 1e-4, (name, out)


@pytest.mark.parametrize("name", ["qwen2-window", "gemma3-pattern", "gpt2-inverse-scale"])
def test_per_layer_config_is_rewritten(name):
    model_type, overrides, drop = CASES[name]
    model = tiny_model(model_type, **overrides)
    before = list(getattr(model.config, "layer_types", []) or [])
    drop_layers(model, drop)
    keep = [i for i in range(4) if i not in drop]
    assert arch.num_layers(model) == len(keep) == len(arch.get_layers(model))
    if before:
        assert list(model.config.layer_types) == [before[i] for i in keep]
    if model_type == "qwen2":  # layers 0, 1 full, 2, 3 sliding; kept [1, 2] -> one full layer first
        assert model.config.max_window_layers == 1
