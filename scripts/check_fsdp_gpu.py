"""Check DistillationTrainer under FSDP2 on a GPU machine: losses of an FSDP2 run (one process per GPU) equal a
single-process run of the same global batch. Skips cleanly (exit 0) without CUDA or with fewer than 2 GPUs.

    python scripts/check_fsdp_gpu.py             # reference run, then `torchrun --nproc_per_node <GPUs>` of itself
    python scripts/check_fsdp_gpu.py --gpus 2    # use 2 GPUs

The student (a tiny Llama built from a config, 4 layers) is sharded per decoder layer by FSDP2 through the
Trainer's own ``fsdp`` / ``fsdp_config`` arguments; the teacher (8 layers) is replicated on every GPU, frozen and
never wrapped; the hidden-state projections are replicated and their gradients averaged across processes. The
launch line a user writes is the same with accelerate: ``accelerate launch --use_fsdp --fsdp_version 2
--num_processes N train.py``. Nothing is downloaded. Prints one JSON line and exits 1 when the losses differ.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

GLOBAL_BATCH, STEPS, SEQ = 8, 4, 32


def _models():
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    def build(layers, seed):
        torch.manual_seed(seed)
        return LlamaForCausalLM(LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=128,
                                            num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                                            max_position_embeddings=64))

    return build(8, 1), build(4, 2)


def _train(out: str, world: int) -> list[float]:
    import torch
    from datasets import Dataset

    from hf_compress import DistillationArguments, DistillationTrainer

    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 256, (GLOBAL_BATCH * STEPS, SEQ), generator=g)
    data = Dataset.from_dict({"input_ids": ids.tolist(), "attention_mask": torch.ones_like(ids).tolist(),
                              "labels": ids.tolist()})
    fsdp = {"fsdp": True, "fsdp_config": {"version": 2, "transformer_layer_cls_to_wrap": ["LlamaDecoderLayer"]}} \
        if world > 1 else {}
    args = DistillationArguments(output_dir=out, max_steps=STEPS, per_device_train_batch_size=GLOBAL_BATCH // world,
                                 learning_rate=1e-3, logging_steps=1, report_to="none", save_strategy="no",
                                 alpha_logits=1.0, alpha_hidden=0.5, alpha_task=0.1, seed=0, max_grad_norm=0.0,
                                 train_sampling_strategy="sequential", disable_tqdm=True, **fsdp)
    teacher, student = _models()
    trainer = DistillationTrainer(model=student, teacher_model=teacher, args=args, train_dataset=data)
    trainer.train()
    assert not any(p.requires_grad for p in trainer.teacher.parameters()), "the teacher must stay frozen"
    return [row["loss"] for row in trainer.state.log_history if "loss" in row]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpus", type=int, default=None, help="processes (GPUs) for the FSDP2 run")
    parser.add_argument("--worker", metavar="RESULT_JSON", help=argparse.SUPPRESS)
    args = parser.parse_args()
    import torch

    if args.worker:  # one torchrun process of the FSDP2 run
        losses = _train(tempfile.mkdtemp(prefix="fsdp-"), int(os.environ["WORLD_SIZE"]))
        if int(os.environ["RANK"]) == 0:
            with open(args.worker, "w") as fh:
                json.dump(losses, fh)
        return 0
    gpus = args.gpus or torch.cuda.device_count()
    if not torch.cuda.is_available() or gpus < 2:
        print(json.dumps({"skipped": f"needs CUDA and >= 2 GPUs, found {torch.cuda.device_count()}"}))
        return 0
    reference = _train(tempfile.mkdtemp(prefix="single-"), 1)
    result = os.path.join(tempfile.mkdtemp(prefix="fsdp-result-"), "losses.json")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(gpus), __file__, "--worker", result]
    subprocess.run(cmd, check=True)
    with open(result) as fh:
        sharded = json.load(fh)
    ok = len(sharded) == len(reference) and all(abs(a - b) <= 1e-3 * max(1.0, abs(b))
                                                for a, b in zip(sharded, reference))
    print(json.dumps({"ok": ok, "gpus": gpus, "single_process": reference, "fsdp2": sharded}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
