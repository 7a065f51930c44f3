"""drop_layers bad input, student_from_teacher, spread_layers."""

import copy
import itertools

import pytest
import torch
from tiny_models import tiny_model

from hf_compress import SurgeryError, UnsupportedArchitectureError, arch, drop_layers, student_from_teacher
from hf_compress.methods.layers.drop import spread_layers


def snapshot(model):
    return copy.deepcopy(model.config.to_dict()), {k: v.clone() for k, v in model.state_dict().items()}


def assert_unchanged(model, snap):
    config, state = snap
    assert model.config.to_dict() == config
    now = model.state_dict()
    assert now.keys() == state.keys()
    assert all(torch.equal(now[k], state[k]) for k in state)


@pytest.mark.parametrize(
    "bad, match",
    [
        ([1, 1], r"repeats layer\(s\) \[1\]"),
        ([4], r"layer 4.*4 layers: use 0\.\.3"),
        ([-1], r"layer -1"),
        ([0, 1, 2, 3], "drops all 4 layers"),
        ([1.0], "must hold ints, got 1.0"),
        ([True], "must hold ints, got True"),
        (2, "must be a list of layer indices, got 2"),
    ],
)
def test_bad_indices_are_refused_before_anything_changes(bad, match):
    model = tiny_model("qwen2", use_sliding_window=True, sliding_window=4, max_window_layers=2)
    snap = snapshot(model)
    layers = list(arch.get_layers(model))
    with pytest.raises(SurgeryError, match=match):
        drop_layers(model, bad)
    assert_unchanged(model, snap)
    assert list(arch.get_layers(model)) == layers


def test_inexpressible_window_pattern_is_refused_before_anything_changes():
    full, slide = "full_attention", "sliding_attention"
    model = tiny_model(
        "qwen2",
        use_sliding_window=True,
        sliding_window=4,
        max_window_layers=1,
        layer_types=[full, slide, full, slide],
    )
    snap = snapshot(model)
    with pytest.raises(SurgeryError, match="max_window_layers"):
        drop_layers(model, [0])  # kept [slide, full, slide]: no "first m layers full" threshold gives it
    assert_unchanged(model, snap)
    assert len(arch.get_layers(model)) == 4


def test_unsupported_family_is_refused():
    model = torch.nn.Linear(2, 2)
    with pytest.raises(UnsupportedArchitectureError, match="supported model types"):
        drop_layers(model, [0])


def test_empty_drop_is_a_no_op():
    model = tiny_model("llama")
    snap = snapshot(model)
    assert drop_layers(model, []) is model
    assert_unchanged(model, snap)


def test_distilbert_transformer_count_follows():
    model = tiny_model("distilbert")
    drop_layers(model, [3])
    assert model.distilbert.transformer.n_layers == model.config.n_layers == 3


def test_student_keeps_the_chosen_layers_and_leaves_the_teacher_alone():
    teacher = tiny_model("bert", "sequence-classification", num_labels=3)
    snap = snapshot(teacher)
    student = student_from_teacher(teacher, keep=[0, 3])
    assert_unchanged(teacher, snap)
    assert arch.num_layers(teacher) == 4 and arch.num_layers(student) == 2
    t_layers, s_layers = arch.get_layers(teacher), arch.get_layers(student)
    for s, t in zip(s_layers, (t_layers[0], t_layers[3])):
        for (name, p), q in zip(s.named_parameters(), t.parameters()):
            assert torch.equal(p, q), name
            assert p.data_ptr() != q.data_ptr()  # a copy: training the student leaves the teacher
    torch.testing.assert_close(student.classifier.weight, teacher.classifier.weight)
    with torch.no_grad():
        s_layers[0].attention.self.query.weight.add_(1.0)
    assert_unchanged(teacher, snap)


def test_student_num_layers_spreads_first_and_last():
    teacher = tiny_model("llama", num_hidden_layers=12)
    student = student_from_teacher(teacher, num_layers=6)
    kept = spread_layers(12, 6)
    assert kept[0] == 0 and kept[-1] == 11 and len(set(kept)) == 6
    gaps = [b - a for a, b in itertools.pairwise(kept)]
    assert max(gaps) - min(gaps) <= 1  # even spacing
    t_layers = arch.get_layers(teacher)
    for s, i in zip(arch.get_layers(student), kept):
        assert torch.equal(s.mlp.down_proj.weight, t_layers[i].mlp.down_proj.weight)
    assert spread_layers(4, 4) == [0, 1, 2, 3]
    assert spread_layers(5, 3) == [0, 2, 4]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({}, "exactly one of"),
        ({"keep": [0], "num_layers": 2}, "exactly one of"),
        ({"keep": [2, 0]}, r"increasing.*use \[0, 2\]"),
        ({"keep": []}, "empty"),
        ({"keep": [0, 9]}, "layer 9"),
        ({"num_layers": 1}, r"\[2, 4\].*got 1"),
        ({"num_layers": 5}, "got 5"),
    ],
)
def test_student_bad_arguments(kwargs, match):
    teacher = tiny_model("gpt2")
    snap = snapshot(teacher)
    with pytest.raises(SurgeryError, match=match):
        student_from_teacher(teacher, **kwargs)
    assert_unchanged(teacher, snap)


def test_unknown_per_layer_lists_are_sliced_but_token_ids_are_not():
    model = tiny_model("llama")
    model.config.my_layer_scales = [1.0, 2.0, 3.0, 4.0]  # a per-layer field the table does not know
    model.config.eos_token_id = [5, 6, 7, 8]  # as long as the layer count by chance
    drop_layers(model, [1])
    assert model.config.my_layer_scales == [1.0, 3.0, 4.0]
    assert model.config.eos_token_id == [5, 6, 7, 8]


def test_student_of_a_frozen_teacher_is_trainable():
    teacher = tiny_model("bert", "sequence-classification", num_labels=3).requires_grad_(False)
    student = student_from_teacher(teacher, num_layers=2)
    assert all(p.requires_grad for p in student.parameters())
    assert not any(p.requires_grad for p in teacher.parameters())
