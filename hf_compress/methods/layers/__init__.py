"""Depth: layer importance (block influence, angular), dropping layers, shallower students."""

from ...core.registry import MethodSpec, register
from .config import DropLayersConfig, StudentFromTeacherConfig
from .stage import drop_layers_stage, student_from_teacher_stage

register(
    MethodSpec(
        name="student_from_teacher",
        config_cls=StudentFromTeacherConfig,
        handler=student_from_teacher_stage,
        first_only=True,
        card_tag="layer-pruning",
        summary="a shallower copy of the loaded model (which becomes the teacher)",
    )
)
register(
    MethodSpec(
        name="drop_layers",
        config_cls=DropLayersConfig,
        handler=drop_layers_stage,
        needs_data=lambda cfg: cfg.layers is None,
        card_tag="layer-pruning",
        summary="drop the least important layers",
    )
)
