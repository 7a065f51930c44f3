"""Scores and masks of hf_compress.methods.sparsity.sparsify against naive references (loops and Python sorts)."""

from __future__ import annotations

import copy

import pytest
import torch
from tiny_models import tiny_batch, tiny_model
from transformers.pytorch_utils import Conv1D

from hf_compress import SurgeryError, sparsify, sparsity_report
from hf_compress.methods.sparsity.sparsify import SparsityConfig, find_targets


def _targets(model) -> dict:
    return {n: m for block in find_targets(model, ["lm_head"]) for n, m in block.items()}


def _rows(module) -> torch.Tensor:
    """(out, in) copy of a weight, transposing GPT-2's Conv1D [in, out]."""
    w = module.weight.detach().clone()
    return w.t().contiguous() if isinstance(module, Conv1D) else w


def _naive_row_mask(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    keep = torch.ones_like(scores, dtype=torch.bool)
    k = int(scores.shape[1] * sparsity)
    for r in range(scores.shape[0]):
        order = sorted(range(scores.shape[1]), key=lambda j: float(scores[r, j]))
        for j in order[:k]:
            keep[r, j] = False
    return keep


def _naive_flat_mask(scores: list[torch.Tensor], sparsity: float) -> list[torch.Tensor]:
    values = [(float(v), i, j) for i, s in enumerate(scores) for j, v in enumerate(s.flatten().tolist())]
    values.sort()
    keep = [torch.ones(s.numel(), dtype=torch.bool) for s in scores]
    for _, i, j in values[: int(len(values) * sparsity)]:
        keep[i][j] = False
    return [k.view_as(s) for k, s in zip(keep, scores)]


def _naive_nm_mask(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    keep = torch.zeros_like(scores, dtype=torch.bool)
    for r in range(scores.shape[0]):
        for g in range(0, scores.shape[1], m):
            order = sorted(range(g, g + m), key=lambda j: -float(scores[r, j]))
            for j in order[:n]:
                keep[r, j] = True
    return keep


@pytest.mark.parametrize("model_type", ["llama", "gpt2"])
@pytest.mark.parametrize("scope", ["per_row", "per_layer", "global"])
def test_magnitude_equals_naive_topk_projection(model_type, scope):
    model = tiny_model(model_type)
    before = {n: _rows(m).abs() for n, m in _targets(model).items()}
    sparsify(model, sparsity=0.3, method="magnitude", scope=scope)
    after = {n: _rows(m) for n, m in _targets(model).items()}
    if scope == "per_row":
        expected = {n: _naive_row_mask(s, 0.3) for n, s in before.items()}
    elif scope == "per_layer":
        expected = {n: _naive_flat_mask([s], 0.3)[0] for n, s in before.items()}
    else:
        expected = dict(zip(before, _naive_flat_mask(list(before.values()), 0.3)))
    for name, keep in expected.items():
        assert torch.equal(after[name] != 0, keep), name
        # kept weights are untouched: the projection changes nothing else
        assert torch.equal(after[name][keep].abs(), before[name][keep]), name


@pytest.mark.parametrize("model_type", ["llama", "gpt2"])
@pytest.mark.parametrize("pattern", ["2:4", "1:4"])
def test_nm_pattern_along_input_dimension(model_type, pattern):
    n, m = map(int, pattern.split(":"))
    model = tiny_model(model_type)
    before = {name: _rows(mod).abs() for name, mod in _targets(model).items()}
    sparsify(model, method="magnitude", pattern=pattern)
    for name, mod in _targets(model).items():
        rows = _rows(mod)  # (out, in): groups of m consecutive inputs in each output row
        nonzero = (rows != 0).reshape(rows.shape[0], -1, m).sum(-1)
        assert (nonzero == n).all(), name
        assert torch.equal(rows != 0, _naive_nm_mask(before[name], n, m)), name
    assert model.config.sparsity_config["sparsity_structure"] == pattern
    assert model.config.sparsity_config["global_sparsity"] == pytest.approx(1 - n / m)


def _naive_wanda(model, calibration, sparsity, sequential: bool) -> dict[str, torch.Tensor]:
    """Reference Wanda: full-model forwards capture every target's inputs; norms by torch.linalg.norm over
    the non-padding tokens; per-row Python sorts; sequential = block i sees blocks < i already pruned."""
    model = copy.deepcopy(model)
    blocks = find_targets(model, ["lm_head"])

    def norms_of(targets):
        seen = {n: [] for n in targets}
        hooks = [m.register_forward_hook(lambda mod, a, o, n=n: seen[n].append(a[0].detach()))
                 for n, m in targets.items()]
        with torch.no_grad():
            for batch in calibration:
                model(**batch)
        for h in hooks:
            h.remove()
        out = {}
        for n, xs in seen.items():
            rows = [x.reshape(-1, x.shape[-1])[b["attention_mask"].reshape(-1).bool()]
                    for x, b in zip(xs, calibration)]
            out[n] = torch.linalg.norm(torch.cat(rows).double(), dim=0)
        return out

    all_targets = {n: m for b in blocks for n, m in b.items()}
    dense_norms = None if sequential else norms_of(all_targets)
    keep = {}
    for block in blocks:
        norms = norms_of(block) if sequential else dense_norms
        for n, module in block.items():
            scores = _rows(module).abs().double() * norms[n][None, :]
            keep[n] = _naive_row_mask(scores, sparsity)
        with torch.no_grad():
            for n, module in block.items():
                k = keep[n].t() if isinstance(module, Conv1D) else keep[n]
                module.weight.mul_(k)
    return keep


@pytest.mark.parametrize("model_type", ["llama", "gpt2", "bert"])
def test_wanda_matches_naive_reference(model_type):
    model = tiny_model(model_type)
    calibration = [tiny_batch(2, 12, seed=1), tiny_batch(3, 10, seed=2)]  # padded: padding excluded
    for sequential in (True, False):
        expected = _naive_wanda(model, calibration, 0.5, sequential)
        pruned = sparsify(copy.deepcopy(model), method="wanda", calibration=calibration,
                          sequential=sequential)
        got = {n: _rows(m) != 0 for n, m in _targets(pruned).items()}
        for name in expected:
            assert torch.equal(got[name], expected[name]), (sequential, name)
    # the reference is discriminating: Wanda differs from magnitude, and sequential from one pass
    magnitude = {n: _rows(m) != 0 for n, m in _targets(sparsify(copy.deepcopy(model))).items()}
    assert any(not torch.equal(magnitude[n], expected[n]) for n in expected)
    seq = _naive_wanda(model, calibration, 0.5, True)
    assert any(not torch.equal(seq[n], expected[n]) for n in expected)


def test_wanda_ignores_padding_tokens(llama_lm):
    batch = tiny_batch(2, 12, seed=3)
    other = {k: v.clone() for k, v in batch.items()}
    other["input_ids"][-1, 6:] = 77  # different tokens, only where attention_mask == 0
    a = sparsify(copy.deepcopy(llama_lm), method="wanda", calibration=[batch])
    b = sparsify(copy.deepcopy(llama_lm), method="wanda", calibration=[other])
    for (name, ma), mb in zip(_targets(a).items(), _targets(b).values()):
        assert torch.equal(ma.weight, mb.weight), name


def test_ignore_names_and_regexes(llama_lm):
    embed, head = llama_lm.model.embed_tokens.weight.clone(), llama_lm.lm_head.weight.clone()
    sparsify(llama_lm, ignore=["re:.*mlp\\..*", "model.layers.0.self_attn.q_proj"])
    report = sparsity_report(llama_lm)
    for name, (zeros, numel) in report.modules.items():
        dense = ".mlp." in name or name == "model.layers.0.self_attn.q_proj"
        assert (zeros == 0) if dense else (zeros == numel // 2), name
    # embeddings, norms and the head are never touched
    assert torch.equal(llama_lm.model.embed_tokens.weight, embed)
    assert torch.equal(llama_lm.lm_head.weight, head)


def test_report_counts_zeros(gpt2_lm):
    sparsify(gpt2_lm, sparsity=0.25, scope="per_layer")
    report = sparsity_report(gpt2_lm)
    state = gpt2_lm.state_dict()
    for name, (zeros, numel) in report.modules.items():
        assert zeros == int((state[name + ".weight"] == 0).sum()) == int(numel * 0.25)
    assert report.sparsity == pytest.approx(0.25)
    assert "| **targets total** |" in str(report)
    assert gpt2_lm.config.sparsity_config["global_sparsity"] == pytest.approx(report.sparsity)


def test_sparsify_again_never_revives_zeros(llama_lm):
    sparsify(llama_lm, sparsity=0.5)
    zeros = {n: m.weight == 0 for n, m in _targets(llama_lm).items()}
    sparsify(llama_lm, sparsity=0.75, scope="per_layer")  # a lower target is refused (issue 15 item 21)
    for n, m in _targets(llama_lm).items():
        assert (m.weight[zeros[n]] == 0).all()


@pytest.mark.parametrize("kwargs, needle", [
    (dict(method="obs"), "'obs'"),
    (dict(scope="rows"), "'rows'"),
    (dict(pattern="4:2"), "'4:2'"),
    (dict(pattern="2-4"), "'2-4'"),
    (dict(sparsity=1.0), "1.0"),
    (dict(sparsity=-0.1), "-0.1"),
    (dict(sparsity="half"), "'half'"),
    (dict(pattern="2:4", sparsity=0.3), "0.3"),
    (dict(pattern="2:4", scope="global"), "'global'"),
    (dict(scope="global", sequential=True), "True"),
    (dict(ignore=["re:("]), "'re:('"),
])
def test_config_rejects_bad_values(kwargs, needle):
    with pytest.raises(SurgeryError, match="must|not a valid") as info:
        SparsityConfig(**kwargs)
    assert needle in str(info.value) and isinstance(info.value, ValueError)


def test_bad_calls_leave_clear_errors(llama_lm):
    with pytest.raises(SurgeryError, match="calibration"):
        sparsify(llama_lm, method="wanda")
    with pytest.raises(SurgeryError, match="either `config` or keyword"):
        sparsify(llama_lm, config=SparsityConfig(), method="wanda")
    with pytest.raises(SurgeryError, match="leaves nothing to prune"):
        sparsify(llama_lm, ignore=["re:.*"])
    assert sparsity_report(llama_lm).zeros == 0  # nothing was changed by the failed calls
    odd = tiny_model("llama", hidden_size=36, head_dim=10)
    with pytest.raises(SurgeryError, match="multiple of 8"):
        sparsify(odd, pattern="4:8")
    assert sparsity_report(odd).zeros == 0
