"""The relation term (``alpha_relation``): in-batch cosine matrices of mean-pooled final hidden states,
student vs teacher (``relation_loss`` mse per ordered pair, kl per row over the other sequences).

Pinned against float64 loops over pairs and rows; in the trainer the pairs are formed within each micro-batch
and a window's term is the sum of its micro-batches' pair (row) sums over the window's pair (row) count; it
needs no projection, reads the teacher's final layer from a cache as from a live teacher, and is set from a
recipe."""

import copy
import math

import pytest
import torch
import yaml
from distill_fixtures import NO_DROPOUT, full_batch, make_args, make_dataset
from hypothesis import given, settings
from hypothesis import strategies as st
from tiny_models import tiny_model

from hf_compress import DistillationArguments, DistillationTrainer, HfCompressError, cache_teacher_outputs
from hf_compress.cli import main
from hf_compress.distillation import losses
from hf_compress.distillation.masks import relation_count, window_totals
from hf_compress.distillation.stage import DistillConfig, check_distill_for_task
from hf_compress.errors import RecipeError
from hf_compress.recipe.schema import parse_recipe


def _cosines(h, mask):
    """float64 cosine matrix of the masked means of the sequences that have an attended token."""
    embs = [h[i][m].double().mean(0) for i, m in enumerate(mask.bool()) if m.any()]
    embs = [e / e.norm() for e in embs]
    return [[float(a @ b) for b in embs] for a in embs]


def _naive(h_s, h_t, mask, loss="mse", tau=0.05) -> tuple[float, int]:
    """(sum, items) of the relation loss by loops over ordered pairs (mse) or rows (kl)."""
    s, t = _cosines(h_s, mask), _cosines(h_t, mask)
    n = len(s)
    if loss == "mse":
        return sum((s[i][j] - t[i][j]) ** 2 for i in range(n) for j in range(n) if i != j), n * (n - 1)
    total = 0.0
    for i in range(n if n >= 2 else 0):
        others = [j for j in range(n) if j != i]
        z_s, z_t = [s[i][j] / tau for j in others], [t[i][j] / tau for j in others]
        lse_s, lse_t = (max(z) + math.log(sum(math.exp(v - max(z)) for v in z)) for z in (z_s, z_t))
        total += sum(math.exp(b - lse_t) * ((b - lse_t) - (a - lse_s)) for a, b in zip(z_s, z_t))
    return total, (n if n >= 2 else 0)


def _loss(name, tau=0.05):
    if name == "mse":
        return losses.relation_mse
    return lambda *a, **k: losses.relation_kl(*a, temperature=tau, **k)


@settings(max_examples=40, deadline=None)
@given(b=st.integers(1, 6), t=st.integers(1, 5), d_s=st.integers(2, 6), d_t=st.integers(2, 9),
       seed=st.integers(0, 10_000), density=st.floats(0.2, 1.0), loss=st.sampled_from(["mse", "kl"]),
       tau=st.sampled_from([0.05, 0.5, 2.0]))
def test_relation_losses_equal_the_float64_loops(b, t, d_s, d_t, seed, density, loss, tau):
    g = torch.Generator().manual_seed(seed)
    h_s, h_t = torch.randn(b, t, d_s, generator=g), torch.randn(b, t, d_t, generator=g)  # widths differ
    mask = torch.rand(b, t, generator=g) < density
    mask[0] = False  # an all-padding sequence: in neither matrix
    ref, items = _naive(h_s, h_t, mask, loss, tau)
    fn = _loss(loss, tau)
    assert float(fn(h_s, h_t, mask, reduction="sum")) == pytest.approx(ref, rel=1e-4, abs=1e-4)
    assert items == relation_count(int(mask.any(1).sum()), loss)
    mean = float(fn(h_s, h_t, mask, reduction="mean"))
    assert mean == pytest.approx(ref / max(items, 1), rel=1e-4, abs=1e-4)
    none = fn(h_s, h_t, mask, reduction="none")  # (B,): each sequence's row, 0 without attended tokens
    assert none.shape == (b,) and float(none[~mask.any(1)].abs().sum()) == 0.0
    assert float(none.sum()) == pytest.approx(ref, rel=1e-4, abs=1e-4)


@pytest.mark.parametrize("loss", ["mse", "kl"])
def test_zero_for_equal_states_scale_invariant_and_zero_below_two_sequences(loss):
    g = torch.Generator().manual_seed(0)
    h_s, h_t = torch.randn(5, 6, 8, generator=g), torch.randn(5, 6, 12, generator=g)
    mask = torch.ones(5, 6, dtype=torch.bool)
    mask[1, 3:] = False
    fn = _loss(loss)
    assert float(fn(h_t, h_t, mask)) == pytest.approx(0.0, abs=1e-5)
    base = float(fn(h_s, h_t, mask))
    assert base > 0 and float(fn(3.7 * h_s, 0.2 * h_t, mask)) == pytest.approx(base, rel=1e-4)
    for rows in (1, 0):  # one or no valid sequence: 0, no NaN, and backward still runs
        few = mask.clone()
        few[rows:] = False
        h = h_s.clone().requires_grad_()
        value = fn(h, h_t, few)
        value.backward()
        assert float(value.detach()) == 0.0 and torch.isfinite(h.grad).all()
    with pytest.raises(ValueError, match="differ"):
        fn(h_s, h_t[:4], mask[:4])


def _encoders(student_width=16):
    teacher = tiny_model("bert", "base", seed=1, **NO_DROPOUT["bert"])  # 4 layers, width 32
    student = tiny_model("bert", "base", seed=2, num_hidden_layers=2, hidden_size=student_width,
                         num_attention_heads=2, intermediate_size=32, **NO_DROPOUT["bert"])
    return teacher, student


def _dataset():
    ds = make_dataset("bert-mlm").remove_columns("labels")
    attn = [list(row) for row in ds["attention_mask"]]
    attn[5] = [0] * len(attn[5])  # a sequence with no attended token in the second micro-batch
    return ds.remove_columns("attention_mask").add_column("attention_mask", attn)


def _args(tmp_path, **kw):
    base = dict(alpha_logits=0.0, alpha_task=0.0, alpha_hidden=0.0, alpha_relation=1.0, max_grad_norm=0.0)
    return make_args(tmp_path, **{**base, **kw})


@pytest.mark.parametrize("loss", ["mse", "kl"])
def test_a_window_is_the_micro_batches_pair_sums_over_the_windows_pair_count(tmp_path, loss):
    teacher, student = _encoders()
    ds = _dataset()
    batch = full_batch(ds)
    with torch.no_grad():
        h_s = copy.deepcopy(student)(**batch, output_hidden_states=True).hidden_states[2]  # (8, T, 16)
        h_t = teacher(**batch, output_hidden_states=True).hidden_states[4]  # (8, T, 32)
    mask = batch["attention_mask"]
    halves = [_naive(h_s[i:i + 4], h_t[i:i + 4], mask[i:i + 4], loss) for i in (0, 4)]
    assert [n for _, n in halves] == ([12, 6] if loss == "mse" else [4, 3])  # row 5 is left out
    ref = sum(v for v, _ in halves) / sum(n for _, n in halves)
    whole, n_whole = _naive(h_s, h_t, mask, loss)
    assert ref != pytest.approx(whole / n_whole, rel=1e-3)  # pairs do not cross micro-batches
    micro = [{k: v[i:i + 4] for k, v in batch.items()} for i in (0, 4)]
    assert window_totals(micro, "feature-extraction", loss)[4] == sum(n for _, n in halves)
    args = _args(tmp_path, per_device_train_batch_size=4, gradient_accumulation_steps=2, max_steps=1,
                 per_device_eval_batch_size=4, relation_loss=loss)
    run = DistillationTrainer(model=copy.deepcopy(student), teacher_model=teacher, args=args,
                              train_dataset=ds, eval_dataset=ds)
    assert run.projections is None and run.relation_pair == (2, 4)  # widths 16 vs 32: no projection
    metrics = run.evaluate()  # the same two batches of 4 rows
    assert metrics["eval_loss_relation"] == pytest.approx(ref, rel=1e-4)
    assert metrics["eval_loss"] == pytest.approx(ref, rel=1e-4)
    run.train()
    log = run.state.log_history[0]
    assert log["loss_relation"] == pytest.approx(ref, rel=1e-4)
    assert log["loss"] == pytest.approx(ref, rel=1e-4)


@pytest.mark.parametrize("width,loss", [(32, "mse"), (16, "kl")], ids=["same-width-mse", "narrower-kl"])
def test_a_short_run_lowers_the_relation_loss(tmp_path, width, loss):
    teacher, student = _encoders(width)
    args = _args(tmp_path, per_device_train_batch_size=8, max_steps=12, relation_loss=loss,
                 learning_rate=5e-3)
    run = DistillationTrainer(model=student, teacher_model=teacher, args=args, train_dataset=_dataset())
    run.train()
    logged = [h["loss_relation"] for h in run.state.log_history if "loss_relation" in h]
    assert len(logged) == 12 and all(math.isfinite(v) for v in logged)
    others = ("loss_kd", "loss_hidden", "loss_embedding")
    assert not any(k in h for h in run.state.log_history for k in others)
    assert logged[-1] < 0.7 * logged[0], logged


def test_a_cached_final_layer_gives_the_live_loss_and_a_cache_without_it_is_refused(tmp_path):
    teacher, student = _encoders()
    ds = _dataset()
    with_last = cache_teacher_outputs(teacher, ds, tmp_path / "c4", top_k=0, hidden_layers=[4],
                                      hidden_dtype="float32", progress=False)
    logged = {}
    for name, source in (("live", {"teacher_model": teacher}), ("cached", {"teacher_cache": with_last})):
        args = _args(tmp_path, per_device_train_batch_size=4, gradient_accumulation_steps=2, max_steps=1)
        run = DistillationTrainer(model=copy.deepcopy(student), args=args, train_dataset=ds, **source)
        run.train()
        logged[name] = run.state.log_history[0]["loss_relation"]
    assert logged["cached"] == pytest.approx(logged["live"], rel=1e-5)
    without = cache_teacher_outputs(teacher, ds, tmp_path / "c2", top_k=0, hidden_layers=[2],
                                    hidden_dtype="float32", progress=False)
    refused = (r"`alpha_relation` must be 0 with a teacher_cache without the teacher's final hidden states "
               r"\(layer 4\).*got alpha_relation=1.0")
    with pytest.raises(HfCompressError, match=refused):
        DistillationTrainer(model=copy.deepcopy(student), teacher_cache=without, args=_args(tmp_path),
                            train_dataset=ds)


@pytest.mark.parametrize("field,value,message", [
    ("relation_loss", "cosine", "`relation_loss` must be one of mse, kl, got 'cosine'"),
    ("alpha_relation", -1.0, "`alpha_relation` must be >= 0, got -1.0"),
    ("relation_temperature", 0.0, "`relation_temperature` must be > 0, got 0.0"),
    ("relation_temperature", -0.1, "`relation_temperature` must be > 0, got -0.1"),
    ("relation_temperature", float("inf"), "`relation_temperature` must be a finite number, got inf"),
])
def test_bad_values_are_named(tmp_path, field, value, message):
    with pytest.raises(HfCompressError, match=message):
        DistillationArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True, **{field: value})


def test_alpha_relation_alone_is_a_valid_mix(tmp_path):
    args = DistillationArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True, alpha_logits=0.0,
                                 alpha_relation=0.5, relation_loss="kl", relation_temperature=0.1)
    assert args.term_alphas == (0.0, 0.0, 0.0, 0.0, 0.5)
    cfg = DistillConfig(alpha_logits=0.0, alpha_relation=1.0)
    assert check_distill_for_task(cfg, "feature-extraction") is None


RECIPE = {
    "model": {"config": {"model_type": "bert", "vocab_size": 100, "hidden_size": 32, "num_hidden_layers": 4,
                         "num_attention_heads": 4, "intermediate_size": 64, "max_position_embeddings": 64}},
    "task": "feature-extraction",
    "output_dir": "out",
    "data": {"name": "wiki-summaries"},
    "stages": [{"student_from_teacher": {"num_layers": 2}},
               {"distill": {"alpha_relation": 1.0, "relation_loss": "kl", "relation_temperature": 0.1}}],
}


def test_a_recipe_sets_the_relation_term_and_a_typo_is_refused(tmp_path, capsys):
    distill = parse_recipe(copy.deepcopy(RECIPE)).stages[1].config
    assert (distill.alpha_relation, distill.relation_loss, distill.relation_temperature) == (1.0, "kl", 0.1)
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(RECIPE))
    assert main(["validate", str(path)]) == 0
    capsys.readouterr()
    assert main(["validate", str(path), "--set", "stages.1.distill.alpha_relaton=1.0"]) == 2
    assert "did you mean `alpha_relation`" in capsys.readouterr().err
    bad = copy.deepcopy(RECIPE)
    bad["stages"][1]["distill"]["relation_loss"] = "cosine"
    with pytest.raises(RecipeError, match=r"stages\[1\]\.distill\.relation_loss: `relation_loss` must be"):
        parse_recipe(bad)


def test_a_recipe_with_only_the_relation_term_runs(tmp_path):
    from hf_compress.recipe.runner import run_recipe

    words = "alpha beta gamma delta river city music science history sport art law".split()
    g = torch.Generator().manual_seed(0)
    texts = tmp_path / "t.txt"
    lines = [" ".join(words[int(i)] for i in torch.randint(0, len(words), (10,), generator=g))
             for _ in range(24)]
    texts.write_text("\n".join(lines))
    raw = copy.deepcopy(RECIPE)
    raw.update(data={"name": str(texts)}, output_dir=str(tmp_path / "out"), evaluate=["size"])
    raw["stages"][1]["distill"].update(max_steps=2, batch_size=4, max_length=24, logging_steps=1)
    result = run_recipe(parse_recipe(raw))
    record = result.records[1]
    assert record["steps"] == 2 and math.isfinite(record["train_loss"]) and record["train_loss"] > 0
