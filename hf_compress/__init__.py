"""hf_compress: turn a large BERT-, GPT-2- or Llama-style model into a smaller, faster one.

The public API is the names in ``__all__``; each lives in the module that implements it and is imported
on first use, so ``import hf_compress`` stays fast. Importing the package also registers the int8
compressed-tensors loader with transformers when the ``compressed-tensors`` package is absent.
"""

from __future__ import annotations

import importlib

from ._version import __version__

# public name -> module that defines it
_EXPORTS = {
    "AssetError": "hf_compress.errors",
    "CheckpointError": "hf_compress.errors",
    "DistillationArguments": "hf_compress.distillation.args",
    "DistillationTrainer": "hf_compress.distillation.trainer",
    "HeadPruningConfig": "hf_compress.methods.heads.config",
    "HfCompressError": "hf_compress.errors",
    "Int8Config": "hf_compress.methods.int8.config",
    "Int8Linear": "hf_compress.methods.int8.layer",
    "QuantizationError": "hf_compress.errors",
    "Recipe": "hf_compress.recipe.schema",
    "RecipeError": "hf_compress.errors",
    "SparsityConfig": "hf_compress.methods.sparsity.config",
    "SurgeryError": "hf_compress.errors",
    "UnsupportedArchitectureError": "hf_compress.errors",
    "WidthPruningConfig": "hf_compress.methods.width.config",
    "WidthScores": "hf_compress.methods.width.importance",
    "cache_teacher_outputs": "hf_compress.distillation.cache",
    "compile_int8": "hf_compress.methods.int8.compile",
    "copy_sentence_transformers_files": "hf_compress.io.st_wrapper",
    "drop_layers": "hf_compress.methods.layers.drop",
    "get_asset": "hf_compress.assets",
    "head_importance": "hf_compress.methods.heads.prune",
    "layer_importance": "hf_compress.methods.layers.drop",
    "load_recipe": "hf_compress.recipe.schema",
    "prune_heads": "hf_compress.methods.heads.prune",
    "prune_heads_by_importance": "hf_compress.methods.heads.prune",
    "prune_width": "hf_compress.methods.width.prune",
    "push_to_hub": "hf_compress.io.hub",
    "quantize_int8": "hf_compress.methods.int8.quantize",
    "run_recipe": "hf_compress.recipe.runner",
    "select_heads": "hf_compress.methods.heads.prune",
    "select_layers": "hf_compress.methods.layers.drop",
    "sparsify": "hf_compress.methods.sparsity.sparsify",
    "sparsity_report": "hf_compress.methods.sparsity.sparsify",
    "student_from_teacher": "hf_compress.methods.layers.drop",
    "width_importance": "hf_compress.methods.width.importance",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'hf_compress' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))


def _register_quantizer() -> None:
    try:
        quantizer = importlib.import_module("hf_compress.methods.int8.loader")
    except ModuleNotFoundError as exc:  # the int8 loader is not built yet in this checkout
        if exc.name and exc.name.startswith("hf_compress"):
            return
        raise
    quantizer.register()


_register_quantizer()
