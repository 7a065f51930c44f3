"""The model card (``README.md``) of a compressed checkpoint, written with ``huggingface_hub.ModelCard``.

The metadata carries ``base_model``, ``base_model_relation`` (``quantized`` when int8 weights are stored,
otherwise ``finetune``: the Hub accepts only adapter / merge / quantized / finetune, so pruning and
distillation are named in ``tags`` instead), tags, license and pipeline tag; the body holds the measured
table,
how to load the folder and the resolved recipe.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..assets import hub_id, license_of
from ..tasks import TASKS

__all__ = [
    "base_model_relation",
    "card_tags",
    "format_results_table",
    "build_model_card",
]


# column key -> (header, formatter)
_COLUMNS = {
    "model": ("model", str),
    "params": ("parameters", lambda v: f"{v / 1e6:.2f}M"),
    "disk_bytes": ("bytes on disk", lambda v: f"{v / 2**20:.1f} MiB"),
    "mem_bytes": ("weights in memory", lambda v: f"{v / 2**20:.1f} MiB"),
    "latency_ms": ("CPU latency (median)", lambda v: f"{v:.1f} ms"),
    "speedup": ("speed-up", lambda v: f"{v:.2f}×"),
    "teacher_agreement": ("agreement with base", lambda v: f"{v:.4f}"),
    "embedding_cosine": ("embedding cosine to base", lambda v: f"{v:.4f}"),
    "perplexity": ("held-out perplexity", lambda v: f"{v:.2f}"),
    "topic_probe": ("topic probe accuracy", lambda v: f"{v:.3f}"),
    "snli_probe": ("SNLI linear probe accuracy", lambda v: f"{v:.3f}"),
    "snli_ranking": ("SNLI ranking MRR", lambda v: f"{v:.3f}"),
    "docs_probe": ("Python-docs section probe accuracy", lambda v: f"{v:.3f}"),
}


def base_model_relation(stage_names: list[str]) -> str:
    """``quantized`` when the checkpoint stores int8 weights, else ``finetune`` (weights were changed)."""
    from ..core.registry import methods

    table = methods()
    for name in stage_names:
        spec = table.get(name)
        if spec is not None and spec.base_model_relation:
            return spec.base_model_relation
    return "finetune"


def card_tags(stage_names: list[str]) -> list[str]:
    from ..core.registry import methods

    table = methods()
    tags = ["hf-compress", "compressed"]
    for name in stage_names:
        spec = table.get(name)
        tag = spec.card_tag if spec is not None else None
        if tag and tag not in tags:
            tags.append(tag)
    return tags


def format_results_table(rows: list[dict]) -> str:
    """Markdown table of measured rows (dicts keyed like ``_COLUMNS``); missing values print as ``–``."""
    keys = [k for k in _COLUMNS if any(r.get(k) is not None for r in rows)]
    lines = ["| " + " | ".join(_COLUMNS[k][0] for k in keys) + " |", "|" + "---|" * len(keys)]
    for row in rows:
        cells = [("–" if row.get(k) is None else _COLUMNS[k][1](row[k])) for k in keys]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _usage(folder: Path, task: str, int8: bool) -> str:
    config = json.loads((folder / "config.json").read_text()) if (folder / "config.json").is_file() else {}
    auto = TASKS[task].auto_class
    remote = ", trust_remote_code=True" if config.get("auto_map") else ""
    lines = ["```python"]
    if int8:
        lines.append(
            "import hf_compress  # registers the int8 loader (not needed when compressed-tensors is "
            "installed)"
        )
    if (folder / "modules.json").is_file():  # the sentence-transformers wrapper files were kept
        lines += [
            "from sentence_transformers import SentenceTransformer",
            "",
            f'model = SentenceTransformer("REPO_OR_FOLDER"{remote})  # pooling, normalisation, max_seq_length kept',
            *(["hf_compress.compile_int8(model[0].auto_model)  # the fast int8 path (see below)"] if int8 else []),
            'embeddings = model.encode(["A sentence to embed."])',
            "",
            "# or the transformer alone (no pooling):",
        ]
    lines += [
        f"from transformers import {auto}, AutoTokenizer",
        "",
        f'model = {auto}.from_pretrained("REPO_OR_FOLDER"{remote})',
        *(["hf_compress.compile_int8(model)  # the fast int8 path (see below)"] if int8 else []),
        'tokenizer = AutoTokenizer.from_pretrained("REPO_OR_FOLDER")',
        "```",
    ]
    if int8:
        lines.append(
            "\n`from_pretrained` gives eager int8 kernels. `hf_compress.compile_int8(model)` compiles the "
            "transformer blocks once (`torch.compile`, needs a C compiler; it falls back to eager with a warning) "
            "so the int8 matmuls fuse with the quantize / rescale / norm passes around them: on a 2-core CPU, "
            "W8A8 MiniLM ran 2.6-2.9x fp32 compiled against 1.1-1.8x eager (`hf-compress bench` reports both)."
        )
    if remote:
        lines.append(
            "\nThe pruned attention has a different head count per layer, which the stock class cannot "
            "express: the folder ships a small modeling file (`auto_map`), hence `trust_remote_code=True`."
        )
    return "\n".join(lines)


def _compression_lines(folder: Path) -> list[str]:
    """What ``config.json`` records of the compression (sparsity pattern and measured zeros, int8 scheme)."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    lines = []
    sparsity = config.get("sparsity_config")
    if isinstance(sparsity, dict):
        lines.append(
            f"Sparsity: pattern `{sparsity.get('sparsity_structure')}`, method `{sparsity.get('method', '?')}`, "
            f"measured {100 * float(sparsity.get('global_sparsity', 0.0)):.1f}% zeros in the pruned projections "
            "(stored as a dense checkpoint with zeros)."
        )
    quant = config.get("quantization_config")
    if isinstance(quant, dict) and quant.get("quant_method") == "compressed-tensors":
        formats = sorted({g.get("format", "?") for g in quant.get("config_groups", {}).values()}
                         | {quant.get("format", "")} - {""})
        ignore = list(quant.get("ignore", []))
        kept = ", ".join(ignore[:5]) + (f" and {len(ignore) - 5} more" if len(ignore) > 5 else "")
        lines.append(f"Quantization: compressed-tensors, format {', '.join(f'`{f}`' for f in formats)}; "
                     f"left in float: {kept or 'nothing'}.")
    return lines


def build_model_card(
    folder: str | Path,
    *,
    base: str | None,
    task: str,
    stage_names: list[str],
    results_table: str,
    recipe_yaml: str,
    notes: list[str] | None = None,
    metrics_help: str = "",
):
    """A ``huggingface_hub.ModelCard`` for the checkpoint in ``folder`` (already saved there)."""
    from huggingface_hub import ModelCard, ModelCardData

    folder = Path(folder)
    base_id = hub_id(base) if base else None
    sentence = (folder / "modules.json").is_file()  # a sentence-transformers folder, as its base was
    extra_tags = ["sentence-transformers", "feature-extraction", "sentence-similarity"] if sentence else []
    data = ModelCardData(
        base_model=base_id,
        license=license_of(base) if base else None,
        library_name="sentence-transformers" if sentence else "transformers",
        pipeline_tag="sentence-similarity" if sentence else TASKS[task].pipeline_tag,
        tags=card_tags(stage_names) + extra_tags,
        base_model_relation=base_model_relation(stage_names) if base_id else None,
    )
    steps = " → ".join(f"`{s}`" for s in stage_names) or "(no stages)"
    notes = list(notes or []) + _compression_lines(folder)
    title = f"{base_id.split('/')[-1]} compressed" if base_id else "Compressed model"
    body = [
        f"# {title}",
        "",
        f"Made with hf_compress from `{base_id or 'a local model'}` by {steps}.",
        "",
        "## Measured",
        "",
        results_table,
        "",
        metrics_help,
        "",
        *(f"{n}\n" for n in (notes or [])),
        "",
        "## How to load",
        "",
        _usage(folder, task, base_model_relation(stage_names) == "quantized"),
        "",
        "## Recipe",
        "",
        "```yaml",
        recipe_yaml.rstrip(),
        "```",
        "",
    ]
    content = f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body)
    return ModelCard(content)
