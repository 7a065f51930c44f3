"""Tiny in-process models (hidden 32, 2-4 layers, vocab ~100) for every family in hf_compress.arch.

Nothing here touches the network: models are built from configs with fixed seeds.
"""

from __future__ import annotations

import torch
import transformers

VOCAB = 100

# model_type -> (config class name, config kwargs)
_CONFIGS: dict[str, tuple[str, dict]] = {
    "bert": ("BertConfig", dict(hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
                                intermediate_size=64, max_position_embeddings=64, type_vocab_size=2)),
    "roberta": ("RobertaConfig", dict(hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
                                      intermediate_size=64, max_position_embeddings=70, pad_token_id=1,
                                      bos_token_id=0, eos_token_id=2)),
    "distilbert": ("DistilBertConfig", dict(dim=32, n_layers=4, n_heads=4, hidden_dim=64,
                                            max_position_embeddings=64)),
    "gpt2": ("GPT2Config", dict(n_embd=32, n_layer=4, n_head=4, n_positions=64, bos_token_id=0,
                                eos_token_id=0)),
    "llama": ("LlamaConfig", dict(hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
                                  num_key_value_heads=2, head_dim=8, intermediate_size=64,
                                  max_position_embeddings=64, bos_token_id=0, eos_token_id=0, pad_token_id=0)),
    "mistral": ("MistralConfig", dict(hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
                                      num_key_value_heads=2, head_dim=8, intermediate_size=64,
                                      max_position_embeddings=64, bos_token_id=0, eos_token_id=0)),
    "qwen2": ("Qwen2Config", dict(hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
                                  num_key_value_heads=2, intermediate_size=64, max_position_embeddings=64,
                                  bos_token_id=0, eos_token_id=0)),
    "qwen3": ("Qwen3Config", dict(hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
                                  num_key_value_heads=2, head_dim=8, intermediate_size=64,
                                  max_position_embeddings=64, bos_token_id=0, eos_token_id=0)),
    "gemma": ("GemmaConfig", dict(hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
                                  num_key_value_heads=2, head_dim=8, intermediate_size=64,
                                  max_position_embeddings=64, bos_token_id=0, eos_token_id=0, pad_token_id=0)),
    "gemma2": ("Gemma2Config", dict(hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
                                    num_key_value_heads=2, head_dim=8, intermediate_size=64,
                                    max_position_embeddings=64, sliding_window=16, bos_token_id=0,
                                    eos_token_id=0, pad_token_id=0)),
    "gemma3_text": ("Gemma3TextConfig", dict(hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
                                             num_key_value_heads=2, head_dim=8, intermediate_size=64,
                                             max_position_embeddings=64, sliding_window=16,
                                             bos_token_id=0, eos_token_id=0, pad_token_id=0)),
    "phi": ("PhiConfig", dict(hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
                              num_key_value_heads=4, intermediate_size=64, max_position_embeddings=64,
                              bos_token_id=0, eos_token_id=0)),
    "phi3": ("Phi3Config", dict(hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
                                num_key_value_heads=2, intermediate_size=64, max_position_embeddings=64,
                                bos_token_id=0, eos_token_id=0, pad_token_id=0)),
}

ALL_MODEL_TYPES = tuple(sorted(_CONFIGS))
ENCODER_TYPES = ("bert", "distilbert", "roberta")
CAUSAL_TYPES = tuple(t for t in ALL_MODEL_TYPES if t not in ENCODER_TYPES)

_AUTO = {
    "causal-lm": transformers.AutoModelForCausalLM,
    "masked-lm": transformers.AutoModelForMaskedLM,
    "sequence-classification": transformers.AutoModelForSequenceClassification,
    "base": transformers.AutoModel,
}


def tiny_config(model_type: str, **overrides):
    cls_name, kwargs = _CONFIGS[model_type]
    kwargs = {"vocab_size": VOCAB, **kwargs, **overrides}
    return getattr(transformers, cls_name)(**kwargs)


def tiny_model(model_type: str, task: str | None = None, seed: int = 0, **overrides):
    """A freshly initialised tiny model in eval mode, fp32, eager-free default attention."""
    if task is None:
        task = "masked-lm" if model_type in ENCODER_TYPES else "causal-lm"
    config = tiny_config(model_type, **overrides)
    torch.manual_seed(seed)
    model = _AUTO[task].from_config(config)
    return model.eval()


def tiny_batch(batch_size: int = 2, seq_len: int = 12, seed: int = 0, padded: bool = True) -> dict:
    """input_ids/attention_mask with the last sample right-padded (token ids avoid the special ids 0-3)."""
    g = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(4, VOCAB, (batch_size, seq_len), generator=g)
    attention_mask = torch.ones_like(input_ids)
    if padded and batch_size > 1:
        attention_mask[-1, seq_len // 2:] = 0
        input_ids[-1, seq_len // 2:] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask}
