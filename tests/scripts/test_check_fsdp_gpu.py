"""scripts/check_fsdp_gpu.py skips cleanly without CUDA, and its single-process reference run trains here."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "check_fsdp_gpu.py"


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA machine runs the real check")
def test_skips_cleanly_without_cuda():
    out = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "skipped" in json.loads(out.stdout.strip().splitlines()[-1])


def test_reference_run_gives_finite_losses(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(SCRIPT.parent))
    import check_fsdp_gpu

    losses = check_fsdp_gpu._train(str(tmp_path), 1)
    assert len(losses) == check_fsdp_gpu.STEPS and all(math.isfinite(x) for x in losses)
