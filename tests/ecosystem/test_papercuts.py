"""First-hour papercuts (issue 18, item 6): --version, dry-run JSON, one key per quantity in bench/run JSON,
inspect by asset name and with the real head count, env versions, layer_map without hidden loss, push options,
get_asset as a str, compression_config's base_model = the card's."""

from __future__ import annotations

import io
import json
from contextlib import redirect_stdout

import pytest
import yaml
from ecosystem.st_folder import make_st_folder, recipe_dict
from huggingface_hub import ModelCard
from tiny_models import tiny_model

from hf_compress import DistillationArguments, HfCompressError, __version__, prune_heads
from hf_compress.cli import main
from hf_compress.io.checkpoint import describe
from hf_compress.io.hub import push_to_hub


def _cli(argv) -> tuple[int, str]:
    buf = io.StringIO()
    with redirect_stdout(buf):
        code = main(argv)
    return code, buf.getvalue()


def test_version_and_env(capsys):
    assert _cli(["--version"]) == (0, f"hf-compress {__version__}\n")
    code, out = _cli(["env", "--json"])
    info = json.loads(out)
    assert code == 0 and info["accelerate"] and info["datasets"] and info["evaluate"]
    assert {"peft", "sentence_transformers", "compressed_tensors"} <= set(info)  # None when not installed


def test_dry_run_json_is_json_and_run_json_names_bytes_like_bench(tmp_path):
    base = make_st_folder(tmp_path / "base")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(recipe_dict(base, tmp_path / "out", [{"student_from_teacher": {"keep": [0, 3]}}])))
    code, out = _cli(["run", str(recipe), "--dry-run", "--json"])
    assert code == 0 and json.loads(out)["stages"][0]["student_from_teacher"]["keep"] == [0, 3]
    code, out = _cli(["run", str(recipe), "--json"])
    measured = json.loads(out)["measured"]
    assert code == 0 and [r["model"] for r in measured] == ["base", "compressed"]
    assert all(r["disk_bytes"] > 0 and r["mem_bytes"] > 0 for r in measured)
    from hf_compress.recipe.bench import bench

    texts = tmp_path / "t.txt"
    texts.write_text("\n".join(f"alpha beta {i} gamma" for i in range(40)))
    (row,) = bench(str(tmp_path / "out"), texts_file=str(texts), samples=4, repeats=1)
    assert row["disk_bytes"] == measured[1]["disk_bytes"] and row["mem_bytes"] == measured[1]["mem_bytes"]


def test_inspect_takes_an_asset_name_and_shows_the_heads_left(tmp_path, monkeypatch):
    model = tiny_model("bert", "masked-lm")
    prune_heads(model, {0: [0, 1], 2: [3]})  # physical: config keeps num_attention_heads = 4
    model.save_pretrained(tmp_path / "minilm")
    info = describe(tmp_path / "minilm")
    assert info["heads"] == 4 and info["heads_per_layer"] == [2, 4, 3, 4]
    monkeypatch.setenv("HF_COMPRESS_ASSETS", str(tmp_path))  # "minilm" is then already prepared there
    code, out = _cli(["inspect", "minilm", "--json"])
    assert code == 0 and json.loads(out)["path"] == str(tmp_path / "minilm")


def test_layer_map_without_hidden_loss_is_refused(tmp_path):
    with pytest.raises(HfCompressError, match="`layer_map` is used only by the hidden-state loss"):
        DistillationArguments(output_dir=str(tmp_path), alpha_hidden=0.0, layer_map="[[1, 2]]", report_to="none")
    DistillationArguments(output_dir=str(tmp_path), alpha_hidden=0.0, report_to="none")  # the default is fine


class RecordingApi:
    def __init__(self, repo_files=()):
        self.repo_files, self.calls = list(repo_files), []

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", kwargs))

    def list_repo_files(self, repo_id, **kwargs):
        return self.repo_files

    def create_commit(self, repo_id, operations, **kwargs):
        self.calls.append(("create_commit", operations, kwargs))


def test_push_defaults_to_hub_visibility_deletes_stale_files_and_can_open_a_pr(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    for name in ("config.json", "README.md", "compression_config.json", "model.safetensors"):
        (folder / name).write_text("{}")
    api = RecordingApi([".gitattributes", "config.json", "modeling_pruned_heads.py", "README.md"])
    push_to_hub(folder, "me/tiny", api=api, create_pr=True)
    (_, repo_kwargs), (_, ops, commit_kwargs) = api.calls
    assert repo_kwargs["private"] is None and commit_kwargs["create_pr"] is True
    deleted = [op.path_in_repo for op in ops if type(op).__name__ == "CommitOperationDelete"]
    assert deleted == ["modeling_pruned_heads.py"]  # .gitattributes and re-uploaded files stay
    api = RecordingApi(["old.bin"])
    push_to_hub(folder, "me/tiny", api=api, delete_stale=False)
    assert not [op for op in api.calls[1][1] if type(op).__name__ == "CommitOperationDelete"]


def test_compression_config_base_model_is_the_cards(tmp_path, monkeypatch):
    from hf_compress import assets
    from hf_compress.recipe.runner import run_recipe
    from hf_compress.recipe.schema import parse_recipe

    base = make_st_folder(tmp_path / "base")
    import dataclasses

    monkeypatch.setitem(assets.ASSETS, str(base), dataclasses.replace(assets.ASSETS["minilm"], hub_id="org/tiny-st"))
    result = run_recipe(parse_recipe(recipe_dict(base, tmp_path / "out", [{"student_from_teacher": {"keep": [0]}}])))
    config = json.loads((result.output_dir / "compression_config.json").read_text())
    card = ModelCard.load(result.output_dir / "README.md")
    assert config["base_model"] == card.data.base_model == "org/tiny-st"
