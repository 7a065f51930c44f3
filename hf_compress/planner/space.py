"""The search space: depth × FFN width × heads × int8, in the registry's vocabulary.

A :class:`Candidate` is a handful of numbers; :meth:`Candidate.stages` turns it into recipe stages
(``(name, fields)`` pairs) that the registry runs. A method that is not registered is left out of the space
with a note, so the planner uses width pruning, say, as soon as its folder registers ``prune_width``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

__all__ = ["Candidate", "build_space", "INT8_MODES", "DEFAULT_SPACE"]

# int8 options: None (float), w8a16, w8a8 (compiled blocks), w8a8 with SmoothQuant alpha 0.5, w8a8 with the
# most int8-sensitive projections left in float (one per kept block, chosen on the calibration data)
INT8_MODES = (None, "w8a16", "w8a8", "w8a8-sq", "w8a8-fb")

# fractions: layers kept, heads pruned, FFN neurons pruned
DEFAULT_SPACE = {
    "keep": (1.0, 0.75, 0.5, 1 / 3, 0.25),
    "heads": (0.0, 0.25, 0.5),
    "ffn": (0.0, 0.25, 0.5),
    "int8": (None, "w8a16", "w8a8", "w8a8-sq", "w8a8-fb"),
    "fit": True,  # add the least compression along depth / FFN width meeting the target (:mod:`.refine`)
}


@dataclass(frozen=True)
class Candidate:
    """One point of the space: layers kept, fraction of heads pruned, of FFN neurons pruned, int8 mode."""

    layers: int
    heads: float = 0.0
    ffn: float = 0.0
    int8: str | None = None

    @property
    def key(self) -> str:
        return f"L{self.layers}-h{self.heads:g}-f{self.ffn:g}-{self.int8 or 'fp32'}"

    @property
    def order(self) -> tuple:
        """A total order (``int8`` None sorts first) for deterministic tie-breaks."""
        return (-self.layers, self.heads, self.ffn, INT8_MODES.index(self.int8))

    @property
    def structure(self) -> tuple:
        """What decides the weights before int8 (candidates sharing it share surgery and healing)."""
        return (self.layers, self.heads, self.ffn)

    @property
    def shape_key(self) -> str:
        """What decides latency: the shape and the kernel (SmoothQuant changes neither)."""
        mode = {"w8a8-sq": "w8a8"}.get(self.int8, self.int8)
        return f"L{self.layers}-h{self.heads:g}-f{self.ffn:g}-{mode or 'fp32'}"

    def structural_stages(self, base_layers: int, layers: list[int] | None = None) -> list[tuple[str, dict]]:
        """Stages that shrink the model; ``layers`` names the dropped layers (else chosen by importance)."""
        stages: list[tuple[str, dict]] = []
        if self.layers < base_layers:
            drop = {"layers": list(layers)} if layers is not None else {"num_layers": base_layers - self.layers}
            stages.append(("drop_layers", drop))
        if self.ffn:
            stages.append(("prune_width", {"ffn": self.ffn}))
        if self.heads:
            stages.append(("prune_heads", {"fraction": self.heads}))
        return stages

    def int8_stage(self, compile: bool = True) -> tuple[str, dict] | None:
        if self.int8 is None:
            return None
        if self.int8 == "w8a16":
            return ("quantize_int8", {"mode": "w8a16"})
        fields = {"mode": "w8a8", "compile": compile}
        if self.int8 == "w8a8-sq":
            fields["smoothquant"] = 0.5
        if self.int8 == "w8a8-fb":
            fields["float_fallback"] = self.layers
        return ("quantize_int8", fields)

    def to_dict(self) -> dict:
        return asdict(self)


def build_space(
    num_layers: int, registered: set[str], target, space: dict | None = None, device: str = "cpu"
) -> tuple[list[Candidate], list[str]]:
    """Every candidate of ``space`` (``DEFAULT_SPACE`` keys) the registered methods can build, and notes
    on what was left out and why."""
    space = {**DEFAULT_SPACE, **(space or {})}
    notes: list[str] = []
    keeps = sorted({max(1, round(num_layers * f)) if isinstance(f, float) else int(f) for f in space["keep"]},
                   reverse=True)
    keeps = [k for k in keeps if 1 <= k <= num_layers]
    heads, ffn, int8 = list(space["heads"]), list(space["ffn"]), list(space["int8"])
    for axis, method, values in (("layers", "drop_layers", keeps), ("heads", "prune_heads", heads),
                                 ("ffn", "prune_width", ffn), ("int8", "quantize_int8", int8)):
        if method not in registered and len(values) > 1:
            notes.append(f"`{method}` is not registered: the {axis} axis is left out of the search")
    if "drop_layers" not in registered:
        keeps = [num_layers]
    if "prune_heads" not in registered:
        heads = [0.0]
    if "prune_width" not in registered:
        ffn = [0.0]
    if "quantize_int8" not in registered:
        int8 = [None]
    if target is not None and target.key == "params" and len(int8) > 1:
        notes.append("int8 keeps the parameter count (it changes bytes, not parameters): it is left out of a "
                     "params target, where it could only cost quality (use mib= for a size in bytes)")
        int8 = [None]
    if "sparsify" in registered:
        notes.append(
            f"sparsity is not searched: on {device} the dense kernels gain no speed from zeros and the "
            f"checkpoint stores them dense (no fewer bytes), so it buys nothing for any target here"
        )
    out = [Candidate(k, h, f, q) for k in keeps for h in heads for f in ffn for q in int8]
    return out, notes
