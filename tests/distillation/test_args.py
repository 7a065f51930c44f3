"""DistillationArguments validation, CLI parsing, and layer maps."""

import pytest
import torch
from transformers import HfArgumentParser

from hf_compress import DistillationArguments, HfCompressError
from hf_compress.distillation.layer_map import HiddenProjections, parse_layer_map, resolve_layer_pairs


def make(tmp_path, **kw):
    return DistillationArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True, **kw)


@pytest.mark.parametrize("field,value,message", [
    ("temperature", -1, "`temperature` must be > 0, got -1"),
    ("temperature", 0.0, "`temperature` must be > 0, got 0.0"),
    ("alpha_hidden", -0.5, "`alpha_hidden` must be >= 0, got -0.5"),
    ("logit_loss", "kl", "`logit_loss` must be one of forward_kl, reverse_kl, jsd, mse, got 'kl'"),
    ("jsd_beta", 1.0, "`jsd_beta` must be strictly between 0 and 1, got 1.0"),
    ("hidden_loss", "l1", "`hidden_loss` must be one of mse, cosine, mse\\+cosine, got 'l1'"),
    ("layer_map", "every-other", "`layer_map` must be 'uniform', 'last' or a JSON list"),
    ("layer_map", [[1, -2]], "pairs of non-negative integers"),
])
def test_bad_values_are_named(tmp_path, field, value, message):
    with pytest.raises(HfCompressError, match=message):
        make(tmp_path, **{field: value})


def test_all_weights_zero_is_refused(tmp_path):
    with pytest.raises(ValueError, match="at least one of"):
        make(tmp_path, alpha_logits=0.0)


def test_cli_flags_parse_every_field(tmp_path):
    (args,) = HfArgumentParser(DistillationArguments).parse_args_into_dataclasses([
        "--output_dir", str(tmp_path), "--temperature", "3", "--alpha_hidden", "0.5", "--logit_loss", "jsd",
        "--jsd_beta", "0.2", "--hidden_loss", "cosine", "--layer_map", "[[1, 2], [2, 4]]",
        "--include_embeddings", "--save_projections", "--report_to", "none",
    ])
    assert (args.temperature, args.alpha_hidden, args.logit_loss, args.jsd_beta) == (3.0, 0.5, "jsd", 0.2)
    assert args.include_embeddings and args.save_projections and args.hidden_loss == "cosine"
    assert parse_layer_map(args.layer_map) == [(1, 2), (2, 4)]
    with pytest.raises(HfCompressError, match="`temperature` must be > 0, got -1"):
        HfArgumentParser(DistillationArguments).parse_args_into_dataclasses(
            ["--output_dir", str(tmp_path), "--temperature", "-1"])


def test_resolve_layer_pairs():
    assert resolve_layer_pairs("uniform", 3, 6) == [(1, 2), (2, 4), (3, 6)]
    assert resolve_layer_pairs("uniform", 3, 4) == [(1, 1), (2, 2), (3, 4)]
    assert resolve_layer_pairs("last", 2, 12, include_embeddings=True) == [(0, 0), (2, 12)]
    assert resolve_layer_pairs("[[1, 1], [3, 6]]", 3, 6) == [(1, 1), (3, 6)]
    with pytest.raises(HfCompressError, match=r"pair \[4, 6\] is out of range.*0..3"):
        resolve_layer_pairs([[4, 6]], 3, 6)


def test_projections_only_when_widths_differ(tmp_path):
    same = HiddenProjections([(1, 2)], 32, 32)
    assert len(list(same.parameters())) == 0
    h = torch.randn(2, 3, 32)
    assert same(h, (1, 2)) is h
    diff = HiddenProjections([(1, 2), (2, 4)], 16, 32)
    assert diff(torch.randn(2, 3, 16), (2, 4)).shape == (2, 3, 32)
    diff.save(str(tmp_path))
    other = HiddenProjections([(1, 2), (2, 4)], 16, 32)
    other.load(str(tmp_path))
    for a, b in zip(diff.parameters(), other.parameters()):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="does not match this run's layer pairs"):
        HiddenProjections([(1, 3)], 16, 32).load(str(tmp_path))
