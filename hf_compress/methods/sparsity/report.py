"""``sparsity_report``: how many weights are exactly zero, per pruning target and in the whole model."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch.nn as nn

from ...core.targets import block_projections
from .masks import masked_modules

__all__ = ["SparsityReport", "block_projections", "sparsity_report"]


@dataclass
class SparsityReport:
    """Zero counts. ``modules``: name -> (zeros, numel) of each target projection."""

    modules: dict[str, tuple[int, int]] = field(default_factory=dict)
    model_zeros: int = 0
    model_params: int = 0

    @property
    def zeros(self) -> int:
        return sum(z for z, _ in self.modules.values())

    @property
    def numel(self) -> int:
        return sum(n for _, n in self.modules.values())

    @property
    def sparsity(self) -> float:
        """Fraction of the target weights that are zero."""
        return self.zeros / self.numel if self.numel else 0.0

    @property
    def model_sparsity(self) -> float:
        """Fraction of all parameters (embeddings, norms and heads included) that are zero."""
        return self.model_zeros / self.model_params if self.model_params else 0.0

    def as_dict(self) -> dict:
        return {"sparsity": self.sparsity, "zeros": self.zeros, "numel": self.numel,
                "model_sparsity": self.model_sparsity, "model_zeros": self.model_zeros,
                "model_params": self.model_params,
                "modules": {n: {"zeros": z, "numel": k} for n, (z, k) in self.modules.items()}}

    def __str__(self) -> str:
        lines = ["| module | zeros | weights | sparsity |", "|---|---:|---:|---:|"]
        lines += [f"| {n} | {z:,} | {k:,} | {z / k:.1%} |" for n, (z, k) in self.modules.items()]
        lines.append(f"| **targets total** | {self.zeros:,} | {self.numel:,} | {self.sparsity:.1%} |")
        lines.append(f"| **whole model** | {self.model_zeros:,} | {self.model_params:,} "
                     f"| {self.model_sparsity:.1%} |")
        return "\n".join(lines)


def sparsity_report(model: nn.Module, modules: dict[str, nn.Module] | None = None) -> SparsityReport:
    """Zeros per target (default: every block projection of :mod:`hf_compress.arch` plus any masked module)
    and in the whole model (unique parameters, tied weights counted once)."""
    if modules is None:
        modules = {n: m for block in block_projections(model) for n, m in block.items()}
        modules.update(masked_modules(model))
    report = SparsityReport()
    for name, module in modules.items():
        w = module.weight.detach()
        report.modules[name] = (int((w == 0).sum()), w.numel())
    for p in model.parameters():  # model.parameters() yields each shared tensor once
        report.model_zeros += int((p.detach() == 0).sum())
        report.model_params += p.numel()
    return report
