"""A tiny sentence-transformers folder (Transformer -> mean Pooling -> Normalize), written as the Hub's
all-MiniLM-L6-v2 is laid out, from a tiny in-process BERT and the recipe's character tokenizer."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from hf_compress.recipe.loading import char_tokenizer

BERT = {"model_type": "bert", "vocab_size": 60, "hidden_size": 32, "num_hidden_layers": 4, "num_attention_heads": 4,
        "intermediate_size": 64, "max_position_embeddings": 64}
MAX_SEQ_LENGTH = 20
TEXTS = ["alpha beta gamma", "a river runs through the city", "music, science and history!", "law"]


def make_st_folder(folder: Path) -> Path:
    from transformers import AutoConfig, AutoModel

    cfg = dict(BERT)
    torch.manual_seed(0)
    AutoModel.from_config(AutoConfig.for_model(cfg.pop("model_type"), **cfg)).save_pretrained(folder)
    char_tokenizer().save_pretrained(folder)
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
               {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]
    (folder / "modules.json").write_text(json.dumps(modules, indent=2))
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": MAX_SEQ_LENGTH,
                                                                  "do_lower_case": False}))
    (folder / "config_sentence_transformers.json").write_text(json.dumps({"similarity_fn_name": "cosine"}))
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({
        "word_embedding_dimension": BERT["hidden_size"], "pooling_mode_cls_token": False,
        "pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False}))
    return folder


def recipe_dict(base: Path, out: Path, stages: list) -> dict:
    return {"model": str(base), "task": "feature-extraction", "output_dir": str(out), "stages": stages,
            "evaluate": ["size"]}


def pooled_normalised(model, tokenizer, texts=TEXTS) -> torch.Tensor:
    """Mean over attended tokens, then L2-normalised: what the wrapper's Pooling + Normalize compute."""
    batch = tokenizer(texts, padding=True, truncation=True, max_length=MAX_SEQ_LENGTH, return_tensors="pt")
    with torch.no_grad():
        hidden = model.eval()(**batch).last_hidden_state  # (B, T, d)
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, dim=-1)
