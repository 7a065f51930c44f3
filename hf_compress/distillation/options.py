"""The distillation settings that :class:`~.args.DistillationArguments` and the recipe's ``distill`` stage
share, and the one check of them both run. Light (no torch, no transformers): validating a recipe imports it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping

from ..errors import HfCompressError

__all__ = ["LOGIT_LOSSES", "HIDDEN_LOSSES", "OPTIONS", "RELATION_LOSSES", "check_options", "parse_layer_map"]

LOGIT_LOSSES = ("forward_kl", "reverse_kl", "jsd", "mse")
HIDDEN_LOSSES = ("mse", "cosine", "mse+cosine")
RELATION_LOSSES = ("mse", "kl")
#: the fields both DistillationArguments and the recipe's DistillConfig carry
OPTIONS = ("temperature", "alpha_logits", "alpha_hidden", "alpha_task", "alpha_embedding", "alpha_relation",
           "logit_loss", "jsd_beta", "hidden_loss", "relation_loss", "relation_temperature", "layer_map",
           "logit_chunk_size", "lmbda", "seq_kd", "max_new_tokens", "generation_temperature")
_NAMED = ("uniform", "last")


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _problem(values: Mapping) -> tuple[str | None, str] | None:
    """``(field, message)`` of the first bad setting; field is None when no single field is to blame."""
    if not (_number(values["temperature"]) and values["temperature"] > 0):
        return "temperature", f"`temperature` must be > 0, got {values['temperature']!r}"
    alphas = ("alpha_logits", "alpha_hidden", "alpha_task", "alpha_embedding", "alpha_relation")
    for name in alphas:
        if not (_number(values.get(name, 0.0)) and values.get(name, 0.0) >= 0):
            return name, f"`{name}` must be >= 0, got {values[name]!r}"
    if all(values.get(name, 0.0) == 0 for name in alphas):
        return None, f"at least one of {', '.join(f'`{n}`' for n in alphas)} must be > 0, got all of them 0"
    if values["logit_loss"] not in LOGIT_LOSSES:
        return "logit_loss", f"`logit_loss` must be one of {', '.join(LOGIT_LOSSES)}, got {values['logit_loss']!r}"
    if not (_number(values["jsd_beta"]) and 0 < values["jsd_beta"] < 1):
        return "jsd_beta", f"`jsd_beta` must be strictly between 0 and 1, got {values['jsd_beta']!r}"
    if values["hidden_loss"] not in HIDDEN_LOSSES:
        return "hidden_loss", f"`hidden_loss` must be one of {', '.join(HIDDEN_LOSSES)}, got {values['hidden_loss']!r}"
    relation = values.get("relation_loss", "mse")
    if relation not in RELATION_LOSSES:
        return "relation_loss", (f"`relation_loss` must be one of {', '.join(RELATION_LOSSES)}, "
                                 f"got {relation!r}")
    rel_t = values.get("relation_temperature", 0.05)
    if not (_number(rel_t) and rel_t > 0):
        return "relation_temperature", f"`relation_temperature` must be > 0, got {rel_t!r}"
    chunk = values.get("logit_chunk_size", 0)
    if not (isinstance(chunk, int) and not isinstance(chunk, bool) and chunk >= 0):
        return "logit_chunk_size", f"`logit_chunk_size` must be an integer >= 0 (0 = off), got {chunk!r}"
    lmbda = values.get("lmbda", 0.0)
    if not (_number(lmbda) and 0 <= lmbda <= 1):
        return "lmbda", f"`lmbda` must be a fraction in [0, 1] (share of on-policy batches), got {lmbda!r}"
    if not isinstance(values.get("seq_kd", False), bool):
        return "seq_kd", f"`seq_kd` must be true or false, got {values['seq_kd']!r}"
    new = values.get("max_new_tokens", 1)
    if not (isinstance(new, int) and not isinstance(new, bool) and new > 0):
        return "max_new_tokens", f"`max_new_tokens` must be a positive integer, got {new!r}"
    gen_t = values.get("generation_temperature", 1.0)
    if not (_number(gen_t) and gen_t > 0):
        return "generation_temperature", f"`generation_temperature` must be > 0, got {gen_t!r}"
    try:
        layer_map = parse_layer_map(values["layer_map"])
    except HfCompressError as exc:
        return "layer_map", str(exc)
    if layer_map != "uniform" and values["alpha_hidden"] == 0:  # it would be ignored without a word
        return "layer_map", (f"`layer_map` is used only by the hidden-state loss: set `alpha_hidden` > 0 or leave "
                             f"layer_map at 'uniform', got layer_map={values['layer_map']!r} with alpha_hidden=0")
    return None


def check_options(values: Mapping, error: type[Exception] = HfCompressError) -> None:
    """Raise ``error`` ("`x` must be ..., got ...") for the first bad value of ``OPTIONS`` in ``values``; the
    error's ``key`` attribute names the field (the recipe puts it into the key path)."""
    problem = _problem(values)
    if problem is not None:
        exc = error(problem[1])
        exc.key = problem[0]
        raise exc


def parse_layer_map(value) -> str | list[tuple[int, int]]:
    """``"uniform"``, ``"last"``, a JSON string or a list of ``[student, teacher]`` pairs -> name or pair list."""
    if isinstance(value, str):
        text = value.strip()
        if text in _NAMED:
            return text
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            raise HfCompressError(
                f"`layer_map` must be 'uniform', 'last' or a JSON list of [student_layer, teacher_layer] pairs "
                f"such as '[[1, 2], [2, 4]]', got {value!r}"
            ) from None
    if not isinstance(value, (list, tuple)) or not value:
        raise HfCompressError(f"`layer_map` must be a non-empty list of [student_layer, teacher_layer] pairs, got {value!r}")
    pairs = []
    for pair in value:
        if (not isinstance(pair, (list, tuple)) or len(pair) != 2
                or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in pair)):
            raise HfCompressError(
                f"`layer_map` entries must be [student_layer, teacher_layer] pairs of non-negative integers "
                f"(0 = embeddings, k = output of block k), got {pair!r}"
            )
        pairs.append((int(pair[0]), int(pair[1])))
    return pairs
