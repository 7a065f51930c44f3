import pytest
import torch
from tiny_models import ALL_MODEL_TYPES, tiny_model

from hf_compress import arch
from hf_compress.errors import UnsupportedArchitectureError


@pytest.mark.parametrize("model_type", ALL_MODEL_TYPES)
def test_table_paths_exist_in_every_family(model_type):
    model = tiny_model(model_type)
    spec = arch.get_arch(model)
    layers = arch.get_layers(model)
    assert isinstance(layers, torch.nn.ModuleList) and len(layers) == arch.num_layers(model)
    for path in spec.linear_paths:
        module = arch.get_submodule(layers[0], path)
        assert hasattr(module, "weight"), (model_type, path)
    assert arch.num_heads(model) * arch.head_dim(model) > 0
    assert arch.num_heads(model) % arch.num_kv_heads(model) == 0


def test_task_heads_share_the_table():
    model = tiny_model("bert", "sequence-classification", num_labels=3)
    assert arch.get_layers(model) is model.bert.encoder.layer


def test_unsupported_architecture_names_the_supported_list():
    class Cfg:
        model_type = "t5"

    with pytest.raises(UnsupportedArchitectureError, match="'t5'.*bert.*llama"):
        arch.get_arch(Cfg())
    assert not arch.is_supported(Cfg()) and arch.is_supported(tiny_model("llama"))


@pytest.mark.parametrize("model_type, path", [("bert", "encoder"), ("distilbert", "transformer"), ("llama", "")])
def test_layers_parent_holds_the_block_list(model_type, path):
    model = tiny_model(model_type)
    got_path, parent = arch.layers_parent(model)
    assert got_path == path
    assert any(child is arch.get_layers(model) for child in parent.children())


@pytest.mark.parametrize("model_type", ALL_MODEL_TYPES)
def test_table_declares_every_per_layer_config_list(model_type):
    # the window settings make Qwen2 / Gemma build their per-layer attention patterns
    model = tiny_model(model_type, **({"use_sliding_window": True} if model_type.startswith("qwen") else {}))
    spec = arch.get_arch(model)
    n = arch.num_layers(model)
    per_layer = {k for k, v in vars(model.config).items() if isinstance(v, (list, tuple)) and len(v) == n}
    assert per_layer <= set(spec.per_layer_keys), per_layer
    for key in spec.per_layer_keys + spec.layer_threshold_keys:
        assert hasattr(model.config, key), key


def test_spec_variants_keep_the_llama_paths():
    llama, qwen2 = arch.get_arch(tiny_model("llama").config), arch.get_arch(tiny_model("qwen2").config)
    assert qwen2.linear_paths == llama.linear_paths and qwen2.layers == llama.layers
    assert qwen2.layer_threshold_keys == ("max_window_layers",) and not llama.per_layer_keys


@pytest.mark.parametrize("model_type", ALL_MODEL_TYPES)
def test_table_norms_activation_and_widths_exist(model_type):
    model = tiny_model(model_type)
    spec = arch.get_arch(model)
    layer = arch.get_layers(model)[0]
    base = model.base_model
    for path in spec.norm_paths:
        norm = arch.get_submodule(layer, path)
        assert "norm" in type(norm).__name__.lower(), (model_type, path)
        assert norm.weight.shape == (arch.hidden_size(model),)
    for path in (spec.final_norm, spec.embedding_norm):
        if path:
            assert arch.get_submodule(base, path).weight.shape == (arch.hidden_size(model),)
    assert spec.attn_norm or spec.post_norms, "a family has pre-norms or post-norms"
    act = arch.get_submodule(layer, spec.mlp_act)
    assert not list(act.parameters()) and not isinstance(act, torch.nn.Linear)
    out = arch.get_submodule(layer, spec.mlp_out)
    out_in = out.weight.t() if spec.conv1d else out.weight
    assert out_in.shape == (arch.hidden_size(model), arch.intermediate_size(model))


@pytest.mark.parametrize("model_type", ["llama", "gemma", "gemma2", "gemma3_text", "phi3"])
def test_norm_offset_is_what_the_norm_computes(model_type):
    # the norm computes n(x) * (offset + w): with w = 0 it gives offset * n, with w = 1 (offset + 1) * n
    model = tiny_model(model_type)
    spec = arch.get_arch(model)
    norm = arch.get_submodule(arch.get_layers(model)[0], spec.attn_norm)
    x = torch.randn(2, 32)
    with torch.no_grad():
        out0 = norm.weight.zero_() is not None and norm(x)
        out1 = norm.weight.fill_(1.0) is not None and norm(x)
    assert torch.allclose(out0, spec.norm_offset * (out1 - out0), atol=1e-5)
    assert (spec.norm_offset == 1.0) == model_type.startswith("gemma")


def test_gpt2_widths_follow_its_config_defaults():
    model = tiny_model("gpt2")
    assert model.config.n_inner is None and arch.intermediate_size(model) == 4 * 32 == 128
    assert arch.hidden_size(model) == 32 and arch.hidden_size(tiny_model("distilbert")) == 32

    class T5Like:
        d_model = 48

    assert arch.hidden_size(T5Like()) == 48  # a teacher outside the table
    with pytest.raises(UnsupportedArchitectureError, match="hidden width"):
        arch.hidden_size(object())
