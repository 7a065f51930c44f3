"""Width: activation importance of MLP neurons and residual channels, and pruning them (stock checkpoints)."""

from ...core.registry import MethodSpec, register
from .stage import PruneWidthConfig, prune_width_stage

register(
    MethodSpec(
        name="prune_width",
        config_cls=PruneWidthConfig,
        handler=prune_width_stage,
        needs_data=True,
        card_tag="width-pruning",
        summary="prune the least important MLP neurons and residual channels",
    )
)
