"""Width-pruned checkpoints reload with stock transformers in a fresh process (hf_compress never imported):
same logits, generation with the KV cache equals generation without, parameter counts kept; also after
head pruning and layer dropping."""

from fresh_reload import reload_fresh, save_case
from tiny_models import ALL_MODEL_TYPES, tiny_batch, tiny_model

from hf_compress import arch, drop_layers, prune_heads, prune_width, width_importance

HIDDEN_TYPES = tuple(t for t in ALL_MODEL_TYPES if arch.ARCHITECTURES[t].head_dim_key)


def _pruned(model_type, task=None, ffn=0.25, hidden=None, **overrides):
    model = tiny_model(model_type, task, **overrides)
    scores = width_importance(model, [tiny_batch(seed=1)], progress=False)
    return prune_width(model, ffn=ffn, hidden=hidden, scores=scores)


def test_width_pruned_models_reload_with_stock_transformers(tmp_path):
    cases = {f"{t}-ffn": _pruned(t) for t in ALL_MODEL_TYPES}
    cases.update({f"{t}-ffn-hidden": _pruned(t, hidden=0.25) for t in HIDDEN_TYPES})
    cases["llama-untied-hidden"] = _pruned("llama", hidden=8, tie_word_embeddings=False)
    cases["gemma-untied-hidden"] = _pruned("gemma", hidden=0.5, tie_word_embeddings=False)
    cases["llama-seqcls-hidden"] = _pruned("llama", "sequence-classification", hidden=0.25, num_labels=3)
    cases["bert-seqcls-ffn"] = _pruned("bert", "sequence-classification", num_labels=3)
    batch, params = tiny_batch(), {}
    for name, model in cases.items():
        save_case(tmp_path / name, model, batch)
        params[name] = sum(p.numel() for p in model.parameters())
    results = reload_fresh(tmp_path)
    assert sorted(results) == sorted(cases)
    for name, out in results.items():
        assert out["module"].startswith("transformers.models"), (name, out["module"])
        assert out["logits_diff"] <= 1e-5, (name, out["logits_diff"])
        assert out["n_params"] == params[name], name
        if "same_tokens" in out:
            assert out["same_tokens"] and out["scores_diff"] <= 1e-4, (name, out)
        key = arch.ARCHITECTURES[out["config"]["model_type"]].intermediate_size_key
        assert out["config"][key] == (96 if name.startswith("gpt2") else 48), name
        if "hidden" in name:
            assert out["config"]["head_dim"] == 8 and out["config"]["hidden_size"] < 32, name


def _heads_plan(model_type):
    return {layer: [1, 2] for layer in range(4)} if model_type == "llama" else {0: [1], 2: [0, 2]}


def _width(model, hidden):
    return prune_width(model, ffn=0.25, hidden=hidden, scores=width_importance(model, [tiny_batch()],
                                                                               progress=False))


def test_composed_with_head_pruning_and_layer_dropping_in_either_order_reloads(tmp_path):
    """Head pruning (Llama: uniform, stock; BERT: per-layer, shipped modeling file) then width then dropping
    a layer, and the planner's order (drop, width, heads): every result reloads and computes the same."""
    for model_type in ("llama", "bert"):
        hidden = 0.25 if model_type == "llama" else None
        first = tiny_model(model_type)
        drop_layers(_width(prune_heads(first, _heads_plan(model_type)), hidden), [1])
        second = _width(drop_layers(tiny_model(model_type), [3]), hidden)
        prune_heads(second, {k: v for k, v in _heads_plan(model_type).items() if k < 3})
        for name, model in ((f"{model_type}-heads-width-drop", first), (f"{model_type}-drop-width-heads", second)):
            assert arch.num_layers(model) == 3 and arch.intermediate_size(model) == 48
            save_case(tmp_path / name, model, tiny_batch())
    results = reload_fresh(tmp_path, trust_remote_code=True)
    assert len(results) == 4
    for name, out in results.items():
        assert out["logits_diff"] <= 1e-5, (name, out["logits_diff"])
        remote = name.startswith("bert")
        assert out["module"].startswith("transformers_modules" if remote else "transformers.models"), name
        assert out["config"]["intermediate_size"] == 48
        if "same_tokens" in out:
            assert out["same_tokens"], (name, out)
