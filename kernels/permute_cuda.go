//go:build gomoecuda

package kernels

import (
	"fmt"

	"gorgonia.org/cu"
)

// Permute-dispatch on the device: the launchers of permute.cuh's kernels (CPU twin: permute.go).

func init() {
	kernelNames = append(kernelNames, "permute_fwd_v16", "permute_fwd_v8", "permute_fwd_v4", "permute_fwd_v2")
	for _, d := range []DType{F32, F64, BF16} {
		for _, v := range []string{"v", "s"} {
			kernelNames = append(kernelNames, "permute_bwd_"+d.suffix()+"_"+v)
		}
	}
}

// zeroRowsPerBlock is the number of pad rows each zeroing block of permute forward and
// unpermute backward clears.
const zeroRowsPerBlock = 32

// storeMode is the cache policy of the scatter stores and loads in permute forward and
// unpermute backward (smode in permute.cuh and unpermute.cuh). 0 (streaming stores and loads)
// measured best on an H200; the GPU benchmark's -gomoe.modes flag compares the others.
var storeMode = 0

// StatusBadRows is the status bit the permute and combine kernels (permute, unpermute and
// their backward, the permuted probs) set when a plan holds a row outside [0, R) in rowOf or a
// token outside [0, T) in tokenOf (gomoe.cuh's planRow and planToken), which only a plan filled
// by hand can: such a slot or row is taken as dropped, so no kernel reads or writes outside its
// buffers. A plan whose ids are in range but disagree is not detected on the device
// (Plan.Check on the host finds it).
const StatusBadRows = 128

func zeroBlocks(R int64) int { return int((R + zeroRowsPerBlock - 1) / zeroRowsPerBlock) }

// PermuteForward writes xp [R,H] from x [T,H]: each token's row to its K rows, pad rows 0.
func (c *CUDA) PermuteForward(d DType, g Geometry, H int, xp, x, plan cu.DevicePtr) error {
	if err := c.check(d, g, H); err != nil {
		return err
	}
	_, _, rowOf, tokenOf := planParts(g, plan)
	rowBytes := int64(H) * int64(d.Size())
	name, w := "permute_fwd_v2", int64(2)
	for _, cand := range []struct {
		n string
		w int64
	}{{"permute_fwd_v16", 16}, {"permute_fwd_v8", 8}, {"permute_fwd_v4", 4}} {
		if rowBytes%cand.w == 0 && int64(xp)%cand.w == 0 && int64(x)%cand.w == 0 {
			name, w = cand.n, cand.w
			break
		}
	}
	if w == 2 && rowBytes%2 != 0 {
		return fmt.Errorf("gomoe: device permute: row of %d bytes", rowBytes)
	}
	nvec := rowBytes / w
	R := int64(g.Rows())
	u := 4 // packs in flight per thread, as in permute.cuh
	if name == "permute_fwd_v16" {
		u = 8
	}
	return c.do(func() error {
		return c.launch(name, g.T+zeroBlocks(R), rowThreads(nvec, u), 4*g.K,
			*new(args).p(x).p(xp).p(rowOf).p(tokenOf).i(g.T).i(g.K).l(R).l(nvec).i(zeroRowsPerBlock).i(storeMode).p(c.status))
	})
}

// PermuteBackward writes dx [T,H] = Σ_k dxp[rowOf[t,k]] (k order, data-type accumulation;
// bfloat16 in float32, rounded once).
func (c *CUDA) PermuteBackward(d DType, g Geometry, H int, dx, dxp, plan cu.DevicePtr) error {
	if err := c.check(d, g, H); err != nil {
		return err
	}
	_, _, rowOf, _ := planParts(g, plan)
	name, n := typedName("permute_bwd", d, vec(d, H, dx, dxp))
	return c.do(func() error {
		return c.launch(name, g.T, rowThreads(int64(H)/n, 1), 4*g.K, *new(args).p(dxp).p(dx).p(rowOf).i(g.K).l(int64(H)).l(int64(g.Rows())).p(c.status))
	})
}
