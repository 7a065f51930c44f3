"""The CPU path users pick today, as a baseline for ``scripts/bench_int8_latency.py --ort``: ONNX Runtime on an
encoder, fp32 and ``quantize_dynamic`` int8.

The model is exported with ``torch.onnx.export`` (dynamic batch and sequence axes), quantized with
``onnxruntime.quantization.quantize_dynamic`` (int8 weights, dynamic uint8 activations, ORT's defaults), and
run with as many intra-op threads as torch uses and ``session.intra_op.allow_spinning=0``: ORT's spinning
threads otherwise slow the torch models timed in the same process about 2x. onnx and onnxruntime live in a
side venv (``make bench-int8`` installs them there).
"""

from __future__ import annotations

import copy
from pathlib import Path
from types import SimpleNamespace

import torch

_NAMES = ["input_ids", "attention_mask", "token_type_ids"]


class OrtEncoder:
    """An ONNX Runtime session called like a transformers encoder: ``last_hidden_state`` as a torch tensor."""

    def __init__(self, path: Path, threads: int):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]

    def __call__(self, output_hidden_states=False, **batch):
        feed = {k: batch[k].numpy() for k in self.inputs}
        (hidden,) = self.session.run(["last_hidden_state"], feed)
        return SimpleNamespace(last_hidden_state=torch.from_numpy(hidden))


def export(model, batch: dict, folder: Path) -> tuple[Path, Path]:
    """MiniLM -> fp32 ONNX (dynamic axes) and its ORT ``quantize_dynamic`` int8 copy."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    fp32, int8 = folder / "minilm.onnx", folder / "minilm-int8.onnx"
    names = [n for n in _NAMES if n in batch]
    axes = {n: {0: "batch", 1: "sequence"} for n in names + ["last_hidden_state"]}
    model = copy.deepcopy(model)
    model.set_attn_implementation("eager")  # sdpa's mask code is traced as constants of the example batch

    class Named(torch.nn.Module):  # positional ONNX inputs -> the model's keyword arguments
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, *tensors):
            return self.model(**dict(zip(names, tensors))).last_hidden_state

    with torch.no_grad():
        torch.onnx.export(Named(), tuple(batch[n] for n in names), str(fp32), input_names=names,
                          output_names=["last_hidden_state"], dynamic_axes=axes, opset_version=17, dynamo=False)
    quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8)
    return fp32, int8
