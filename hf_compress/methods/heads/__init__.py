"""Attention heads: gradient importance, selection (GQA-aware), physical or masked pruning, export."""

from ...core.registry import MethodSpec, register
from .config import PruneHeadsConfig
from .stage import prune_heads_stage

register(
    MethodSpec(
        name="prune_heads",
        config_cls=PruneHeadsConfig,
        handler=prune_heads_stage,
        needs_data=lambda cfg: cfg.method == "importance",
        card_tag="head-pruning",
        summary="prune the least important attention heads",
    )
)
