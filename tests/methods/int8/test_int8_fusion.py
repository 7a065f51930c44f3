"""Run-time int8 fusions change speed only: same outputs, same state dict, no extra weight memory."""

import pytest
import torch
from tiny_models import tiny_batch, tiny_model

from hf_compress import Int8Linear, quantize_int8
from hf_compress.methods.int8.fusion import fuse_int8, unfuse_int8

# (shared-input groups, fused GELUs); the activation is found through arch's mlp_act (Phi's too)
EXPECTED = {"bert": (4, 4), "gpt2": (0, 4), "llama": (8, 0), "phi": (4, 4)}


@pytest.mark.parametrize("model_type", sorted(EXPECTED))
@pytest.mark.parametrize("mode", ["w8a8", "w8a16"])
def test_fused_equals_unfused(model_type, mode, use_w8a8_kernel):
    # the exact int8 reference: fbgemm's 7-bit rounding turns the fused GELU's last-bit differences into
    # whole activation steps (see test_fbgemm_fused_model_stays_close)
    use_w8a8_kernel("int_mm")
    batch = tiny_batch()
    plain = quantize_int8(tiny_model(model_type), mode=mode, fuse=False)
    fused = quantize_int8(tiny_model(model_type), mode=mode, fuse=False)
    counts = fuse_int8(fused)
    assert (counts["shared_input_groups"], counts["fused_activations"]) == EXPECTED[model_type]
    with torch.no_grad():
        torch.testing.assert_close(fused(**batch).logits, plain(**batch).logits, rtol=1e-5, atol=1e-5)
    a, b = fused.state_dict(), plain.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("model_type", sorted(EXPECTED))
def test_fbgemm_fused_model_stays_close(model_type, use_w8a8_kernel):
    use_w8a8_kernel("fbgemm")
    batch = tiny_batch()
    plain = quantize_int8(tiny_model(model_type), mode="w8a8", fuse=False)
    fused = quantize_int8(tiny_model(model_type), mode="w8a8")
    assert any(isinstance(m, Int8Linear) and (m._group is not None or m.post_act is not None)
               for m in fused.modules())
    with torch.no_grad():
        a, b = fused(**batch).logits.flatten(0, 1), plain(**batch).logits.flatten(0, 1)
    assert torch.nn.functional.cosine_similarity(a, b).min() > 0.999


def test_members_view_the_group_weight_and_regroup_after_reassignment():
    model = quantize_int8(tiny_model("llama"), mode="w8a8")
    attn = model.model.layers[0].self_attn
    group = attn.q_proj._group
    assert group is attn.k_proj._group is attn.v_proj._group
    ptr = group.weight.untyped_storage().data_ptr()
    assert all(m.weight.untyped_storage().data_ptr() == ptr for m in (attn.q_proj, attn.k_proj, attn.v_proj))
    x = torch.randn(2, 5, 32)
    attn.k_proj.weight = attn.k_proj.weight.clone() // 2  # e.g. replaced by load_state_dict(assign=True)
    torch.testing.assert_close(attn.q_proj(x), _ungrouped(attn.q_proj)(x))  # regroups: q, k, v recomputed
    torch.testing.assert_close(attn.k_proj(x), _ungrouped(attn.k_proj)(x))


def test_in_place_change_of_the_input_is_not_served_from_cache():
    model = quantize_int8(tiny_model("llama"), mode="w8a8")
    attn = model.model.layers[0].self_attn
    x = torch.randn(2, 5, 32)
    attn.q_proj(x)  # computes q, k and v; k and v kept for their own calls
    x.mul_(2)
    ref = Int8Linear.forward(_ungrouped(attn.k_proj), x)
    torch.testing.assert_close(attn.k_proj(x), ref)


def _ungrouped(layer):
    clone = Int8Linear(layer.in_features, layer.out_features, bias=layer.bias is not None, mode=layer.mode)
    clone.load_state_dict(layer.state_dict())
    return clone


def test_unfuse_restores_independent_layers():
    model = quantize_int8(tiny_model("bert"), mode="w8a8")
    unfuse_int8(model)
    q = model.bert.encoder.layer[0].attention.self.query
    assert q._group is None and q.weight.is_contiguous()
    assert q.weight.untyped_storage().nbytes() == q.weight.numel()
