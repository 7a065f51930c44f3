"""Error types of hf_compress.

Every error subclasses ``ValueError`` so that callers who already catch bad input keep working. Messages
name the bad value, what is allowed and how to fix it.
"""

from __future__ import annotations

__all__ = [
    "HfCompressError",
    "UnsupportedArchitectureError",
    "SurgeryError",
    "QuantizationError",
    "CheckpointError",
    "RecipeError",
    "AssetError",
]


class HfCompressError(ValueError):
    """Base class of every error raised by hf_compress on bad input."""


class UnsupportedArchitectureError(HfCompressError):
    """The model's ``model_type`` is not in the architecture table (:mod:`hf_compress.arch`)."""


class SurgeryError(HfCompressError):
    """A layer, head or sparsity operation was asked for something it cannot do."""


class QuantizationError(HfCompressError):
    """Quantization was misconfigured, or a quantized checkpoint is malformed."""


class CheckpointError(HfCompressError):
    """A checkpoint folder cannot be written or read as asked."""


class RecipeError(HfCompressError):
    """A recipe is malformed; the message names the key path."""


class AssetError(HfCompressError):
    """A bundled offline asset could not be found or prepared."""
