"""Peak memory of a distillation training step with and without chunked logit losses (``logit_chunk_size``).

Called by ``bench_distill_speed.py --parts memory`` (which renders ``benchmarks/distill_speed.md``); runnable alone
for one setting: ``python scripts/bench_distill_memory.py '<config json>' 256`` prints one JSON line;
``python scripts/bench_distill_memory.py --interleave 256 4``: gemma-3-shaped step seconds, unchunked and chunked
alternated in one process (the step-time comparison, less exposed to load than separate processes).

Per model (a SmolLM2-shaped V = 49,152 and a gemma-3-shaped V = 262,144 model of depth 2, built from configs)
and setting (no logit loss at all, unchunked, chunked), in a fresh process each: three forward + backward
passes of one DistillationTrainer micro-batch, the peak resident memory of each above what was resident before
it (VmHWM reset by /proc/self/clear_refs):

- first step: no ``.grad`` exists yet, as in every optimizer step of transformers' Trainer (it zeroes with
  ``set_to_none=True``): the step allocates every parameter's gradient, the LM head's (V, d) one included;
- later steps: gradients kept (``zero_grad(set_to_none=False)``, as in the micro-batches of an accumulation
  window after the first): the (V, d) gradient is resident before the step; the larger of the two repeats.

Loss memory = a step's peak minus the peak of the same kind of step without any logit loss (teacher and student
bodies, a loss on the student's final hidden states, no LM head).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time

import torch

SMOL = dict(cls="LlamaConfig", vocab_size=49152, hidden_size=576, num_hidden_layers=2, num_attention_heads=9,
            num_key_value_heads=3, head_dim=64, intermediate_size=1536, tie_word_embeddings=True, shape=[2, 512])
GEMMA = dict(cls="Gemma3TextConfig", vocab_size=262144, hidden_size=640, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=1, head_dim=256, intermediate_size=2048, sliding_window=512, shape=[1, 1024])
TINY = dict(vocab_size=1024, hidden_size=32, num_attention_heads=4, num_key_value_heads=2, head_dim=8,
            intermediate_size=64, shape=[1, 16])


def _status(key: str) -> int:
    return int(re.search(key + r":\s+(\d+)", open("/proc/self/status").read()).group(1)) * 1024


def memory_step(cfg: dict, chunk) -> dict:
    """Peak bytes and seconds of the first step (no .grad) and of two later steps (gradients kept) of one
    micro-batch at ``logit_chunk_size=chunk``; ``chunk="none"``: the step without any logit loss."""
    import transformers

    from hf_compress import DistillationArguments, DistillationTrainer

    cfg = dict(cfg)
    shape = cfg.pop("shape")
    config = getattr(transformers, cfg.pop("cls"))(**cfg)
    torch.manual_seed(0)
    teacher = transformers.AutoModelForCausalLM.from_config(config).eval()
    student = transformers.AutoModelForCausalLM.from_config(config)
    with tempfile.TemporaryDirectory() as tmp:
        args = DistillationArguments(output_dir=tmp, report_to="none", use_cpu=True, alpha_logits=1.0,
                                     temperature=1.0, logit_chunk_size=0 if chunk == "none" else chunk)
        trainer = DistillationTrainer(model=student, teacher_model=teacher, args=args)
    ids = torch.randint(4, config.vocab_size, tuple(shape))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}

    def no_logit_loss():
        with torch.no_grad():
            teacher.base_model(input_ids=ids, attention_mask=batch["attention_mask"])
        out = student.base_model(input_ids=ids, attention_mask=batch["attention_mask"])
        return out.last_hidden_state.float().pow(2).mean()

    student.train()
    times, peaks = [], []
    for rep in range(3):
        student.zero_grad(set_to_none=rep == 0)  # rep 0: like every Trainer step; then: gradients resident
        counts = trainer._window_counts([batch], reduce=False)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        before = _status("VmRSS")
        t0 = time.perf_counter()
        loss = no_logit_loss() if chunk == "none" else trainer.compute_loss(student, batch, num_items_in_batch=counts)
        loss.backward()
        times.append(time.perf_counter() - t0)
        peaks.append(_status("VmHWM") - before)
        del loss
    return {"first_bytes": peaks[0], "later_bytes": max(peaks[1:]), "first_s": times[0],
            "later_s": min(times[1:]), "peaks": peaks, "times": times}


def interleaved_times(cfg: dict, chunk: int, rounds: int) -> dict:
    """Seconds of one training step (forward + backward, .grad None as in every Trainer step) unchunked and at
    ``logit_chunk_size=chunk``, alternated in one process (order swapped every round) after one warm-up round."""
    import transformers

    from hf_compress import DistillationArguments, DistillationTrainer

    cfg = dict(cfg)
    shape = cfg.pop("shape")
    config = getattr(transformers, cfg.pop("cls"))(**cfg)
    torch.manual_seed(0)
    teacher = transformers.AutoModelForCausalLM.from_config(config).eval()
    student = transformers.AutoModelForCausalLM.from_config(config).train()
    trainers = {}
    with tempfile.TemporaryDirectory() as tmp:
        for c in (0, chunk):
            args = DistillationArguments(output_dir=tmp, report_to="none", use_cpu=True, alpha_logits=1.0,
                                         temperature=1.0, logit_chunk_size=c)
            trainers[c] = DistillationTrainer(model=student, teacher_model=teacher, args=args)
    ids = torch.randint(4, config.vocab_size, tuple(shape))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}
    times = {0: [], chunk: []}
    for rnd in range(rounds + 1):
        for c in ((0, chunk) if rnd % 2 == 0 else (chunk, 0)):
            student.zero_grad(set_to_none=True)
            counts = trainers[c]._window_counts([batch], reduce=False)
            t0 = time.perf_counter()
            trainers[c].compute_loss(student, batch, num_items_in_batch=counts).backward()
            if rnd:  # round 0 warms up
                times[c].append(time.perf_counter() - t0)
    ratios = [b / a for a, b in zip(times[0], times[chunk])]
    return {"unchunked_s": times[0], "chunked_s": times[chunk], "chunked_over_unchunked": ratios,
            "median_ratio": sorted(ratios)[len(ratios) // 2]}


def bench_memory(tiny: bool, tokens: int | None = None, chunks=(256,), load=lambda: "") -> list[dict]:
    """Per model: the step without logit loss, unchunked, chunked at each of ``chunks`` rows."""
    models = [("SmolLM2-shaped", dict(SMOL)), ("gemma-3-shaped", dict(GEMMA, shape=[1, tokens or 1024]))]
    rows = []
    for label, cfg in models:
        if tiny:
            cfg.update(TINY, shape=[2, 16] if label.startswith("Smol") else [1, 16])
            cfg["vocab_size"] = 512 if label.startswith("Smol") else 1024
        got = {}
        for chunk in ("none", 0, *(min(c, 8) if tiny else c for c in chunks)):
            if tiny:  # in-process: seconds
                got[chunk] = memory_step(cfg, chunk)
            else:  # a fresh process per setting: no allocator state carried over
                proc = subprocess.run([sys.executable, __file__, json.dumps(cfg), str(chunk)], capture_output=True,
                                      text=True, timeout=1800, check=False)
                if proc.returncode != 0:
                    raise RuntimeError(proc.stderr[-2000:])
                got[chunk] = json.loads(proc.stdout.strip().splitlines()[-1])
            got[chunk]["load"] = load()
        base = got.pop("none")
        for chunk, r in got.items():
            row = {"model": label, "vocab": cfg["vocab_size"], "tokens": cfg["shape"][0] * cfg["shape"][1],
                   "chunk": chunk, **r, "base": {k: base[k] for k in ("first_bytes", "later_bytes", "first_s")}}
            for kind in ("first", "later"):
                row[f"{kind}_loss_bytes"] = r[f"{kind}_bytes"] - base[f"{kind}_bytes"]
            rows.append(row)
    return rows


def render_rows(rows: list[dict]) -> list[str]:
    """The markdown table: per model and setting, first and later steps, with the factor against unchunked."""
    mib = lambda b: f"{b / 2**20:,.0f} MiB"  # noqa: E731
    off = {r["model"]: r for r in rows if not r["chunk"]}
    lines = ["| model (2 layers) | vocabulary | tokens | logit_chunk_size | first step (no .grad): step peak / "
             "loss memory / less than unchunked | later steps (.grad kept): step peak / loss memory / less than "
             "unchunked | step time first / later | step without logit loss: first / later peak | load |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        cells = []
        for kind in ("first", "later"):
            ref = off.get(r["model"], r)[f"{kind}_loss_bytes"]
            factor = f"{ref / r[f'{kind}_loss_bytes']:.1f}x" if r["chunk"] and r[f"{kind}_loss_bytes"] > 0 else "-"
            cells.append(f"{mib(r[f'{kind}_bytes'])} / {mib(r[f'{kind}_loss_bytes'])} / {factor}")
        lines.append(f"| {r['model']} | {r['vocab']:,} | {r['tokens']} | {r['chunk'] or 'off'} | {cells[0]} | "
                     f"{cells[1]} | {r['first_s']:.1f} / {r['later_s']:.1f} s | {mib(r['base']['first_bytes'])} / "
                     f"{mib(r['base']['later_bytes'])} | {r['load']} |")
    return lines


if __name__ == "__main__":
    sys.path[:0] = [os.path.dirname(os.path.dirname(os.path.abspath(__file__)))]
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    if sys.argv[1] == "--interleave":  # --interleave CHUNK ROUNDS: gemma-3-shaped step times, one process
        print(json.dumps(interleaved_times(GEMMA, int(sys.argv[2]), int(sys.argv[3]))))
        sys.exit(0)
    setting = sys.argv[2]
    print(json.dumps(memory_step(json.loads(sys.argv[1]), setting if setting == "none" else int(setting))))
