"""``sparsify`` takes a config or keyword settings, never both silently: a keyword given beside ``config``
(``ignore`` included) is refused before the model is touched."""

from __future__ import annotations

import pytest
from tiny_models import tiny_model

from hf_compress import SparsityConfig, SurgeryError, sparsify, sparsity_report


@pytest.mark.parametrize("keyword", [{"ignore": ["model.layers.0.mlp.down_proj"]}, {"ignore": []},
                                     {"scope": "per_layer"}, {"sparsity": 0.3}, {"sequential": False}])
def test_a_keyword_beside_config_is_refused_naming_it(keyword):
    model = tiny_model("llama")
    with pytest.raises(SurgeryError, match=rf"either `config` or keyword.*{next(iter(keyword))}"):
        sparsify(model, config=SparsityConfig(), **keyword)
    assert sparsity_report(model).zeros == 0


def test_ignore_inside_the_config_is_used():
    model = tiny_model("llama")
    name = "model.layers.0.mlp.down_proj"
    sparsify(model, config=SparsityConfig(sparsity=0.5, ignore=["lm_head", name]))
    assert float((model.get_submodule(name).weight == 0).float().mean()) < 0.01
    assert float((model.get_submodule("model.layers.1.mlp.down_proj").weight == 0).float().mean()) >= 0.5


def test_calibration_beside_config_is_fine_it_is_data_not_a_setting():
    model = tiny_model("llama")
    sparsify(model, config=SparsityConfig(sparsity=0.5), calibration=None)
    assert sparsity_report(model).sparsity > 0.49
