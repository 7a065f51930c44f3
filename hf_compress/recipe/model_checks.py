"""Checks of a recipe's ``model:`` that need no download and build nothing: the family is one hf_compress
supports, the size fields of a ``config:`` are positive, and the model it describes fits in this machine's
memory (a ``hidden_size: 1e12`` would otherwise try to allocate hundreds of terabytes).
"""

from __future__ import annotations

import os

from .. import arch
from ..errors import RecipeError

__all__ = ["check_model_type", "check_config_sizes", "check_folder_config", "estimated_parameters"]


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "...'"


def check_model_type(model_type, where: str) -> None:
    from ..io.folder_checks import is_known_family

    if not is_known_family(model_type):
        raise RecipeError(
            f"{where}: model_type must be one of the supported families ({', '.join(arch.SUPPORTED_MODEL_TYPES)}), "
            f"got {_short(model_type)}"
        )


def estimated_parameters(config: dict) -> int:
    """Embedding + per-layer attention and MLP parameters implied by the size fields that ``config`` sets."""
    spec = arch.ARCHITECTURES[config["model_type"]]
    hidden = int(config.get(spec.hidden_size_key) or 0)
    layers = int(config.get(spec.num_layers_key) or 0)
    inner = int(config.get(spec.intermediate_size_key) or (spec.intermediate_default or 4) * hidden)
    vocab = int(config.get("vocab_size") or 0)
    return vocab * hidden + layers * (4 * hidden * hidden + 3 * hidden * inner)


def _memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def check_config_sizes(config: dict, dtype_bytes: int = 4) -> None:
    """Size fields of a ``model.config`` mapping are ints >= 1 and the model fits in physical memory."""
    check_model_type(config.get("model_type"), "model.config")
    spec = arch.ARCHITECTURES.get(config["model_type"])
    if spec is None:  # a measure-only family: nothing more to check from its keys
        return
    keys = ("vocab_size", spec.hidden_size_key, spec.num_layers_key, spec.num_heads_key, spec.intermediate_size_key)
    for key in keys:
        value = config.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise RecipeError(f"model.config.{key}: must be an int >= 1, got {_short(value)}")
    need, have = estimated_parameters(config) * dtype_bytes, _memory_bytes()
    if have and need > have:
        raise RecipeError(
            f"model.config: these sizes describe a model of about {need / 2**30:,.0f} GiB but this machine has "
            f"{have / 2**30:,.0f} GiB of memory; lower hidden_size / layers / vocab_size"
        )


def check_folder_config(folder: str) -> None:
    """A local model folder passes :func:`hf_compress.io.folder_checks.check_model_folder` (a supported family,
    safetensors weights; read as JSON: no code runs)."""
    from ..errors import CheckpointError
    from ..io.folder_checks import check_model_folder

    try:
        check_model_folder(folder)
    except CheckpointError as exc:
        raise RecipeError(f"model.name_or_path: {exc}") from None
