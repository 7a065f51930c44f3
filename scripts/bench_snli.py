"""SNLI proof: DistilBERT-style task distillation of a fine-tuned MiniLM-L6 into 3-layer students.

    python scripts/bench_snli.py            # full table -> benchmarks/snli.md
    python scripts/bench_snli.py --quick    # smaller budget, same rows (a temporary file)
    python scripts/bench_snli.py --tiny     # tiny in-process BERT, synthetic pairs, < 30 s (a temporary file)

Teacher: all-MiniLM-L6-v2 (``hf_compress.assets``) fine-tuned as a 3-way classifier with the plain
``Trainer`` on the first ``train_size`` pairs of the shuffled training subset, cached on disk under a hash of
its settings. Students (3 layers copied from the teacher) all get the same ``student_pairs`` (the teacher's
pairs first), steps, batch and learning-rate schedule: no teacher, logits KD (from the teacher's logits cached
once over those pairs, ``cache_teacher_outputs``), logits + hidden KD (live teacher), the distilled student in
int8 w8a8, and TRL's distillation trainer when it can take a sequence-classification student. A second
no-teacher student ("no teacher (base init)") starts from the *pre-trained* model's layers, as a user without a
fine-tuned teacher would; every other student starts from the fine-tuned teacher's layers. Each distilled
student is compared with each no-teacher student on the same test pairs (exact McNemar test). Each trained
student is cached too, so a killed run continues with the next one. Latency is measured side by side in one
process (batch 32, medians); accuracy on the SNLI test set in fp32. Training uses bf16 autocast only on a CPU
with native bf16 (AVX512-BF16 / AMX); elsewhere torch emulates bf16 and it is several times slower than fp32.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import hashlib
import json
import logging
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

import snli_data  # noqa: E402
import snli_table  # noqa: E402
import snli_train  # noqa: E402
from hf_compress.arch import num_layers  # noqa: E402
from hf_compress.evaluation import accuracy, native_bf16_cpu, report_path, write_report  # noqa: E402

logger = logging.getLogger("bench_snli")
ROOT = Path(__file__).resolve().parent.parent
STUDENTS = ("no teacher (base init)", "no teacher", "logits", "logits + hidden")
BASELINES = ("no teacher (base init)", "no teacher")


@dataclass
class BenchSettings:
    """Budget of one run; the teacher fields go into the teacher cache key, all fields into the students'."""

    preset: str = "full"
    train_size: int = 12_000  # the teacher's training pairs: the first of the shuffled training subset
    student_pairs: int | None = None  # the students' pairs, the teacher's first; None: the teacher's
    # the first N of the students' pairs keep their labels, the rest are unlabelled text (-100): the distilled
    # students learn them from the teacher alone, the no-teacher students train on the N labelled pairs only
    student_labels: int | None = None
    test_size: int | None = None  # None: the whole labelled SNLI test set (9,824 pairs)
    max_length: int = 128
    batch_size: int = 32
    teacher_lr: float = 5e-5
    teacher_epochs: float = 1.0
    student_steps: int | None = None  # None: student_epochs over student_pairs
    student_epochs: float = 1.0
    student_lr: float = 2e-4  # at 5e-5 the 3-layer students stayed far under-trained (README, SNLI)
    student_layers: int = 3
    student_keep: str | None = None  # teacher layers copied into the student, e.g. "1,3,5"; None: spread
    students: str = ",".join(STUDENTS)  # the student rows to train, comma-separated
    teacher_cache: bool = True  # the logits student trains from the teacher's logits cached once
    temperature: float = 2.0
    alpha_logits: float = 0.5
    alpha_task: float = 0.5
    alpha_hidden: float = 1.0
    layer_map: str = "uniform"  # DistillationArguments.layer_map: "uniform", "last" or JSON [[s, t], ...]
    latency_repeats: int = 10
    bf16_training: bool | None = None  # None: bf16 autocast only where the CPU has native bf16; eval is fp32
    seed: int = 0

    def __post_init__(self):
        for name in ("train_size", "max_length", "batch_size", "student_layers", "latency_repeats"):
            if isinstance(getattr(self, name), bool) or int(getattr(self, name)) < 1:
                raise ValueError(f"`{name}` must be an integer >= 1, got {getattr(self, name)!r}")
        for name in ("test_size", "student_pairs", "student_steps", "student_labels"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be >= 1 or None, got {getattr(self, name)!r}")
        for name in ("teacher_lr", "teacher_epochs", "student_lr", "student_epochs", "temperature"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) > 0):
                raise ValueError(f"`{name}` must be a finite number > 0, got {getattr(self, name)!r}")
        for name in ("alpha_logits", "alpha_task", "alpha_hidden"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
                raise ValueError(f"`{name}` must be a finite number >= 0, got {getattr(self, name)!r}")
        if self.student_labels is not None and self.student_labels > self.pairs:
            raise ValueError(f"`student_labels` must be <= the students' pairs ({self.pairs}), got "
                             f"{self.student_labels}")
        kinds = self.student_kinds
        if not kinds or any(k not in STUDENTS for k in kinds):
            raise ValueError(f"`students` must be a comma-separated subset of {', '.join(STUDENTS)}, "
                             f"got {self.students!r}")
        keep = self.keep
        if keep is not None and (len(keep) != self.student_layers or keep != sorted(set(keep))):
            raise ValueError(f"`student_keep` must be {self.student_layers} increasing layer indices "
                             f"(student_layers), e.g. '1,3,5', got {self.student_keep!r}")

    @property
    def student_kinds(self) -> list[str]:
        return [k.strip() for k in str(self.students).split(",") if k.strip()]

    @property
    def keep(self) -> list[int] | None:
        if self.student_keep is None:
            return None
        try:
            return [int(i) for i in str(self.student_keep).split(",")]
        except ValueError:
            raise ValueError(f"`student_keep` must be comma-separated layer indices, e.g. '1,3,5', got "
                             f"{self.student_keep!r}") from None

    @property
    def bf16(self) -> bool:
        return native_bf16_cpu() if self.bf16_training is None else bool(self.bf16_training)

    @property
    def pairs(self) -> int:
        return self.student_pairs or self.train_size

    @property
    def steps(self) -> int:
        return self.student_steps or math.ceil(self.pairs * self.student_epochs / self.batch_size)

    def teacher_key(self, model_name: str) -> str:
        fields = ("train_size", "max_length", "batch_size", "teacher_lr", "teacher_epochs", "seed")
        blob = {"model": model_name, "bf16_training": self.bf16, **{f: getattr(self, f) for f in fields}}
        return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:12]

    def student_key(self, kind: str, model_name: str) -> str:
        skip = {"preset", "test_size", "latency_repeats", "students", "bf16_training", "student_steps"}
        if self.student_labels is None:  # every pair labelled: the keys of the students cached before the field
            skip.add("student_labels")
        blob = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in skip}
        blob.update(kind=kind, steps=self.steps, bf16=self.bf16, teacher=self.teacher_key(model_name))
        return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:12]


PRESETS = {
    # full and quick share the teacher (same teacher settings -> same cache entry); students differ
    # full: 1,250 steps over 64k of the 99,890 pairs (more did not fit one shared core before the session's
    # deadline); two students, the distilled one first
    "full": BenchSettings(student_pairs=64_000, student_steps=1_250, students="logits,no teacher"),
    "quick": BenchSettings(preset="quick", test_size=2_000, student_steps=150, latency_repeats=5),
    "tiny": BenchSettings(preset="tiny", train_size=96, student_pairs=192, test_size=48, max_length=16,
                          batch_size=8, teacher_lr=5e-3, teacher_epochs=3.0, student_steps=6,
                          student_lr=3e-3, latency_repeats=3),
}


# ---------------------------------------------------------------------------------------------- table
def run_students(args, settings, teacher, teacher_dir, teacher_row, student_tok, test_tok, tokenizer, labels,
                 model_name, cache_root, base=None):
    """Train (or reuse) every student, measure accuracy / size / latency side by side: table rows + notes."""
    from hf_compress.methods.int8.quantize import quantize_int8

    teacher_name = f"teacher ({model_name})"
    models, rows = {teacher_name: teacher}, {teacher_name: teacher_row}
    preds = {}
    notes = [f"teacher row: fine-tuned once with the plain Trainer ({teacher_row['steps']} steps on "
             f"{teacher_row['pairs']:,} pairs) and cached in `{teacher_dir.name}`; its time is from that run."]
    kinds = settings.student_kinds
    labelled_tok = distil_tok = student_tok
    if settings.student_labels is not None:  # the pairs past the first student_labels: text without labels
        n_lab = settings.student_labels
        labelled_tok = student_tok.select(range(n_lab))
        distil_tok = student_tok.map(lambda row, i: {"label": row["label"] if i < n_lab else -100},
                                     with_indices=True, desc="unlabel")
        notes.append(f"labels: the students' first {n_lab:,} pairs keep theirs; the other "
                     f"{len(student_tok) - n_lab:,} are unlabelled text, learnt from the teacher alone by the "
                     f"distilled students; the no-teacher students train on the {n_lab:,} labelled pairs.")
    cache_folder = None
    if "logits" in kinds and settings.teacher_cache:
        cache_folder, timing = snli_train.teacher_logits(teacher, teacher_dir, settings, distil_tok, tokenizer)
        notes.append(f"logits student: trained from the teacher's logits over its {len(student_tok):,} pairs, "
                     f"cached once (`cache_teacher_outputs`, all 3 labels) in {timing['cpu_s'] / 60:.1f} "
                     f"CPU-min ({timing['train_s']:.0f} s wall, not in its training time)."
                     + (" The logits + hidden student runs the live teacher." if "logits + hidden" in kinds else ""))
    for kind in kinds:
        data = labelled_tok if kind.startswith("no teacher") else distil_tok
        student, folder, stats = snli_train.get_student(kind, teacher, settings, data, tokenizer, cache_folder,
                                                        model_name, cache_root, base=base)
        name = f"student: {kind}"
        models[name] = student
        preds[name] = snli_data.stored_predictions(student, folder, settings, test_tok, tokenizer)
        rows[name] = dict(acc=accuracy(preds[name], labels),
                          **{k: stats.get(k) for k in ("train_s", "cpu_s", "steps", "steps_per_s", "pairs")})
        logger.warning("%s: accuracy %.4f (%s)", name, rows[name]["acc"], folder.name)
    rows = {n: rows[n] for n in [teacher_name] + [f"student: {k}" for k in STUDENTS if k in kinds]}
    distilled = [k for k in ("logits + hidden", "logits") if k in kinds]
    notes += snli_table.paired_notes(preds, labels, [f"student: {k}" for k in distilled],
                                     [f"student: {k}" for k in BASELINES if k in kinds])
    if distilled and args.skip_int8:
        notes.append("int8 row left out (--skip-int8): w8a8 on a CPU without AVX512-VNNI runs torch._int_mm, "
                     "20-37x slower than fp32 (README, int8); predicting the test set took ~15 s a batch of 128.")
    elif distilled:
        start = time.perf_counter()
        int8 = quantize_int8(copy.deepcopy(models[f"student: {distilled[0]}"]), mode="w8a8")
        quant_s = time.perf_counter() - start
        name = f"student: {distilled[0]}, int8 w8a8"
        models[name] = int8
        rows[name] = dict(acc=accuracy(snli_data.predict(int8, test_tok, tokenizer), labels))
        notes.append(f"int8 row: the {distilled[0]} student quantized after training ({quant_s:.1f} s).")
    if not args.skip_trl:
        rows["student: TRL distillation"] = dict(acc=None)
        with tempfile.TemporaryDirectory(prefix="bench-snli-trl-") as work:
            notes.append("TRL row not measured: " + snli_train.trl_attempt(teacher, settings, student_tok, tokenizer,
                                                                Path(work)))
    notes.append(snli_table.measure(models, rows, test_tok, tokenizer, settings.latency_repeats))
    return rows, notes


def header(settings: BenchSettings, model_name: str, n_test: int, argv: list[str], wall_s: float,
           cpu_s: float, loads: tuple, teacher_layers: int = 6) -> str:
    from hf_compress.methods.layers.drop import spread_layers

    keep = ", ".join(map(str, settings.keep or spread_layers(teacher_layers, settings.student_layers)))
    if settings.bf16:
        precision = "bf16 autocast" + ("" if settings.bf16_training else " (this CPU has native bf16)")
    else:
        why = "set off" if settings.bf16_training is False else (
            f"this CPU ({torch.backends.cpu.get_cpu_capability()}) has no native bf16, where bf16 is several "
            f"times slower than fp32")
        precision = f"fp32 ({why})"
    return "\n".join([
        f"## SNLI: task distillation of {model_name} into {settings.student_layers}-layer students "
        f"(`{settings.preset}` preset)", "",
        f"Command: `python scripts/bench_snli.py {' '.join(argv)}`. Whole run: {wall_s / 60:.1f} min wall, "
        f"{cpu_s / 60:.1f} CPU-min in this process (models reused from the cache cost nothing here); load average "
        f"{loads[0]:.2f} at the start, {loads[1]:.2f} at the end.", "",
        f"Teacher: the first {settings.train_size:,} of the shuffled training pairs, {settings.teacher_epochs:g} "
        f"epoch(s) at lr {settings.teacher_lr:g}. Every student: the same {settings.pairs:,} pairs (the "
        f"teacher's first), {settings.steps} steps × batch {settings.batch_size} = "
        f"{settings.steps * settings.batch_size / settings.pairs:.2f} epoch, lr {settings.student_lr:g} "
        f"linear with 6% warm-up, teacher layers {keep} (the base-init student: those layers of the pre-trained "
        f"model, never fine-tuned). KD: forward KL at τ={settings.temperature:g}, "
        f"α_logits={settings.alpha_logits:g}, α_task={settings.alpha_task:g}, α_hidden="
        f"{settings.alpha_hidden:g} ({settings.layer_map} layer map, MSE). max_length {settings.max_length}; "
        f"training precision: {precision}. Test: {n_test:,} SNLI test pairs, fp32."])


# ----------------------------------------------------------------------------------------------- main
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="smaller budget (a temporary file)")
    size.add_argument("--tiny", action="store_true", help="tiny in-process BERT on synthetic pairs (tests)")
    p.add_argument("--output", default=None,
                   help="markdown path (default benchmarks/snli.md; a temporary file for --quick / --tiny)")
    p.add_argument("--cache-dir", default=None,
                   help="root of the teacher / student caches (default ~/.cache/hf_compress)")
    p.add_argument("--teacher-only", action="store_true", help="fine-tune and cache the teacher, then stop")
    p.add_argument("--skip-trl", action="store_true", help="leave out the TRL row")
    p.add_argument("--skip-int8", action="store_true", help="leave out the int8 w8a8 row (slow without VNNI)")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="override a BenchSettings field, e.g. --set temperature=4 --set student_keep=1,3,5")
    return p.parse_args(argv)


def make_settings(args) -> BenchSettings:
    base = PRESETS["tiny" if args.tiny else "quick" if args.quick else "full"]
    overrides = {}
    types = {f.name: f.type for f in dataclasses.fields(BenchSettings)}
    for item in args.set:
        key, _, value = item.partition("=")
        if key not in types:
            raise SystemExit(f"--set {item!r}: unknown field {key!r}; fields are {', '.join(sorted(types))}")
        if types[key].startswith("str"):
            overrides[key] = None if value == "None" else value
        elif key == "bf16_training" and value.lower() == "auto":
            overrides[key] = None
        else:
            try:
                overrides[key] = None if value == "None" else json.loads(value.lower())
            except json.JSONDecodeError:
                raise SystemExit(f"--set {item!r}: {value!r} is not a number / true / false / None") from None
    try:
        return dataclasses.replace(base, **overrides)
    except ValueError as exc:
        raise SystemExit(f"--set: {exc}") from None


def main(argv=None) -> int:
    t_start, cpu_start, load_start = time.perf_counter(), time.process_time(), os.getloadavg()[0]
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    settings = make_settings(args)
    logger.info("settings %s (bf16 autocast: %s)", settings, settings.bf16)
    setup = snli_data.tiny_setup if args.tiny else snli_data.snli_setup
    train, test, tokenizer, init_teacher, model_name = setup(settings, max(settings.train_size, settings.pairs))
    train_tok = snli_data.tokenize(train, tokenizer, settings.max_length)
    test_tok = snli_data.tokenize(test, tokenizer, settings.max_length)
    cache_root = Path(args.cache_dir or os.path.join(os.path.expanduser("~"), ".cache", "hf_compress"))
    teacher, teacher_dir, tstats = snli_train.get_teacher(settings, train_tok.select(range(settings.train_size)),
                                               tokenizer, init_teacher, model_name, cache_root)
    labels = list(test_tok["label"])
    teacher_acc = accuracy(snli_data.stored_predictions(teacher, teacher_dir, settings, test_tok, tokenizer), labels)
    logger.warning("teacher %s: test accuracy %.4f (%d pairs), trained in %.0f s", teacher_dir, teacher_acc,
                   len(labels), tstats["train_s"])
    if args.teacher_only:
        return 0
    teacher_row = dict(acc=teacher_acc, pairs=tstats.get("pairs", settings.train_size),
                       **{k: tstats.get(k) for k in ("train_s", "cpu_s", "steps", "steps_per_s")})
    rows, notes = run_students(args, settings, teacher, teacher_dir, teacher_row,
                               train_tok.select(range(settings.pairs)), test_tok, tokenizer, labels,
                               model_name, cache_root, base=init_teacher)
    head = header(settings, model_name, len(labels), argv, time.perf_counter() - t_start,
                  time.process_time() - cpu_start, (load_start, os.getloadavg()[0]), num_layers(teacher))
    table = snli_table.render(rows, notes, head)
    print(table)
    out = report_path(args.output, ROOT / "benchmarks" / "snli.md", smoke=args.quick or args.tiny)
    write_report(out, table)
    logger.warning("wrote %s", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
