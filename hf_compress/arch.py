"""One table per architecture family: where layers, attention projections, MLP and per-layer config live.

Every surgery operation asks this table; nothing else in hf_compress hard-codes module names.
Paths are dotted attribute paths. ``layers`` is relative to ``model.base_model`` (so it works for
``BertModel`` and ``BertForSequenceClassification`` alike); projection paths are relative to one layer.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from torch import nn

from .errors import UnsupportedArchitectureError

__all__ = [
    "ARCHITECTURES",
    "SUPPORTED_MODEL_TYPES",
    "ArchSpec",
    "get_arch",
    "get_layers",
    "get_submodule",
    "head_dim",
    "is_supported",
    "layers_parent",
    "num_heads",
    "num_kv_heads",
    "num_layers",
    "set_layers",
]


@dataclass(frozen=True)
class ArchSpec:
    """Where things live in one architecture family.

    Attributes:
        family: short family name (the first model_type it serves).
        layers: path of the ``nn.ModuleList`` of transformer blocks, relative to ``model.base_model``.
        q, k, v: query/key/value projection paths inside a layer; ``None`` where fused (see ``qkv``).
        qkv: fused q/k/v projection (GPT-2 ``attn.c_attn`` Conv1D, Phi-3 ``self_attn.qkv_proj``).
        o: attention output projection (its input is the concatenation of the heads' outputs).
        mlp_in: MLP input projections (up/gate/fc1); mlp_out: MLP output projection.
        num_layers_key / num_heads_key / num_kv_heads_key / head_dim_key: config field names
            (``None`` when the family has no such field; head size is then hidden // heads).
        hidden_size_key: config field of the residual width.
        conv1d: projections are ``transformers.pytorch_utils.Conv1D`` (weight stored ``[in, out]``).
        causal: decoder-only causal LM family.
        per_layer_keys: config lists with one entry per layer (sliced when layers are dropped; any other
            list as long as the layer count is sliced too, this names the known ones).
        layer_threshold_keys: config ints that count layers from the bottom (Qwen2 ``max_window_layers``:
            the first m layers use full attention), recomputed when layers are dropped.
        per_layer_map_keys: config mappings keyed by layer index (``pruned_heads`` of a head-pruned
            BERT/GPT-2: ``{"2": [0, 3]}``), re-keyed to the kept layers' new numbers when layers are dropped.
    """

    family: str
    layers: str
    o: str
    mlp_in: tuple[str, ...]
    mlp_out: str
    q: str | None = None
    k: str | None = None
    v: str | None = None
    qkv: str | None = None
    num_layers_key: str = "num_hidden_layers"
    num_heads_key: str = "num_attention_heads"
    num_kv_heads_key: str | None = "num_key_value_heads"
    head_dim_key: str | None = "head_dim"
    hidden_size_key: str = "hidden_size"
    conv1d: bool = False
    causal: bool = True
    per_layer_keys: tuple[str, ...] = ()
    layer_threshold_keys: tuple[str, ...] = ()
    per_layer_map_keys: tuple[str, ...] = ("pruned_heads",)
    extra: dict = field(default_factory=dict)

    @property
    def attention_paths(self) -> tuple[str, ...]:
        """Every attention projection path (fused or not), output projection last."""
        qkv = (self.qkv,) if self.qkv else (self.q, self.k, self.v)
        return tuple(p for p in qkv if p) + (self.o,)

    @property
    def linear_paths(self) -> tuple[str, ...]:
        """Every projection of a layer that quantization and sparsity target."""
        return self.attention_paths + self.mlp_in + (self.mlp_out,)


_BERT = ArchSpec(
    family="bert",
    layers="encoder.layer",
    q="attention.self.query",
    k="attention.self.key",
    v="attention.self.value",
    o="attention.output.dense",
    mlp_in=("intermediate.dense",),
    mlp_out="output.dense",
    num_kv_heads_key=None,
    head_dim_key=None,
    causal=False,
)
_DISTILBERT = ArchSpec(
    family="distilbert",
    layers="transformer.layer",
    q="attention.q_lin",
    k="attention.k_lin",
    v="attention.v_lin",
    o="attention.out_lin",
    mlp_in=("ffn.lin1",),
    mlp_out="ffn.lin2",
    num_layers_key="n_layers",
    num_heads_key="n_heads",
    num_kv_heads_key=None,
    head_dim_key=None,
    hidden_size_key="dim",
    causal=False,
)
_GPT2 = ArchSpec(
    family="gpt2",
    layers="h",
    qkv="attn.c_attn",
    o="attn.c_proj",
    mlp_in=("mlp.c_fc",),
    mlp_out="mlp.c_proj",
    num_layers_key="n_layer",
    num_heads_key="n_head",
    num_kv_heads_key=None,
    head_dim_key=None,
    hidden_size_key="n_embd",
    conv1d=True,
)
_LLAMA = ArchSpec(
    family="llama",
    layers="layers",
    q="self_attn.q_proj",
    k="self_attn.k_proj",
    v="self_attn.v_proj",
    o="self_attn.o_proj",
    mlp_in=("mlp.gate_proj", "mlp.up_proj"),
    mlp_out="mlp.down_proj",
)
_QWEN2 = replace(_LLAMA, per_layer_keys=("layer_types",), layer_threshold_keys=("max_window_layers",))
_GEMMA2 = replace(_LLAMA, per_layer_keys=("layer_types",))
_PHI = ArchSpec(
    family="phi",
    layers="layers",
    q="self_attn.q_proj",
    k="self_attn.k_proj",
    v="self_attn.v_proj",
    o="self_attn.dense",
    mlp_in=("mlp.fc1",),
    mlp_out="mlp.fc2",
)
_PHI3 = ArchSpec(
    family="phi3",
    layers="layers",
    qkv="self_attn.qkv_proj",
    o="self_attn.o_proj",
    mlp_in=("mlp.gate_up_proj",),
    mlp_out="mlp.down_proj",
)

#: model_type -> ArchSpec
ARCHITECTURES: dict[str, ArchSpec] = {
    "bert": _BERT,
    "roberta": _BERT,
    "distilbert": _DISTILBERT,
    "gpt2": _GPT2,
    "llama": _LLAMA,
    "mistral": _LLAMA,
    "qwen2": _QWEN2,
    "qwen3": _QWEN2,
    "gemma": _LLAMA,
    "gemma2": _GEMMA2,
    "gemma3_text": _GEMMA2,
    "phi": _PHI,
    "phi3": _PHI3,
}
SUPPORTED_MODEL_TYPES: tuple[str, ...] = tuple(sorted(ARCHITECTURES))


def _model_type(model_or_config) -> str:
    config = getattr(model_or_config, "config", model_or_config)
    return getattr(config, "model_type", None) or type(model_or_config).__name__


def get_arch(model_or_config) -> ArchSpec:
    """The :class:`ArchSpec` of a model or config; a clear error for unsupported families."""
    model_type = _model_type(model_or_config)
    try:
        return ARCHITECTURES[model_type]
    except KeyError:
        raise UnsupportedArchitectureError(
            f"model_type {model_type!r} is not supported; supported model types are "
            f"{', '.join(SUPPORTED_MODEL_TYPES)}. Convert the model to one of these families or open an "
            f"issue."
        ) from None


def is_supported(model_or_config) -> bool:
    """True when the table has the model's family (:func:`get_arch` would not raise)."""
    return _model_type(model_or_config) in ARCHITECTURES


def get_submodule(root: nn.Module, path: str) -> nn.Module:
    """``root.get_submodule(path)`` with an error that names the path and the model class."""
    try:
        return root.get_submodule(path)
    except AttributeError:
        raise UnsupportedArchitectureError(
            f"{type(root).__name__} has no submodule {path!r}; its architecture differs from the "
            f"table in hf_compress.arch"
        ) from None


def _base(model: nn.Module) -> nn.Module:
    return getattr(model, "base_model", model)


def get_layers(model: nn.Module) -> nn.ModuleList:
    """The ``nn.ModuleList`` of transformer blocks of a (task-headed or bare) model."""
    return get_submodule(_base(model), get_arch(model).layers)


def layers_parent(model: nn.Module) -> tuple[str, nn.Module]:
    """(path relative to the base model, module) of what holds the block list: ``("encoder", BertEncoder)``
    for BERT; ``("", base model)`` where the base model holds it directly (Llama, GPT-2)."""
    parent_path = get_arch(model).layers.rpartition(".")[0]
    return parent_path, get_submodule(_base(model), parent_path) if parent_path else _base(model)


def set_layers(model: nn.Module, layers: nn.ModuleList) -> None:
    """Replace the block list in place (does not touch the config: callers update it)."""
    _, parent = layers_parent(model)
    setattr(parent, get_arch(model).layers.rpartition(".")[2], layers)


def _config(model_or_config):
    return getattr(model_or_config, "config", model_or_config)


def num_layers(model_or_config) -> int:
    return int(getattr(_config(model_or_config), get_arch(model_or_config).num_layers_key))


def num_heads(model_or_config) -> int:
    return int(getattr(_config(model_or_config), get_arch(model_or_config).num_heads_key))


def num_kv_heads(model_or_config) -> int:
    """Key/value heads (GQA); equals :func:`num_heads` for families without the field."""
    spec = get_arch(model_or_config)
    value = getattr(_config(model_or_config), spec.num_kv_heads_key, None) if spec.num_kv_heads_key else None
    return int(value) if value is not None else num_heads(model_or_config)


def head_dim(model_or_config) -> int:
    """Per-head size: the explicit config field where set, else hidden_size // num_heads."""
    spec = get_arch(model_or_config)
    config = _config(model_or_config)
    value = getattr(config, spec.head_dim_key, None) if spec.head_dim_key else None
    if value is None:
        value = getattr(config, spec.hidden_size_key) // num_heads(config)
    return int(value)
