"""W8A16 on a CPU without native bf16: the dense path (more than 8 rows) in fp32 math vs the old bf16 math, side
by side with fp32 on MiniLM 8x128 with a mask (medians of 7). Run: PYTHONPATH=. OMP_NUM_THREADS=2 python scripts/check_w8a16_dense.py"""
import copy, statistics, time, torch
from transformers import AutoModel
from hf_compress.assets import get_asset
from hf_compress import quantize_int8
from hf_compress.methods.int8 import kernels
torch.set_num_threads(2)
base = AutoModel.from_pretrained(get_asset("minilm")).eval()
new = quantize_int8(copy.deepcopy(base), mode="w8a16")
old = quantize_int8(copy.deepcopy(base), mode="w8a16")
g = torch.Generator().manual_seed(0)
ids = torch.randint(1000, 20000, (8, 128), generator=g); mask = torch.ones_like(ids); mask[4:, 96:] = 0
def run(m, emulated):
    kernels._emulated_bf16 = (lambda: emulated)
    with torch.no_grad():
        t = time.perf_counter(); out = m(input_ids=ids, attention_mask=mask).last_hidden_state; return time.perf_counter() - t, out
times = {"fp32": [], "w8a16 fp32 math (new)": [], "w8a16 bf16 math (old)": []}
for _ in range(7):
    for name, m, em in (("fp32", base, True), ("w8a16 fp32 math (new)", new, True), ("w8a16 bf16 math (old)", old, False)):
        dt, out = run(m, em); times[name].append(dt)
ref = run(base, True)[1]
for name, m, em in (("w8a16 fp32 math (new)", new, True), ("w8a16 bf16 math (old)", old, False)):
    out = run(m, em)[1]
    cos = torch.nn.functional.cosine_similarity(out[mask.bool()], ref[mask.bool()], dim=-1).mean().item()
    print(f"{name}: cosine {cos:.4f}")
f = statistics.median(times["fp32"])
for k, v in times.items():
    print(f"{k}: median {1e3*statistics.median(v):.1f} ms, {f/statistics.median(v):.2f}x fp32")
