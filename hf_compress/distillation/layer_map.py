"""Student -> teacher layer pairs for hidden-state distillation, and the projections between their widths.

Layer indices follow ``outputs.hidden_states``: 0 is the embeddings output, ``k`` (1-based) is the output of
block ``k``. ``"uniform"`` pairs student block ``k`` with teacher block ``k * L_T // L_S`` (the last blocks always
meet), ``"last"`` pairs only the last blocks; an explicit list gives ``[student, teacher]`` pairs.

Projections (one ``nn.Linear(d_S, d_T)`` per pair when the widths differ) live in :class:`HiddenProjections`,
a module owned by the trainer: never a submodule of the student, so never in its ``state_dict``.
"""

from __future__ import annotations

import json
import os
import tempfile

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..arch import hidden_size
from ..errors import CheckpointError, HfCompressError
from .options import parse_layer_map

__all__ = ["PROJECTIONS_FILE", "HiddenProjections", "hidden_width", "parse_layer_map", "resolve_layer_pairs"]

#: file written beside a checkpoint when projections are saved
PROJECTIONS_FILE = "distillation_projections.safetensors"

def resolve_layer_pairs(layer_map, n_student: int, n_teacher: int,
                        include_embeddings: bool = False) -> list[tuple[int, int]]:
    """Concrete ``(student, teacher)`` hidden-state indices for models with these block counts."""
    spec = parse_layer_map(layer_map)
    if spec == "uniform":
        pairs = [(k, k * n_teacher // n_student) for k in range(1, n_student + 1)]
    elif spec == "last":
        pairs = [(n_student, n_teacher)]
    else:
        pairs = list(spec)
        for s, t in pairs:
            if s > n_student or t > n_teacher:
                raise HfCompressError(
                    f"`layer_map` pair [{s}, {t}] is out of range: the student has hidden states 0..{n_student} "
                    f"and the teacher 0..{n_teacher} (0 = embeddings, k = output of block k)"
                )
    if include_embeddings and (0, 0) not in pairs:
        pairs = [(0, 0)] + pairs
    return pairs


def hidden_width(model: nn.Module) -> int:
    """Residual width of a transformers model (:func:`hf_compress.arch.hidden_size`, which also reads the
    config of a family outside the table, e.g. a teacher)."""
    return hidden_size(model)


class HiddenProjections(nn.Module):
    """One ``nn.Linear(d_S, d_T)`` per layer pair when the widths differ, identity otherwise."""

    def __init__(self, pairs: list[tuple[int, int]], student_width: int, teacher_width: int):
        super().__init__()
        self.pairs = list(pairs)
        self.proj = nn.ModuleDict()
        if student_width != teacher_width:
            for s, t in self.pairs:
                self.proj[f"{s}_{t}"] = nn.Linear(student_width, teacher_width)

    def forward(self, hidden: torch.Tensor, pair: tuple[int, int]) -> torch.Tensor:
        """(B, T, d_S) -> (B, T, d_T)."""
        key = f"{pair[0]}_{pair[1]}"
        return self.proj[key](hidden) if key in self.proj else hidden

    def save(self, folder: str) -> str:
        """Write ``PROJECTIONS_FILE`` into ``folder`` atomically (temp file, then rename)."""
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, PROJECTIONS_FILE)
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
        os.close(fd)
        try:
            save_file(state, tmp, metadata={"pairs": json.dumps(self.pairs)})
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        return path

    def load(self, folder: str) -> None:
        """Load ``PROJECTIONS_FILE`` from ``folder``; shapes and keys must match this run's pairs."""
        path = os.path.join(folder, PROJECTIONS_FILE)
        if not os.path.isfile(path):
            if len(self.proj) == 0:
                return
            raise CheckpointError(f"{folder} has no {PROJECTIONS_FILE}; cannot resume the hidden-state projections")
        state = load_file(path)
        try:
            self.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise CheckpointError(f"{path} does not match this run's layer pairs {self.pairs}: {exc}") from None
