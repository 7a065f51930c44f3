"""One distillation step with the student sharded by torch's FSDP2 (``fully_shard``, gloo on CPU), used by
test_fsdp_cpu.py: ``torchrun --nproc_per_node 2 fsdp_worker.py OUT_DIR`` (or ``python fsdp_worker.py OUT_DIR``
for the one-process reference). Each process takes half of the 8-row batch; the teacher and the hidden-state
projections are replicated; the loss is DistillationTrainer.compute_loss with the window's counts summed over
processes. Rank 0 writes the loss and the full gradients (student and projections) to OUT_DIR/grads.safetensors.
"""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from datasets import Dataset  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from tiny_models import tiny_model  # noqa: E402


def run(out_dir: str) -> None:
    from hf_compress import DistillationArguments, DistillationTrainer

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(4, 100, (8, 12), generator=g)
    attn = (torch.arange(12)[None, :] < torch.tensor([12, 3, 7, 12, 4, 11, 5, 9])[:, None]).long()
    batch = {"input_ids": ids.masked_fill(attn == 0, 0), "attention_mask": attn,
             "labels": ids.masked_fill(attn == 0, -100)}
    teacher = tiny_model("llama", "causal-lm", seed=1)
    student = tiny_model("llama", "causal-lm", seed=2, num_hidden_layers=2, hidden_size=16, num_attention_heads=2,
                         num_key_value_heads=1, head_dim=8, intermediate_size=32)
    args = DistillationArguments(output_dir=out_dir, report_to="none", use_cpu=True, alpha_logits=1.0,
                                 alpha_hidden=0.5, alpha_task=0.3, seed=0, disable_tqdm=True)
    data = Dataset.from_dict({k: v.tolist() for k, v in batch.items()})
    trainer = DistillationTrainer(model=student, teacher_model=teacher, args=args, train_dataset=data)
    student.train()
    if world > 1:
        from torch.distributed.fsdp import fully_shard

        for layer in student.model.layers:
            fully_shard(layer)
        fully_shard(student)
    local = {k: v.chunk(world)[rank] for k, v in batch.items()}
    counts = trainer._window_counts([local])  # summed over processes: the global denominators
    loss = trainer.compute_loss(student, local, num_items_in_batch=counts)
    loss.backward()
    grads = {}
    for name, p in list(student.named_parameters()) + [(f"proj.{n}", p) for n, p in trainer.projections.named_parameters()]:
        grad = p.grad.full_tensor() if hasattr(p.grad, "full_tensor") else p.grad
        grads[name] = grad.detach().contiguous()
    total = loss.detach().clone()
    if world > 1:
        dist.all_reduce(total)  # each process's part of the global loss (world_factor scaled): mean = global
        total /= world
    if rank == 0:
        save_file(grads, os.path.join(out_dir, "grads.safetensors"))
        with open(os.path.join(out_dir, "result.json"), "w") as fh:
            json.dump({"world": world, "loss": float(total), "teacher_requires_grad":
                       any(p.requires_grad for p in trainer.teacher.parameters()),
                       "student_type": type(student).__name__}, fh)
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()  # never leave a gloo group alive at interpreter exit


if __name__ == "__main__":
    run(sys.argv[1])
