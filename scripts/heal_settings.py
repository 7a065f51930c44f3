"""Settings of ``scripts/bench_heal.py``: the budget of one run (``HealSettings``, the same for every healing
arm), the presets (full, cpu, quick, tiny, gpu) and ``make_settings`` (a preset, ``--set`` overrides, and bf16
autocast resolved to where it is native)."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass

COMPRESSIONS = ("layers", "heads", "width")


@dataclass
class HealSettings:
    """The budget of one run (the same for both healing arms)."""

    preset: str = "full"
    compressions: str = "layers,heads"  # comma-separated subset of COMPRESSIONS
    layer_fraction: float = 0.25  # share of layers dropped (block influence)
    head_fraction: float = 0.25  # asked share of heads; whole KV groups go (1 of 3 on SmolLM2 = 33%)
    width_fraction: float = 0.25  # share of FFN neurons removed, when width_match is false
    width_match: bool = True  # FFN size solved so the width-pruned blocks have the layer-dropped ones' parameters
    finetune: str = "all"  # compressions that also get the no-teacher arm: "all", "none" or a subset
    distill: bool = True  # False: only the fine-tuning arms (no teacher cache, no int8 rows), to run beside a
    # distillation-only process on another core and `--merge` the two tables
    cache_dir: str = ""  # the teacher cache's folder, kept and reused (its fingerprint is checked); "": temporary
    steps: int = 450  # 450 x 8 x 256 = 0.92M tokens: about one CPU-hour in bf16 on a quiet 2-core machine
    batch_size: int = 8
    seq_len: int = 256
    learning_rate: float = 1e-4
    warmup: float = 0.05  # fraction of steps
    temperature: float = 1.0
    alpha_task: float = 0.0  # distillation arm: weight of the LM loss on the same blocks beside the KD term
    # (weight 1); 0 is pure distillation. The teacher bounds pure KD on text it was never tuned on (python docs)
    teacher_cache: bool = True  # distil from the teacher's top-k logits cached once (False: a live teacher)
    top_k: int = 32  # logits per token in the teacher cache
    calib_texts: int = 32  # texts that score layers / heads
    quant_batches: int = 8  # calibration batches (of batch_size x seq_len) for SmoothQuant / GPTQ
    eval_tokens: int = 8192  # per held-out corpus
    eval_window: int = 512
    latency_repeats: int = 5
    quantize: bool = True
    w8a8: str = "smoothquant+gptq"  # or "rtn" (round to nearest: no calibration, minutes faster on a CPU)
    bf16: bool | None = None  # autocast during training (None: on where bf16 is native); evaluation is fp32
    device: str = "cpu"
    seed: int = 0

    def __post_init__(self):
        for name in ("steps", "batch_size", "seq_len", "top_k", "calib_texts", "quant_batches", "eval_tokens",
                     "eval_window", "latency_repeats"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be an integer >= 1, got {value!r}")
        for name in ("layer_fraction", "head_fraction", "width_fraction"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0 < value < 1):
                raise ValueError(f"`{name}` must be strictly between 0 and 1, got {value!r}")
        for name in ("learning_rate", "temperature"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"`{name}` must be a finite number > 0, got {value!r}")
        if not (isinstance(self.alpha_task, (int, float)) and math.isfinite(self.alpha_task) and self.alpha_task >= 0):
            raise ValueError(f"`alpha_task` must be a finite number >= 0, got {self.alpha_task!r}")
        if not 0 <= self.warmup < 1:
            raise ValueError(f"`warmup` must be a fraction of the steps in [0, 1), got {self.warmup!r}")
        bad = [c for c in self.compressions.split(",") if c not in COMPRESSIONS]
        if bad or not self.compressions:
            raise ValueError(f"`compressions` must be a comma-separated subset of {', '.join(COMPRESSIONS)}, "
                             f"got {self.compressions!r}")
        arms = self.finetune.split(",")
        if self.finetune not in ("all", "none") and any(a not in self.compressions.split(",") for a in arms):
            raise ValueError(f"`finetune` must be 'all', 'none' or a subset of compressions "
                             f"({self.compressions}), got {self.finetune!r}")
        if self.bf16 not in (None, True, False) or not isinstance(self.width_match, bool):
            raise ValueError(f"`bf16` must be true, false or null and `width_match` true or false, got "
                             f"{self.bf16!r}, {self.width_match!r}")
        if not isinstance(self.distill, bool) or (not self.distill and self.finetune == "none"):
            raise ValueError(f"`distill` must be true or false, and with distill false `finetune` must name an arm "
                             f"(no arm would run), got distill={self.distill!r}, finetune={self.finetune!r}")
        if self.w8a8 not in ("smoothquant+gptq", "rtn"):
            raise ValueError(f"`w8a8` must be 'smoothquant+gptq' or 'rtn', got {self.w8a8!r}")
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"`device` must be 'cpu' or 'cuda', got {self.device!r}")
        if self.eval_window > self.eval_tokens:
            raise ValueError(f"`eval_window` must be <= eval_tokens ({self.eval_tokens}), got {self.eval_window}")

    def arms(self, kind: str) -> tuple[str, ...]:
        both = self.finetune == "all" or kind in self.finetune.split(",")
        arms = ("distill",) * self.distill + ("finetune",) * both
        return arms

    @property
    def distill_label(self) -> str:
        """The distillation arm's row label; with the LM loss mixed in it says so (two such runs merge)."""
        return "healed: distillation" + (f" + {self.alpha_task:g} × LM loss" if self.alpha_task else "")

    def quant_label(self, mode: str) -> str:
        name = {"w8a16": "W8A16", "w8a8": "W8A8 (SmoothQuant auto + GPTQ)", "w8a8-rtn": "W8A8 (round to nearest)"}
        return "distilled" + (f" (+ {self.alpha_task:g} × LM)" if self.alpha_task else "") + f" + {name[mode]}"

    @property
    def tokens(self) -> int:
        return self.steps * self.batch_size * self.seq_len


PRESETS = {
    "full": HealSettings(),
    "quick": HealSettings(preset="quick", compressions="layers", steps=60, batch_size=4, calib_texts=16,
                          quant_batches=2, eval_tokens=4096, latency_repeats=3),
    # what fits a shared 2-core AVX2 CPU in about an hour (1 pinned thread, fp32: ~12.5 CPU-s a 4 x 256 step):
    # depth vs width, both distilled, and depth fine-tuned without a teacher; the same budget per arm (48 x 4 x
    # 256 = 49k tokens, ~10 CPU-minutes), far below the goal's 60 CPU-minutes
    "cpu": HealSettings(preset="cpu", compressions="layers,width", finetune="layers", steps=48, batch_size=4,
                        learning_rate=2e-4, quant_batches=2, eval_tokens=4096, quantize=False, latency_repeats=3),
    "gpu": HealSettings(preset="gpu", steps=3000, batch_size=16, seq_len=512, quant_batches=8,
                        eval_tokens=32768, device="cuda"),
    "tiny": HealSettings(preset="tiny", steps=12, batch_size=4, seq_len=32, learning_rate=3e-3,
                         calib_texts=8, quant_batches=2, eval_tokens=512, eval_window=64, latency_repeats=2,
                         bf16=False),
}


def make_settings(args) -> HealSettings:
    preset = ("tiny" if args.tiny else "quick" if args.quick else args.preset if args.preset
              else "gpu" if args.device == "cuda" else "full")
    overrides = {"device": args.device} if args.device else {}
    types = {f.name: f.type for f in dataclasses.fields(HealSettings)}
    for item in args.set:
        key, _, value = item.partition("=")
        if key not in types:
            raise SystemExit(f"--set {item!r}: unknown field {key!r}; fields are {', '.join(sorted(types))}")
        try:
            overrides[key] = value if types[key] == "str" else json.loads(value.lower())
        except json.JSONDecodeError:
            raise SystemExit(f"--set {item!r}: {value!r} is not a number / true / false") from None
    settings = dataclasses.replace(PRESETS[preset], **overrides)
    if settings.bf16 is None:  # bf16 autocast only where it is native: emulated on AVX2 it was 8x slower
        from hf_compress.evaluation import native_bf16_cpu

        settings = dataclasses.replace(settings, bf16=settings.device == "cuda" or native_bf16_cpu())
    return settings
