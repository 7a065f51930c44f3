"""Strict recipe schema: YAML -> dataclasses, checked before any model is loaded.

    >>> recipe = load_recipe("recipes/minilm-demo.yaml", overrides=["stages.1.distill.max_steps=10"])

Unknown keys fail naming their path (``stages[1].distill.max_step``) and the closest valid key; wrong types
and impossible stage orders fail the same way. Every failure is a :class:`~hf_compress.errors.RecipeError`.
"""

from __future__ import annotations

import copy
import difflib
import os
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from ..assets import DATA_ASSETS, MODEL_ASSETS
from ..errors import HfCompressError, RecipeError
from ..tasks import RECIPE_TASKS as TASKS
from .build import build_dataclass
from .plain import check_plain_data, load_yaml_text, read_yaml
from ..core.registry import methods

__all__ = [
    "Recipe",
    "ModelSpec",
    "DataSpec",
    "Stage",
    "load_recipe",
    "parse_recipe",
    "apply_overrides",
    "TASKS",
    "METRICS",
]

METRICS = ("size", "latency", "teacher_agreement", "perplexity", "topic_probe", "snli_probe", "snli_ranking",
           "docs_probe")
EMBEDDING_METRICS = ("snli_probe", "snli_ranking", "docs_probe")  # probes of sentence embeddings
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


@dataclass
class ModelSpec:
    """Where the model comes from: ``name_or_path`` (asset name, folder or Hub id) or a ``config`` mapping."""

    name_or_path: str | None = None
    config: dict | None = None
    tokenizer: str | None = None
    dtype: str = "float32"
    trust_remote_code: bool = False
    revision: str | None = None

    def __post_init__(self):
        if (self.name_or_path is None) == (self.config is None):
            raise RecipeError("give exactly one of `name_or_path` or `config`")
        if self.config is not None and "model_type" not in self.config:
            raise RecipeError("`config` must have a `model_type` (e.g. bert, gpt2, llama)")
        if self.dtype not in ("float32", "bfloat16", "float16"):
            raise RecipeError(f"`dtype` must be one of float32, bfloat16, float16, got {self.dtype!r}")
        name = self.name_or_path
        if (
            name is not None
            and name not in MODEL_ASSETS
            and not os.path.isdir(name)
            and not _HUB_ID.match(name)
        ):
            raise RecipeError(
                f"`name_or_path` must be a bundled asset ({', '.join(MODEL_ASSETS)}), an existing "
                f"folder or a Hub id, got {name!r}"
            )
        from .model_checks import check_config_sizes, check_folder_config

        if self.config is not None:
            check_config_sizes(self.config, 4 if self.dtype == "float32" else 2)
        elif os.path.isdir(name):
            check_folder_config(name)


@dataclass
class DataSpec:
    """Texts for calibration, importance and distillation: a bundled data set or a local .txt/.json/.jsonl."""

    name: str
    split: str = "train"
    max_samples: int | None = None
    text_field: str | None = None

    def __post_init__(self):
        if self.name not in DATA_ASSETS and not os.path.isfile(self.name) and "/" not in self.name:
            raise RecipeError(
                f"`name` must be a bundled data set ({', '.join(DATA_ASSETS)}), an existing "
                f".txt/.json/.jsonl file or a Hub data set id (user/name, needs the network), "
                f"got {self.name!r}"
            )
        if self.split not in ("train", "test", "heldout", "calibration"):
            raise RecipeError(f"`split` must be one of train, test, heldout, calibration, got {self.split!r}")
        if self.max_samples is not None and self.max_samples <= 0:
            raise RecipeError(f"`max_samples` must be > 0, got {self.max_samples!r}")


@dataclass
class Stage:
    name: str
    config: Any

    def to_dict(self) -> dict:
        return {self.name: asdict(self.config)}


@dataclass
class Recipe:
    model: ModelSpec
    output_dir: str
    version: int = 1
    task: str = "feature-extraction"
    data: DataSpec | None = None
    stages: list[Stage] = field(default_factory=list)
    evaluate: list[str] = field(default_factory=lambda: ["size", "latency", "teacher_agreement"])
    eval_samples: int = 128
    eval_max_length: int = 128
    push_to_hub: str | None = None
    seed: int = 0

    def __post_init__(self):
        for name, low, high in (("eval_samples", 1, 10**7), ("eval_max_length", 1, 10**6), ("seed", 0, 2**32 - 1)):
            value = getattr(self, name)
            if not low <= value <= high:
                raise RecipeError(f"{name}: must be an int in [{low}, {high}], got {value!r}")

    def to_dict(self) -> dict:
        """The resolved recipe as plain YAML-able data (saved in the output folder)."""
        out = {f.name: copy.deepcopy(getattr(self, f.name)) for f in fields(self)}
        out["model"] = asdict(self.model)
        out["data"] = asdict(self.data) if self.data else None
        out["stages"] = [s.to_dict() for s in self.stages]
        return out

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def _closest(key: str, allowed) -> str:
    match = difflib.get_close_matches(key, list(allowed), n=1, cutoff=0.5)
    return f"; did you mean `{match[0]}`?" if match else f"; allowed: {', '.join(allowed)}"


def _parse_stage(item: Any, path: str) -> Stage:
    if isinstance(item, str):
        item = {item: None}
    if not isinstance(item, dict) or len(item) != 1:
        raise RecipeError(
            f"{path}: a stage must be a one-key mapping like `prune_heads: {{fraction: 0.25}}`, got {item!r}"
        )
    ((name, cfg),) = item.items()
    table = methods()
    if name not in table:
        raise RecipeError(f"{path}: unknown stage `{name}`{_closest(str(name), table)}")
    try:
        return Stage(name, build_dataclass(table[name].config_cls, cfg or {}, f"{path}.{name}"))
    except HfCompressError as exc:
        if isinstance(exc, RecipeError):
            raise
        raise RecipeError(f"{path}.{name}: {exc}") from None


def _check_order(recipe: Recipe) -> None:
    """Order rules from the registry's metadata: terminal, first-only, needs a shrunk model, needs data."""
    table = methods()
    names = [s.name for s in recipe.stages]
    for i, name in enumerate(names):
        path = f"stages[{i}].{name}"
        spec = table[name]
        terminal = [n for n in names[:i] if table[n].terminal]
        if terminal:
            raise RecipeError(
                f"{path}: nothing may follow {terminal[0]} (its model is saved as is); move `{name}` before it"
            )
        if spec.first_only and i != 0:
            raise RecipeError(
                f"{path}: {name} must be the first stage (it builds a new model from the loaded one), "
                f"found at position {i}"
            )
        if spec.needs_shrunk and not any(table[n].shrinks for n in names[:i]):
            before = ", ".join(n for n, s in table.items() if s.shrinks)
            raise RecipeError(f"{path}: {name} needs a smaller student; put one of {before} before it")
        cfg = recipe.stages[i].config
        if spec.wants_data(cfg) and recipe.data is None:
            raise RecipeError(
                f"{path}: this stage needs texts; add a `data:` section (e.g. {{name: wiki-summaries}})"
            )
        if spec.recipe_check is not None:
            problem = spec.recipe_check(cfg, recipe.task)
            if problem:
                raise RecipeError(f"{path}.{problem}")
    if "perplexity" in recipe.evaluate and recipe.task != "causal-lm":
        raise RecipeError(f"evaluate: `perplexity` needs task causal-lm, got task {recipe.task!r}")
    for metric in EMBEDDING_METRICS:
        if metric in recipe.evaluate and recipe.task != "feature-extraction":
            raise RecipeError(f"evaluate: `{metric}` probes sentence embeddings and needs task feature-extraction, "
                              f"got task {recipe.task!r}")


def parse_recipe(raw: Any, base_dir: str | os.PathLike | None = None) -> Recipe:
    """Validate plain data (as from ``yaml.safe_load``) into a :class:`Recipe`. Relative paths resolve
    against ``base_dir`` when the file exists there."""
    if not isinstance(raw, dict):
        raise RecipeError(f"a recipe must be a mapping at the top level, got {type(raw).__name__}")
    check_plain_data(raw)  # before anything copies or walks it: size, depth, finite numbers
    raw = copy.deepcopy(raw)
    for key in ("model", "output_dir"):
        if key not in raw:
            raise RecipeError(f"missing required key `{key}`")
    if raw.get("version", 1) != 1:
        raise RecipeError(f"version: only recipe version 1 exists, got {raw['version']!r}")
    if isinstance(raw["model"], str):
        raw["model"] = {"name_or_path": raw["model"]}
    if isinstance(raw.get("data"), str):
        raw["data"] = {"name": raw["data"]}
    if base_dir is not None:
        _resolve_relative(raw, Path(base_dir))
    stages = raw.pop("stages", None) or []
    if not isinstance(stages, list):
        raise RecipeError(f"stages: must be a list of one-key mappings, got {type(stages).__name__}")
    hints = {"model": ModelSpec, "data": DataSpec}
    recipe = build_dataclass(Recipe, raw, "", nested=hints)
    recipe.stages = [_parse_stage(item, f"stages[{i}]") for i, item in enumerate(stages)]
    if recipe.task not in TASKS:
        raise RecipeError(f"task: must be one of {', '.join(TASKS)}, got {recipe.task!r}")
    for i, metric in enumerate(recipe.evaluate):
        if metric not in METRICS:
            raise RecipeError(f"evaluate[{i}]: unknown metric `{metric}`{_closest(metric, METRICS)}")
    _check_order(recipe)
    return recipe


def _resolve_relative(raw: dict, base: Path) -> None:
    model = raw.get("model")
    for holder, key in ((model, "name_or_path"), (model, "tokenizer"), (raw.get("data"), "name")):
        if isinstance(holder, dict) and isinstance(holder.get(key), str):
            candidate = base / holder[key]
            if not os.path.isabs(holder[key]) and candidate.exists() and not Path(holder[key]).exists():
                holder[key] = str(candidate)


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Apply ``a.b.1.c=value`` overrides (values parsed as YAML) to plain recipe data, returning a copy."""
    raw = copy.deepcopy(raw)
    for item in overrides:
        if "=" not in item:
            raise RecipeError(f"--set expects KEY=VALUE (e.g. stages.1.distill.max_steps=10), got {item!r}")
        key, value = item.split("=", 1)
        parts = key.strip().split(".")
        parsed = load_yaml_text(value, f"--set {key}: value {value[:60]!r}")
        node: Any = raw
        for depth, part in enumerate(parts):
            last = depth == len(parts) - 1
            where = ".".join(parts[: depth + 1])
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise RecipeError(
                        f"--set {key}: `{where}` is not an index of a list of {len(node)} items"
                    )
                part = int(part)
            elif not isinstance(node, dict):
                raise RecipeError(
                    f"--set {key}: `{'.'.join(parts[:depth])}` is a value, not a mapping or list"
                )
            if last:
                node[part] = parsed
            else:
                if isinstance(node, dict) and node.get(part) is None:
                    node[part] = {}
                node = node[part]
    return raw


def load_recipe(path: str | os.PathLike, overrides: list[str] | None = None) -> Recipe:
    """Read a YAML recipe (``yaml.safe_load``), apply ``--set`` style overrides and validate it."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe file {str(path)!r} does not exist")
    raw = read_yaml(path)
    if isinstance(raw, dict) and overrides:
        raw = apply_overrides(raw, overrides)
    return parse_recipe(raw, base_dir=path.parent)
