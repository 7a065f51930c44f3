"""push_to_hub uploads our folder as is (our card, not transformers') in one commit;
tested with a fake HfApi."""

from __future__ import annotations

import pytest

from hf_compress.errors import CheckpointError
from hf_compress.io.hub import push_to_hub


class FakeApi:
    """Records what a real HfApi would be asked to do."""

    def __init__(self):
        self.calls = []

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs))
        return f"https://huggingface.co/{repo_id}"

    def list_repo_files(self, repo_id, **kwargs):
        return list(getattr(self, "repo_files", []))

    def create_commit(self, repo_id, operations, **kwargs):
        ops = {op.path_in_repo: open(op.path_or_fileobj, "rb").read() for op in operations}
        self.calls.append(("create_commit", repo_id, ops, kwargs))
        return "commit-info"


def _folder(tmp_path):
    folder = tmp_path / "out"
    (folder / "sub").mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "README.md").write_text("---\ntags: [hf-compress]\n---\n# our card\n")
    (folder / "compression_config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"\x00" * 8)
    (folder / "sub" / "modeling.py").write_text("# remote code")
    (folder / ".cache").mkdir()
    (folder / ".cache" / "junk").write_text("x")
    return folder


def test_push_creates_the_repo_and_commits_every_file_with_our_card(tmp_path):
    folder, api = _folder(tmp_path), FakeApi()
    assert push_to_hub(folder, "me/tiny", private=True, api=api) == "commit-info"
    (name, repo, kwargs), (name2, repo2, ops, commit_kwargs) = api.calls
    assert (name, repo, name2, repo2) == ("create_repo", "me/tiny", "create_commit", "me/tiny")
    assert kwargs["exist_ok"] is True and kwargs["private"] is True
    assert sorted(ops) == [
        "README.md",
        "compression_config.json",
        "config.json",
        "model.safetensors",
        "sub/modeling.py",
    ]  # hidden folders are not uploaded
    assert ops["README.md"] == (folder / "README.md").read_bytes()
    assert commit_kwargs["repo_type"] == "model" and "hf_compress" in commit_kwargs["commit_message"]


@pytest.mark.parametrize("repo_id", ["tiny", "a/b/c", "", "me/"])
def test_bad_repo_ids_are_refused_before_any_call(tmp_path, repo_id):
    api = FakeApi()
    with pytest.raises(CheckpointError, match="repo_id must look like"):
        push_to_hub(_folder(tmp_path), repo_id, api=api)
    assert api.calls == []


def test_unfinished_folder_is_refused(tmp_path):
    folder = _folder(tmp_path)
    (folder / "README.md").unlink()
    with pytest.raises(CheckpointError, match="not a finished hf_compress output"):
        push_to_hub(folder, "me/tiny", api=FakeApi())
