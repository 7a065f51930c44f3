"""Distillation speed with a live teacher vs the teacher cache vs plain fine-tuning; top-k KL error; chunked
logit-loss memory.

    python scripts/bench_distill_speed.py                 # MiniLM 6->3, SmolLM2 30->22 -> benchmarks/distill_speed.md
    python scripts/bench_distill_speed.py --tiny          # tiny in-process models, seconds -> a temporary file
    python scripts/bench_distill_speed.py --parts memory  # one part: speed, kl, memory (comma-separated)

speed: per pair, copies of the same student trained three ways in one process, their optimizer steps
interleaved round by round (live DistillationTrainer, DistillationTrainer(teacher_cache=...), a plain
transformers Trainer on the student's own loss; ``bench_distill_step.py``): medians over rounds, cache build
time and bytes per token, the loss of live vs cached per step. kl: forward KL of the un-healed SmolLM2 student to its teacher, dense vs
the top-k bucket loss at k in 8, 32, 128 (tau 1 and 2). memory: peak resident memory of a training step with
and without ``logit_chunk_size`` (``--chunks``), first step (no .grad, as in every Trainer step) and later
steps (gradients kept), and of the same steps without any logit loss (the loss memory is the difference), for a
SmolLM2-shaped (V = 49,152) and a gemma-3-shaped (V = 262,144) model of depth 2 built from configs, each in its
own process (``bench_distill_memory.py``). Each run updates only its parts (the JSON beside the markdown keeps
the others).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]

import torch  # noqa: E402


def _uptime() -> str:
    return open("/proc/loadavg").read().split()[0]


def _pair(name: str, tiny: bool):
    """(teacher, student, tokenizer or None, rows as lists, settings)."""
    from hf_compress import student_from_teacher

    if tiny:
        sys.path.insert(0, str(ROOT / "tests"))
        from tiny_models import tiny_model

        kind = "bert" if name == "minilm" else "llama"
        teacher = tiny_model(kind, "base" if kind == "bert" else "causal-lm", seed=1)
        g = torch.Generator().manual_seed(0)
        ids = torch.randint(4, 100, (24, 16), generator=g).tolist()
        tok, seq = None, 16
    else:
        import transformers

        from hf_compress.assets import get_asset
        from hf_compress.evaluation import wiki_texts

        folder = get_asset(name)
        auto = transformers.AutoModel if name == "minilm" else transformers.AutoModelForCausalLM
        teacher = auto.from_pretrained(folder, dtype=torch.float32)
        tok = transformers.AutoTokenizer.from_pretrained(folder)
        seq = 128 if name == "minilm" else 256
        texts = [t for t in wiki_texts("calibration") if len(t) > 4 * seq][:256]
        ids = [tok(t, truncation=True, max_length=seq)["input_ids"] for t in texts]
        ids = [r for r in ids if len(r) == seq][:64]  # full rows: every arm sees the same unpadded batches
    n_student = {"minilm": 3, "smollm2": 22}[name] if not tiny else 2
    student = student_from_teacher(teacher, num_layers=n_student)
    return teacher.eval(), student, tok, ids, seq


def _dataset(ids, causal: bool):
    import datasets

    data = {"input_ids": ids, "attention_mask": [[1] * len(r) for r in ids]}
    if causal:
        data["labels"] = [list(r) for r in ids]
    return datasets.Dataset.from_dict(data)


def bench_speed(name: str, tiny: bool, steps: int, batch: int, out_dir: str, profile: bool = False,
                arms=("live", "cached", "plain")) -> dict:
    """Live / cached / plain steps of one pair, interleaved in one process (``bench_distill_step.py``); profile:
    torch.profiler tables of one cached and one plain step to stderr."""
    from bench_distill_step import bench_speed as interleaved

    res = interleaved(name, tiny, steps, batch, out_dir, profile, tuple(arms))
    for arm, table in res.pop("profile", {}).items():
        print(f"== profile {name}: {arm} ==\n{table}", file=sys.stderr)
    return res


def bench_kl(tiny: bool) -> list[dict]:
    from hf_compress.distillation import losses

    teacher, student, tok, ids, seq = _pair("smollm2" if not tiny else "tiny", tiny)
    batch = torch.tensor([r[:seq] for r in ids if len(r) >= seq][:4])
    with torch.no_grad():
        t, s = teacher(input_ids=batch).logits[:, :-1], student(input_ids=batch).logits[:, :-1]
    rows = []
    for tau in (1.0, 2.0):
        dense = float(losses.forward_kl(s, t, temperature=tau, reduction="mean"))
        for k in (8, 32, 128):
            k = min(k, t.shape[-1])
            values, top = t.topk(k, -1)
            tail = t.scatter(-1, top, float("-inf")).logsumexp(-1)
            approx = float(losses.forward_kl(*losses.topk_buckets(s, top, values, tail), temperature=tau,
                                             reduction="mean"))
            rows.append({"tau": tau, "k": k, "dense": dense, "topk": approx, "rel_error": abs(approx - dense) / dense})
    return rows


NOTES = "<!-- notes: hand-written, kept when the tables are re-rendered -->"


def render(results: dict, notes: str = "") -> str:
    lines = ["# Distillation speed, teacher cache and chunked logit losses", "",
             "Machine: 2-core AMD EPYC (AVX2, shared with other agents), torch CPU, fp32 (bf16 is ~8x slower than "
             "fp32 on this CPU), 2 threads. Each part's command and load average (1 min, before / after):", ""]
    for part, run in results.get("runs", {}).items():
        lines.append(f"- {part}: `{run['command']}` at {run['when']} UTC, load {run['load_before']} / {run['load_after']}")
    lines.append("")
    if results.get("speed"):
        lines += ["## Seconds per optimizer step (live / cached / plain interleaved in one process)", "",
                  "Each round runs one optimizer step of every arm (rotating order); medians over the rounds after "
                  "one warm-up round; cached / plain is the median of the per-round ratios of wall seconds and of "
                  "process CPU-seconds (all threads; less sensitive to other jobs) (`bench_distill_step.py`).",
                  "", "| pair | batch x tokens | rounds | live teacher | teacher cache | plain fine-tuning | "
                  "cached / plain (wall) | cached / plain (CPU-s) | cache rows read per step | cache build | "
                  "bytes / token | load per round |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in results["speed"]:
            a = r["arms"]
            loads = r.get("loads", [])
            live = f"{a['live']['median_s']:.2f} s" if "live" in a else "not run"
            lines.append(f"| {r['pair']} | {r['batch']} x {r['seq']} | {r['rounds']} | {live} | "
                         f"{a['cached']['median_s']:.2f} s | {a['plain']['median_s']:.2f} s | "
                         f"{r['cached_over_plain']:.3f} | {r.get('cpu_cached_over_plain', float('nan')):.3f} | "
                         f"{a['cached']['teacher_median_s']:.3f} s | "
                         f"{r['build_s']:.1f} s for {r['cache']['tokens']} tokens | "
                         f"{r['cache']['bytes_per_token']:.0f} | {min(loads)}-{max(loads)} |")
        lines += ["", "Loss per step, live vs cached (top-32 for SmolLM2, hidden states for MiniLM):", ""]
        for r in results["speed"]:
            live, cached = r["arms"].get("live", {}).get("losses", []), r["arms"]["cached"]["losses"]
            lines.append(f"- {r['pair']}: live " + ", ".join(f"{x:.4f}" for x in live) + "; cached "
                         + ", ".join(f"{x:.4f}" for x in cached))
        lines.append("")
    if "kl" in results:
        lines += ["## Top-k KL error (forward KL, un-healed student vs teacher, mean per token)", "",
                  "| tau | k | dense KL | top-k + tail KL | relative error |", "|---|---|---|---|---|"]
        lines += [f"| {r['tau']:g} | {r['k']} | {r['dense']:.4f} | {r['topk']:.4f} | {100 * r['rel_error']:.2f}% |"
                  for r in results["kl"]]
        lines += ["", "At tau = 1 the k + 1 buckets are exact, so the gap is only the tail's lost detail; at tau = 2 "
                  "the tail is re-tempered as one token (see `losses.topk_buckets`).", ""]
    if "memory" in results:
        from bench_distill_memory import __doc__ as how, render_rows

        lines += ["## Peak memory of one training step (forward + backward above what was resident before it)", "",
                  how.split("\n\n", 2)[2].strip(), "",  # rows of the older format (no first step) are skipped
                  *render_rows([r for r in results["memory"] if "first_bytes" in r]), ""]
    if notes:
        lines += [NOTES, notes.strip(), ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true", help="tiny in-process models (seconds); never the published file")
    p.add_argument("--parts", default="speed,kl,memory")
    p.add_argument("--steps", type=int, default=5, help="timed rounds per pair (after one warm-up round)")
    p.add_argument("--pairs", default="minilm,smollm2", help="speed: which pairs (a re-measured pair replaces its row)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--output", help="markdown file (default: benchmarks/distill_speed.md, or a temp file with --tiny)")
    p.add_argument("--arms", default="live,cached,plain", help="speed: which arms (cached and plain at least)")
    p.add_argument("--profile", action="store_true", help="speed: torch.profiler tables of a cached / plain step")
    p.add_argument("--tokens", type=int, help="tokens of the gemma-3-shaped memory step (default 1024)")
    p.add_argument("--chunks", default="256", help="memory: logit_chunk_size values measured (comma-separated)")
    args = p.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    parts = args.parts.split(",")
    out = Path(args.output or (os.path.join(tempfile.mkdtemp(), "distill_speed.md") if args.tiny
                               else str(ROOT / "benchmarks" / "distill_speed.md")))
    results = json.loads(out.with_suffix(".json").read_text()) if out.with_suffix(".json").exists() else {}
    notes = out.read_text().split(NOTES, 1)[1] if out.exists() and NOTES in out.read_text() else ""
    command = "python scripts/bench_distill_speed.py " + " ".join(argv if argv is not None else sys.argv[1:])
    with tempfile.TemporaryDirectory(prefix="bench-distill-") as work:
        for part in ("speed", "kl", "memory"):
            if part not in parts:
                continue
            run = {"command": command.strip(), "when": time.strftime("%H:%M", time.gmtime()), "load_before": _uptime()}
            if part == "speed":  # a pair measured again replaces its row
                new = [bench_speed(n, args.tiny, args.steps, args.batch, work, args.profile, args.arms.split(","))
                       for n in args.pairs.split(",")]
                keep = [r for r in results.get("speed", []) if r["pair"] not in args.pairs.split(",")]
                results["speed"] = keep + new
            elif part == "kl":
                results["kl"] = bench_kl(args.tiny)
            else:
                from bench_distill_memory import bench_memory

                results["memory"] = bench_memory(args.tiny, args.tokens, [int(c) for c in args.chunks.split(",")],
                                                 _uptime)
            run["load_after"] = _uptime()
            results.setdefault("runs", {})[part + ("" if part != "speed" else " " + args.pairs)] = run
    out.write_text(render(results, notes) + "\n")
    out.with_suffix(".json").write_text(json.dumps(results, indent=1, default=str))
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
