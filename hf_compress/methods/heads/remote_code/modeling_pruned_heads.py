"""BERT, RoBERTa and GPT-2 models whose attention layers have had heads physically removed.

This file is written beside a head-pruned checkpoint by ``hf_compress.prune_heads`` and loaded by
``AutoModel.from_pretrained(path, trust_remote_code=True)``. It imports only torch and transformers: the
checkpoint loads without hf_compress installed.

The config stays a stock ``BertConfig`` / ``RobertaConfig`` / ``GPT2Config`` (``model_type`` unchanged) with
one extra field, ``pruned_heads``: ``{layer index: [original head indices removed]}`` (the format
transformers 4.x used). ``num_attention_heads`` keeps its original value, so the per-head size
``hidden_size // num_attention_heads`` is unchanged; each listed layer is built with fewer heads.
"""

import torch.nn as nn
import transformers
from transformers.pytorch_utils import Conv1D


def pruned_head_counts(config) -> dict:
    """``{layer: number of heads kept}`` for every layer listed in ``config.pruned_heads``."""
    total = config.num_attention_heads
    pruned = getattr(config, "pruned_heads", None) or {}
    return {int(layer): total - len(set(heads)) for layer, heads in pruned.items()}


def _shrink_bert_layer(layer, kept: int, head_size: int, hidden: int) -> None:
    attn = layer.attention.self
    width = kept * head_size
    bias = attn.query.bias is not None
    attn.query = nn.Linear(hidden, width, bias=bias)
    attn.key = nn.Linear(hidden, width, bias=bias)
    attn.value = nn.Linear(hidden, width, bias=bias)
    attn.num_attention_heads = kept
    attn.all_head_size = width  # attention_head_size and scaling stay those of the unpruned model
    dense = layer.attention.output.dense
    layer.attention.output.dense = nn.Linear(width, hidden, bias=dense.bias is not None)


def _shrink_gpt2_layer(block, kept: int, head_size: int, hidden: int) -> None:
    attn = block.attn
    width = kept * head_size
    attn.c_attn = Conv1D(3 * width, hidden)  # Conv1D(nf=out, nx=in), weight [in, out]
    attn.c_proj = Conv1D(hidden, width)
    attn.num_heads = kept
    attn.split_size = width  # head_dim and scaling stay those of the unpruned model


def shrink_pruned_heads(model) -> None:
    """Rebuild the attention projections of every pruned layer with the kept number of heads."""
    config = model.config
    counts = pruned_head_counts(config)
    if not counts:
        return
    hidden = config.hidden_size
    head_size = hidden // config.num_attention_heads
    base = model.base_model
    if config.model_type == "gpt2":
        layers, shrink = base.h, _shrink_gpt2_layer
    else:
        layers, shrink = base.encoder.layer, _shrink_bert_layer
    for index, kept in counts.items():
        if kept < 1:
            raise ValueError(f"pruned_heads removes every head of layer {index}; at least one must stay")
        shrink(layers[index], kept, head_size, hidden)


class PrunedHeadsMixin:
    """Builds the stock model, then shrinks the pruned layers so the saved (smaller) weights fit."""

    def __init__(self, config, *args, **kwargs):
        super().__init__(config, *args, **kwargs)
        shrink_pruned_heads(self)


#: Auto class -> stock class name, per family (written to ``config.auto_map``)
AUTO_CLASSES = {
    "bert": {"AutoModel": "BertModel", "AutoModelForMaskedLM": "BertForMaskedLM",
             "AutoModelForSequenceClassification": "BertForSequenceClassification",
             "AutoModelForTokenClassification": "BertForTokenClassification",
             "AutoModelForQuestionAnswering": "BertForQuestionAnswering",
             "AutoModelForMultipleChoice": "BertForMultipleChoice",
             "AutoModelForPreTraining": "BertForPreTraining"},
    "roberta": {"AutoModel": "RobertaModel", "AutoModelForMaskedLM": "RobertaForMaskedLM",
                "AutoModelForSequenceClassification": "RobertaForSequenceClassification",
                "AutoModelForTokenClassification": "RobertaForTokenClassification",
                "AutoModelForQuestionAnswering": "RobertaForQuestionAnswering",
                "AutoModelForMultipleChoice": "RobertaForMultipleChoice",
                "AutoModelForCausalLM": "RobertaForCausalLM"},
    "gpt2": {"AutoModel": "GPT2Model", "AutoModelForCausalLM": "GPT2LMHeadModel",
             "AutoModelForSequenceClassification": "GPT2ForSequenceClassification",
             "AutoModelForTokenClassification": "GPT2ForTokenClassification",
             "AutoModelForQuestionAnswering": "GPT2ForQuestionAnswering"},
}

#: stock class name -> pruned subclass, e.g. "BertForMaskedLM" -> PrunedHeadsBertForMaskedLM
PRUNED_CLASSES = {}
for _family_map in AUTO_CLASSES.values():
    for _name in _family_map.values():
        _bases = (PrunedHeadsMixin, getattr(transformers, _name))
        _cls = type("PrunedHeads" + _name, _bases, {"__module__": __name__})
        globals()[_cls.__name__] = _cls
        PRUNED_CLASSES[_name] = _cls
