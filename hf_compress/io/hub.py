"""Push a compressed checkpoint folder to the Hugging Face Hub with our own model card.

transformers' ``model.push_to_hub`` writes its own README.md over ours, so the folder is uploaded as is with
``huggingface_hub``: ``create_repo(exist_ok=True)`` then one ``create_commit`` holding every file.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from ..errors import CheckpointError
from .checkpoint import COMPRESSION_CONFIG

__all__ = ["push_to_hub", "check_repo_id"]

logger = logging.getLogger(__name__)

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_SKIP = {".git", ".cache", "__pycache__"}


def check_repo_id(repo_id) -> None:
    """Raise :class:`CheckpointError` unless ``repo_id`` looks like ``user/name``."""
    if not isinstance(repo_id, str) or not _REPO_ID.match(repo_id):
        raise CheckpointError(f"push_to_hub: repo_id must look like `user/name`, got {repo_id!r}")


def _files(folder: Path) -> list[Path]:
    out = []
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if path.is_file() and not any(part in _SKIP or part.startswith(".") for part in rel.parts):
            out.append(rel)
    return out


def push_to_hub(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool | None = None,
    commit_message: str | None = None,
    revision: str | None = None,
    create_pr: bool = False,
    delete_stale: bool = True,
    api=None,
):
    """Upload every file of ``folder`` (a finished hf_compress output) to the model repo ``repo_id``.

    ``private=None`` leaves a new repo's visibility to the Hub's default (your or your organisation's setting);
    an existing repo keeps its own. ``create_pr=True`` opens a pull request instead of committing to the branch.
    ``delete_stale`` (default) deletes, in the same commit, the files an earlier upload left that this folder no
    longer has (e.g. ``modeling_pruned_heads.py`` of a previous head-pruned version), so the repo is the folder;
    ``.gitattributes`` is always kept. ``api`` defaults to ``huggingface_hub.HfApi(token=token)``; tests pass a fake
    that records the calls. Returns the ``CommitInfo`` of the commit.
    """
    folder = Path(folder)
    check_repo_id(repo_id)
    if not (folder / "config.json").is_file() or not (folder / "README.md").is_file():
        raise CheckpointError(
            f"{str(folder)!r} is not a finished hf_compress output (needs config.json and "
            f"README.md); run `hf-compress run` first"
        )
    if not (folder / COMPRESSION_CONFIG).is_file():
        logger.warning("%s has no %s: pushing a folder hf_compress did not write", folder, COMPRESSION_CONFIG)
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete

    if api is None:
        from huggingface_hub import HfApi

        api = HfApi(token=token)
    files = _files(folder)
    api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    operations = [
        CommitOperationAdd(path_in_repo=rel.as_posix(), path_or_fileobj=str(folder / rel)) for rel in files
    ]
    stale = _stale_files(api, repo_id, revision, {rel.as_posix() for rel in files}) if delete_stale else []
    operations += [CommitOperationDelete(path_in_repo=path) for path in stale]
    logger.info("pushing %d files from %s to %s%s", len(files), folder, repo_id,
                f", deleting {len(stale)} left by an earlier upload ({', '.join(stale[:3])}...)" if stale else "")
    return api.create_commit(
        repo_id,
        operations,
        repo_type="model",
        revision=revision,
        create_pr=create_pr,
        commit_message=commit_message or "Upload model compressed with hf_compress",
    )


def _stale_files(api, repo_id: str, revision: str | None, keep: set[str]) -> list[str]:
    """Files of the repo (at ``revision``) that the new upload does not have; none for a new branch."""
    from huggingface_hub.errors import RevisionNotFoundError

    try:
        present = api.list_repo_files(repo_id, revision=revision, repo_type="model")
    except RevisionNotFoundError:  # a branch the commit creates: nothing on it yet
        return []
    return sorted(p for p in present if p not in keep and p != ".gitattributes")
