"""One table per architecture family: where layers, attention projections, MLP and per-layer config live.

Every method asks this table; nothing else in hf_compress hard-codes module names or config keys.
Paths are dotted attribute paths. ``layers``, ``final_norm`` and ``embedding_norm`` are relative to
``model.base_model`` (so they work for ``BertModel`` and ``BertForSequenceClassification`` alike);
projection, norm and activation paths are relative to one layer.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: reading the table (recipe validation) imports no torch
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
    "hidden_size",
    "intermediate_size",
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
        attn_norm / mlp_norm: the pre-norm whose output the attention / MLP input projections read
            (``None`` in post-norm families; Phi's parallel block reads one norm for both).
        post_norms: norms applied after a sub-layer (BERT's post-norm, Gemma2's sandwich norms).
        final_norm / embedding_norm: the norm after the last block / after the embeddings (base model).
        norm_offset: the norms compute ``normed(x) * (norm_offset + weight)`` (Gemma: 1).
        mlp_act: the MLP's activation module; gated_mlp: ``"split"`` for ``down(act(gate(x)) * up(x))``
            with ``mlp_in = (gate, up)``, ``"fused"`` for one ``gate_up`` whose second half of rows is up,
            ``None`` when an activation alone sits between ``mlp_in`` and ``mlp_out``.
        intermediate_size_key: config field of the MLP width; ``intermediate_default``: the multiple of
            the hidden size it means when the field is ``None`` (GPT-2 ``n_inner``), 0 if it is required.
        cross_q: cross-attention query projection (GPT-2 with ``add_cross_attention``).
        attn_layer_scale_key: config flag that scales attention scores by 1/(layer_idx + 1) (GPT-2).
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
    attn_norm: str | None = None
    mlp_norm: str | None = None
    post_norms: tuple[str, ...] = ()
    final_norm: str | None = None
    embedding_norm: str | None = None
    norm_offset: float = 0.0
    mlp_act: str | None = None
    gated_mlp: str | None = None
    intermediate_size_key: str = "intermediate_size"
    intermediate_default: int = 0
    cross_q: str | None = None
    attn_layer_scale_key: str | None = None
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

    @property
    def norm_paths(self) -> tuple[str, ...]:
        """Every norm inside a layer (pre-norms first, then post-norms), each once."""
        return tuple(dict.fromkeys(p for p in (self.attn_norm, self.mlp_norm, *self.post_norms) if p))


_BERT = ArchSpec(
    family="bert", layers="encoder.layer", causal=False,
    q="attention.self.query", k="attention.self.key", v="attention.self.value", o="attention.output.dense",
    mlp_in=("intermediate.dense",), mlp_out="output.dense", mlp_act="intermediate.intermediate_act_fn",
    post_norms=("attention.output.LayerNorm", "output.LayerNorm"), embedding_norm="embeddings.LayerNorm",
    num_kv_heads_key=None, head_dim_key=None,
)
_DISTILBERT = ArchSpec(
    family="distilbert", layers="transformer.layer", causal=False,
    q="attention.q_lin", k="attention.k_lin", v="attention.v_lin", o="attention.out_lin",
    mlp_in=("ffn.lin1",), mlp_out="ffn.lin2", mlp_act="ffn.activation",
    post_norms=("sa_layer_norm", "output_layer_norm"), embedding_norm="embeddings.LayerNorm",
    num_layers_key="n_layers", num_heads_key="n_heads", num_kv_heads_key=None, head_dim_key=None,
    hidden_size_key="dim", intermediate_size_key="hidden_dim",
)
_GPT2 = ArchSpec(
    family="gpt2", layers="h", conv1d=True,
    qkv="attn.c_attn", o="attn.c_proj", cross_q="crossattention.q_attn",
    mlp_in=("mlp.c_fc",), mlp_out="mlp.c_proj", mlp_act="mlp.act",
    attn_norm="ln_1", mlp_norm="ln_2", final_norm="ln_f",
    num_layers_key="n_layer", num_heads_key="n_head", num_kv_heads_key=None, head_dim_key=None,
    hidden_size_key="n_embd", intermediate_size_key="n_inner", intermediate_default=4,
    attn_layer_scale_key="scale_attn_by_inverse_layer_idx",
)
_LLAMA = ArchSpec(
    family="llama", layers="layers",
    q="self_attn.q_proj", k="self_attn.k_proj", v="self_attn.v_proj", o="self_attn.o_proj",
    mlp_in=("mlp.gate_proj", "mlp.up_proj"), mlp_out="mlp.down_proj", mlp_act="mlp.act_fn", gated_mlp="split",
    attn_norm="input_layernorm", mlp_norm="post_attention_layernorm", final_norm="norm",
)
_QWEN2 = replace(_LLAMA, per_layer_keys=("layer_types",), layer_threshold_keys=("max_window_layers",))
_GEMMA = replace(_LLAMA, norm_offset=1.0)
_GEMMA2 = replace(_GEMMA, per_layer_keys=("layer_types",), mlp_norm="pre_feedforward_layernorm",
                  post_norms=("post_attention_layernorm", "post_feedforward_layernorm"))
_PHI = ArchSpec(
    family="phi", layers="layers",
    q="self_attn.q_proj", k="self_attn.k_proj", v="self_attn.v_proj", o="self_attn.dense",
    mlp_in=("mlp.fc1",), mlp_out="mlp.fc2", mlp_act="mlp.activation_fn",
    attn_norm="input_layernorm", mlp_norm="input_layernorm",  # parallel block: both read one norm
    final_norm="final_layernorm",
)
_PHI3 = ArchSpec(
    family="phi3", layers="layers",
    qkv="self_attn.qkv_proj", o="self_attn.o_proj",
    mlp_in=("mlp.gate_up_proj",), mlp_out="mlp.down_proj", mlp_act="mlp.activation_fn", gated_mlp="fused",
    attn_norm="input_layernorm", mlp_norm="post_attention_layernorm", final_norm="norm",
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
    "gemma": _GEMMA,
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


#: config fields of the residual width, tried in order for a family outside the table
_HIDDEN_SIZE_KEYS = ("hidden_size", "n_embd", "dim", "d_model")


def hidden_size(model_or_config) -> int:
    """Residual width: the family's config field, or for a family outside the table the first of
    ``hidden_size`` / ``n_embd`` / ``dim`` / ``d_model`` the config has (e.g. a teacher of another family)."""
    config = _config(model_or_config)
    keys = (get_arch(model_or_config).hidden_size_key,) if is_supported(model_or_config) else _HIDDEN_SIZE_KEYS
    for key in keys:
        value = getattr(config, key, None)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    raise UnsupportedArchitectureError(
        f"cannot find the hidden width of {type(model_or_config).__name__}: its config has none of {keys}")


def intermediate_size(model_or_config) -> int:
    """MLP width from the config (GPT-2's ``n_inner=None`` means 4 * n_embd)."""
    spec = get_arch(model_or_config)
    value = getattr(_config(model_or_config), spec.intermediate_size_key, None)
    if value is None and spec.intermediate_default:
        return spec.intermediate_default * hidden_size(model_or_config)
    if value is None:
        raise UnsupportedArchitectureError(
            f"config.{spec.intermediate_size_key} (the MLP width) must be set for {spec.family}, got None")
    return int(value)
