"""A teacher whose vocabulary differs from the student's only by padding rows is distilled over the common ids
(one warning); anything else is refused, naming both sizes."""

import copy
import logging

import pytest
import torch
from distill_fixtures import GradCapture, make_args, make_dataset
from distill_fixtures import word_tokenizer as _tokenizer
from tiny_models import tiny_model

from hf_compress import DistillationTrainer, HfCompressError


def _grads(tmp_path, student, teacher, **kw):
    args = make_args(tmp_path, per_device_train_batch_size=8, max_steps=1, max_grad_norm=0.0, alpha_hidden=0.0,
                     logit_chunk_size=kw.pop("chunk", 0))
    trainer = DistillationTrainer(model=copy.deepcopy(student), teacher_model=teacher, args=args,
                                  train_dataset=make_dataset("gpt2"), **kw)
    cap = GradCapture(trainer)
    trainer.add_callback(cap)
    trainer.train()
    return cap.grads[0]


@pytest.mark.parametrize("chunk", [0, 5])
def test_padding_rows_distil_over_the_common_prefix_like_a_cut_teacher(tmp_path, caplog, chunk):
    student = tiny_model("gpt2", seed=2, n_layer=2)
    big = tiny_model("gpt2", seed=1, vocab_size=112)
    cut = tiny_model("gpt2", seed=1)  # the same teacher with its 12 padding rows removed
    state = {k: (v[:100] if k in ("transformer.wte.weight", "lm_head.weight") else v) for k, v in big.state_dict().items()}
    cut.load_state_dict(state)
    tok = _tokenizer(100)
    with caplog.at_level(logging.WARNING, logger="hf_compress.distillation.teacher"):
        got = _grads(tmp_path, student, big, processing_class=tok, chunk=chunk)
    warnings = [r for r in caplog.records if "padding rows" in r.getMessage()]
    assert len(warnings) == 1 and "distilling over the common 100 ids" in warnings[0].getMessage()
    expected = _grads(tmp_path, student, cut, processing_class=tok, chunk=chunk)
    for name, g in expected.items():
        torch.testing.assert_close(got[name], g, rtol=1e-5, atol=1e-6, msg=name)


def test_other_vocabulary_differences_are_refused_naming_both_sizes(tmp_path):
    student, teacher = tiny_model("gpt2", seed=2), tiny_model("gpt2", seed=1, vocab_size=112)
    args = make_args(tmp_path)
    with pytest.raises(HfCompressError, match="teacher vocab_size 112 differs from the student's 100: pass the "
                                              "tokenizer as `processing_class`"):
        DistillationTrainer(model=student, teacher_model=teacher, args=args)
    with pytest.raises(HfCompressError, match="112 differs from the student's 100 and the tokenizers map ids "
                                              "differently .id 0 is 'w0' vs 'x0'"):
        DistillationTrainer(model=student, teacher_model=teacher, args=args, processing_class=_tokenizer(100),
                            teacher_tokenizer=_tokenizer(100, "x"))
    with pytest.raises(HfCompressError, match="tokenizers have 105 .student. and 105 .teacher. tokens, more than "
                                              "the common 100 ids"):
        DistillationTrainer(model=student, teacher_model=teacher, args=args, processing_class=_tokenizer(105))
