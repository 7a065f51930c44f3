"""Search a compression plan under a budget (``hf-compress auto``), reaching methods only through
:mod:`hf_compress.core.registry`."""

from .plan import Plan, format_frontier, frontier
from .search import plan_compression
from .space import Candidate
from .targets import Target, TargetError, parse_target

__all__ = ["plan_compression", "Plan", "Candidate", "Target", "TargetError", "parse_target", "frontier",
           "format_frontier"]
