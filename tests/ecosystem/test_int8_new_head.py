"""A new task head on an int8 checkpoint (AutoModelForSequenceClassification.from_pretrained(int8_dir,
num_labels=3)): the head is a fresh float layer, the encoder the checkpoint's int8 one."""

from __future__ import annotations

import torch
from tiny_models import tiny_batch, tiny_model
from transformers import AutoModel, AutoModelForSequenceClassification

import hf_compress  # noqa: F401  the int8 loader
from hf_compress import Int8Linear, quantize_int8


def test_a_new_head_loads_in_float_on_an_int8_encoder(tmp_path):
    model = tiny_model("bert", "base")
    quantize_int8(model, mode="w8a8")
    model.save_pretrained(tmp_path / "int8")
    encoder = AutoModel.from_pretrained(tmp_path / "int8").eval()
    classifier = AutoModelForSequenceClassification.from_pretrained(tmp_path / "int8", num_labels=3).eval()
    assert type(classifier.classifier) is torch.nn.Linear and classifier.classifier.out_features == 3
    assert isinstance(classifier.bert.encoder.layer[0].attention.self.query, Int8Linear)
    batch = tiny_batch()
    with torch.no_grad():
        want = encoder(**batch).last_hidden_state
        got = classifier.bert(**batch).last_hidden_state
        logits = classifier(**batch).logits
    torch.testing.assert_close(got, want)
    assert logits.shape == (batch["input_ids"].shape[0], 3) and torch.isfinite(logits).all()
