"""What a model folder must be before hf_compress loads it, checked from its files (no code runs):

* ``config.json`` is a JSON object naming a supported family (:data:`hf_compress.arch.SUPPORTED_MODEL_TYPES`);
  anything else fails in one short line before a weight is read;
* the weights are safetensors: a folder with only pickle files (``pytorch_model.bin``) is refused, because
  unpickling runs code;
* after loading, every weight the config expects was in the files and every file weight was used
  (:func:`check_loading_info`): a config that claims 8 layers over 4 layers of weights would otherwise train
  and ship 4 random layers.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import CheckpointError

__all__ = ["read_config_json", "check_model_folder", "check_loading_info", "is_known_family", "PICKLE_FILES", "MEASURE_ONLY"]

PICKLE_FILES = ("pytorch_model.bin", "pytorch_model.bin.index.json", "model.ckpt", "tf_model.h5", "flax_model.msgpack")


#: encoder families outside the surgery table that measuring, int8 and distillation handle as they are (the
#: bundled ``mpnet`` asset); a surgery stage on them fails naming the supported list
MEASURE_ONLY = ("mpnet",)


def is_known_family(model_type) -> bool:
    from .. import arch

    return model_type in arch.ARCHITECTURES or model_type in MEASURE_ONLY


def read_config_json(folder: Path) -> dict:
    """``config.json`` of ``folder`` as plain JSON (no code runs); :class:`CheckpointError` when absent or bad."""
    file = Path(folder) / "config.json"
    if not file.is_file():
        raise CheckpointError(
            f"{str(folder)!r} is not a checkpoint folder (no config.json); give the folder that "
            f"save_pretrained or hf-compress run wrote"
        )
    try:
        raw = json.loads(file.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{file} is not valid JSON ({str(exc)[:80]}); the checkpoint is damaged") from None
    if not isinstance(raw, dict):
        raise CheckpointError(f"{file} must hold a JSON object, got {type(raw).__name__}")
    return raw


def check_model_folder(path: str | Path) -> dict:
    """The folder's ``config.json`` (a dict) after the checks above; :class:`CheckpointError` otherwise."""
    from .. import arch

    folder = Path(path)
    raw = read_config_json(folder)
    model_type = raw.get("model_type")
    if not is_known_family(model_type):
        shown = repr(model_type) if len(repr(model_type)) <= 60 else repr(model_type)[:57] + "...'"
        raise CheckpointError(
            f"{folder.name}: model_type {shown} is not supported; supported: {', '.join(arch.SUPPORTED_MODEL_TYPES)}"
        )
    if not any(folder.glob("*.safetensors")):
        pickles = [name for name in PICKLE_FILES if (folder / name).exists()]
        what = f"only {', '.join(pickles)}" if pickles else "no *.safetensors file"
        raise CheckpointError(
            f"{folder.name} holds {what}; hf_compress loads safetensors weights only (loading pickle files can "
            f"run code): convert the folder to safetensors with a tool you trust, then retry"
        )
    return raw


def _in_blocks(name: str, model_type) -> bool:
    """Whether a weight name lies in the transformer blocks (``encoder.layer.3.``, ``layers.0.``, ``h.1.``)."""
    import re

    from .. import arch

    spec = arch.ARCHITECTURES.get(model_type)
    path = re.escape(spec.layers) if spec is not None else r"[\w.]*layers?"
    return re.search(rf"(^|\.){path}\.\d+\.", name) is not None


def check_loading_info(info: dict, where: str, model_type=None) -> None:
    """Refuse a load that left block weights missing or unused, or any weight of another shape
    (``output_loading_info``). A task head missing from a base checkpoint is new and initialised, as usual."""
    for key, label in (("missing_keys", "missing from the files"), ("unexpected_keys", "unexpected in the files"),
                       ("mismatched_keys", "of another shape")):
        names = sorted(str(k if isinstance(k, str) else k[0]) for k in info.get(key) or [])
        if key != "mismatched_keys":
            names = [n for n in names if _in_blocks(n, model_type)]
        if names:
            shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
            raise CheckpointError(
                f"{where}: the config disagrees with the weights: {len(names)} weight(s) {label} ({shown}); "
                f"fix config.json (e.g. its layer count) to match the safetensors files"
            )
