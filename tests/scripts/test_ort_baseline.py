"""The ONNX Runtime baseline of bench_int8_latency --ort (scripts/ort_baseline.py) computes the same encoder:
runs where onnx + onnxruntime are installed (make bench-int8's side venv), skips elsewhere."""

import sys
from pathlib import Path

import pytest
import torch
from tiny_models import tiny_batch, tiny_model

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from ort_baseline import OrtEncoder, export  # noqa: E402


def test_exported_encoder_matches_torch_for_other_shapes_and_masks(tmp_path):
    model = tiny_model("bert", "base").eval()
    batch = {k: v for k, v in tiny_batch().items() if k != "labels"}  # the last sample is padded
    fp32, int8 = export(model, batch, tmp_path)
    ort_fp32, ort_int8 = OrtEncoder(fp32, 1), OrtEncoder(int8, 1)
    other = {k: v[:1, :5] for k, v in batch.items()}  # a shape and a mask the export never saw
    with torch.no_grad():
        for b in (batch, other):
            ref = model(**b).last_hidden_state
            torch.testing.assert_close(ort_fp32(**b).last_hidden_state, ref, atol=1e-4, rtol=1e-4)
            err = (ort_int8(**b).last_hidden_state - ref).abs().max()
            assert 0 < err < 0.2 * ref.abs().max()  # quantized: close, not equal
