"""Knowledge distillation: logit and hidden-state losses on top of the transformers Trainer.

    >>> from hf_compress import DistillationArguments, DistillationTrainer
    >>> args = DistillationArguments(output_dir="out", alpha_logits=1.0, alpha_hidden=1.0)
    >>> DistillationTrainer(model=student, teacher_model=teacher, args=args, train_dataset=ds).train()
"""

from .args import DistillationArguments
from .trainer import DistillationTrainer

__all__ = ["DistillationArguments", "DistillationTrainer"]
