"""prune_heads: equivalence with zeroed heads, exact parameter savings, GQA shapes, fresh-process reload."""

from __future__ import annotations

import ast
import copy
import json
import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from tiny_models import tiny_batch, tiny_model

from hf_compress import arch, head_importance, prune_heads
from hf_compress.errors import SurgeryError
from hf_compress.methods.heads.export import layer_head_counts
from hf_compress.methods.heads.prune import HeadPruningConfig, prune_heads_by_importance

REMOTE = Path(__file__).parents[3] / "hf_compress" / "methods" / "heads" / "remote_code" / "modeling_pruned_heads.py"


def _zeroed_reference(model, plan):
    """The unpruned model with the planned heads' output-projection input columns set to zero."""
    ref = copy.deepcopy(model)
    spec, d = arch.get_arch(ref), arch.head_dim(ref)
    for layer, heads in plan.items():
        o = arch.get_submodule(arch.get_layers(ref)[layer], spec.o)
        with torch.no_grad():
            for h in heads:
                if spec.conv1d:
                    o.weight[h * d:(h + 1) * d, :] = 0  # Conv1D weight (in, out)
                else:
                    o.weight[:, h * d:(h + 1) * d] = 0
    return ref


def _logits(model, batch):
    with torch.no_grad():
        logits = model(**batch).logits
    return logits[batch["attention_mask"].bool()] if logits.dim() == 3 else logits  # skip padded positions


def _n_params(model):
    return sum(p.numel() for p in model.parameters())


def _check_equivalent(model, plan, export="physical"):
    batch = tiny_batch()
    expected = _logits(_zeroed_reference(model, plan), batch)
    before = _n_params(model)
    assert prune_heads(model, plan, export=export) is model
    torch.testing.assert_close(_logits(model, batch), expected, rtol=1e-5, atol=1e-5)
    return before - _n_params(model)


# (model_type, plan, expected parameters removed as a function of hidden h and head size d)
CASES = [
    # 4 heads go: q/k/v rows and biases, o columns
    ("bert", {0: [1], 2: [0, 2], 3: [3]}, lambda h, d: 4 * (3 * (h * d + d) + h * d)),
    ("gpt2", {1: [3], 3: [0, 1, 2]}, lambda h, d: 4 * (3 * (h * d + d) + h * d)),
    # llama: 4 heads / 2 KV heads; one query head from each group in every layer: q rows and o cols only
    ("llama", {layer: [1, 2] for layer in range(4)}, lambda h, d: 4 * 2 * (h * d + h * d)),
    # a whole KV group in every layer (layer 2 drops the other group): q, o and k/v rows go
    ("llama", {0: [0, 1], 1: [0, 1], 2: [2, 3], 3: [0, 1]}, lambda h, d: 4 * (2 * 2 * h * d + 2 * h * d)),
    # qwen2 has q/k/v biases: a whole group goes, q rows+bias (2 heads), o cols (2 heads), k and v rows+bias
    ("qwen2", {layer: [0, 1] for layer in range(4)},
     lambda h, d: 4 * (2 * (h * d + d) + 2 * h * d + 2 * (h * d + d))),
    ("phi3", {layer: [1, 3] for layer in range(4)}, lambda h, d: 4 * 2 * (h * d + h * d)),  # fused qkv_proj
]


@pytest.mark.parametrize("model_type,plan,removed", CASES, ids=[c[0] for c in CASES])
def test_physical_equals_zeroed_heads_and_saves_exact_params(model_type, plan, removed):
    model = tiny_model(model_type)
    h, d = model.config.hidden_size, arch.head_dim(model)
    assert _check_equivalent(model, plan) == removed(h, d)


def test_llama_config_follows_gqa_shape():
    model = tiny_model("llama")
    prune_heads(model, {0: [0, 1], 1: [0, 1], 2: [2, 3], 3: [0, 1]})
    cfg = model.config
    assert (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim) == (2, 1, 8)
    attn = arch.get_layers(model)[0].self_attn
    assert attn.num_key_value_groups == 2 and attn.scaling == pytest.approx(8 ** -0.5)


@pytest.mark.parametrize("plan", [{0: [0]}, {0: [0, 1], 1: [0, 2], 2: [1, 3], 3: [0, 3]}])
def test_gqa_keeps_shape_when_groups_differ(plan):
    """Pruning query heads unevenly across KV groups (or layers) keeps the shape and zeroes them instead."""
    model = tiny_model("llama")
    assert _check_equivalent(model, plan) == 0
    assert (model.config.num_attention_heads, model.config.num_key_value_heads) == (4, 2)


def test_invalid_head_count_is_raised_to_a_valid_one(caplog):
    """Llama requires hidden_size % num_attention_heads == 0: 3 of 4 heads (hidden 32) is refused, 4 kept."""
    model = tiny_model("llama", num_key_value_heads=4)
    with caplog.at_level(logging.WARNING, logger="hf_compress"):
        assert _check_equivalent(model, {layer: [0] for layer in range(4)}) == 0
    assert "does not accept" in caplog.text and model.config.num_attention_heads == 4
    qwen = tiny_model("qwen2", num_key_value_heads=4)  # no such validator: 3 heads of size 8, hidden 32
    h, d = 32, 8
    assert _check_equivalent(qwen, {layer: [2] for layer in range(4)}) == 4 * (3 * (h * d + d) + h * d)
    assert (qwen.config.num_attention_heads, qwen.config.head_dim) == (3, 8)


@pytest.mark.parametrize("model_type", ["bert", "gpt2", "llama", "distilbert"])
def test_masked_export_keeps_shapes(model_type):
    model = tiny_model(model_type)
    assert _check_equivalent(model, {0: [1], 3: [0, 2]}, export="masked") == 0
    assert type(model).__module__.startswith("transformers.")


def test_bert_pruned_twice_records_original_indices():
    model = tiny_model("bert")
    prune_heads(model, {0: [1]})
    prune_heads(model, {0: [0, 2]})  # current numbering: original heads 0 and 3
    assert model.config.pruned_heads == {"0": [0, 1, 3]}
    assert layer_head_counts(model) == [1, 4, 4, 4]


@pytest.mark.parametrize("plan,match", [({0: [0, 1, 2, 3]}, "all 4 heads"), ({0: [4]}, r"\[4\]"),
                                        ({7: [0]}, "layer 7"), ([0], "dict")])
def test_bad_plans_are_refused(plan, match):
    with pytest.raises(SurgeryError, match=match):
        prune_heads(tiny_model("gpt2"), plan)


def test_unsupported_physical_targets_are_refused():
    with pytest.raises(SurgeryError, match="export='masked'"):
        prune_heads(tiny_model("distilbert"), {0: [0]})
    with pytest.raises(SurgeryError, match="export must be"):
        prune_heads(tiny_model("bert"), {0: [0]}, export="zip")


def test_remote_code_imports_only_torch_and_transformers():
    tree = ast.parse(REMOTE.read_text())
    roots = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    roots |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert roots <= {"torch", "transformers"}, roots


_RELOAD = textwrap.dedent("""
    import json, sys, torch, transformers
    results = {}
    for name, spec in json.loads(sys.argv[1]).items():
        cls = getattr(transformers, spec["auto"])
        model = cls.from_pretrained(spec["path"], trust_remote_code=spec["remote"]).eval()
        data = torch.load(spec["path"] + "/expected.pt")
        with torch.no_grad():
            logits = model(**data["batch"]).logits
        if logits.dim() == 3:
            logits = logits[data["batch"]["attention_mask"].bool()]
        results[name] = [type(model).__module__, (logits - data["logits"]).abs().max().item(),
                         sum(p.numel() for p in model.parameters())]
    results["hf_compress_imported"] = any(m.startswith("hf_compress") for m in sys.modules)
    print(json.dumps(results))
""")


def test_saved_checkpoints_reload_in_a_fresh_process_without_hf_compress(tmp_path):
    batch = tiny_batch()
    cases = {
        "bert": ("bert", "AutoModelForMaskedLM", True, "physical", {0: [1], 2: [0, 2]}),
        "bert_masked": ("bert", "AutoModelForMaskedLM", False, "masked", {0: [1], 2: [0, 2]}),
        "gpt2": ("gpt2", "AutoModelForCausalLM", True, "physical", {1: [3], 3: [0, 1, 2]}),
        "roberta_seqcls": ("roberta", "AutoModelForSequenceClassification", True, "physical", {1: [0, 3]}),
        "llama": ("llama", "AutoModelForCausalLM", False, "physical",
                  {0: [0, 1], 1: [0, 1], 2: [2, 3], 3: [0, 1]}),
        "qwen2_3heads": ("qwen2", "AutoModelForCausalLM", False, "physical", {i: [2] for i in range(4)}),
    }
    specs, params = {}, {}
    for name, (model_type, auto, remote, export, plan) in cases.items():
        task = "sequence-classification" if "seqcls" in name else None
        overrides = {"num_key_value_heads": 4} if name == "qwen2_3heads" else {}
        model = prune_heads(tiny_model(model_type, task, **overrides), plan, export=export)
        path = tmp_path / name
        model.save_pretrained(path)
        with torch.no_grad():
            torch.save({"batch": batch, "logits": _logits(model, batch)}, path / "expected.pt")
        specs[name] = {"auto": auto, "path": str(path), "remote": remote}
        params[name] = _n_params(model)
        assert (path / "modeling_pruned_heads.py").exists() == remote
        assert json.loads((path / "config.json").read_text())["model_type"] == model_type
    env = {"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HF_HOME": str(tmp_path / "hf")}
    proc = subprocess.run([sys.executable, "-c", _RELOAD, json.dumps(specs)], capture_output=True, text=True,
                          timeout=240, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    assert results.pop("hf_compress_imported") is False
    for name, (module, diff, n_params) in results.items():
        assert diff < 1e-5, name
        assert n_params == params[name], name
        expected_module = "transformers_modules" if specs[name]["remote"] else "transformers.models"
        assert module.startswith(expected_module), name


def test_prune_by_importance_removes_the_lowest_scoring_kv_group():
    model = tiny_model("llama")
    batches = [tiny_batch(seed=3)]
    scores = head_importance(model, batches, progress=False)
    weakest = scores.view(4, 2, 2).sum(-1).argmin(-1)  # (L,) the KV group with the lower summed score
    reference = _zeroed_reference(model, {i: [2 * int(g), 2 * int(g) + 1] for i, g in enumerate(weakest)})
    _, plan = prune_heads_by_importance(model, batches, HeadPruningConfig(fraction=0.5, whole_groups=True))
    assert plan == {i: [2 * int(g), 2 * int(g) + 1] for i, g in enumerate(weakest)}
    assert (model.config.num_attention_heads, model.config.num_key_value_heads) == (2, 1)
    batch = tiny_batch()
    torch.testing.assert_close(_logits(model, batch), _logits(reference, batch), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("task", ["base", "masked-lm"])
def test_head_pruned_bert_still_returns_hidden_states(task):
    ids = torch.randint(5, 100, (2, 6), generator=torch.Generator().manual_seed(1))
    model = prune_heads(tiny_model("bert", task), {1: [2]})
    out = model(input_ids=ids, output_hidden_states=True)
    assert out.hidden_states is not None and len(out.hidden_states) == model.config.num_hidden_layers + 1
