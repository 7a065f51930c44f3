"""Stop training the moment it diverges: weights that became NaN or infinite are never trained on, logged
as a loss of 0.0 or saved.

The transformers ``Trainer`` filters NaN / inf losses out of its logs (``logging_nan_inf_filter``), so a run
whose weights blew up after a few steps still reports a finite ``train_loss``. :class:`NonFiniteGuard` checks
every floating-point parameter after each optimizer step and raises naming the step and the likely cause.
"""

from __future__ import annotations

import torch
from transformers import TrainerCallback

from ..errors import HfCompressError

__all__ = ["NonFiniteGuard", "TrainingDivergedError"]


class TrainingDivergedError(HfCompressError):
    """Training produced NaN or infinite weights; nothing from that run may be saved."""


class NonFiniteGuard(TrainerCallback):
    """Raise :class:`TrainingDivergedError` when any trainable weight is NaN or infinite after a step."""

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if model is None:
            return
        for name, param in model.named_parameters():
            if param.is_floating_point() and not bool(torch.isfinite(param).all()):
                raise TrainingDivergedError(
                    f"training diverged at step {state.global_step}: weight {name} holds NaN or infinity "
                    f"after the optimizer step; nothing was saved. Likely cause: learning_rate "
                    f"{args.learning_rate:g} is too high (or the loss weights / inputs overflow); lower it"
                )
