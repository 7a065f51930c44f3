"""The sentence-embedding term (``alpha_embedding``): 1 - cosine of mean-pooled final hidden states per sequence.

Pinned against a float64 loop over sequences; in the trainer it is exact under gradient accumulation (each
sequence counts once in the window), reads the teacher's final layer from a cache as from a live teacher, and
is what ``evaluate()`` reports."""

import copy

import pytest
import torch
from distill_fixtures import NO_DROPOUT, GradCapture, full_batch, make_args, make_dataset
from hypothesis import given, settings
from hypothesis import strategies as st
from tiny_models import tiny_model

from hf_compress import DistillationArguments, DistillationTrainer, HfCompressError, cache_teacher_outputs
from hf_compress.distillation import losses
from hf_compress.distillation.stage import DistillConfig, check_distill_for_task


def _naive(h_s, h_t, mask):
    """Per-sequence 1 - cos of the masked means, in float64, sequences without a token skipped."""
    out = []
    for s, t, m in zip(h_s.double(), h_t.double(), mask.bool()):
        if m.any():
            e_s, e_t = s[m].mean(0), t[m].mean(0)
            out.append(1 - (e_s @ e_t) / (e_s.norm() * e_t.norm()))
    return torch.stack(out) if out else torch.zeros(0, dtype=torch.float64)


@settings(max_examples=40, deadline=None)
@given(b=st.integers(1, 4), t=st.integers(1, 6), d=st.integers(2, 8), seed=st.integers(0, 10_000),
       density=st.floats(0.0, 1.0))
def test_embedding_cosine_equals_the_float64_loop(b, t, d, seed, density):
    g = torch.Generator().manual_seed(seed)
    h_s, h_t = torch.randn(b, t, d, generator=g), torch.randn(b, t, d, generator=g)
    mask = torch.rand(b, t, generator=g) < density
    ref = _naive(h_s, h_t, mask)
    got_sum = losses.embedding_cosine(h_s, h_t, mask, reduction="sum")
    assert float(got_sum) == pytest.approx(float(ref.sum()), abs=1e-5)
    if ref.numel():
        assert float(losses.embedding_cosine(h_s, h_t, mask, reduction="mean")) == pytest.approx(
            float(ref.mean()), abs=1e-5)
    none = losses.embedding_cosine(h_s, h_t, mask, reduction="none")  # (B,), 0 where nothing is attended
    assert none.shape == (b,) and float(none[~mask.any(1)].abs().sum()) == 0.0


def test_embedding_cosine_is_zero_for_equal_means_and_refuses_other_shapes():
    h = torch.randn(2, 5, 4)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]).bool()
    assert float(losses.embedding_cosine(h, 3.0 * h, mask, reduction="sum")) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="shapes differ"):
        losses.embedding_cosine(h, h[..., :3], mask)


def _encoders():
    teacher = tiny_model("bert", "base", seed=1, **NO_DROPOUT["bert"])
    student = tiny_model("bert", "base", seed=2, num_hidden_layers=2, hidden_size=16, num_attention_heads=2,
                         intermediate_size=32, **NO_DROPOUT["bert"])
    return teacher, student


def _dataset():
    ds = make_dataset("bert-mlm")
    return ds.remove_columns("labels")


def _args(tmp_path, **kw):
    base = dict(alpha_logits=0.0, alpha_task=0.0, alpha_hidden=0.0, alpha_embedding=1.0, max_grad_norm=0.0)
    return make_args(tmp_path, **{**base, **kw})


def test_trainer_term_matches_the_naive_loss_and_accumulation_is_exact(tmp_path):
    teacher, student = _encoders()
    ds = _dataset()
    trainer = DistillationTrainer(model=copy.deepcopy(student), teacher_model=teacher, args=_args(tmp_path),
                                  eval_dataset=ds)
    assert trainer.embedding_pair == (2, 4) and "2_4" in trainer.projections.proj  # widths 16 -> 32
    batch = full_batch(ds)
    with torch.no_grad():
        h_s = trainer.projections(trainer.model.eval()(**batch, output_hidden_states=True).hidden_states[2], (2, 4))
        h_t = teacher(**batch, output_hidden_states=True).hidden_states[4]
    ref = float(_naive(h_s, h_t, batch["attention_mask"]).mean())
    metrics = trainer.evaluate()  # 3 uneven batches of 8 rows: normalised by sequences, not by batches
    assert metrics["eval_loss_embedding"] == pytest.approx(ref, rel=1e-5)
    assert metrics["eval_loss"] == pytest.approx(ref, rel=1e-5)
    grads = []
    for bs, ga in ((8, 1), (4, 2), (2, 4)):
        args = _args(tmp_path, per_device_train_batch_size=bs, gradient_accumulation_steps=ga, max_steps=1,
                     alpha_hidden=0.5)
        run = DistillationTrainer(model=copy.deepcopy(student), teacher_model=teacher, args=args, train_dataset=ds)
        cap = GradCapture(run)
        run.add_callback(cap)
        run.train()
        grads.append(cap.grads[0])
        log = run.state.log_history[0]
        assert log["loss"] == pytest.approx(log["loss_embedding"] + 0.5 * log["loss_hidden"], rel=1e-5)
    assert any(n.startswith("proj.proj.2_4") for n in grads[0])  # the final-layer projection is trained
    for other in grads[1:]:
        for name, g in grads[0].items():
            torch.testing.assert_close(other[name], g, rtol=1e-5, atol=1e-6, msg=name)


def test_a_cached_final_layer_gives_the_live_gradients_and_a_cache_without_it_is_refused(tmp_path):
    teacher, student = _encoders()
    ds = _dataset()
    grads = {}
    with_last = cache_teacher_outputs(teacher, ds, tmp_path / "c4", top_k=0, hidden_layers=[4],
                                      hidden_dtype="float32", progress=False)
    for name, source in (("live", {"teacher_model": teacher}), ("cached", {"teacher_cache": with_last})):
        run = DistillationTrainer(model=copy.deepcopy(student), args=_args(tmp_path, per_device_train_batch_size=4,
                                  gradient_accumulation_steps=2, max_steps=1), train_dataset=ds, **source)
        cap = GradCapture(run)
        run.add_callback(cap)
        run.train()
        grads[name] = cap.grads[0]
    for name, g in grads["live"].items():
        torch.testing.assert_close(grads["cached"][name], g, rtol=1e-5, atol=1e-6, msg=name)
    without = cache_teacher_outputs(teacher, ds, tmp_path / "c2", top_k=0, hidden_layers=[2],
                                    hidden_dtype="float32", progress=False)
    with pytest.raises(HfCompressError, match="hidden_layers"):
        DistillationTrainer(model=copy.deepcopy(student), teacher_cache=without, args=_args(tmp_path),
                            train_dataset=ds)


def test_bad_values_and_the_feature_extraction_rule(tmp_path):
    with pytest.raises(HfCompressError, match="`alpha_embedding` must be >= 0, got -1.0"):
        DistillationArguments(output_dir=str(tmp_path), alpha_embedding=-1.0, report_to="none")
    with pytest.raises(HfCompressError, match="at least one of .*`alpha_embedding`.* must be > 0"):
        DistillationArguments(output_dir=str(tmp_path), alpha_logits=0.0, report_to="none")
    assert check_distill_for_task(DistillConfig(alpha_logits=0.0, alpha_embedding=1.0), "feature-extraction") is None
    assert "alpha_hidden" in check_distill_for_task(DistillConfig(alpha_logits=0.0, alpha_task=1.0),
                                                    "feature-extraction")
