"""Training of scripts/bench_snli.py: the teacher, the teacher's cached logits and the students, each cached
on disk under a hash of its settings (a killed run continues with what is missing), and the TRL attempt."""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

from transformers import AutoModelForSequenceClassification, DataCollatorWithPadding, Trainer, TrainingArguments

logger = logging.getLogger("bench_snli")


def train_kwargs(settings, out_dir: str, lr: float, max_steps: int = -1,
                 epochs: float = 1.0) -> dict:
    """TrainingArguments shared by the teacher and every student (only lr / length differ)."""
    return dict(output_dir=out_dir, per_device_train_batch_size=settings.batch_size, learning_rate=lr,
                num_train_epochs=epochs, max_steps=max_steps, warmup_steps=0.06, weight_decay=0.01,
                lr_scheduler_type="linear", bf16=settings.bf16, use_cpu=True, seed=settings.seed,
                data_seed=settings.seed, train_sampling_strategy="group_by_length", save_strategy="no",
                logging_steps=max(1, min(50, (max_steps if max_steps > 0 else 100) // 10)), report_to=[],
                disable_tqdm=False, dataloader_num_workers=0)


def timed(fn) -> dict:
    """Run ``fn`` and return its wall and process-CPU seconds."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return {"train_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu}


def timed_train(trainer) -> dict:
    stats = timed(trainer.train)
    steps = trainer.state.global_step
    return {**stats, "steps": steps, "steps_per_s": steps / stats["train_s"]}


def _cached_model(final: Path, stats_name: str, build):
    """``final`` holds a model saved with ``stats_name``; else ``build(staged_dir) -> stats`` trains and saves
    one into a staging folder that replaces ``final`` atomically. Returns (model, stats)."""
    if not (final / stats_name).exists():
        final.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=final.parent))
        try:
            staged = work / "staged"
            stats = build(work, staged)
            (staged / stats_name).write_text(json.dumps(stats, indent=1))
            if final.exists():  # a broken earlier attempt (no stats file)
                shutil.rmtree(final)
            os.replace(staged, final)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    model = AutoModelForSequenceClassification.from_pretrained(final).eval()
    return model, json.loads((final / stats_name).read_text())


def get_teacher(settings, train_tok, tokenizer, init_teacher, model_name, cache_root: Path):
    """Fine-tuned teacher from the cache, or fine-tune it with the plain Trainer and cache it atomically."""
    final = cache_root / f"snli-teacher-{settings.teacher_key(model_name)}"

    def build(work, staged):
        logger.warning("fine-tuning the teacher (%s, %d pairs) -> %s", model_name, len(train_tok), final)
        model = init_teacher()
        targs = TrainingArguments(**train_kwargs(settings, str(work / "run"), settings.teacher_lr,
                                                 epochs=settings.teacher_epochs))
        trainer = Trainer(model=model, args=targs, train_dataset=train_tok,
                          data_collator=DataCollatorWithPadding(tokenizer), processing_class=tokenizer)
        stats = timed_train(trainer)
        model.save_pretrained(staged)
        tokenizer.save_pretrained(staged)
        return {**stats, "pairs": len(train_tok), "settings": dataclasses.asdict(settings)}

    teacher, stats = _cached_model(final, "teacher_train.json", build)
    return teacher, final, stats


def teacher_logits(teacher, teacher_dir: Path, settings, student_tok, tokenizer) -> tuple[str, dict]:
    """The teacher's logits over the students' pairs, cached once beside the teacher (all 3 labels, so the
    distillation loss is the live teacher's); a killed run resumes. Returns (folder, timing)."""
    from hf_compress import cache_teacher_outputs

    labels = "" if settings.student_labels is None else f"-labels{settings.student_labels}"
    folder = teacher_dir / f"logits-{len(student_tok)}-{settings.max_length}-{settings.seed}{labels}"
    timing = folder / "bench_timing.json"
    if not timing.exists():
        stats = timed(lambda: cache_teacher_outputs(teacher, student_tok, str(folder), top_k=3,
                                                    max_length=settings.max_length, batch_size=128,
                                                    tokenizer=tokenizer))
        timing.write_text(json.dumps(stats))
    return str(folder), json.loads(timing.read_text())


def train_student(kind: str, teacher, settings, student_tok, tokenizer, work: Path,
                  cache_folder: str | None, base=None):
    """A student with the teacher's ``settings.keep`` layers (or ``student_layers`` spread evenly), trained
    for ``settings.steps`` steps on ``student_tok``; the logits student reads ``cache_folder`` when given.
    The "no teacher (base init)" student takes those layers from ``base()``, the pre-trained model."""
    from hf_compress.distillation.args import DistillationArguments
    from hf_compress.distillation.trainer import DistillationTrainer
    from hf_compress.methods.layers.drop import student_from_teacher

    keep = settings.keep
    init_from = teacher
    if kind == "no teacher (base init)":
        if base is None:
            raise ValueError("the 'no teacher (base init)' student needs `base`, the pre-trained model's loader")
        init_from = base()
    student = (student_from_teacher(init_from, keep=keep) if keep is not None
               else student_from_teacher(init_from, num_layers=settings.student_layers)).train()
    kwargs = train_kwargs(settings, str(work / kind.replace(" ", "_")), settings.student_lr, settings.steps)
    common = dict(model=student, train_dataset=student_tok, data_collator=DataCollatorWithPadding(tokenizer),
                  processing_class=tokenizer)
    source = None
    if kind.startswith("no teacher"):
        trainer = Trainer(args=TrainingArguments(**kwargs), **common)
    else:
        hidden = settings.alpha_hidden if kind == "logits + hidden" else 0.0
        dargs = DistillationArguments(**kwargs, temperature=settings.temperature,
                                      alpha_logits=settings.alpha_logits, alpha_task=settings.alpha_task,
                                      alpha_hidden=hidden, logit_loss="forward_kl",
                                      layer_map=settings.layer_map if hidden > 0 else "uniform")
        source = "cache" if cache_folder and hidden == 0 else "live"
        teacher_arg = {"teacher_cache": cache_folder} if source == "cache" else {"teacher_model": teacher}
        trainer = DistillationTrainer(args=dargs, **teacher_arg, **common)
    stats = timed_train(trainer)
    return student.eval(), {**stats, "pairs": len(student_tok), "teacher_source": source}


def get_student(kind, teacher, settings, student_tok, tokenizer, cache_folder, model_name, cache_root, base=None):
    """A trained student from the cache (``snli-student-<hash of every setting>``), or train and cache it."""
    final = cache_root / f"snli-student-{settings.student_key(kind, model_name)}"

    def build(work, staged):
        logger.warning("training student %r for %d steps on %d pairs", kind, settings.steps, len(student_tok))
        student, stats = train_student(kind, teacher, settings, student_tok, tokenizer, work, cache_folder, base)
        student.save_pretrained(staged)
        return {**stats, "kind": kind, "settings": dataclasses.asdict(settings)}

    student, stats = _cached_model(final, "student_train.json", build)
    return student, final, stats


def trl_attempt(teacher, settings, train_tok, tokenizer, work: Path) -> str:
    """Try TRL's DistillationTrainer / GKDTrainer on a sequence-classification student: why it fails."""
    try:
        import trl
    except ImportError:
        return "trl is not installed (`pip install trl`); it distils causal LMs only"
    from hf_compress.methods.layers.drop import student_from_teacher

    reasons = []
    for module, trainer_name, config_name in (("trl", "DistillationTrainer", "DistillationConfig"),
                                               ("trl.experimental.gkd", "GKDTrainer", "GKDConfig")):
        try:
            mod = __import__(module, fromlist=[trainer_name])
            kwargs = train_kwargs(settings, str(work / "trl"), settings.student_lr, 1)
            config = getattr(mod, config_name)(**kwargs)
            student = student_from_teacher(teacher, num_layers=settings.student_layers)
            getattr(mod, trainer_name)(model=student, teacher_model=copy.deepcopy(teacher), args=config,
                                       train_dataset=train_tok, processing_class=tokenizer).train()
            return f"trl {trainer_name} unexpectedly trained a classifier: not measured"
        except Exception as exc:  # noqa: BLE001 -- the message is the finding
            reasons.append(f"trl {trl.__version__} {trainer_name}: {type(exc).__name__}: {str(exc)[:120]}")
    return "; ".join(reasons)
