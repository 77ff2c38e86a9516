//go:build gomoecuda

package kernels

import (
	"fmt"

	"gorgonia.org/cu"
)

// Combine-unpermute on the device: the launchers of unpermute.cuh's kernels (CPU twin:
// unpermute.go).

func init() {
	for _, d := range []DType{F32, F64, BF16} {
		for _, v := range []string{"v", "s"} {
			for _, k := range []string{"unpermute_fwd", "unpermute_bwd", "unpermute_bwdseq", "unpermute_bwd_rows", "unpermute_bwd_rows4"} {
				if d == BF16 && (k == "unpermute_bwd" || k == "unpermute_bwdseq") {
					continue // bfloat16 dprobs: the bf16dot kernels below
				}
				kernelNames = append(kernelNames, k+"_"+d.suffix()+"_"+v)
			}
		}
	}
	for _, v := range bf16DotVariants {
		kernelNames = append(kernelNames, "unpermute_bwd_bf16dot_"+v+"_v")
	}
	kernelNames = append(kernelNames, "unpermute_bwd_bf16dot_k1_s")
}

// bf16DotVariants are the 16-byte-pack kernels of the bfloat16 unpermute backward with dprobs:
// k<KB> keeps the yp loads of KB slots in flight (k1: slot by slot). They give the same bits;
// they differ in speed by K (bf16DotVariant picks one).
var bf16DotVariants = []string{"k1", "k2", "k8"}

// bf16DotForce, when not empty, names the variant every launch uses (for the benchmark).
var bf16DotForce string

// bf16DotBlocks, when not 0, sets how many blocks of the bfloat16 dprobs kernels take tokens:
// -1 one per token, n > 0 n blocks (for the benchmark and tests; the same bits either way).
// 0, the default, is one wave: as many as the GPU holds at once.
var bf16DotBlocks int

// bf16DotVariant is the variant for K slots per token: k1 at K = 1, k2 above. On an H100
// (docs/gpu-bench.md, 2026-12-07 11:17, one run, each kernel one wave of blocks) k2 was the
// fastest at every shape with K > 1 (with rows at te16k, K = 6: tied with k1), with rows and
// with dprobs alone (what the layer's backward runs): dprobs alone 94.5 / 96.2 / 107.9 / 99.3 %
// of copy at dsv3 / te16k / mixtral / qwen3 against k8's 92.5 / 90.0 / 68.8 / 89.9 % and k1's
// 88.3 / 96.1 / 98.6 / 93.1 %; with rows 90.8 / 90.0 / 90.2 / 87.3 % (k8 90.4 / 86.4 / 70.6 /
// 82.0 %). At K = 1 (top1) k1 led by 8–11 points. (Four packs per thread in flight were never
// the fastest in an earlier run: more registers, less occupancy.)
func bf16DotVariant(K int) string {
	if bf16DotForce != "" {
		return bf16DotForce
	}
	if K == 1 {
		return "k1"
	}
	return "k2"
}

// UnpermuteForward writes y [T,H] = Σ_k probs[t,k]·yp[rowOf[t,k]] (probs 0: unweighted).
func (c *CUDA) UnpermuteForward(d DType, g Geometry, H int, y, yp, probs, plan cu.DevicePtr) error {
	if err := c.check(d, g, H); err != nil {
		return err
	}
	_, _, rowOf, _ := planParts(g, plan)
	name, n := typedName("unpermute_fwd", d, vec(d, H, y, yp))
	acc := 4
	if d == F64 {
		acc = 8
	}
	return c.do(func() error {
		return c.launch(name, g.T, rowThreads(int64(H)/n, 1), (acc+4)*g.K, *new(args).p(yp).p(probs).p(y).p(rowOf).i(g.K).l(int64(H)).l(int64(g.Rows())).p(c.status))
	})
}

// UnpermuteBackward writes dyp [R,H] (if not 0; pad rows 0) and dprobs [T,K] (if not 0) from
// dy [T,H], yp [R,H] (read only for dprobs) and probs [T,K] (0: unweighted forward).
func (c *CUDA) UnpermuteBackward(d DType, g Geometry, H int, dyp, dprobs, dy, yp, probs, plan cu.DevicePtr) error {
	if err := c.check(d, g, H); err != nil {
		return err
	}
	if dyp == 0 && dprobs == 0 {
		return nil
	}
	if dprobs != 0 && yp == 0 {
		return fmt.Errorf("gomoe: device unpermute backward: dprobs needs yp")
	}
	_, _, rowOf, tokenOf := planParts(g, plan)
	ptrs := []cu.DevicePtr{dy}
	if dyp != 0 {
		ptrs = append(ptrs, dyp)
	}
	if yp != 0 {
		ptrs = append(ptrs, yp)
	}
	acc := 4
	if d == F64 {
		acc = 8
	}
	R := int64(g.Rows())
	zb := 0 // the blocks that zero dyp's pad rows, after the token blocks
	if dyp != 0 {
		zb = zeroBlocks(R)
	}
	if dprobs == 0 {
		// Rows only: a scatter like permute forward, several packs of dy in flight per thread.
		kname, u := "unpermute_bwd_rows", 8
		if d == BF16 && g.K == 1 {
			kname, u = "unpermute_bwd_rows4", 4
		}
		name, n := typedName(kname, d, vec(d, H, ptrs...))
		return c.do(func() error {
			return c.launch(name, g.T+zb, rowThreads(int64(H)/n, u), (acc+4)*g.K,
				*new(args).p(dy).p(probs).p(dyp).p(rowOf).p(tokenOf).i(g.T).i(g.K).l(int64(H)).l(R).i(zeroRowsPerBlock).i(storeMode).p(c.status))
		})
	}
	if d == BF16 {
		// dprobs summed in float32 in DotBF16's order: the block size is part of the order.
		name := "unpermute_bwd_bf16dot_k1_s"
		if vec(d, H, ptrs...) {
			name = "unpermute_bwd_bf16dot_" + bf16DotVariant(g.K) + "_v"
		}
		lanes, smem := BF16DotLanes(H), 4*8*8+8*g.K
		return c.do(func() error {
			// One wave of blocks, each taking tokens blockIdx, + nb, ...
			nb := bf16DotBlocks
			switch {
			case nb < 0:
				nb = g.T
			case nb == 0:
				w, err := c.wave(name, lanes, smem)
				if err != nil {
					return err
				}
				nb = w
			}
			nb = min(nb, g.T)
			return c.launch(name, nb+zb, lanes, smem,
				*new(args).p(dy).p(yp).p(probs).p(dyp).p(dprobs).p(rowOf).p(tokenOf).i(g.T).i(nb).i(g.K).l(int64(H)).l(R).i(zeroRowsPerBlock).i(storeMode).p(c.status))
		})
	}
	grid := g.T + zb
	// Batched yp loads win for float32/float64 with K > 2 and lose for K <= 2 (register
	// pressure), measured on an H200.
	kname := "unpermute_bwdseq"
	if g.K > 2 {
		kname = "unpermute_bwd"
	}
	name, n := typedName(kname, d, vec(d, H, ptrs...))
	return c.do(func() error {
		return c.launch(name, grid, rowThreads(int64(H)/n, 1), 32*8*8+(acc+4)*g.K,
			*new(args).p(dy).p(yp).p(probs).p(dyp).p(dprobs).p(rowOf).p(tokenOf).i(g.T).i(g.K).l(int64(H)).l(R).i(zeroRowsPerBlock).i(storeMode).p(c.status))
	})
}
