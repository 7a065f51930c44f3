"""Recipe stage of the width method: ``prune_width``."""

from __future__ import annotations

from dataclasses import dataclass

from ...core.checks import check_positive, part_config
from ...errors import HfCompressError, RecipeError

__all__ = ["PruneWidthConfig", "prune_width_stage"]


@dataclass
class PruneWidthConfig:
    """Prune MLP neurons (``ffn``) and/or residual channels (``hidden``) by activation importance on the
    recipe's calibration texts; the fields of :class:`hf_compress.methods.width.config.WidthPruningConfig`
    plus how many batches to score on."""

    ffn: float | int | None = None
    hidden: float | int | None = None
    round_to: int = 8
    num_batches: int = 8

    def __post_init__(self):
        check_positive("num_batches", self.num_batches, RecipeError)
        if self.ffn is None and self.hidden is None:
            raise RecipeError("prune_width needs `ffn` and/or `hidden` (a fraction in [0, 1) or a size), "
                              "got neither")
        try:
            self.part_config()
        except HfCompressError as exc:
            raise RecipeError(str(exc)) from None

    def part_config(self):
        from .config import WidthPruningConfig

        return part_config(self, WidthPruningConfig)


def prune_width_stage(ctx, cfg: PruneWidthConfig):
    from ... import arch
    from .importance import width_importance
    from .prune import check_width, prune_width

    config = cfg.part_config()
    before = {"ffn": arch.intermediate_size(ctx.model), "hidden": arch.hidden_size(ctx.model)}
    check_width(ctx.model, config)  # refuse a bad size or family before scoring
    scores = ctx.memoized(("width_importance", cfg.num_batches),
                          lambda: width_importance(ctx.model, ctx.batches(cfg.num_batches)))
    model = prune_width(ctx.model, config=config, scores=scores)
    after = {"ffn": arch.intermediate_size(model), "hidden": arch.hidden_size(model)}
    return model, {"before": before, "after": after, "round_to": config.round_to}
