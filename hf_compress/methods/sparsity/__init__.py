"""Weight sparsity: magnitude, Wanda, N:M (2:4) patterns, per-row or global, made permanent on save."""

from ...core.registry import MethodSpec, register
from .config import SparsifyConfig
from .stage import sparsify_stage

register(
    MethodSpec(
        name="sparsify",
        config_cls=SparsifyConfig,
        handler=sparsify_stage,
        needs_data=lambda cfg: cfg.method == "wanda",
        card_tag="sparse",
        summary="zero the least important weights (no speed-up on CPU or current GPU servers)",
    )
)
