"""The valid-item rules of distillation.masks, written out by hand for one right-padded batch."""

import torch
from tiny_models import tiny_model

from hf_compress.distillation.masks import item_masks, window_totals
from hf_compress.distillation.teacher import LiveTeacher

ATTN = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
LABELS = torch.tensor([[-100, 5, 6, 7], [-100, 5, -100, -100]])
IDS = torch.tensor([[4, 5, 6, 7], [4, 5, 1, 1]])


def test_causal_positions_shift_and_drop_padding_and_ignored_labels():
    logit, hidden, n_task = item_masks({"input_ids": IDS, "attention_mask": ATTN, "labels": LABELS}, "causal-lm")
    assert logit.tolist() == [[True, True, True], [True, False, False]]
    assert hidden.tolist() == ATTN.bool().tolist() and n_task == 4


def test_token_heads_and_classifiers():
    logit, _, n_task = item_masks({"input_ids": IDS, "attention_mask": ATTN, "labels": LABELS}, "masked-lm")
    assert logit.tolist() == [[False, True, True, True], [False, True, False, False]] and n_task == 4
    logit, _, n_task = item_masks({"input_ids": IDS, "labels": torch.tensor([0, 2])}, "sequence-classification")
    assert logit.tolist() == [True, True] and n_task == 2
    logit, _, n_task = item_masks({"input_ids": IDS, "labels": torch.tensor([-100, 2])}, "sequence-classification")
    assert logit.tolist() == [True, True] and n_task == 1  # an unlabelled row: KD yes, cross-entropy no
    _, _, n_task = item_masks({"input_ids": IDS, "labels": torch.tensor([-100.0, 2.5])}, "sequence-classification")
    assert n_task == 2  # regression targets are values, not ignore markers
    logit, hidden, n_task = item_masks({"input_ids": IDS}, "masked-lm")  # no mask, no labels: everything counts
    assert bool(logit.all()) and bool(hidden.all()) and n_task == 0


def test_window_totals_sum_the_micro_batches():
    a = {"input_ids": IDS, "attention_mask": ATTN, "labels": LABELS}
    b = {"input_ids": IDS[:1], "attention_mask": ATTN[:1], "labels": LABELS[:1]}
    assert window_totals([a, b], "causal-lm").tolist() == [4 + 3, 6 + 4, 4 + 3, 2 + 1, 2 * 1 + 0]
    assert window_totals([a, b, a], "causal-lm", "kl").tolist()[4] == 2 + 0 + 2  # rows with another sequence


def test_live_teacher_returns_the_models_logits_and_asked_hidden_states():
    model = tiny_model("llama")
    model.train()
    out = LiveTeacher(model)({"input_ids": IDS, "attention_mask": ATTN, "labels": LABELS}, [0, 2])
    assert not model.training and sorted(out.hidden_states) == [0, 2]
    with torch.no_grad():
        ref = model(input_ids=IDS, attention_mask=ATTN, output_hidden_states=True)
    torch.testing.assert_close(out.logits, ref.logits, rtol=0, atol=0)
    torch.testing.assert_close(out.hidden_states[2], ref.hidden_states[2], rtol=0, atol=0)
