"""Usage: HF_HUB_OFFLINE=1 PYTHONPATH=. .venv/bin/python scripts/bench_int8_kernels.py

Per-shape W8A8 kernel comparison on MiniLM 8x128 shapes: fp32 F.linear, ours via fbgemm (rr True/False),
onednn qlinear_pointwise (plain int8 tensors), _int_mm; interleaved medians; errors vs exact-activation
product and vs the int_mm per-token reference."""
import statistics, time, torch, torch.nn.functional as F
from hf_compress.methods.int8 import fbgemm, kernels
from hf_compress.methods.int8.format import quantize_per_channel
from hf_compress.methods.int8.kernels import quantize_tokens
torch.manual_seed(0)
print(torch.__version__, torch.get_num_threads(), 'threads', torch.backends.cpu.get_cpu_capability())
M = 1024
tot = {}
for K, N in [(384, 1152), (384, 384), (384, 1536), (1536, 384)]:
    x = torch.randn(M, K); x[:, :4] *= 15
    if K == 1536: x = F.gelu(x)
    w = torch.randn(N, K) * 0.05
    q, s = quantize_per_channel(w); b = torch.randn(N)
    w_hat = q.float() * s
    xq, xs = quantize_tokens(x)
    exact = x.double() @ w_hat.double().t() + b.double()
    ref = (xq.double() @ q.double().t()) * xs.double() * s.double().t() + b.double()
    pw = torch.ops.onednn.qlinear_prepack(q, [M, K]); ws = s.reshape(-1).float(); wz = torch.zeros(N, dtype=torch.long)
    def onednn():
        xq2, xs2 = quantize_tokens(x)
        y = torch.ops.onednn.qlinear_pointwise(xq2, 1.0, 0, pw, ws, wz, None, 1.0, 0, torch.float32, 'none', [], '')
        return torch.addcmul(b, y, xs2)
    def fb(rr):
        def f():
            fbgemm.REDUCE_RANGE = rr
            return kernels._fbgemm_w8a8(x, q, s, b)
        return f
    fns = {'fp32': lambda: F.linear(x, w_hat, b), 'fbgemm rr=True': fb(True), 'fbgemm rr=False': fb(False),
           'onednn qlinear s8': onednn}
    t = {n: [] for n in fns}
    for r in range(25):
        for n, f in fns.items():
            st = time.perf_counter(); f(); el = time.perf_counter() - st
            if r >= 3: t[n].append(el)
    st = time.perf_counter(); torch._int_mm(xq, q.t()); t['_int_mm'] = [time.perf_counter() - st]
    med = {n: statistics.median(v) * 1e3 for n, v in t.items()}
    for n, v in med.items(): tot[n] = tot.get(n, 0) + v
    errs = {}
    for n, f in fns.items():
        y = f().double()
        errs[n] = ((y - exact).norm() / exact.norm()).item(), ((y - ref).norm() / ref.norm()).item()
    fbgemm.REDUCE_RANGE = True
    print(f'{K}x{N}: ' + ' | '.join(f'{n} {med[n]:.2f} ms' for n in med))
    print('   rel err vs exact-act / vs reference: ' + ' | '.join(f'{n} {e[0]:.2e}/{e[1]:.2e}' for n, e in errs.items()))
print('sum over the 4 shapes (ms): ' + ' | '.join(f'{n} {v:.1f}' for n, v in tot.items()))
