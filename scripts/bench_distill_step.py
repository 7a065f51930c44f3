"""Seconds per optimizer step, live teacher vs teacher cache vs plain fine-tuning, interleaved in one process.

    python scripts/bench_distill_step.py --pair smollm2 --batch 4 --rounds 5          # JSON to stdout
    python scripts/bench_distill_step.py --pair minilm --profile                      # + torch.profiler tables
    python scripts/bench_distill_step.py --tiny                                       # tiny models, seconds

The three arms train copies of the same student on the same rows. Each round runs one optimizer step of every
arm (the order rotates per round, so slow drift of the machine's load hits all arms alike); a step is what the
Trainer does per optimizer step with no accumulation: fetch the batch (dataloader + collator), ``get_batch_samples``,
``training_step`` (forward + loss + backward), gradient clipping, the optimizer and scheduler steps, zeroing
the gradients. After one warm-up round, the medians over rounds are reported, and the median of the per-round
cached / plain ratios. ``--profile`` adds one profiled step of the cached and the plain arm (torch.profiler,
operators by self CPU time) and the seconds spent in the teacher source (reading cache rows) per step.
``bench_distill_speed.py --parts speed`` calls :func:`bench_speed` for its published table.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import torch  # noqa: E402
import transformers  # noqa: E402

ARMS = ("live", "cached", "plain")


class _PlainEncoder(transformers.Trainer):
    """A plain step of an encoder without a head: the student's forward + backward on a trivial loss."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        out = model(**{k: v for k, v in inputs.items() if k != "labels"})
        return out.last_hidden_state.pow(2).mean()


class _Arm:
    """One trainer driven step by step (the body of ``Trainer._inner_training_loop`` for one optimizer step)."""

    def __init__(self, trainer, max_steps: int):
        self.trainer, self.model = trainer, trainer.model
        trainer.create_optimizer_and_scheduler(num_training_steps=max_steps)
        trainer.current_gradient_accumulation_steps = 1  # set by the training loop, read by training_step
        self.loader = trainer.get_train_dataloader()
        self._it = iter(self.loader)
        self.times, self.cpu, self.fetch, self.losses, self.teacher_s = [], [], [], [], []
        source = getattr(trainer, "teacher_source", None)
        if source is not None:  # time the teacher source (cache row reads / live teacher forward) per step
            self._spent = [0.0]

            def timed(*a, _call=source.__call__, **kw):
                t = time.perf_counter()
                out = _call(*a, **kw)
                self._spent[0] += time.perf_counter() - t
                return out

            trainer.teacher_source = timed
        else:
            self._spent = None

    def _next(self):
        try:
            return next(self._it)
        except StopIteration:
            self._it = iter(self.loader)
            return next(self._it)

    def step(self) -> None:
        tr = self.trainer
        if self._spent is not None:
            self._spent[0] = 0.0
        t0, c0 = time.perf_counter(), time.process_time()
        batch = self._next()
        batches, counts = tr.get_batch_samples(iter([batch]), 1, tr.args.device)
        t1 = time.perf_counter()
        loss = tr.training_step(self.model, batches[0], counts)
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), tr.args.max_grad_norm)
        tr.optimizer.step()
        tr.lr_scheduler.step()
        self.model.zero_grad(set_to_none=True)
        t2 = time.perf_counter()
        self.cpu.append(time.process_time() - c0)  # CPU-seconds of all threads: less sensitive to other jobs
        self.times.append(t2 - t0)
        self.fetch.append(t1 - t0)
        self.losses.append(float(loss))
        if self._spent is not None:
            self.teacher_s.append(self._spent[0])


def _load() -> str:
    return open("/proc/loadavg").read().split()[0]


def build_arms(name: str, tiny: bool, rounds: int, batch: int, out_dir: str, arms_wanted=ARMS) -> tuple[dict, dict]:
    """The three arms of ``name`` (and the cache build facts)."""
    from transformers import Trainer, TrainingArguments

    from bench_distill_speed import _dataset, _pair
    from hf_compress import DistillationArguments, DistillationTrainer, cache_teacher_outputs
    from hf_compress.arch import num_layers
    from hf_compress.distillation.cache import cache_summary

    teacher, student, tok, ids, seq = _pair(name, tiny)
    causal = name == "smollm2"
    ds = _dataset(ids[: (rounds + 1) * batch], causal)
    hidden = [] if causal else [k * num_layers(teacher) // num_layers(student) for k in range(1, num_layers(student) + 1)]
    common = dict(output_dir=os.path.join(out_dir, "run"), report_to="none", use_cpu=True, disable_tqdm=True,
                  save_strategy="no", train_sampling_strategy="sequential", learning_rate=1e-4, seed=0,
                  per_device_train_batch_size=batch, max_steps=rounds + 1, logging_steps=1, max_grad_norm=1.0)
    kd = dict(alpha_logits=1.0 if causal else 0.0, alpha_hidden=0.0 if causal else 1.0, temperature=1.0,
              layer_map="uniform")
    t0 = time.perf_counter()
    folder = cache_teacher_outputs(teacher, ds, os.path.join(out_dir, f"cache-{name}"), top_k=32 if causal else 0,
                                   hidden_layers=hidden, max_length=seq, batch_size=batch, tokenizer=tok)
    facts = {"pair": name, "batch": batch, "seq": seq, "rounds": rounds, "build_s": time.perf_counter() - t0,
             "cache": cache_summary(folder), "rows_cached": len(ds)}
    arms = {}
    for arm in arms_wanted:
        model = copy.deepcopy(student).train()
        if arm == "plain":
            cls = Trainer if causal else _PlainEncoder
            trainer = cls(model=model, args=TrainingArguments(**common), train_dataset=ds)
        else:
            source = {"teacher_model": teacher} if arm == "live" else {"teacher_cache": folder}
            trainer = DistillationTrainer(model=model, args=DistillationArguments(**common, **kd), train_dataset=ds,
                                          processing_class=tok, **source)
        arms[arm] = _Arm(trainer, rounds + 1)
    return arms, facts


def _profile(arm: _Arm, rows: int = 22) -> str:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        arm.step()
    for record in (arm.times, arm.cpu, arm.fetch, arm.losses, arm.teacher_s):  # the profiled step is not a timed one
        if record:
            record.pop()
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)


def bench_speed(name: str, tiny: bool, rounds: int, batch: int, out_dir: str, profile: bool = False,
                arms_wanted=ARMS) -> dict:
    arms, facts = build_arms(name, tiny, rounds, batch, out_dir, arms_wanted)
    loads, order = [], list(arms_wanted)
    for r in range(rounds + 1):  # round 0 warms up every arm
        loads.append(_load())
        for arm in order[r % len(order):] + order[: r % len(order)]:
            arms[arm].step()
        print(f"[round {r}/{rounds}] " + " ".join(f"{a} {arms[a].times[-1]:.2f}s (cpu {arms[a].cpu[-1]:.2f}s)"
                                                   for a in order) + f" load {loads[-1]}", file=sys.stderr, flush=True)
    out = dict(facts, loads=loads, arms={})
    for name_, arm in arms.items():
        t = arm.times[1:]
        out["arms"][name_] = {"median_s": statistics.median(t), "times": arm.times, "losses": arm.losses,
                              "cpu_median_s": statistics.median(arm.cpu[1:]), "cpu": arm.cpu,
                              "fetch_median_s": statistics.median(arm.fetch[1:]),
                              "teacher_median_s": statistics.median(arm.teacher_s[1:]) if arm.teacher_s else None}
    if "cached" in arms and "plain" in arms:
        ratios = [c / p for c, p in zip(arms["cached"].times[1:], arms["plain"].times[1:])]
        cpu = [c / p for c, p in zip(arms["cached"].cpu[1:], arms["plain"].cpu[1:])]
        out.update(cached_over_plain=statistics.median(ratios), ratios=ratios,
                   cpu_cached_over_plain=statistics.median(cpu), cpu_ratios=cpu)
    if profile:
        out["profile"] = {arm: _profile(arms[arm]) for arm in ("cached", "plain")}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pair", choices=("minilm", "smollm2"), default="smollm2")
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--rounds", type=int, default=5, help="timed rounds (after one warm-up round)")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--profile", action="store_true")
    p.add_argument("--arms", default=",".join(ARMS), help="comma-separated subset of live,cached,plain")
    args = p.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    import tempfile

    with tempfile.TemporaryDirectory(prefix="bench-step-") as work:
        res = bench_speed(args.pair, args.tiny, args.rounds, args.batch, work, args.profile,
                          tuple(args.arms.split(",")))
    for arm, table in res.pop("profile", {}).items():
        print(f"== profile: {arm} ==\n{table}", file=sys.stderr)
    print(json.dumps(res, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
