"""The part of FSDP2 a CPU can check: the student sharded by torch's own ``fully_shard`` over two gloo processes,
teacher and projections replicated, gives the one-process loss and gradients (scripts/check_fsdp_gpu.py runs the
Trainer-level FSDP2 check on GPUs). A start-up crash (no result written) is retried once, a wrong result never."""

import json
import os
import subprocess
import sys

import pytest
import torch
from distillation.test_multiprocess import _free_port
from safetensors.torch import load_file

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fsdp_worker.py")


def _run(out_dir, world: int) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, WORKER, str(out_dir)] if world == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(world), "--master_port",
        str(_free_port()), WORKER, str(out_dir)]
    for attempt in range(2):
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, check=False)
        if proc.returncode == 0 and (out_dir / "result.json").exists():
            return json.loads((out_dir / "result.json").read_text())
    pytest.fail(f"{cmd[2:4]} failed twice (exit {proc.returncode}):\n{proc.stderr[-3000:]}")


@pytest.mark.slow  # two interpreter start-ups importing torch + transformers
def test_fully_shard_on_two_gloo_processes_matches_one_process(tmp_path):
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    one, two = _run(tmp_path / "one", 1), _run(tmp_path / "two", 2)
    assert (one["world"], two["world"]) == (1, 2) and two["student_type"].startswith("FSDP")
    assert not two["teacher_requires_grad"]
    assert two["loss"] == pytest.approx(one["loss"], rel=1e-5)
    g1, g2 = load_file(str(tmp_path / "one" / "grads.safetensors")), load_file(str(tmp_path / "two" / "grads.safetensors"))
    assert g1.keys() == g2.keys() and any(k.startswith("proj.") for k in g1)  # projections averaged too
    for key in g1:
        torch.testing.assert_close(g2[key], g1[key], rtol=1e-4, atol=1e-6, msg=key)
