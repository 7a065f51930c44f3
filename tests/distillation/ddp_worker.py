"""A short distillation run used by test_multiprocess.py, in one process or under ``accelerate launch``.

Usage: ``python ddp_worker.py OUT_DIR`` (one process) or ``accelerate launch --multi_gpu --num_processes 2
ddp_worker.py OUT_DIR``. The global batch is 8 (4 per process x 2 processes, or 8 in one) with gradient
accumulation 2; it writes ``result.json`` (logged losses, teacher type) and ``final.safetensors`` (student and
projection weights) into OUT_DIR from the main process.
"""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import torch  # noqa: E402
from datasets import Dataset  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from tiny_models import tiny_model  # noqa: E402

GLOBAL_MICRO_BATCH = 4
N_EXAMPLES = 24


def make_dataset(seed: int = 0) -> Dataset:
    """Right-padded rows of different lengths, labels masked on padding and on the first 2 tokens."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, 100, (N_EXAMPLES, 16), generator=g)
    lengths = torch.randint(3, 17, (N_EXAMPLES,), generator=g)
    attn = (torch.arange(16)[None, :] < lengths[:, None]).long()
    ids = ids.masked_fill(attn == 0, 0)
    labels = ids.masked_fill(attn == 0, -100)
    labels[:, :2] = -100
    return Dataset.from_dict({"input_ids": ids.tolist(), "attention_mask": attn.tolist(), "labels": labels.tolist()})


def run(out_dir: str) -> None:
    from hf_compress import DistillationArguments, DistillationTrainer

    world = int(os.environ.get("WORLD_SIZE", "1"))
    teacher = tiny_model("llama", seed=1)
    student = tiny_model("llama", seed=2, num_hidden_layers=2, hidden_size=16, intermediate_size=32, head_dim=4)
    args = DistillationArguments(
        output_dir=os.path.join(out_dir, "run"), per_device_train_batch_size=GLOBAL_MICRO_BATCH // world,
        gradient_accumulation_steps=2, max_steps=3, logging_steps=1, learning_rate=1e-2, report_to="none",
        save_strategy="no", disable_tqdm=True, use_cpu=True, train_sampling_strategy="sequential",
        alpha_logits=1.0, alpha_hidden=0.5, alpha_task=0.25, temperature=2.0, seed=0,
        ddp_find_unused_parameters=False,
    )
    trainer = DistillationTrainer(model=student, teacher_model=teacher, args=args, train_dataset=make_dataset())
    trainer.train()
    if trainer.accelerator.num_processes != world:
        raise SystemExit(f"expected {world} processes, accelerate reports {trainer.accelerator.num_processes}")
    if trainer.is_world_process_zero():
        tensors = {f"student.{k}": v.detach().clone().contiguous() for k, v in trainer.model.state_dict().items()}
        tensors.update({f"proj.{k}": v.detach().clone() for k, v in trainer.projections.state_dict().items()})
        save_file(tensors, os.path.join(out_dir, "final.safetensors"))
        logs = [{k: v for k, v in row.items() if k.startswith("loss")} for row in trainer.state.log_history
                if "loss" in row]
        result = {"world": trainer.accelerator.num_processes, "logs": logs,
                  "teacher_type": type(trainer.teacher).__name__,
                  "teacher_requires_grad": any(p.requires_grad for p in trainer.teacher.parameters()),
                  "model_wrapped_type": type(trainer.model_wrapped).__name__}
        with open(os.path.join(out_dir, "result.json"), "w") as f:
            json.dump(result, f)
    # destroy the process group before the interpreter exits: a gloo group left alive at exit is what aborted a
    # child at teardown ("terminate called without an active exception") after rank 0 had written its result
    trainer.end()


if __name__ == "__main__":
    run(sys.argv[1])
