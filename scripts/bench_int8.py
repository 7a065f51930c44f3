"""Int8 benchmark on the bundled MiniLM-L6 (encoder) and SmolLM2-135M (Llama causal LM), CPU.

For fp32, bf16, our w8a16 / w8a8 / w8a8+GPTQ (Int8Linear, compressed-tensors checkpoints) and outside
int8 baselines a user would pick instead (torch.ao dynamic quantization, torchao int8 configs,
optimum-quanto), measured side by side in one process: checkpoint bytes (``save_pretrained``), median
latency at batch 1x128 and 8x128 tokens (SmolLM2 also 1x1, a decode-shaped step), and quality
(MiniLM: mean-pooled embedding cosine to fp32; SmolLM2: held-out Wikipedia perplexity).

    make bench-int8        # full run with every baseline (torchao and optimum-quanto in a side venv)
    HF_HUB_OFFLINE=1 .venv/bin/python scripts/bench_int8.py --quick --baselines torch.ao   # a short run

torchao and optimum-quanto live in a side venv that sees ours (``make bench-int8`` builds it): installed in
the main one, transformers imports torchao on every model load.
"""

from __future__ import annotations

import argparse
import copy
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn as nn

os.environ.setdefault("HF_HUB_OFFLINE", "1")
from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from hf_compress import get_asset, quantize_int8  # noqa: E402
from hf_compress.evaluation import (  # noqa: E402
    report_path, write_report,
    checkpoint_bytes,
    embedding_cosine,
    latency_side_by_side,
    perplexity,
    tokenize_batches,
    wiki_texts,
)
from hf_compress.methods.int8.compile import compile_int8  # noqa: E402

logger = logging.getLogger("bench_int8")
SLOW = 5.0  # a model this many times slower than fp32 is timed apart, with fewer repeats


def _linear_names(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and not n.endswith("lm_head")]


def _torch_ao_dynamic(model):
    from torch.ao.quantization import default_dynamic_qconfig, quantize_dynamic

    spec = {n: default_dynamic_qconfig for n in _linear_names(model)}
    return quantize_dynamic(model, qconfig_spec=spec, dtype=torch.qint8)


def _torchao(config_name):
    def build(model):
        import torchao.quantization as tq

        tq.quantize_(
            model,
            getattr(tq, config_name)(),
            filter_fn=lambda m, fqn: isinstance(m, nn.Linear) and not fqn.endswith("lm_head"),
        )
        model.compile(dynamic=True)  # torchao's int8 tensor subclasses are meant to run under torch.compile
        return model

    return build


def _quanto_w8(model):
    from optimum.quanto import freeze, qint8, quantize

    quantize(model, weights=qint8, exclude="lm_head")
    freeze(model)
    return model


BASELINES = {
    "torch.ao": ("torch.ao quantize_dynamic", _torch_ao_dynamic),
    "torchao-w8a8": (
        "torchao int8 dyn-act+weight (torch.compile)",
        _torchao("Int8DynamicActivationInt8WeightConfig"),
    ),
    "torchao-w8": ("torchao int8 weight-only (torch.compile)", _torchao("Int8WeightOnlyConfig")),
    "quanto-w8": ("optimum-quanto qint8 weights", _quanto_w8),
}


def build_variants(
    base: nn.Module, calibration: list[dict], baselines: list[str], smoothable: bool = False
) -> dict[str, tuple]:
    """name -> (model, note). Each variant quantizes its own deep copy of ``base``."""
    out: dict[str, tuple] = {"fp32": (base, "reference")}
    out["bf16"] = (copy.deepcopy(base).to(torch.bfloat16), "all weights and activations bf16")
    fp32_compiled = copy.deepcopy(base)
    compile_int8(fp32_compiled)  # the same block-level torch.compile as "compiled" below, without int8
    out["fp32 torch.compile"] = (fp32_compiled, "baseline: our compile, no quantization")
    recipes = {
        "ours w8a16": dict(mode="w8a16"),
        "ours w8a16 (compiled)": dict(mode="w8a16", compile=True),
        "ours w8a8 (eager)": dict(mode="w8a8"),
        "ours w8a8 (compiled)": dict(mode="w8a8", compile=True),
        "ours w8a8+gptq (compiled)": dict(mode="w8a8", compile=True, method="gptq", calibration=calibration),
    }
    if smoothable:
        recipes["ours w8a8+smoothquant auto (compiled)"] = dict(
            mode="w8a8", compile=True, smoothquant="auto", calibration=calibration
        )
        recipes["ours w8a8+smoothquant auto+gptq (compiled)"] = dict(
            mode="w8a8", compile=True, smoothquant="auto", method="gptq", calibration=calibration
        )
    for name, kwargs in recipes.items():
        start = time.perf_counter()
        out[name] = (
            quantize_int8(copy.deepcopy(base), **kwargs),
            f"quantized in {time.perf_counter() - start:.0f} s",
        )
    for key in baselines:
        name, build = BASELINES[key]
        try:
            note = "outside baseline, torch.compile" if "compile" in name else "outside baseline, eager"
            out[name] = (build(copy.deepcopy(base)), note)
        except Exception as exc:  # an outside package missing or broken: report, do not stop
            logger.warning("baseline %s failed: %s", name, exc)
    return out


def saved_bytes(model: nn.Module) -> int | None:
    with tempfile.TemporaryDirectory() as tmp, torch.inference_mode(False):
        try:
            model.save_pretrained(tmp)
        except Exception as exc:
            logger.info("save_pretrained failed for %s: %s", type(model).__name__, str(exc)[:120])
            return None
        return checkpoint_bytes(tmp) or None


def _inputs(tokenizer, texts: list[str], batch: int, tokens: int) -> dict:
    enc = tokenizer(
        texts[:batch], padding="max_length", truncation=True, max_length=tokens, return_tensors="pt"
    )
    return {"input_ids": enc["input_ids"], "attention_mask": torch.ones_like(enc["input_ids"])}


def measure(models: dict, shapes: dict[str, dict], repeats: int) -> tuple[dict, set]:
    """shape -> name -> median seconds. Models over SLOW x fp32 on the first shape (eager torchao int8
    dyn-act is ~25x slower here) are timed in a separate side-by-side run with fp32, 2 repeats, and their
    times rescaled to the main run's fp32 (the ratio to fp32 is what that run measured)."""
    fns = {n: m for n, (m, _) in models.items()}
    first = shapes["1x128"]
    for fn in fns.values():  # warm up (compiles ours) before the probe
        fn(**first)
    probe = {}
    for name, fn in fns.items():
        start = time.perf_counter()
        fn(**first)
        probe[name] = time.perf_counter() - start
    slow = {n for n, t in probe.items() if t > SLOW * probe["fp32"]}
    fast = {n: f for n, f in fns.items() if n not in slow}
    lat = {}
    for shape, inputs in shapes.items():
        logger.info("latency %s (%d repeats, %d models interleaved)", shape, repeats, len(fast))
        lat[shape] = latency_side_by_side(fast, inputs, repeats=repeats, warmup=2)
        if slow:
            logger.info("latency %s of slow models %s (2 repeats, beside fp32)", shape, sorted(slow))
            side = latency_side_by_side({"fp32": fns["fp32"], **{n: fns[n] for n in slow}}, inputs, 2, 1)
            lat[shape].update({n: side[n] * lat[shape]["fp32"] / side["fp32"] for n in slow})
    return lat, slow


def run_model(kind: str, args) -> tuple[list[dict], list[str]]:
    folder = get_asset("minilm" if kind == "minilm" else "smollm2")
    tok = AutoTokenizer.from_pretrained(folder)
    loader = AutoModel if kind == "minilm" else AutoModelForCausalLM
    base = loader.from_pretrained(folder, dtype=torch.float32).eval()
    calib_texts = wiki_texts("calibration", n=64 if args.quick else 128)
    calibration = tokenize_batches(tok, calib_texts, batch_size=8, max_length=128 if args.quick else 256)
    calibration = calibration[: 2 if args.quick else 8]
    models = build_variants(base, calibration, args.baselines, smoothable=kind == "smollm2")
    texts = wiki_texts("heldout", n=64)
    shapes = {"1x128": _inputs(tok, texts, 1, 128), "8x128": _inputs(tok, texts, 8, 128)}
    if kind == "smollm2":  # prefill as generate() runs it: logits of the last position only
        shapes = {s: {**v, "logits_to_keep": 1} for s, v in shapes.items()}
        shapes = {"1x1": {"input_ids": shapes["1x128"]["input_ids"][:, :1]}, **shapes}
    with torch.inference_mode():
        lat, slow = measure(models, shapes, args.repeats)
        rows = []
        eval_texts = wiki_texts("heldout", n=256)
        eval_batches = tokenize_batches(
            tok, eval_texts[: 32 if args.quick else 256], batch_size=16, max_length=128
        )
        for name, (model, note) in models.items():
            logger.info("quality + size: %s", name)
            if kind == "minilm":
                quality = embedding_cosine(base, model, eval_batches)
            else:
                quality = perplexity(
                    model,
                    tok,
                    eval_texts,
                    max_length=512,
                    batch_size=4,
                    max_tokens=args.ppl_tokens or (1024 if args.quick else 4096),
                    progress=False,
                )
            rows.append(
                {
                    "name": name,
                    "bytes": saved_bytes(model),
                    "quality": quality,
                    "note": note + ("; too slow: timed apart, 2 runs" if name in slow else ""),
                    **{f"lat {s}": lat[s][name] for s in shapes},
                }
            )
    return rows, list(shapes)


def table(kind: str, rows: list[dict], shapes: list[str]) -> str:
    qname = "embedding cosine to fp32" if kind == "minilm" else "held-out perplexity"
    ref = {s: rows[0][f"lat {s}"] for s in shapes}
    head = (
        ["variant", "checkpoint MB"] + [f"{s} ms" for s in shapes] + ["8x128 speed-up vs fp32", qname, "note"]
    )
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    ref_q = rows[0]["quality"]
    for r in rows:
        size = f"{r['bytes'] / 1e6:.1f}" if r["bytes"] else "n/a (no save_pretrained)"
        q = (
            f"{r['quality']:.4f}"
            if kind == "minilm"
            else f"{r['quality']:.3f} ({100 * (r['quality'] / ref_q - 1):+.2f}%)"
        )
        cells = [r["name"], size] + [f"{1e3 * r[f'lat {s}']:.1f}" for s in shapes]
        cells += [f"{ref['8x128'] / r['lat 8x128']:.2f}x", q, r["note"]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats, tokens and calibration batches")
    parser.add_argument("--models", default="minilm,smollm2", help="comma list of minilm, smollm2")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per shape (median reported)")
    parser.add_argument(
        "--baselines",
        default=",".join(BASELINES),
        help=f"comma list of outside baselines from {list(BASELINES)}, or '' for none",
    )
    parser.add_argument("--ppl-tokens", type=int, default=None, help="SmolLM2 perplexity tokens")
    parser.add_argument("--output", default=None,
                        help="markdown path (default benchmarks/int8.md; a temporary file for --quick)")
    args = parser.parse_args(argv)
    published = Path(__file__).resolve().parent.parent / "benchmarks" / "int8.md"
    args.output = report_path(args.output, published, smoke=args.quick)  # --quick: never the published table
    args.repeats = args.repeats or (3 if args.quick else 10)
    args.baselines = [b.strip() for b in args.baselines.split(",") if b.strip()]
    unknown = sorted(set(args.baselines) - set(BASELINES))
    if unknown:
        parser.error(f"--baselines takes {list(BASELINES)}, got {unknown}")
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    torch.manual_seed(0)
    sections = [
        f"# int8 benchmark ({'quick' if args.quick else 'full'} run)\n",
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, medians of {args.repeats} "
        "interleaved runs on a shared CPU machine: compare ratios, not milliseconds.\n",
    ]
    for kind in [k.strip() for k in args.models.split(",") if k.strip()]:
        if kind not in ("minilm", "smollm2"):
            parser.error(f"--models takes minilm and/or smollm2, got {kind!r}")
        rows, shapes = run_model(kind, args)
        title = (
            "MiniLM-L6 (all-MiniLM-L6-v2)"
            if kind == "minilm"
            else "SmolLM2-135M-Instruct (tied lm_head stays fp32; latency of prefill as generate() runs it, "
            "logits of the last position only)"
        )
        sections += [f"## {title}\n", table(kind, rows, shapes) + "\n"]
        print("\n".join(sections[-2:]), flush=True)
    write_report(args.output, "\n".join(sections))
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
