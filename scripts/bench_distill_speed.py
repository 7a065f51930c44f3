"""Distillation speed with a live teacher vs the teacher cache vs plain fine-tuning; top-k KL error; chunked
logit-loss memory.

    python scripts/bench_distill_speed.py                 # MiniLM 6->3, SmolLM2 30->22 -> benchmarks/distill_speed.md
    python scripts/bench_distill_speed.py --tiny          # tiny in-process models, seconds -> a temporary file
    python scripts/bench_distill_speed.py --parts memory  # one part: speed, kl, memory (comma-separated)

speed: per pair, the same student copy and rows trained three ways side by side in one process (live
DistillationTrainer, DistillationTrainer(teacher_cache=...), a plain transformers Trainer on the student's own
loss), median seconds per optimizer step after one warm-up step; cache build time and bytes per token; the
logged loss of live vs cached per step. kl: forward KL of the un-healed SmolLM2 student to its teacher, dense vs
the top-k bucket loss at k in 8, 32, 128 (tau 1 and 2). memory: peak resident memory of one training step
(forward + backward, above the resident model) with and without ``logit_chunk_size`` for a SmolLM2-shaped
(V = 49,152) and a gemma-3-shaped (V = 262,144) model of depth 2 built from configs; each in its own process.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from transformers import Trainer, TrainerCallback  # noqa: E402


class StepTimer(TrainerCallback):
    def __init__(self):
        self.times, self._t = [], None

    def on_step_begin(self, args, state, control, **kw):
        self._t = time.perf_counter()

    def on_step_end(self, args, state, control, **kw):
        self.times.append(time.perf_counter() - self._t)


class _PlainEncoder(Trainer):
    """A plain step of an encoder without a head: the student's forward + backward on a trivial loss."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        out = model(**{k: v for k, v in inputs.items() if k != "labels"})
        return out.last_hidden_state.pow(2).mean()


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


def bench_speed(name: str, tiny: bool, steps: int, batch: int, out_dir: str) -> dict:
    from hf_compress import DistillationArguments, DistillationTrainer, cache_teacher_outputs
    from hf_compress.distillation.cache import cache_summary
    from hf_compress.arch import num_layers

    teacher, student, tok, ids, seq = _pair(name, tiny)
    causal = name == "smollm2"
    ds = _dataset(ids[: (steps + 1) * batch], causal)
    hidden = [] if causal else [k * num_layers(teacher) // num_layers(student) for k in range(1, num_layers(student) + 1)]
    common = dict(output_dir=os.path.join(out_dir, "run"), report_to="none", use_cpu=True, disable_tqdm=True,
                  save_strategy="no", train_sampling_strategy="sequential", learning_rate=1e-4, seed=0,
                  per_device_train_batch_size=batch, max_steps=steps + 1, logging_steps=1, max_grad_norm=1.0)
    kd = dict(alpha_logits=1.0 if causal else 0.0, alpha_hidden=0.0 if causal else 1.0, temperature=1.0,
              layer_map="uniform")
    t0 = time.perf_counter()
    folder = cache_teacher_outputs(teacher, ds, os.path.join(out_dir, f"cache-{name}"), top_k=32 if causal else 0,
                                   hidden_layers=hidden, max_length=seq, batch_size=batch, tokenizer=tok)
    build_s = time.perf_counter() - t0
    summary = cache_summary(folder)
    arms = {}
    for arm in ("live", "cached", "plain"):
        model = copy.deepcopy(student).train()
        timer = StepTimer()
        if arm == "plain":
            from transformers import TrainingArguments

            cls = Trainer if causal else _PlainEncoder
            trainer = cls(model=model, args=TrainingArguments(**common), train_dataset=ds)
        else:
            source = {"teacher_model": teacher} if arm == "live" else {"teacher_cache": folder}
            trainer = DistillationTrainer(model=model, args=DistillationArguments(**common, **kd), train_dataset=ds,
                                          processing_class=tok, **source)
        trainer.add_callback(timer)
        load = _uptime()
        trainer.train()
        arms[arm] = {"median_s": statistics.median(timer.times[1:]), "times": timer.times, "load": load,
                     "losses": [r["loss"] for r in trainer.state.log_history if "loss" in r]}
    return {"pair": name, "batch": batch, "seq": seq, "steps": steps, "build_s": build_s, "cache": summary,
            "rows_cached": len(ds), "arms": arms}


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


def _memory_step(cfg: dict, chunk: int) -> dict:
    """Peak resident memory (VmHWM reset by clear_refs, minus VmRSS before) and time of one forward + backward
    of a DistillationTrainer step at ``logit_chunk_size=chunk``; the median of 3 (gradients stay allocated)."""
    import transformers

    from hf_compress import DistillationArguments, DistillationTrainer

    def status(key):
        return int(re.search(key + r":\s+(\d+)", open("/proc/self/status").read()).group(1)) * 1024

    cfg = dict(cfg)
    shape, _ = cfg.pop("shape"), cfg.pop("tokens")
    config = getattr(transformers, cfg.pop("cls"))(**cfg)
    torch.manual_seed(0)
    teacher = transformers.AutoModelForCausalLM.from_config(config).eval()
    student = transformers.AutoModelForCausalLM.from_config(config)
    with tempfile.TemporaryDirectory() as tmp:
        args = DistillationArguments(output_dir=tmp, report_to="none", use_cpu=True, alpha_logits=1.0,
                                     temperature=1.0, logit_chunk_size=chunk)
        trainer = DistillationTrainer(model=student, teacher_model=teacher, args=args)
    ids = torch.randint(4, config.vocab_size, tuple(shape))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}
    student.train()
    times, peaks = [], []
    for _ in range(3):
        counts = trainer._window_counts([batch], reduce=False)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        before = status("VmRSS")
        t0 = time.perf_counter()
        trainer.compute_loss(student, batch, num_items_in_batch=counts).backward()
        times.append(time.perf_counter() - t0)
        peaks.append(status("VmHWM") - before)
        student.zero_grad(set_to_none=False)
    return {"peak_bytes": sorted(peaks)[1], "step_s": sorted(times)[1]}


def bench_memory(tiny: bool) -> list[dict]:
    smol = dict(cls="LlamaConfig", vocab_size=49152, hidden_size=576, num_hidden_layers=2, num_attention_heads=9,
                num_key_value_heads=3, head_dim=64, intermediate_size=1536, tie_word_embeddings=True,
                shape=[2, 512], tokens=1024)
    gemma = dict(cls="Gemma3TextConfig", vocab_size=262144, hidden_size=640, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=1, head_dim=256, intermediate_size=2048,
                 sliding_window=512, shape=[1, 512], tokens=512)
    if tiny:
        smol.update(vocab_size=512, hidden_size=32, num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                    intermediate_size=64, shape=[2, 16], tokens=32)
        gemma.update(vocab_size=1024, hidden_size=32, head_dim=8, intermediate_size=64, shape=[1, 16], tokens=16)
    rows = []
    for label, cfg in (("SmolLM2-shaped", smol), ("gemma-3-shaped", gemma)):
        for chunk in (0, 64 if tiny else 256):
            if tiny:  # in-process: seconds
                got = _memory_step(cfg, chunk)
            else:  # a fresh process per setting: no allocator state carried over
                proc = subprocess.run([sys.executable, __file__, "--memory-child", json.dumps(cfg), str(chunk)],
                                      capture_output=True, text=True, timeout=1800, check=False)
                if proc.returncode != 0:
                    raise RuntimeError(proc.stderr[-2000:])
                got = json.loads(proc.stdout.strip().splitlines()[-1])
            rows.append({"model": label, "vocab": cfg["vocab_size"], "tokens": cfg["tokens"], "chunk": chunk, **got,
                         "load": _uptime()})
    return rows


def render(results: dict, command: str, load_before: str, load_after: str) -> str:
    lines = ["# Distillation speed, teacher cache and chunked logit losses", "",
             f"Command: `{command}`. Machine: 2-core AMD EPYC (shared), torch CPU, fp32, 2 threads; load average "
             f"(1 min) before {load_before}, after {load_after} (other agents share the machine: compare ratios "
             f"measured side by side, not absolute seconds).", ""]
    if "speed" in results:
        lines += ["## Seconds per optimizer step (median after one warm-up step)", "",
                  "| pair | batch x tokens | live teacher | teacher cache | plain fine-tuning | cached / plain | "
                  "cache build | bytes / token | load during arms |", "|---|---|---|---|---|---|---|---|---|"]
        for r in results["speed"]:
            a = r["arms"]
            lines.append(f"| {r['pair']} | {r['batch']} x {r['seq']} | {a['live']['median_s']:.2f} s | "
                         f"{a['cached']['median_s']:.2f} s | {a['plain']['median_s']:.2f} s | "
                         f"{a['cached']['median_s'] / a['plain']['median_s']:.2f} | {r['build_s']:.1f} s for "
                         f"{r['cache']['tokens']} tokens | {r['cache']['bytes_per_token']:.0f} | "
                         f"{a['live']['load']} / {a['cached']['load']} / {a['plain']['load']} |")
        lines += ["", "Logged loss per step, live vs cached (top-32 for SmolLM2, hidden states for MiniLM):", ""]
        for r in results["speed"]:
            live, cached = r["arms"]["live"]["losses"], r["arms"]["cached"]["losses"]
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
        lines += ["## Peak memory of one training step (forward + backward above the resident model)", "",
                  "| model (2 layers) | vocabulary | tokens | logit_chunk_size | peak step memory | step time |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {r['model']} | {r['vocab']:,} | {r['tokens']} | {r['chunk'] or 'off'} | "
                  f"{r['peak_bytes'] / 2**20:,.0f} MiB | {r['step_s']:.2f} s |" for r in results["memory"]]
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true", help="tiny in-process models (seconds); never the published file")
    p.add_argument("--parts", default="speed,kl,memory")
    p.add_argument("--steps", type=int, default=4, help="timed steps per arm (after one warm-up step)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--output", help="markdown file (default: benchmarks/distill_speed.md, or a temp file with --tiny)")
    p.add_argument("--memory-child", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.memory_child:
        print(json.dumps(_memory_step(json.loads(args.memory_child[0]), int(args.memory_child[1]))))
        return 0
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    parts = args.parts.split(",")
    out = args.output or (os.path.join(tempfile.mkdtemp(), "distill_speed.md") if args.tiny
                          else str(ROOT / "benchmarks" / "distill_speed.md"))
    load_before, results = _uptime(), {}
    with tempfile.TemporaryDirectory(prefix="bench-distill-") as work:
        if "speed" in parts:
            results["speed"] = [bench_speed(n, args.tiny, args.steps, args.batch, work) for n in ("minilm", "smollm2")]
        if "kl" in parts:
            results["kl"] = bench_kl(args.tiny)
        if "memory" in parts:
            results["memory"] = bench_memory(args.tiny)
    command = "python scripts/bench_distill_speed.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = render(results, command.strip(), load_before, _uptime())
    Path(out).write_text(text + "\n")
    Path(out).with_suffix(".json").write_text(json.dumps(results, indent=1, default=str))
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
