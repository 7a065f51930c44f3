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

__all__ = ["push_to_hub"]

logger = logging.getLogger(__name__)

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_SKIP = {".git", ".cache", "__pycache__"}


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
    private: bool = False,
    commit_message: str | None = None,
    revision: str | None = None,
    api=None,
):
    """Upload every file of ``folder`` (a finished hf_compress output) to the model repo ``repo_id``.

    ``api`` defaults to ``huggingface_hub.HfApi(token=token)``; tests pass a fake that records the calls.
    Returns the ``CommitInfo`` of the commit.
    """
    folder = Path(folder)
    if not _REPO_ID.match(repo_id or ""):
        raise CheckpointError(f"repo_id must look like `user/name`, got {repo_id!r}")
    if not (folder / "config.json").is_file() or not (folder / "README.md").is_file():
        raise CheckpointError(
            f"{str(folder)!r} is not a finished hf_compress output (needs config.json and "
            f"README.md); run `hf-compress run` first"
        )
    if not (folder / COMPRESSION_CONFIG).is_file():
        logger.warning("%s has no %s: pushing a folder hf_compress did not write", folder, COMPRESSION_CONFIG)
    from huggingface_hub import CommitOperationAdd

    if api is None:
        from huggingface_hub import HfApi

        api = HfApi(token=token)
    files = _files(folder)
    api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    operations = [
        CommitOperationAdd(path_in_repo=rel.as_posix(), path_or_fileobj=str(folder / rel)) for rel in files
    ]
    logger.info("pushing %d files from %s to %s", len(operations), folder, repo_id)
    return api.create_commit(
        repo_id,
        operations,
        repo_type="model",
        revision=revision,
        commit_message=commit_message or "Upload model compressed with hf_compress",
    )
