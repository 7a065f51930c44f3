"""Keep a sentence-transformers model a sentence-transformers model after compression.

A sentence-transformers folder is a Hugging Face checkpoint plus a few wrapper files: ``modules.json`` (the
module pipeline, e.g. Transformer -> Pooling -> Normalize), ``sentence_bert_config.json`` (``max_seq_length``,
lower-casing), ``config_sentence_transformers.json`` (prompts, similarity function) and one folder per module
(``1_Pooling/config.json``, ``2_Dense/``...). Compression rewrites only the transformer's weights and config, so
these files are copied from the base unchanged, except the pooling width, which follows the model's hidden size.
Without them ``SentenceTransformer(folder)`` silently builds mean pooling *without* normalisation and the default
``max_seq_length``. Only JSON files are read and written; no sentence-transformers code is imported.

    >>> copy_sentence_transformers_files("all-MiniLM-L6-v2/", "out/minilm-l3/", hidden_size=384)
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

from ..errors import CheckpointError

__all__ = ["MODULES_FILE", "is_sentence_transformers_folder", "copy_sentence_transformers_files"]

logger = logging.getLogger(__name__)

MODULES_FILE = "modules.json"
_TOP_FILES = ("sentence_bert_config.json", "config_sentence_transformers.json")
_WIDTH_KEYS = ("word_embedding_dimension", "embedding_dimension")  # sentence-transformers < 6 / >= 6


def is_sentence_transformers_folder(folder: str | os.PathLike | None) -> bool:
    return folder is not None and (Path(folder) / MODULES_FILE).is_file()


def _modules(source: Path) -> list[dict]:
    try:
        modules = json.loads((source / MODULES_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{source / MODULES_FILE} is not valid JSON ({exc}); repair or remove it") from None
    if not isinstance(modules, list) or not all(isinstance(m, dict) for m in modules):
        raise CheckpointError(f"{source / MODULES_FILE} must be a list of module entries, got {type(modules).__name__}")
    return modules


def _safe_subfolder(source: Path, path: str) -> Path | None:
    """The module folder ``path`` inside ``source``; ``None`` for the root module (the transformer itself)."""
    if not path:
        return None
    sub = (source / path).resolve()
    if source.resolve() not in sub.parents:
        raise CheckpointError(f"{source / MODULES_FILE}: module path {path!r} leaves the folder; refusing to copy it")
    return sub


def copy_sentence_transformers_files(source: str | os.PathLike, dest: str | os.PathLike,
                                     hidden_size: int | None = None) -> list[str]:
    """Copy the sentence-transformers wrapper files of ``source`` into ``dest`` (a folder that already holds the
    compressed checkpoint); returns the copied paths, relative to ``dest``. ``hidden_size`` (the compressed
    model's) updates the pooling width; a Dense module whose input no longer matches is reported with a warning
    (sentence-transformers would refuse to load it)."""
    source, dest = Path(source), Path(dest)
    if not is_sentence_transformers_folder(source):
        raise CheckpointError(f"{str(source)!r} has no {MODULES_FILE}: it is not a sentence-transformers folder")
    copied = [MODULES_FILE]
    shutil.copy2(source / MODULES_FILE, dest / MODULES_FILE)
    for name in _TOP_FILES:
        if (source / name).is_file():
            shutil.copy2(source / name, dest / name)
            copied.append(name)
    for module in _modules(source):
        sub = _safe_subfolder(source, str(module.get("path", "")))
        if sub is None or not sub.is_dir():  # e.g. 2_Normalize has no files: nothing to copy
            continue
        target = dest / module["path"]
        shutil.copytree(sub, target, dirs_exist_ok=True)
        copied.append(str(module["path"]))
        if hidden_size is not None and (target / "config.json").is_file():
            _fit_width(target / "config.json", str(module.get("type", "")), hidden_size)
    return copied


def _fit_width(config_file: Path, kind: str, hidden_size: int) -> None:
    config = json.loads(config_file.read_text(encoding="utf-8"))
    if kind.endswith("Pooling"):
        changed = False
        for key in _WIDTH_KEYS:
            if key in config and config[key] != hidden_size:
                config[key], changed = hidden_size, True
        if changed:
            config_file.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    elif kind.endswith("Dense") and config.get("in_features") not in (None, hidden_size):
        logger.warning("%s: the Dense module reads %s features but the compressed model gives %d; "
                       "SentenceTransformer will not load this folder", config_file.parent.name,
                       config["in_features"], hidden_size)
