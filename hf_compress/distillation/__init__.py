"""Knowledge distillation: logit and hidden-state losses on top of the transformers Trainer.

    >>> from hf_compress import DistillationArguments, DistillationTrainer
    >>> args = DistillationArguments(output_dir="out", alpha_logits=1.0, alpha_hidden=1.0)
    >>> DistillationTrainer(model=student, teacher_model=teacher, args=args, train_dataset=ds).train()

Importing this package registers the ``distill`` recipe stage; the trainer itself is imported on first use.
"""

import importlib

from ..core.registry import MethodSpec, register
from .stage import DistillConfig, check_distill_for_task, distill_stage

__all__ = ["DistillationArguments", "DistillationTrainer", "cache_teacher_outputs"]

_LAZY = {"DistillationArguments": ".args", "DistillationTrainer": ".trainer", "cache_teacher_outputs": ".cache"}


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


register(
    MethodSpec(
        name="distill",
        config_cls=DistillConfig,
        handler=distill_stage,
        needs_data=True,
        shrinks=False,
        needs_shrunk=True,
        card_tag="distillation",
        recipe_check=check_distill_for_task,
        summary="knowledge distillation from the model as loaded",
    )
)
