"""Teacher-output cache: exact round trip, training from it equals the live teacher at k = V, resuming, refusals."""

import copy
import json
import os

import datasets
import pytest
import torch
from distill_fixtures import GradCapture, make_args, make_dataset, make_models

from hf_compress import DistillationTrainer, HfCompressError, cache_teacher_outputs
from hf_compress.distillation.cache_format import META_FILE

V = 100


def _train_grads(tmp_path, student, ds, bs, ga, sampling="sequential", **source):
    args = make_args(tmp_path, per_device_train_batch_size=bs, gradient_accumulation_steps=ga, max_steps=1,
                     max_grad_norm=0.0, train_sampling_strategy=sampling, hidden_loss="mse+cosine",
                     layer_map="uniform")
    trainer = DistillationTrainer(model=copy.deepcopy(student), args=args, train_dataset=ds, **source)
    cap = GradCapture(trainer)
    trainer.add_callback(cap)
    trainer.train()
    return cap.grads[0], trainer.state.log_history[0]["loss"]


@pytest.mark.parametrize("kind", ["llama", "bert-mlm", "bert-cls"])
def test_cached_teacher_at_k_equal_v_gives_the_live_gradients(tmp_path, kind):
    teacher, student = make_models(kind)
    ds = make_dataset(kind)
    k = 3 if kind == "bert-cls" else V
    folder = cache_teacher_outputs(teacher, ds, tmp_path / "cache", top_k=k, hidden_layers=[2, 4], hidden_dtype="float32",
                                   batch_size=3, shard_rows=3, progress=False)
    assert datasets.load_from_disk(folder).num_rows == len(ds)
    live, live_loss = _train_grads(tmp_path, student, ds, 8, 1, teacher_model=teacher)
    for bs, ga, sampling in ((8, 1, "sequential"), (4, 2, "random")):  # shuffled order: rows follow examples
        got, loss = _train_grads(tmp_path, student, ds, bs, ga, sampling, teacher_cache=folder)
        assert got.keys() == live.keys()
        for name, g in live.items():
            torch.testing.assert_close(got[name], g, rtol=1e-5, atol=1e-6, msg=name)
        assert loss == pytest.approx(live_loss, rel=1e-5)


def test_rows_hold_the_exact_top_k_and_tail(tmp_path):
    teacher, _ = make_models("llama")
    ds = make_dataset("llama")
    data = datasets.load_from_disk(cache_teacher_outputs(teacher, ds, tmp_path / "c", top_k=8, max_length=10,
                                                         progress=False)).with_format("torch")
    row = data[5]
    n = min(10, len(ds[5]["input_ids"]))
    ids = torch.tensor(ds[5]["input_ids"][:n])
    assert torch.equal(row["input_ids"].long(), ids)
    with torch.no_grad():
        logits = teacher(input_ids=ids[None]).logits[0]  # (n, V)
    values, top = logits.topk(8, -1)
    assert torch.equal(row["topk_ids"].view(n, 8).long(), top)
    torch.testing.assert_close(row["topk_logits"].view(n, 8), values, rtol=1e-5, atol=1e-5)
    tail = torch.logsumexp(logits.scatter(-1, top, float("-inf")), -1)
    torch.testing.assert_close(row["tail_logsumexp"], tail, rtol=1e-5, atol=1e-5)
    # the exact full log-sum-exp comes back from the k logits and the tail
    full = torch.logsumexp(torch.cat([row["topk_logits"].view(n, 8), row["tail_logsumexp"][:, None]], -1), -1)
    torch.testing.assert_close(full, logits.logsumexp(-1), rtol=1e-5, atol=1e-5)


def test_killed_writer_resumes_and_never_mixes_teachers(tmp_path, monkeypatch):
    teacher, student = make_models("llama")
    ds = make_dataset("llama", 16)
    folder = str(tmp_path / "c")
    whole = cache_teacher_outputs(teacher, ds, tmp_path / "whole", top_k=5, shard_rows=4, progress=False)
    from hf_compress.distillation import cache as cache_mod

    real, calls = cache_mod._write_shard, []

    def dying(*a, **kw):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(1)
        return real(*a, **kw)

    monkeypatch.setattr(cache_mod, "_write_shard", dying)
    with pytest.raises(KeyboardInterrupt):
        cache_teacher_outputs(teacher, ds, folder, top_k=5, shard_rows=4, progress=False)
    with pytest.raises(HfCompressError, match="incomplete .2 of 4 shards.*rerun cache_teacher_outputs"):
        DistillationTrainer(model=student, teacher_cache=folder, args=make_args(tmp_path), train_dataset=ds)
    other = copy.deepcopy(teacher)
    other.lm_head.weight.data += 1
    with pytest.raises(HfCompressError, match="another teacher"):
        cache_teacher_outputs(other, ds, folder, top_k=5, shard_rows=4, progress=False)
    with pytest.raises(HfCompressError, match="another top_k: `top_k` must be 5 to use it, got 6"):
        cache_teacher_outputs(teacher, ds, folder, top_k=6, shard_rows=4, progress=False)
    monkeypatch.setattr(cache_mod, "_write_shard", real)
    calls.clear()
    cache_teacher_outputs(teacher, ds, folder, top_k=5, shard_rows=4, progress=False)
    a, b = datasets.load_from_disk(folder), datasets.load_from_disk(whole)
    assert a.to_dict() == b.to_dict()
    meta = json.load(open(os.path.join(folder, META_FILE)))
    assert meta["complete"] and meta["tokens"] == sum(len(r) for r in ds["input_ids"])


def test_bad_caches_and_options_are_refused_before_training(tmp_path):
    teacher, student = make_models("llama")
    ds = make_dataset("llama")
    args = make_args(tmp_path, alpha_hidden=0.0)
    with pytest.raises(HfCompressError, match=r"`top_k` must be an integer in \[0, 100\].*got 101"):
        cache_teacher_outputs(teacher, ds, tmp_path / "x", top_k=101)
    assert not (tmp_path / "x").exists()
    folder = cache_teacher_outputs(teacher, ds, tmp_path / "c", top_k=4, max_length=8, progress=False)
    with pytest.raises(HfCompressError, match="another dataset"):
        DistillationTrainer(model=student, teacher_cache=folder, args=args, train_dataset=make_dataset("llama", seed=1))
    with pytest.raises(HfCompressError, match="max_length=8: training rows must be at most that long, got a row of 12"):
        DistillationTrainer(model=student, teacher_cache=folder, args=args, train_dataset=ds)
    short = ds.map(lambda r: {k: r[k][:8] for k in ("input_ids", "attention_mask", "labels")})
    folder = cache_teacher_outputs(teacher, short, tmp_path / "s", top_k=4, max_length=8, progress=False)
    with pytest.raises(HfCompressError, match=r"must hold the teacher hidden states \[2, 4\]"):
        DistillationTrainer(model=student, teacher_cache=folder, args=make_args(tmp_path), train_dataset=short)
    with pytest.raises(HfCompressError, match="`logit_loss` must be forward_kl, reverse_kl or jsd"):
        DistillationTrainer(model=student, teacher_cache=folder, train_dataset=short,
                            args=make_args(tmp_path, alpha_hidden=0.0, logit_loss="mse"))
    DistillationTrainer(model=student, teacher_cache=folder, train_dataset=short, eval_dataset=short,  # no refusal:
                        args=make_args(tmp_path, alpha_hidden=0.0, eval_strategy="steps", eval_steps=1))  # see test_cached_eval
    with pytest.raises(HfCompressError, match="exactly one of `teacher_model`.*got both"):
        DistillationTrainer(model=student, teacher_model=teacher, teacher_cache=folder, args=args)
    with pytest.raises(HfCompressError, match="must be a folder written by cache_teacher_outputs"):
        DistillationTrainer(model=student, teacher_cache=str(tmp_path), args=args, train_dataset=short)
    trainer = DistillationTrainer(model=student, teacher_cache=datasets.load_from_disk(folder), args=args,
                                  train_dataset=short)
    assert trainer.teacher is None
    trainer.train()


def test_cli_cache_teacher_writes_a_loadable_cache_and_refuses_bad_folders(tmp_path, capsys):
    from hf_compress.cli import main

    teacher, _ = make_models("gpt2")
    teacher.save_pretrained(tmp_path / "teacher")
    ds = make_dataset("gpt2")
    ds.save_to_disk(str(tmp_path / "data"))
    out = str(tmp_path / "cache")
    argv = ["cache-teacher", str(tmp_path / "teacher"), str(tmp_path / "data"), "--output-dir", out,
            "--top-k", "4", "--hidden-layers", "1,2", "--json"]
    assert main(argv) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["rows"] == 8 and info["tokens"] == sum(len(r) for r in ds["input_ids"]) and info["complete"]
    assert datasets.load_from_disk(out).column_names == ["input_ids", "topk_ids", "topk_logits", "tail_logsumexp",
                                                         "hidden_1", "hidden_2"]
    bad = str(tmp_path / "c2")
    assert main(argv[:2] + [str(tmp_path / "teacher"), "--output-dir", bad]) == 2  # not a save_to_disk folder
    assert main([argv[0], str(tmp_path / "nope"), str(tmp_path / "data"), "--output-dir", bad]) == 2
    assert not os.path.exists(bad)
    assert main(argv[:-1] + ["--hidden-layers", "a,b"]) == 2


def test_cache_of_another_tokenizer_or_vocabulary_is_refused(tmp_path):
    from distill_fixtures import word_tokenizer as _tokenizer
    from tiny_models import tiny_model

    teacher, student = make_models("gpt2")
    ds = make_dataset("gpt2")
    args = make_args(tmp_path, alpha_hidden=0.0)
    folder = cache_teacher_outputs(teacher, ds, tmp_path / "c", top_k=4, tokenizer=_tokenizer(100), progress=False)
    with pytest.raises(HfCompressError, match="another tokenizer"):
        DistillationTrainer(model=student, teacher_cache=folder, args=args, train_dataset=ds,
                            processing_class=_tokenizer(100, "x"))
    DistillationTrainer(model=student, teacher_cache=folder, args=args, train_dataset=ds,
                        processing_class=_tokenizer(100))
    big = cache_teacher_outputs(tiny_model("gpt2", vocab_size=112), ds, tmp_path / "b", top_k=4, progress=False)
    with pytest.raises(HfCompressError, match="holds logits over 112 ids but the student has 100"):
        DistillationTrainer(model=student, teacher_cache=big, args=args, train_dataset=ds)
