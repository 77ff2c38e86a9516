#!/usr/bin/env python3
"""PyTorch eager reference and benchmark for the gomoe MoE layer (issue 7, item 5).

The layer (gomoe moe.Layer with Score=Softmax, PreSoftmax=false, SwiGLU, dropless,
no shared experts, no auxiliary losses, router in float32):

    x  [T,H]   dtype D (float32 or bfloat16)     Wr [H,E] float32
    W1 [E,H,F], W3 [E,H,F], W2 [E,F,H]           dtype D

    logits = x.float() @ Wr                            # [T,E] fp32
    ids    = topk(logits, K)                           # [T,K] descending
    probs  = softmax(logits gathered at ids, dim=-1)   # [T,K] fp32
           (== softmax over all E renormalised over the chosen K)
    for each expert e, the rows (t,k) with ids[t,k] == e, in token order:
        h  = silu(x[t] @ W1[e]) * (x[t] @ W3[e])
        ye = h @ W2[e]
    y[t]   = sum_k probs[t,k].to(D) * ye(t,k)          # [T,H] dtype D

Implementations (--impl):

  loop     The usual eager MoE (Megatron SequentialMLP / HF style): flatten ids,
           stable sort, index_select the token rows, tokens_per_expert =
           bincount(ids).tolist() (one host sync per forward, as eager code has),
           one matmul chain per expert, multiply by probs, index_add into y.
           Every expert owns its own parameter tensors (as an nn.ModuleList of
           experts does); indexing one [E,H,F] parameter per expert would make
           autograd add E full-size zero-padded gradients and would be an unfair
           baseline.
  grouped  Same, but the expert GEMMs are torch._grouped_mm on [E,H,F] weights
           with device-side offsets (no host sync). Only where this torch build
           supports it for the dtype on this GPU: a small forward+backward is run
           first and compared with the loop implementation; otherwise the result
           is reported as "n/a" with the reason.
  grouped_gu  grouped with the gate and up weights packed as one [E,H,2F] leaf
           (transformers v5's gate_up_proj, Megatron's fc1; gomoe's W1): one grouped
           GEMM for both and SwiGLU on its two halves.

The combine accumulates in float32 for bfloat16 (y is rounded to bfloat16 once at
the end); index_add on CUDA uses atomics, so its summation order (and the bf16/f32
result in the last bits) is not deterministic. torch.topk does not promise an order
among exactly tied logits (gomoe takes the lower id); with random data ties do not
happen. TF32 is turned off so that float32 GEMMs are true fp32 like gomoe's cuBLAS.

Benchmark usage (on the GPU machine):

    python3 bench/torch_layer_bench.py --shape qwen3   --dtype bf16 --json out/torch_qwen3_bf16.json
    python3 bench/torch_layer_bench.py --shape mixtral --dtype f32 --F 7168 --json out/torch_mixtral_f32.json
    python3 bench/torch_layer_bench.py --shape qwen3   --dtype bf16 --impl grouped --json out/torch_qwen3_bf16_grouped.json
    python3 bench/torch_layer_bench.py --shape custom --T 1024 --H 512 --F 256 --E 16 --K 2 --dtype f32

CPU timing (issue 19): --device cpu --threads N times the same layer on the host CPU with
N intra-op threads (torch.set_num_threads(N), one inter-op thread), wall-clock per
iteration (time.perf_counter), peak_mem_gb null. To compare with gomoe's
`go test -bench LayerForwardBackward ./moe/` at GOMAXPROCS=N on the same machine:

    python3 bench/torch_layer_bench.py --shape custom --T 1024 --H 128 --F 256 --E 8 --K 2 \
        --dtype f32 --device cpu --threads 2 --iters 50 --warmup 10
    GOMAXPROCS=2 go test -run XXX -bench 'LayerForwardBackward/T1024_H128_F256_E8_K2_swiglu$' \
        -benchtime 50x ./moe/

(fwdbwd is the figure to compare with the Go benchmark's ns/op; taskset -c 0-(N-1) on both
pins them to the same cores.)

Presets: qwen3 T=4096 H=2048 F=768 E=128 K=8; mixtral T=4096 H=4096 F=14336 E=8 K=2
(any of --T/--H/--F/--E/--K overrides the preset). Weights ~ N(0, 1/fan_in)
(fan_in = H for Wr, W1, W3 and F for W2), x ~ N(0,1), dy ~ N(0,1), drawn on the
device from a torch.Generator seeded with --seed.

Timed (torch.cuda.Event around every iteration, --iters after --warmup):
  fwd         forward with autograd recording (a training forward)
  fwd_nograd  forward under torch.no_grad()
  fwdbwd      forward + y.backward(dy), grads to x, Wr, W1, W3, W2
On CUDA fwdbwd is also timed by the wall clock as bench/layerbench times gomoe: synced, with a
synchronize after every iteration (fwdbwd_synced_ms, the median), and back to back
(fwdbwd_b2b_ms: 2*--iters iterations after the warm-up, ended by one synchronize, the mean). The event timings (fwd_ms, fwdbwd_ms) leave out the host's gaps
between iterations: they match back to back once the GPU is the bottleneck, and flatter a
host-bound run.
FLOPs counted (R = T*K): forward 6*R*H*F (three GEMMs of 2*R*H*F) + 2*T*H*E (router);
forward+backward adds 12*R*H*F + 4*T*H*E. TFLOP/s = flops / median time (back to back: the
mean per iteration). Permute,
softmax, top-k and element-wise work are not counted.
Output: one line per measurement on stdout and, with --json FILE, one JSON object
{shape, T, H, F, E, K, dtype, impl, device, torch, cuda, fwd_ms, fwd_ms_mean,
fwd_nograd_ms, fwd_nograd_ms_mean, fwdbwd_ms, fwdbwd_ms_mean, fwdbwd_synced_ms,
fwdbwd_synced_ms_mean, tflops_fwdbwd_synced, fwdbwd_b2b_ms, tflops_fwdbwd_b2b (the last five
CUDA only), flops_fwd,
flops_fwdbwd, tflops_fwd, tflops_fwdbwd, peak_mem_gb, tokens_per_expert_min,
tokens_per_expert_max, iters, warmup, seed, tf32, status} ("status" is "ok" or
"n/a: reason"; the timings are null when n/a).

Check mode (reference values for a Go test):

    python3 bench/torch_layer_bench.py --check --dump DIR [--device cpu|cuda] [--seed S]

computes the layer in float64 throughout (x, weights, router and combine all
float64) for a tiny shape (default T=64 H=32 F=48 E=8 K=2; --T/--H/--F/--E/--K
override), checks the loop implementation against a dense per-expert reference
(plain autograd over every expert on every token), and writes into DIR:

    x.bin [T,H]   wr.bin [H,E]   w1.bin [E,H,F]   w3.bin [E,H,F]   w2.bin [E,F,H]
    dy.bin [T,H]  y.bin [T,H]    dx.bin [T,H]     dwr.bin [H,E]
    dw1.bin [E,H,F]  dw3.bin [E,H,F]  dw2.bin [E,F,H]
    probs.bin [T,K] (float64)    ids.bin [T,K] (int32, extra, for debugging)

Each .bin is the raw array, row-major (C order), little-endian, no header:
float64 (8 bytes per element) except ids.bin (int32). dx, dwr, dw1, dw3, dw2 are
the gradients of sum(y * dy). meta.json holds
{"T","H","F","E","K","seed","dtype":"float64","byte_order":"little","order":"C",
 "arrays": {name: {"file": name + ".bin", "shape": [...], "dtype": "float64"|"int32"}}}.
Defaults to the CPU (float64 there is exact and needs no GPU).
"""

import argparse
import array
import json
import math
import os
import platform
import sys
import time

import torch
import torch.nn.functional as Fn

PRESETS = {
    "qwen3": dict(T=4096, H=2048, F=768, E=128, K=8),
    "mixtral": dict(T=4096, H=4096, F=14336, E=8, K=2),
    "check": dict(T=64, H=32, F=48, E=8, K=2),
}

DTYPES = {"f32": torch.float32, "bf16": torch.bfloat16, "f64": torch.float64}


# ---------------------------------------------------------------------------
# The layer.


def route(x, wr, K):
    """Router: returns (ids [T,K] int64, probs [T,K] in wr's dtype)."""
    logits = x.to(wr.dtype) @ wr
    ids = torch.topk(logits, K, dim=-1, largest=True, sorted=True).indices
    probs = torch.softmax(logits.gather(1, ids), dim=-1)
    return ids, probs


def dispatch(x, ids, K):
    """Sorts the (t,k) pairs by expert, stably (token order within an expert).

    Returns (flat ids, order, token index of every sorted row, sorted rows of x).
    """
    flat = ids.reshape(-1)
    order = torch.sort(flat, stable=True).indices
    tok = torch.div(order, K, rounding_mode="floor")
    xs = x.index_select(0, tok)
    return flat, order, tok, xs


def combine(ys, probs, order, tok, T, out_dtype):
    """y[t] = sum over the rows of t of probs.to(D) * ye, accumulated in fp32 for bf16."""
    w = probs.reshape(-1).index_select(0, order).to(ys.dtype).unsqueeze(1)
    contrib = ys * w
    acc = torch.float32 if out_dtype in (torch.bfloat16, torch.float16) else out_dtype
    y = torch.zeros(T, ys.shape[1], dtype=acc, device=ys.device)
    y = y.index_add(0, tok, contrib.to(acc))
    return y.to(out_dtype)


def forward_loop(x, p, K):
    """Eager per-expert loop. p: dict with wr, and lists w1s, w3s, w2s (one leaf per expert)."""
    T = x.shape[0]
    E = len(p["w1s"])
    ids, probs = route(x, p["wr"], K)
    flat, order, tok, xs = dispatch(x, ids, K)
    counts = torch.bincount(flat, minlength=E).tolist()  # host sync, as in eager MoE code
    outs = []
    for e, xe in enumerate(torch.split(xs, counts, dim=0)):
        if counts[e] == 0:
            continue
        h = Fn.silu(xe @ p["w1s"][e]) * (xe @ p["w3s"][e])
        outs.append(h @ p["w2s"][e])
    ys = torch.cat(outs, dim=0)
    return combine(ys, probs, order, tok, T, x.dtype)


def forward_grouped(x, p, K):
    """Expert GEMMs through torch._grouped_mm on [E,H,F] weights, offsets kept on the device."""
    T = x.shape[0]
    E = p["w1"].shape[0]
    ids, probs = route(x, p["wr"], K)
    flat, order, tok, xs = dispatch(x, ids, K)
    offs = torch.cumsum(torch.bincount(flat, minlength=E), 0).to(torch.int32)
    a = torch._grouped_mm(xs, p["w1"], offs=offs)
    b = torch._grouped_mm(xs, p["w3"], offs=offs)
    h = Fn.silu(a) * b
    ys = torch._grouped_mm(h, p["w2"], offs=offs)
    return combine(ys, probs, order, tok, T, x.dtype)


def forward_grouped_gu(x, p, K):
    """forward_grouped with the gate and up weights packed as one [E,H,2F] leaf (transformers
    v5's gate_up_proj, Megatron's fc1): one grouped GEMM for both, SwiGLU on its two halves."""
    T = x.shape[0]
    E = p["w13"].shape[0]
    ids, probs = route(x, p["wr"], K)
    flat, order, tok, xs = dispatch(x, ids, K)
    offs = torch.cumsum(torch.bincount(flat, minlength=E), 0).to(torch.int32)
    a, b = torch._grouped_mm(xs, p["w13"], offs=offs).chunk(2, dim=-1)
    h = Fn.silu(a) * b
    ys = torch._grouped_mm(h, p["w2"], offs=offs)
    return combine(ys, probs, order, tok, T, x.dtype)


def forward_dense(x, p, K):
    """Dense reference: every expert on every token, then pick and weight. For the check only."""
    T = x.shape[0]
    ids, probs = route(x, p["wr"], K)
    # yall[e, t] = ffn_e(x[t])
    h = Fn.silu(torch.einsum("th,ehf->etf", x, p["w1"])) * torch.einsum("th,ehf->etf", x, p["w3"])
    yall = torch.einsum("etf,efh->eth", h, p["w2"])
    t_idx = torch.arange(T, device=x.device).unsqueeze(1).expand(T, K)
    picked = yall[ids, t_idx]  # [T,K,H]
    return (probs.to(x.dtype).unsqueeze(2) * picked).sum(dim=1)


# ---------------------------------------------------------------------------
# Data.


def make_data(T, H, F, E, K, dtype, router_dtype, device, seed):
    """x, dy [T,H], wr [H,E], w1, w3 [E,H,F], w2 [E,F,H]; all detached, not requiring grad."""
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    gen_dtype = torch.float64 if dtype == torch.float64 else torch.float32

    def randn(*shape, scale=1.0):
        t = torch.randn(*shape, generator=g, device=device, dtype=gen_dtype)
        if scale != 1.0:
            t.mul_(scale)
        return t

    d = {}
    d["wr"] = randn(H, E, scale=1.0 / math.sqrt(H)).to(router_dtype)
    d["w1"] = randn(E, H, F, scale=1.0 / math.sqrt(H)).to(dtype)
    d["w3"] = randn(E, H, F, scale=1.0 / math.sqrt(H)).to(dtype)
    d["w2"] = randn(E, F, H, scale=1.0 / math.sqrt(F)).to(dtype)
    d["x"] = randn(T, H).to(dtype)
    d["dy"] = randn(T, H).to(dtype)
    return d


def make_leaves(d, impl):
    """Leaf tensors requiring grad for impl ("loop": one leaf per expert; else [E,...] leaves)."""
    p = {"x": d["x"].clone().requires_grad_(True), "wr": d["wr"].clone().requires_grad_(True)}
    if impl == "loop":
        for name in ("w1", "w3", "w2"):
            p[name + "s"] = [w.clone().requires_grad_(True) for w in d[name].unbind(0)]
    elif impl == "grouped_gu":
        p["w13"] = torch.cat([d["w1"], d["w3"]], dim=-1).requires_grad_(True)
        p["w2"] = d["w2"].clone().requires_grad_(True)
    else:
        for name in ("w1", "w3", "w2"):
            p[name] = d[name].clone().requires_grad_(True)
    return p


def leaves_of(p):
    ls = [p["x"], p["wr"]]
    names = ("w13", "w2") if "w13" in p else ("w1", "w3", "w2")
    for name in names:
        if name in p:
            ls.append(p[name])
        else:
            ls.extend(p[name + "s"])
    return ls


def grads(p):
    """Gradients as {"x","wr","w1","w3","w2"} with [E,...] stacks for per-expert leaves."""

    def g(t):
        return t.grad if t.grad is not None else torch.zeros_like(t)

    out = {"x": g(p["x"]), "wr": g(p["wr"])}
    if "w13" in p:
        out["w1"], out["w3"] = g(p["w13"]).chunk(2, dim=-1)
    for name in ("w1", "w3", "w2"):
        if name not in out:
            out[name] = g(p[name]) if name in p else torch.stack([g(w) for w in p[name + "s"]])
    return out


FORWARDS = {"loop": forward_loop, "grouped": forward_grouped, "grouped_gu": forward_grouped_gu, "dense": forward_dense}


# ---------------------------------------------------------------------------
# Benchmark.


def grouped_support(dtype, device, impl):
    """Returns None if impl ("grouped" or "grouped_gu") works for dtype here (forward+backward
    agrees with the loop implementation on a small shape), else the reason it does not."""
    if not hasattr(torch, "_grouped_mm"):
        return "torch._grouped_mm not in torch %s" % torch.__version__
    try:
        T, H, F, E, K = 128, 64, 96, 4, 2
        d = make_data(T, H, F, E, K, dtype, torch.float32, device, 1234)
        res = {}
        for name in ("loop", impl):
            p = make_leaves(d, name)
            y = FORWARDS[name](p["x"], p, K)
            y.backward(d["dy"])
            res[name] = (y.detach().float(), {k: v.float() for k, v in grads(p).items()})
        tol = 5e-2 if dtype == torch.bfloat16 else 1e-4
        pairs = [("y", res["loop"][0], res[impl][0])]
        pairs += [("d" + k, res["loop"][1][k], res[impl][1][k]) for k in res["loop"][1]]
        for name, a, b in pairs:
            err = (a - b).abs().max().item() / max(a.abs().max().item(), 1e-30)
            if not err <= tol:
                return "torch._grouped_mm disagrees with the loop on %s (rel err %.3g > %g)" % (name, err, tol)
    except Exception as exc:  # noqa: BLE001 - any failure means "not usable here"
        msg = str(exc).strip().splitlines()
        return "torch._grouped_mm failed: %s: %s" % (type(exc).__name__, msg[0] if msg else "")
    return None


def time_ms_cpu(fn, iters, warmup):
    """Median and mean wall-clock milliseconds of fn on the CPU."""
    for _ in range(warmup):
        fn()
    ms = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        ms.append((time.perf_counter() - t0) * 1e3)
    ms.sort()
    n = len(ms)
    median = ms[n // 2] if n % 2 else 0.5 * (ms[n // 2 - 1] + ms[n // 2])
    return median, sum(ms) / n


def time_ms_synced(fn, iters, warmup):
    """Median and mean wall-clock milliseconds of fn each launched on an idle GPU and waited
    for (a synchronize after every iteration), as bench/layerbench's "each step synced"."""
    def step():
        fn()
        torch.cuda.synchronize()
    torch.cuda.synchronize()
    return time_ms_cpu(step, iters, warmup)


def time_ms_b2b(fn, iters, warmup):
    """Wall-clock milliseconds per iteration of fn issued back to back: after warmup untimed
    iterations, 2*iters iterations ended by one synchronize, over 2*iters, as
    bench/layerbench's "back to back"."""
    def run(n):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        torch.cuda.synchronize()
        return time.perf_counter() - t0
    run(warmup)
    return run(2 * iters) * 1e3 / (2 * iters)


def time_ms(fn, iters, warmup, device=None):
    if device is not None and device.type == "cpu":
        return time_ms_cpu(fn, iters, warmup)
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    evs = []
    for _ in range(iters):
        s = torch.cuda.Event(enable_timing=True)
        e = torch.cuda.Event(enable_timing=True)
        s.record()
        fn()
        e.record()
        evs.append((s, e))
    torch.cuda.synchronize()
    ms = sorted(s.elapsed_time(e) for s, e in evs)
    n = len(ms)
    median = ms[n // 2] if n % 2 else 0.5 * (ms[n // 2 - 1] + ms[n // 2])
    return median, sum(ms) / n


def cpu_name():
    """The host CPU's model name (from /proc/cpuinfo where there is one)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def bf16_reduced_precision_reduction():
    """torch's cuBLAS bf16 reduced-precision-reduction flag, or None where this torch lacks it."""
    try:
        return bool(torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction)
    except (AttributeError, AssertionError):
        return None


def bench(args, shape):
    T, H, F, E, K = (shape[k] for k in "THFEK")
    dtype = DTYPES[args.dtype]
    device = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")

    R = T * K
    flops_fwd = 6 * R * H * F + 2 * T * H * E
    flops_fwdbwd = flops_fwd + 12 * R * H * F + 4 * T * H * E
    res = {
        "shape": args.shape, "T": T, "H": H, "F": F, "E": E, "K": K,
        "dtype": args.dtype, "impl": args.impl,
        "device": cpu_name() if device.type == "cpu" else torch.cuda.get_device_name(device),
        "threads": torch.get_num_threads() if device.type == "cpu" else None,
        "torch": torch.__version__, "cuda": torch.version.cuda,
        "fwd_ms": None, "fwd_ms_mean": None, "fwd_nograd_ms": None, "fwd_nograd_ms_mean": None,
        "fwdbwd_ms": None, "fwdbwd_ms_mean": None, "fwdbwd_synced_ms": None,
        "fwdbwd_synced_ms_mean": None, "tflops_fwdbwd_synced": None,
        "fwdbwd_b2b_ms": None, "tflops_fwdbwd_b2b": None,
        "flops_fwd": flops_fwd, "flops_fwdbwd": flops_fwdbwd,
        "tflops_fwd": None, "tflops_fwdbwd": None, "peak_mem_gb": None,
        "tokens_per_expert_min": None, "tokens_per_expert_max": None,
        "iters": args.iters, "warmup": args.warmup, "seed": args.seed,
        "tf32": torch.backends.cuda.matmul.allow_tf32,
        "bf16_reduced_precision_reduction": bf16_reduced_precision_reduction(),
        "status": "ok",
    }
    label = "torch %-7s %-7s %-4s T=%d H=%d F=%d E=%d K=%d" % (args.impl, args.shape, args.dtype, T, H, F, E, K)
    if device.type == "cpu":
        label += " cpu threads=%d" % torch.get_num_threads()

    if args.impl in ("grouped", "grouped_gu"):
        why = grouped_support(dtype, device, args.impl)
        if why is not None:
            res["status"] = "n/a: " + why
            print("%s | n/a: %s" % (label, why))
            return res

    d = make_data(T, H, F, E, K, dtype, torch.float32, device, args.seed)
    p = make_leaves(d, args.impl)
    fwd = FORWARDS[args.impl]
    x, dy = p["x"], d["dy"]
    leaves = leaves_of(p)
    del d  # the leaves hold copies; free the originals

    with torch.no_grad():
        ids, _ = route(x, p["wr"], K)
        counts = torch.bincount(ids.reshape(-1), minlength=E)
        res["tokens_per_expert_min"] = int(counts.min().item())
        res["tokens_per_expert_max"] = int(counts.max().item())
        del ids, counts

    def run_fwd():
        fwd(x, p, K)

    def run_fwd_nograd():
        with torch.no_grad():
            fwd(x, p, K)

    def run_fwdbwd():
        for t in leaves:
            t.grad = None
        y = fwd(x, p, K)
        y.backward(dy)

    if args.impl in ("grouped", "grouped_gu"):
        try:
            return timings(res, label, args, run_fwd, run_fwd_nograd, run_fwdbwd, device)
        except Exception as exc:  # noqa: BLE001 - e.g. a stride/alignment limit at this shape
            msg = str(exc).strip().splitlines()
            why = "torch._grouped_mm failed at this shape: %s: %s" % (type(exc).__name__, msg[0] if msg else "")
            res["status"] = "n/a: " + why
            for k in res:  # timings are null when n/a, even those taken before the failure
                if k.endswith("_ms") or k.endswith("_ms_mean") or k.startswith("tflops_") or k == "peak_mem_gb":
                    res[k] = None
            print("%s | n/a: %s" % (label, why))
            return res
    return timings(res, label, args, run_fwd, run_fwd_nograd, run_fwdbwd, device)


def timings(res, label, args, run_fwd, run_fwd_nograd, run_fwdbwd, device):
    """Times the three measurements, fills res and prints one line each."""
    flops_fwd, flops_fwdbwd = res["flops_fwd"], res["flops_fwdbwd"]
    cuda = device.type == "cuda"
    ms, mean = time_ms(run_fwd, args.iters, args.warmup, device)
    res["fwd_ms"], res["fwd_ms_mean"] = ms, mean
    res["tflops_fwd"] = flops_fwd / (ms * 1e-3) / 1e12
    print("%s | fwd        median %9.3f ms  mean %9.3f ms  %7.2f TFLOP/s" % (label, ms, mean, res["tflops_fwd"]))

    ms, mean = time_ms(run_fwd_nograd, args.iters, args.warmup, device)
    res["fwd_nograd_ms"], res["fwd_nograd_ms_mean"] = ms, mean
    print("%s | fwd_nograd median %9.3f ms  mean %9.3f ms  %7.2f TFLOP/s"
          % (label, ms, mean, flops_fwd / (ms * 1e-3) / 1e12))

    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
    ms, mean = time_ms(run_fwdbwd, args.iters, args.warmup, device)
    res["fwdbwd_ms"], res["fwdbwd_ms_mean"] = ms, mean
    res["tflops_fwdbwd"] = flops_fwdbwd / (ms * 1e-3) / 1e12
    if cuda:
        res["peak_mem_gb"] = torch.cuda.max_memory_allocated(device) / 1e9
        print("%s | fwdbwd     median %9.3f ms  mean %9.3f ms  %7.2f TFLOP/s  peak %.2f GB"
              % (label, ms, mean, res["tflops_fwdbwd"], res["peak_mem_gb"]))
        ms, mean = time_ms_synced(run_fwdbwd, args.iters, args.warmup)
        res["fwdbwd_synced_ms"], res["fwdbwd_synced_ms_mean"] = ms, mean
        res["tflops_fwdbwd_synced"] = flops_fwdbwd / (ms * 1e-3) / 1e12
        print("%s | fwdbwd, each iteration synced: median %9.3f ms  mean %9.3f ms" % (label, ms, mean))
        ms = time_ms_b2b(run_fwdbwd, args.iters, args.warmup)
        res["fwdbwd_b2b_ms"] = ms
        res["tflops_fwdbwd_b2b"] = flops_fwdbwd / (ms * 1e-3) / 1e12
        print("%s | fwdbwd, back to back (wall clock): %9.3f ms per iteration" % (label, ms))
    else:
        print("%s | fwdbwd     median %9.3f ms  mean %9.3f ms  %7.4f TFLOP/s"
              % (label, ms, mean, res["tflops_fwdbwd"]))
    return res


# ---------------------------------------------------------------------------
# Check mode.


def write_bin(path, t):
    t = t.detach().contiguous().cpu()
    if t.dtype == torch.float64:
        a = array.array("d", t.reshape(-1).tolist())
    elif t.dtype in (torch.int32, torch.int64):
        code = next(c for c in ("i", "l") if array.array(c).itemsize == 4)
        a = array.array(code, t.to(torch.int64).reshape(-1).tolist())
    else:
        raise ValueError("write_bin: unsupported dtype %s" % t.dtype)
    if sys.byteorder != "little":
        a.byteswap()
    with open(path, "wb") as f:
        a.tofile(f)


def check(args, shape):
    T, H, F, E, K = (shape[k] for k in "THFEK")
    device = torch.device(args.device)
    f64 = torch.float64
    d = make_data(T, H, F, E, K, f64, f64, device, args.seed)

    out = {}
    for impl in ("loop", "dense"):
        p = make_leaves(d, impl)
        y = FORWARDS[impl](p["x"], p, K)
        y.backward(d["dy"])
        out[impl] = (y.detach(), grads(p))
    y, gr = out["loop"]
    worst = (y - out["dense"][0]).abs().max().item()
    for k in gr:
        worst = max(worst, (gr[k] - out["dense"][1][k]).abs().max().item())
    print("check T=%d H=%d F=%d E=%d K=%d float64: loop vs dense max abs diff %.3g" % (T, H, F, E, K, worst))
    if not worst < 1e-10:
        print("check FAILED: loop and dense references disagree", file=sys.stderr)
        return 1

    ids, probs = route(d["x"], d["wr"], K)
    arrays = {
        "x": d["x"], "wr": d["wr"], "w1": d["w1"], "w3": d["w3"], "w2": d["w2"], "dy": d["dy"],
        "y": y, "dx": gr["x"], "dwr": gr["wr"], "dw1": gr["w1"], "dw3": gr["w3"], "dw2": gr["w2"],
        "probs": probs, "ids": ids.to(torch.int32),
    }
    os.makedirs(args.dump, exist_ok=True)
    meta = {"T": T, "H": H, "F": F, "E": E, "K": K, "seed": args.seed, "dtype": "float64",
            "byte_order": "little", "order": "C", "arrays": {}}
    for name, t in arrays.items():
        write_bin(os.path.join(args.dump, name + ".bin"), t)
        meta["arrays"][name] = {"file": name + ".bin", "shape": list(t.shape),
                                "dtype": "int32" if name == "ids" else "float64"}
    with open(os.path.join(args.dump, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
    print("check: wrote %d arrays and meta.json to %s" % (len(arrays), args.dump))
    return 0


# ---------------------------------------------------------------------------


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", choices=["qwen3", "mixtral", "custom"], default="qwen3")
    for k in "THFEK":
        ap.add_argument("--" + k, type=int, default=None, help="overrides the preset")
    ap.add_argument("--dtype", choices=["f32", "bf16"], default="f32")
    ap.add_argument("--impl", choices=["loop", "grouped", "grouped_gu"], default="loop")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--device", default=None, help="default: cuda (benchmark), cpu (--check); "
                    "--device cpu times the layer on the host CPU")
    ap.add_argument("--threads", type=int, default=None,
                    help="with --device cpu: torch intra-op threads (torch.set_num_threads)")
    ap.add_argument("--json", default=None, help="write the benchmark result to this file")
    ap.add_argument("--check", action="store_true", help="float64 reference dump for a Go test")
    ap.add_argument("--dump", default=None, help="directory for --check output")
    args = ap.parse_args(argv)

    preset = "check" if args.check else args.shape
    if preset == "custom":
        missing = [k for k in "THFEK" if getattr(args, k) is None]
        if missing:
            ap.error("--shape custom needs --" + " --".join(missing))
        shape = {}
    else:
        shape = dict(PRESETS[preset])
    for k in "THFEK":
        if getattr(args, k) is not None:
            shape[k] = getattr(args, k)
    if min(shape.values()) < 1 or shape["K"] > shape["E"]:
        ap.error("need T, H, F, E, K >= 1 and K <= E, got %s" % shape)
    if args.iters < 1 or args.warmup < 0:
        ap.error("need --iters >= 1 and --warmup >= 0")

    if args.check:
        if not args.dump:
            ap.error("--check needs --dump DIR")
        args.device = args.device or "cpu"
        return check(args, shape)

    args.device = args.device or "cuda"
    if torch.device(args.device).type == "cpu":
        if args.threads is not None:
            if args.threads < 1:
                ap.error("need --threads >= 1")
            torch.set_num_threads(args.threads)
            try:
                torch.set_num_interop_threads(1)
            except RuntimeError:
                pass  # already set by an earlier parallel region
        if args.impl in ("grouped", "grouped_gu"):
            ap.error("--impl %s (torch._grouped_mm) times the GPU only; use --impl loop on the CPU" % args.impl)
    elif args.threads is not None:
        ap.error("--threads applies to --device cpu only")
    elif not torch.cuda.is_available():
        ap.error("the benchmark needs a CUDA device (or --device cpu)")
    res = bench(args, shape)
    if args.json:
        d = os.path.dirname(args.json)
        if d:
            os.makedirs(d, exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
