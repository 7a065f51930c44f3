"""Load compressed-tensors int8 checkpoints with stock ``from_pretrained`` when compressed-tensors is absent.

``import hf_compress`` calls :func:`register`. If the ``compressed-tensors`` package is installed nothing
changes (transformers' own loader handles every scheme). Otherwise transformers' ``"compressed-tensors"``
entries point at :class:`Int8CompressedTensorsQuantizer`, which builds :class:`Int8Linear` modules on the
meta model so the checkpoint's int8 tensors load as they are, then checks and unpacks them. Schemes other
than the two this package writes are refused with :class:`QuantizationError`.

Registration never imports transformers by itself (``import hf_compress`` stays fast): when transformers'
quantizer table is not imported yet, a one-shot import hook patches it the moment it is.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import logging
import sys

from ...errors import QuantizationError

__all__ = ["register", "is_registered", "compressed_tensors_installed"]

logger = logging.getLogger(__name__)
_AUTO = "transformers.quantizers.auto"
QUANT_METHOD = (
    "compressed-tensors"  # = compressed_tensors.QUANT_METHOD, kept here so registering imports no torch
)
_CLASSES: dict = {}


def compressed_tensors_installed() -> bool:
    """True when the ``compressed-tensors`` package can be imported (then transformers' loader is used)."""
    return importlib.util.find_spec("compressed_tensors") is not None


def _build_classes():
    from transformers.quantizers.base import HfQuantizer
    from transformers.utils.quantization_config import QuantizationConfigMixin, QuantizationMethod

    from ...core.modules import in_features, is_projection, out_features, set_module
    from .quantize import Int8Linear, fuse_if_known, matches_ignore
    from .format import parse_quantization_config

    class Int8CompressedTensorsConfig(QuantizationConfigMixin):
        """A compressed-tensors ``quantization_config`` of one of hf_compress's int8 schemes, verbatim."""

        def __init__(self, **config):
            config.setdefault("quant_method", QUANT_METHOD)
            self.mode, self.targets, self.ignore = parse_quantization_config(config)
            self.quant_method = QuantizationMethod.COMPRESSED_TENSORS
            self._raw = config

        def to_dict(self):
            return dict(self._raw)

        def __iter__(self):
            yield from self.to_dict().items()

        def to_diff_dict(self):
            return self.to_dict()

    class Int8CompressedTensorsQuantizer(HfQuantizer):
        """Rebuilds :class:`Int8Linear` layers (int8 in memory) from a compressed-tensors int8 checkpoint."""

        requires_calibration = True

        def __init__(self, quantization_config, **kwargs):
            if not isinstance(quantization_config, Int8CompressedTensorsConfig):
                quantization_config = Int8CompressedTensorsConfig(**quantization_config.to_dict())
            super().__init__(quantization_config, **kwargs)

        def validate_environment(self, *args, **kwargs):
            return None

        def get_new_dtype(self, converter, param, dtype):
            if dtype is not None and not dtype.is_floating_point:
                return None  # never cast into int8 / int32 storage: finish_loading checks the stored dtype
            return super().get_new_dtype(converter, param, dtype)

        def _process_model_before_weight_loading(self, model, checkpoint_files=None, **kwargs):
            qc = self.quantization_config
            replaced, new_heads = 0, _new_head_layers(model, checkpoint_files)
            for name, module in list(model.named_modules()):
                cls_name = type(module).__name__
                if not is_projection(module) or matches_ignore(name, qc.ignore, module):
                    continue
                if name in new_heads:  # a head the checkpoint lacks (num_labels=3 on an encoder): float, new
                    continue
                if not (
                    cls_name in qc.targets
                    or matches_ignore(name, [t for t in qc.targets if t.startswith("re:")])
                ):
                    continue
                w = module.weight
                layer = Int8Linear(in_features(module), out_features(module), bias=module.bias is not None,
                                   mode=qc.mode, dtype=w.dtype, device=w.device)
                if qc.mode == "w8a16":
                    layer.expect_packed()
                set_module(model, name, layer)
                replaced += 1
            if replaced == 0:
                raise QuantizationError(
                    f"no layer of this model matches the checkpoint's targets {qc.targets} "
                    f"(ignore={qc.ignore}); the quantization_config does not fit the model"
                )
            logger.info("prepared %d Int8Linear layers (%s) for loading%s", replaced, qc.mode,
                        f"; new task-head layers left in float: {sorted(new_heads)}" if new_heads else "")

        def _process_model_after_weight_loading(self, model, **kwargs):
            for name, module in model.named_modules():
                if isinstance(module, Int8Linear):
                    module.finish_loading(name)
            fuse_if_known(model)
            return model

        def is_serializable(self):
            return True

        @property
        def is_trainable(self):
            return False

    return Int8CompressedTensorsConfig, Int8CompressedTensorsQuantizer


def _new_head_layers(model, checkpoint_files) -> set[str]:
    """Linear layers outside the base model that the checkpoint has no weight for: a task head that
    ``from_pretrained`` initialises (e.g. a classifier on an int8 encoder). They stay float; a layer *inside*
    the base model without weights is still an error (a damaged checkpoint)."""
    base = getattr(model, "base_model", model)
    prefix = getattr(model, "base_model_prefix", "")
    if base is model or not prefix or not checkpoint_files:
        return set()
    from safetensors import safe_open

    keys: set[str] = set()
    for file in checkpoint_files:
        if str(file).endswith(".safetensors"):
            with safe_open(str(file), framework="pt") as fh:
                keys.update(fh.keys())
    stored = {k.rsplit(".", 1)[0] for k in keys} | {f"{prefix}.{k.rsplit('.', 1)[0]}" for k in keys}
    return {name for name, m in model.named_modules() if type(m).__name__ in ("Linear", "Conv1D")
            and not name.startswith(f"{prefix}.") and name not in stored}


def _patch(auto_module) -> None:
    if "config" not in _CLASSES:
        _CLASSES["config"], _CLASSES["quantizer"] = _build_classes()
    auto_module.AUTO_QUANTIZATION_CONFIG_MAPPING[QUANT_METHOD] = _CLASSES["config"]
    auto_module.AUTO_QUANTIZER_MAPPING[QUANT_METHOD] = _CLASSES["quantizer"]


class _PatchOnImport(importlib.abc.MetaPathFinder):
    """Runs :func:`_patch` right after ``transformers.quantizers.auto`` executes, then steps aside."""

    def find_spec(self, fullname, path, target=None):
        if fullname != _AUTO:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_and_patch(module):
            exec_module(module)
            _patch(module)

        spec.loader.exec_module = exec_and_patch
        return spec


def is_registered() -> bool:
    """True when transformers' ``"compressed-tensors"`` entry is hf_compress's loader (imports it)."""
    auto = importlib.import_module(_AUTO)
    quantizer = auto.AUTO_QUANTIZER_MAPPING.get(QUANT_METHOD)
    return quantizer is not None and quantizer is _CLASSES.get("quantizer")


def register(force: bool = False) -> bool:
    """Point transformers' compressed-tensors loader at hf_compress's, unless the package is installed.

    Returns True when registered (now, or on transformers' first import of its quantizer table).
    ``force=True`` registers even when compressed-tensors is installed.
    """
    if compressed_tensors_installed() and not force:
        return False
    if _AUTO in sys.modules:
        _patch(sys.modules[_AUTO])
    elif not any(isinstance(f, _PatchOnImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _PatchOnImport())
    return True
