"""Modeling code written beside head-pruned bert/roberta/gpt2 checkpoints (imports only torch/transformers)."""
