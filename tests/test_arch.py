import pytest
import torch

from hf_compress import arch
from hf_compress.errors import UnsupportedArchitectureError
from tiny_models import ALL_MODEL_TYPES, tiny_model


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
