"""Issue 15 item 5: the W8A16 kernel never calls ``aten._weight_int8pack_mm`` outside its shape rules (it
segfaulted for <= 8 rows when the input width is not a multiple of 16). The checks run in a subprocess, so a
segfault fails this test instead of killing pytest."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

_CHILD = r"""
import sys, torch
sys.path.insert(0, "tests")
from hf_compress.methods.int8.kernels import w8a16_linear
from hf_compress import quantize_int8
from tiny_models import tiny_model

g = torch.Generator().manual_seed(0)
for k in (8, 12, 17, 24, 40, 48, 72):
    for n in (8, 24, 33):
        for m in (1, 3, 8, 9):
            x = torch.randn(m, k, generator=g)
            w = torch.randint(-127, 128, (n, k), generator=g, dtype=torch.int8)
            s = torch.rand(n, 1, generator=g) / 100
            ref = x @ (w.float() * s).t()
            y = w8a16_linear(x, w, s, None)
            assert y.shape == (m, n), (m, k, n, y.shape)
            err = (y - ref).abs().max().item() / (ref.abs().max().item() + 1e-6)
            assert err < 2e-2, (m, k, n, err)
model = quantize_int8(tiny_model("gpt2", n_embd=24, n_head=4), mode="w8a16")  # width 24: 24 % 16 != 0
out = model.generate(torch.tensor([[5, 9, 13]]), max_new_tokens=4, do_sample=False, pad_token_id=0)
assert out.shape == (1, 7)
print("kernels ok")
"""


def test_w8a16_with_odd_widths_and_few_rows_does_not_crash():
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", _CHILD], cwd=REPO, capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 0, f"exit {proc.returncode} (-11 = segfault): {proc.stderr[-2000:]}"
    assert "kernels ok" in proc.stdout
