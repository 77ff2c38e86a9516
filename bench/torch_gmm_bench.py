"""torch._grouped_mm on the grouped matmul's three passes, for comparison with
TestCUDAGroupedMatMulBench (same shapes, the same rows per expert, bfloat16):

    python3 bench/torch_gmm_bench.py [SHAPE]    (SHAPE: only the shapes whose name contains it)

forward  z = xp[seg e] @ W[e]             xp [T*K, H], W [E, H, N]
dxp      dz[seg e] @ W[e]^T               (W read column-major through a transpose)
dw       xp[seg e]^T @ dz[seg e]          ragged K (offsets along the rows)
Rows per expert as in kernels/blas_cuda_test.go's benchCounts: "even" gives every expert
m = R/E rows; "uneven" gives expert e m + ((7919*e) mod (2s+1)) - s rows, s = round(sqrt(3m)),
the last expert taking what is left.
Times are taken as kernels/bench_cuda_test.go's cuTimeIt takes gomoe's: 3 warm-up calls, then
one pair of CUDA events around 20 calls issued back to back, the mean per call. (Each call timed
alone, with a synchronize after it, would put the host's time to issue the call, which runs
while the GPU waits, inside torch's interval but not gomoe's.)
"""
import math
import sys

import torch

SHAPES = [  # name, T, K, E, H, N: the layer's W1 (gate and up packed, N = 2F) and W2
    ("qwen3(H2048,2F1536)", 4096, 8, 128, 2048, 1536),
    ("qwen3(F768,H2048)", 4096, 8, 128, 768, 2048),
    ("mixtral(H4096,2F28672)", 4096, 2, 8, 4096, 28672),
]


def timed(f, n=20, warm=3):
    for _ in range(warm):
        f()
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record()
    for _ in range(n):
        f()
    b.record()
    b.synchronize()
    return a.elapsed_time(b) / n


def bench_counts(kind, rows, E):
    m = rows // E
    s = int(round(math.sqrt(3 * m)))
    c, left = [], rows
    for e in range(E):
        n = m + ((7919 * e) % (2 * s + 1) - s if kind == "uneven" else 0)
        if e == E - 1:
            n = left
        c.append(n)
        left -= n
    return c


def main():
    torch.manual_seed(0)
    dev = "cuda"
    print(f"{torch.cuda.get_device_name()}  torch {torch.__version__}")
    print(f"{'shape':22} {'route':6} {'pass':8} {'ms':>9} {'TFLOP/s':>9}")
    only = sys.argv[1] if len(sys.argv) > 1 else ""
    for (name, T, K, E, H, N), route in [(s, r) for s in SHAPES if only in s[0] for r in ("even", "uneven")]:
        rows = T * K
        counts = torch.tensor(bench_counts(route, rows, E), dtype=torch.int32)
        offs = torch.cumsum(counts, 0).to(torch.int32).to(dev)
        xp = torch.randn(rows, H, device=dev, dtype=torch.bfloat16)
        w = torch.randn(E, H, N, device=dev, dtype=torch.bfloat16) * 0.02
        dz = torch.randn(rows, N, device=dev, dtype=torch.bfloat16)
        flops = 2 * rows * H * N
        passes = [
            ("forward", lambda: torch._grouped_mm(xp, w, offs=offs)),
            ("dxp", lambda: torch._grouped_mm(dz, w.transpose(-2, -1), offs=offs)),
            ("dw", lambda: torch._grouped_mm(xp.t(), dz, offs=offs)),
        ]
        for pname, f in passes:
            ms = timed(f)
            print(f"{name:22} {route:6} {pname:8} {ms:9.3f} {flops / ms / 1e9:9.1f}")


if __name__ == "__main__":
    main()
