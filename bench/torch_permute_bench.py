"""Torch-native baseline for the gomoe GPU benchmark (kernels/bench_cuda_test.go).

Permute forward as x.index_select(0, tokenOf) and unpermute forward as
y.index_add_(0, tokenOf, yp * probs) on the docs/design.md shapes, timed with CUDA events (mean of
ITERS after 3 warm-ups) next to a device-to-device copy of the same bytes in the same run.

    python3 bench/torch_permute_bench.py [out.md]
"""
import sys
import torch

ITERS = 20
SHAPES = [("dsv3", 4096, 256, 8, 7168), ("te16k", 16384, 128, 6, 4096),
          ("mixtral", 4096, 8, 2, 4096), ("top1", 16384, 4, 1, 7168)]


def timed(f):
    for _ in range(3):
        f()
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    s.record()
    for _ in range(ITERS):
        f()
    e.record()
    e.synchronize()
    return s.elapsed_time(e) / ITERS


def main():
    dev = torch.device("cuda")
    lines = [f"torch {torch.__version__} on {torch.cuda.get_device_name()}, {ITERS} timed calls each\n",
             "| shape | dtype | op | ms | GB/s | copy GB/s | ratio to copy |", "|---|---|---|---:|---:|---:|---:|"]
    g = torch.Generator(device=dev).manual_seed(1)
    for name, T, E, K, H in SHAPES:
        for dt in (torch.float32, torch.bfloat16):
            esz = torch.tensor([], dtype=dt).element_size()
            ids = torch.rand(T, E, device=dev, generator=g).topk(K, dim=1).indices  # distinct experts
            probs = torch.rand(T, K, device=dev, generator=g)
            order = torch.sort(ids.reshape(-1), stable=True).indices
            token_of = (order // K).to(torch.int64)
            pp = probs.reshape(-1)[order].to(dt)[:, None]
            x = torch.randn(T, H, device=dev, dtype=dt)
            xp = torch.empty(T * K, H, device=dev, dtype=dt)
            y = torch.empty(T, H, device=dev, dtype=dt)
            src = torch.empty(T * K * H, device=dev, dtype=dt)
            dst = torch.empty_like(src)

            def row(op, nbytes, ms):
                n = nbytes // esz // 2
                cms = timed(lambda: dst[:n].copy_(src[:n]))
                gbs, cgbs = nbytes / ms / 1e6, nbytes / cms / 1e6
                lines.append(f"| {name} | {str(dt).replace('torch.', '')} | {op} | {ms:.4f} | {gbs:.0f} | {cgbs:.0f} | {100 * gbs / cgbs:.1f} % |")

            def perm():
                torch.index_select(x, 0, token_of, out=xp)

            def unperm():
                y.zero_()
                y.index_add_(0, token_of, xp * pp)

            b = T * H * esz + T * K * H * esz
            row("index_select (permute fwd)", b, timed(perm))
            row("index_add (unpermute fwd)", b, timed(unperm))
            del x, xp, y, src, dst
            torch.cuda.empty_cache()
    out = "\n".join(lines) + "\n"
    print(out)
    if len(sys.argv) > 1:
        open(sys.argv[1], "w").write(out)


if __name__ == "__main__":
    main()
