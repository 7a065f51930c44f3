"""Modeling code saved beside head-pruned bert/roberta/gpt2 checkpoints (imports torch/transformers only)."""
