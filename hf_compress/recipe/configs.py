"""Config dataclasses of the recipe stages; each validates itself in ``__post_init__``.

A stage in a recipe is a one-key mapping ``{stage_name: {field: value, ...}}``; the field names are the
dataclass fields below, and each stage hands them to the public API of its part (see ``stages.py``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, fields

from ..errors import RecipeError

__all__ = [
    "StudentFromTeacherConfig",
    "DropLayersConfig",
    "DistillConfig",
    "PruneHeadsConfig",
    "SparsifyConfig",
    "QuantizeInt8Config",
    "STAGE_CONFIGS",
]


def _fail(msg: str) -> None:
    raise RecipeError(msg)


def _check_fraction(name: str, value: float) -> None:
    if not 0.0 < value < 1.0:
        _fail(f"`{name}` must be in (0, 1), got {value!r}")


def _check_positive(name: str, value: int | float | None) -> None:
    if value is not None and value <= 0:
        _fail(f"`{name}` must be > 0, got {value!r}")


def _check_choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        _fail(f"`{name}` must be one of {', '.join(allowed)}, got {value!r}")


def _part_config(stage_config, part_cls, **extra):
    """``part_cls`` built from the stage config's fields of the same names (copied), plus ``extra``.

    A stage config declares its part's fields (so the recipe schema knows them) and a few of its own
    (``num_batches``, how to rank); one mapping by name keeps the two from drifting apart.
    """
    names = {f.name for f in fields(part_cls)}
    values = {f.name: copy.copy(getattr(stage_config, f.name)) for f in fields(stage_config) if f.name in names}
    return part_cls(**values, **extra)


@dataclass
class StudentFromTeacherConfig:
    """A new, shallower model from the loaded one (the loaded model becomes the distillation teacher)."""

    num_layers: int | None = None
    keep: list[int] | None = None

    def __post_init__(self):
        if (self.num_layers is None) == (self.keep is None):
            _fail(
                f"give exactly one of `num_layers` or `keep`, got num_layers={self.num_layers!r}, "
                f"keep={self.keep!r}"
            )
        _check_positive("num_layers", self.num_layers)


@dataclass
class DropLayersConfig:
    """Drop ``num_layers`` layers chosen by importance on the recipe data, or the explicit ``layers``."""

    num_layers: int | None = None
    layers: list[int] | None = None
    method: str = "block_influence"
    contiguous: bool = False
    num_batches: int = 8

    def __post_init__(self):
        if (self.num_layers is None) == (self.layers is None):
            _fail(
                f"give exactly one of `num_layers` (to drop) or `layers`, got "
                f"num_layers={self.num_layers!r}, "
                f"layers={self.layers!r}"
            )
        _check_positive("num_layers", self.num_layers)
        _check_positive("num_batches", self.num_batches)
        _check_choice("method", self.method, ("block_influence", "angular"))


@dataclass
class DistillConfig:
    """Knowledge distillation from the teacher (the model as loaded) into the current model."""

    max_steps: int = 100
    learning_rate: float = 5e-5
    batch_size: int = 16
    max_length: int = 128
    temperature: float = 2.0
    alpha_logits: float | None = None  # None: 1.0 when the task has logits, else 0.0
    alpha_hidden: float = 0.0
    alpha_task: float = 0.0
    logit_loss: str = "forward_kl"
    jsd_beta: float = 0.5
    hidden_loss: str = "mse"
    layer_map: str | list = "uniform"
    warmup_steps: float = 0  # steps, or a fraction of max_steps when < 1
    weight_decay: float = 0.0
    logging_steps: int = 25

    def __post_init__(self):
        for name in (
            "max_steps",
            "learning_rate",
            "batch_size",
            "max_length",
            "temperature",
            "logging_steps",
        ):
            _check_positive(name, getattr(self, name))
        for name in ("alpha_logits", "alpha_hidden", "alpha_task", "weight_decay"):
            value = getattr(self, name)
            if value is not None and value < 0:
                _fail(f"`{name}` must be >= 0, got {value!r}")
        if self.alpha_logits == 0 and self.alpha_hidden == 0 and self.alpha_task == 0:
            _fail("at least one of `alpha_logits`, `alpha_hidden`, `alpha_task` must be > 0, got all 0")
        _check_choice("logit_loss", self.logit_loss, ("forward_kl", "reverse_kl", "jsd", "mse"))
        _check_choice("hidden_loss", self.hidden_loss, ("mse", "cosine", "mse+cosine"))
        if not 0 < self.jsd_beta < 1:
            _fail(f"`jsd_beta` must be strictly between 0 and 1, got {self.jsd_beta!r}")
        from ..distillation.layer_map import parse_layer_map  # light: the same check the trainer runs

        try:
            parse_layer_map(self.layer_map)
        except ValueError as exc:
            _fail(f"`layer_map`: {exc}")
        if self.warmup_steps < 0:
            _fail(f"`warmup_steps` must be >= 0, got {self.warmup_steps!r}")


def _delegate(make) -> None:
    """Validate through the part's own config dataclass, so the recipe accepts exactly what the part does."""
    from ..errors import HfCompressError

    try:
        make()
    except HfCompressError as exc:
        raise RecipeError(str(exc)) from None


@dataclass
class PruneHeadsConfig:
    """Prune a fraction of attention heads ranked by gradient importance (or at random); the fields of
    :class:`hf_compress.surgery.heads.HeadPruningConfig` plus how to rank."""

    fraction: float = 0.25
    uniform: bool = True
    whole_groups: bool = False
    export: str = "physical"
    normalize: bool = True
    method: str = "importance"
    num_batches: int = 8

    def __post_init__(self):
        _check_choice("method", self.method, ("importance", "random"))
        _check_positive("num_batches", self.num_batches)
        _delegate(self.part_config)

    def part_config(self):
        from ..surgery.heads import HeadPruningConfig

        return _part_config(self, HeadPruningConfig)


@dataclass
class SparsifyConfig:
    """Weight sparsity, made permanent before saving: the fields of
    :class:`hf_compress.surgery.sparsity.SparsityConfig`; Wanda calibrates on ``num_batches`` batches."""

    sparsity: float | None = None
    method: str = "magnitude"
    pattern: str = "unstructured"
    scope: str = "per_row"
    ignore: list[str] = field(default_factory=lambda: ["lm_head"])
    sequential: bool | None = None
    num_batches: int = 8

    def __post_init__(self):
        _check_positive("num_batches", self.num_batches)
        _delegate(self.part_config)

    def part_config(self):
        from ..surgery.sparsity import SparsityConfig

        return _part_config(self, SparsityConfig)


@dataclass
class QuantizeInt8Config:
    """int8 weights (W8A16) or int8 weights and dynamic per-token activations (W8A8): the fields of
    :class:`hf_compress.surgery.int8.Int8Config`; GPTQ / SmoothQuant calibrate on ``num_batches`` batches."""

    mode: str = "w8a8"
    ignore: list[str] = field(default_factory=lambda: ["lm_head"])
    method: str = "rtn"
    smoothquant: float | str | None = None  # an alpha in (0, 1), "auto" (searched per group) or null
    gptq_damp: float = 0.01
    gptq_block: int = 128
    quantize_lm_head: bool = False
    compile: bool = False
    fuse: bool = True
    num_batches: int = 8

    def __post_init__(self):
        _check_positive("num_batches", self.num_batches)
        _delegate(lambda: self.part_config(calibration=[{}]))

    @property
    def needs_calibration(self) -> bool:
        return self.method == "gptq" or self.smoothquant is not None

    def part_config(self, calibration=None):
        from ..surgery.int8 import Int8Config

        return _part_config(self, Int8Config, calibration=calibration)


STAGE_CONFIGS: dict[str, type] = {
    "student_from_teacher": StudentFromTeacherConfig,
    "drop_layers": DropLayersConfig,
    "distill": DistillConfig,
    "prune_heads": PruneHeadsConfig,
    "sparsify": SparsifyConfig,
    "quantize_int8": QuantizeInt8Config,
}
