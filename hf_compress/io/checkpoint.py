"""Save a compressed model as a standard Hugging Face checkpoint folder, atomically.

Everything (weights, config, tokenizer, ``compression_config.json``, the model card, any extra files) is
written into a hidden temporary folder beside the target, which is renamed to the target only at the end:
a crash mid-save never leaves a folder that looks complete. An existing target is replaced only when it is
an earlier hf_compress output (it holds ``compression_config.json``); any other non-empty folder is refused.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

from ..errors import CheckpointError

__all__ = [
    "COMPRESSION_CONFIG",
    "save_compressed",
    "read_compression_config",
    "load_compressed",
    "library_versions",
    "describe",
    "format_description",
]

logger = logging.getLogger(__name__)

COMPRESSION_CONFIG = "compression_config.json"

def library_versions() -> dict[str, str]:
    """Versions of the libraries that wrote a checkpoint (recorded in compression_config.json)."""
    import huggingface_hub
    import torch
    import transformers

    from .._version import __version__

    return {
        "hf_compress": __version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "huggingface_hub": huggingface_hub.__version__,
        "python": platform.python_version(),
    }


def optional_versions() -> dict[str, str | None]:
    """Versions of the libraries users run next to ours (None: not installed), read without importing them."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for dist in ("accelerate", "datasets", "evaluate", "peft", "sentence-transformers", "compressed-tensors"):
        try:
            out[dist.replace("-", "_")] = version(dist)
        except PackageNotFoundError:
            out[dist.replace("-", "_")] = None
    return out


def save_compressed(
    model,
    output_dir: str | os.PathLike,
    *,
    tokenizer=None,
    compression_config: dict | None = None,
    extra: Callable[[Path], None] | None = None,
    verify: Callable[[Path], None] | None = None,
) -> Path:
    """Write ``model`` (``save_pretrained``, safetensors), ``tokenizer`` and ``compression_config.json`` to
    ``output_dir`` atomically. ``extra(tmp_folder)`` may add files (model card, plots) before the rename;
    ``verify(tmp_folder)`` (e.g. :func:`~hf_compress.io.verify.check_reload`) may refuse the result.
    Weights holding NaN or infinity are refused before anything is written.

    Returns the final folder. On any error the temporary folder is removed and an earlier output is kept.
    """
    from ..core.checks import check_finite_weights
    from .output_dir import MANIFEST_KEY, check_output_dir, folder_files, output_lock

    check_output_dir(output_dir, recover=False)
    check_finite_weights(model, CheckpointError)
    with output_lock(output_dir) as final:
        check_output_dir(final)  # under the lock: recover a killed save, then re-check what is there
        token = uuid.uuid4().hex[:8]
        tmp = final.parent / f".{final.name}.tmp-{token}"
        old = final.parent / f".{final.name}.old-{token}"
        tmp.mkdir()
        try:
            model.save_pretrained(tmp, safe_serialization=True)
            if tokenizer is not None:
                tokenizer.save_pretrained(tmp)
            if extra is not None:
                extra(tmp)
            # written last (``extra`` may still add measurements): it marks a folder hf_compress finished and
            # lists every file in it, so a later save replaces only what hf_compress wrote
            config = {"format_version": 1, **(compression_config or {}), "versions": library_versions()}
            config[MANIFEST_KEY] = sorted(folder_files(tmp) + [COMPRESSION_CONFIG])
            (tmp / COMPRESSION_CONFIG).write_text(json.dumps(config, indent=2, default=str) + "\n", encoding="utf-8")
            if verify is not None:
                verify(tmp)
            if final.exists():
                os.replace(final, old)
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            if old.exists() and not final.exists():
                os.replace(old, final)
            raise
        shutil.rmtree(old, ignore_errors=True)
    logger.info("saved %s", final)
    return final


def read_compression_config(path: str | os.PathLike) -> dict | None:
    """The ``compression_config.json`` of a checkpoint folder, or ``None`` for a plain checkpoint."""
    file = Path(path) / COMPRESSION_CONFIG
    if not file.is_file():
        return None
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{file} is not valid JSON ({exc}); the checkpoint is damaged") from None


def load_compressed(
    path: str | os.PathLike, task: str | None = None, trust_remote_code: bool = False, **kwargs
):
    """Load a checkpoint folder (ours or any HF folder) with the Auto class of ``task``; the task defaults to
    the one recorded in ``compression_config.json``, else ``feature-extraction``. int8 checkpoints load as
    ``Int8Linear`` modules because importing hf_compress registers their loader."""
    from ..methods.int8.loader import register
    from ..tasks import auto_class

    from .folder_checks import check_loading_info, check_model_folder

    register()  # the int8 loader, as `import hf_compress` does

    auto_map = check_model_folder(path).get("auto_map")  # family, safetensors only, before any weight
    if auto_map and not trust_remote_code:
        raise CheckpointError(
            f"{str(path)!r} ships its own modeling code (auto_map: {sorted(auto_map)[0]}, ...; e.g. "
            f"physically pruned BERT/GPT-2 heads): read it, then pass trust_remote_code=True "
            f"(--trust-remote-code)"
        )
    if task is None:
        task = ((read_compression_config(path) or {}).get("recipe") or {}).get("task", "feature-extraction")
    auto = auto_class(task, CheckpointError)
    model, info = auto.from_pretrained(
        path, trust_remote_code=trust_remote_code, use_safetensors=True, output_loading_info=True, **kwargs
    )
    check_loading_info(info, str(path), model.config.model_type)
    return model.eval()


def _tensor_stats(folder: Path) -> dict:
    """Parameter count, int8 modules and zero fraction of the float matrices, read from the safetensors."""
    import torch
    from safetensors import safe_open

    params, zeros, matrix = 0, 0, 0
    int8, dtypes = set(), {}
    for file in sorted(folder.glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as fh:
            for name in fh.keys():
                t = fh.get_tensor(name)
                dtype = str(t.dtype).replace("torch.", "")
                dtypes[dtype] = dtypes.get(dtype, 0) + 1
                if name.endswith("weight_packed") or (name.endswith(".weight") and t.dtype == torch.int8):
                    int8.add(name.rsplit(".", 1)[0])
                if name.endswith(("weight_scale", "weight_shape", "weight_zero_point")):
                    continue
                if not (t.dtype.is_floating_point or t.dtype == torch.int8 or name.endswith("weight_packed")):
                    continue  # integer buffers such as position_ids are not weights
                params += t.numel() * (4 if name.endswith("weight_packed") else 1)
                if (
                    t.dim() == 2
                    and (t.dtype.is_floating_point or t.dtype == torch.int8)
                    and "embed" not in name
                ):
                    zeros += int((t == 0).sum())
                    matrix += t.numel()
    return {
        "parameters": params,
        "int8_modules": sorted(int8),
        "tensor_dtypes": dtypes,
        "weight_zero_fraction": zeros / matrix if matrix else None,
    }


def describe(path: str | os.PathLike) -> dict:
    """What ``hf-compress inspect`` prints: architecture, layers, heads, int8 modules, sparsity, size and the
    compression recorded in ``compression_config.json``. Reads files only; no model is built."""
    from types import SimpleNamespace

    from .. import arch
    from .folder_checks import read_config_json

    folder = Path(path)
    raw = read_config_json(folder)
    # the raw JSON, never AutoConfig: a folder with auto_map could make transformers import (or prompt to
    # import) its Python. arch reads the family's own keys, which config.json holds as written.
    config = SimpleNamespace(**raw)
    info: dict = {
        "path": str(folder),
        "model_type": raw.get("model_type"),
        "architectures": raw.get("architectures"),
    }
    for key, fn in (
        ("layers", arch.num_layers),
        ("heads", arch.num_heads),
        ("kv_heads", arch.num_kv_heads),
        ("head_dim", arch.head_dim),
    ):
        try:
            info[key] = fn(config)
        except Exception:  # noqa: BLE001  an architecture outside the table: leave the field out
            pass
    per_layer = {k: v for k, v in raw.items() if "head" in k and isinstance(v, (list, dict))}
    if per_layer:  # e.g. ``pruned_heads`` of a head-pruned checkpoint
        info["head_config"] = per_layer
    pruned = raw.get("pruned_heads")  # physically pruned BERT/GPT-2: the config keeps the original head count
    if isinstance(pruned, dict) and pruned and isinstance(info.get("heads"), int) and "layers" in info:
        info["heads_per_layer"] = [info["heads"] - len(pruned.get(str(i), [])) for i in range(info["layers"])]
    info["auto_map"] = sorted(raw["auto_map"]) if raw.get("auto_map") else None  # remote-code classes
    qc = raw.get("quantization_config") or {}
    info["quantization"] = qc.get("quant_method") and {
        "method": qc.get("quant_method"),
        "format": qc.get("format"),
        "ignore": qc.get("ignore"),
    }
    from ..evaluation import checkpoint_bytes

    try:
        info.update(_tensor_stats(folder))
    except Exception as exc:  # noqa: BLE001  a truncated or foreign *.safetensors file
        raise CheckpointError(f"{folder}: a *.safetensors file cannot be read ({exc}); the checkpoint is damaged") from None
    info["bytes_on_disk"] = checkpoint_bytes(folder)
    cc = read_compression_config(folder)
    info["compression"] = (
        None
        if cc is None
        else {"base_model": cc.get("base_model"), "stages": cc.get("stages"), "versions": cc.get("versions")}
    )
    return info


def format_description(info: dict) -> str:
    """Human-readable lines of :func:`describe`."""
    lines = [f"{info['path']}: {info['model_type']} {info.get('architectures') or ''}"]
    for key in ("layers", "heads", "heads_per_layer", "kv_heads", "head_dim", "head_config", "auto_map", "quantization"):
        if info.get(key) is not None:
            lines.append(f"  {key}: {info[key]}")
    lines.append(f"  parameters: {info['parameters']:,}   bytes on disk: {info['bytes_on_disk']:,}")
    lines.append(f"  int8 modules: {len(info['int8_modules'])}   tensor dtypes: {info['tensor_dtypes']}")
    if info.get("weight_zero_fraction") is not None:
        lines.append(f"  zeros in weight matrices (embeddings excluded): {info['weight_zero_fraction']:.1%}")
    comp = info.get("compression")
    if comp:
        steps = ", ".join(s.get("stage", "?") for s in comp.get("stages") or [])
        lines.append(f"  compressed from {comp.get('base_model')} by: {steps or '(no stages)'}")
    else:
        lines.append("  no compression_config.json: not written by hf_compress")
    return "\n".join(lines)
