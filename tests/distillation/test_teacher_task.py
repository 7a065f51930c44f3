"""model_task: which auto-class family a model is, for stock classes and their subclasses (a physically
head-pruned BERT is a PrunedHeadsBertModel(BertModel), and the demo distils one)."""

from __future__ import annotations

import pytest
import torch
from datasets import Dataset
from tiny_models import tiny_model

from hf_compress import DistillationArguments, DistillationTrainer, HfCompressError, prune_heads
from hf_compress.distillation.teacher import model_task


@pytest.mark.parametrize("task, expected", [("base", "base"), ("masked-lm", "masked-lm"),
                                            ("sequence-classification", "sequence-classification")])
def test_head_pruned_bert_keeps_its_task(task, expected):
    kwargs = {"num_labels": 3} if task == "sequence-classification" else {}
    model = prune_heads(tiny_model("bert", task, **kwargs), {0: [1], 2: [0, 3]})
    assert type(model).__name__.startswith("PrunedHeads")  # physically pruned: the remote-code subclass
    assert model_task(model) == expected


def test_an_unrelated_module_is_still_refused():
    with pytest.raises(HfCompressError, match="Linear is not a causal-LM"):
        model_task(torch.nn.Linear(2, 2))


def test_a_head_pruned_student_distils_from_its_teacher(tmp_path):
    teacher = tiny_model("bert", "base")
    student = prune_heads(tiny_model("bert", "base"), {1: [2]})
    ids = torch.randint(5, 100, (8, 12), generator=torch.Generator().manual_seed(0))
    args = DistillationArguments(output_dir=str(tmp_path), alpha_logits=0.0, alpha_hidden=1.0, max_steps=2,
                                 per_device_train_batch_size=4, report_to=[], save_strategy="no", use_cpu=True)
    trainer = DistillationTrainer(model=student, teacher_model=teacher, args=args,
                                  train_dataset=Dataset.from_dict({"input_ids": ids.tolist()}))
    assert trainer.train().global_step == 2

