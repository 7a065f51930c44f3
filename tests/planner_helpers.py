"""Shared pieces of the planner tests: a tiny BERT folder, texts, and a deterministic fake latency timer.

Latency in tests is never timed: ``fake_latency`` returns seconds computed from a model's linear weights
(int8 counted at 0.4), so a candidate's predicted speed-up is a pure function of its shape.
"""

from __future__ import annotations

import torch
import transformers

BERT = dict(vocab_size=100, hidden_size=32, num_hidden_layers=4, num_attention_heads=4, intermediate_size=64,
            max_position_embeddings=64)
SMALL_SPACE = {"keep": (1.0, 0.5), "heads": (0.0, 0.5), "ffn": (0.0,), "int8": (None, "w8a8")}


def tiny_bert(seed: int = 0):
    torch.manual_seed(seed)
    return transformers.AutoModel.from_config(transformers.BertConfig(**BERT)).eval()


def texts(n: int = 60, seed: int = 0) -> list[str]:
    words = "alpha beta gamma delta river city music science history sport art law".split()
    g = torch.Generator().manual_seed(seed)
    return [" ".join(words[int(i)] for i in torch.randint(0, len(words), (10,), generator=g)) for _ in range(n)]


def linear_cost(model) -> float:
    total = 0.0
    for module in model.modules():
        name = type(module).__name__
        if name == "Linear":
            total += module.weight.numel()
        elif name == "Int8Linear":
            total += 0.4 * module.in_features * module.out_features
    return total


def fake_latency(models: dict, inputs: dict) -> dict:
    return {name: 1e-9 * linear_cost(model) + 1e-6 for name, model in models.items()}


def never_called(models, inputs):
    raise AssertionError("latency was measured again although the log had it")
