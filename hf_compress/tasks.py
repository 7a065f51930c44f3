"""The one table of tasks: which transformers Auto class loads a model of a task, the Hub's pipeline tag of
its model card, and which outputs distillation compares (the head kind :class:`DistillationTrainer` sees).

Recipes, the CLI, checkpoint loading, the model card and the distillation trainer all read it:

    >>> get_task("causal-lm").auto_class, get_task("causal-lm").pipeline_tag
    ('AutoModelForCausalLM', 'text-generation')
    >>> head_of(model)                     # 'causal-lm', 'masked-lm', 'sequence-classification', ... or 'base'

Light: transformers is imported only by the functions that need a class or its name table.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import HfCompressError

__all__ = ["Task", "TASKS", "RECIPE_TASKS", "get_task", "auto_class", "head_of", "task_of_head",
           "task_of_architectures"]


@dataclass(frozen=True)
class Task:
    name: str  # the recipe / CLI name
    auto_class: str  # the transformers Auto class that loads it
    mapping: str  # transformers.models.auto.modeling_auto table of the model classes that class loads
    pipeline_tag: str  # the Hub's pipeline tag (model card metadata)
    head: str  # distillation head kind: which outputs the trainer compares
    recipe: bool = True  # accepted as a recipe's `task` (the recipe measures and loads data for it)


TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        Task("feature-extraction", "AutoModel", "MODEL_MAPPING_NAMES", "feature-extraction", "base"),
        Task("fill-mask", "AutoModelForMaskedLM", "MODEL_FOR_MASKED_LM_MAPPING_NAMES", "fill-mask", "masked-lm"),
        Task("causal-lm", "AutoModelForCausalLM", "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES", "text-generation",
             "causal-lm"),
        Task("text-classification", "AutoModelForSequenceClassification",
             "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES", "text-classification", "sequence-classification"),
        Task("token-classification", "AutoModelForTokenClassification",
             "MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES", "token-classification", "token-classification",
             recipe=False),
    )
}
RECIPE_TASKS = tuple(name for name, t in TASKS.items() if t.recipe)


def get_task(name: str, error: type[Exception] = HfCompressError, allowed=RECIPE_TASKS) -> Task:
    """The table row of ``name``; ``error`` names the allowed tasks otherwise."""
    if name not in allowed:
        raise error(f"`task` must be one of {', '.join(allowed)}, got {name!r}")
    return TASKS[name]


def auto_class(name: str, error: type[Exception] = HfCompressError):
    """The transformers Auto class of a recipe task (e.g. ``AutoModelForCausalLM``)."""
    import transformers

    return getattr(transformers, get_task(name, error).auto_class)


def _class_names(table: str) -> set[str]:
    from transformers.models.auto import modeling_auto

    names = set()
    for value in getattr(modeling_auto, table).values():
        names.update(value if isinstance(value, (list, tuple)) else (value,))
    return names


def head_of(model) -> str:
    """The distillation head kind of a model instance: the first row whose transformers Auto table lists its
    class (only ``XLMWithLMHeadModel`` is in two, the masked- and causal-LM tables: masked-lm). A subclass of
    a stock class counts as that class (a physically head-pruned BERT is a ``PrunedHeadsBertModel(BertModel)``)."""
    name = type(model).__name__
    for cls in type(model).__mro__:
        for task in TASKS.values():
            if cls.__name__ in _class_names(task.mapping):
                return task.head
    raise HfCompressError(
        f"{name} is not a causal-LM, masked-LM, sequence- or token-classification or base transformers model; "
        f"DistillationTrainer supports only those"
    )


def task_of_head(head: str) -> Task:
    """The table row whose distillation head kind is ``head``."""
    for task in TASKS.values():
        if task.head == head:
            return task
    raise HfCompressError(f"head must be one of {', '.join(t.head for t in TASKS.values())}, got {head!r}")


def task_of_architectures(architectures: list[str] | None) -> str:
    """The task ``bench`` measures a checkpoint as, from its ``config.json`` ``architectures``: ``causal-lm``
    for a ``*ForCausalLM`` class, else ``feature-extraction`` (any other head is measured on its encoder)."""
    first = (architectures or [""])[0]
    return "causal-lm" if first.endswith("ForCausalLM") else "feature-extraction"
