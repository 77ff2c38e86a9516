//go:build gomoecuda

package kernels

import (
	"fmt"

	"gorgonia.org/cu"
)

// The top-k gather on the device: the launchers of gather_topk.cuh's kernels (CPU twin:
// gather_topk.go).

func init() {
	for _, s := range []string{"f32", "f64"} {
		kernelNames = append(kernelNames, "gather_topk_"+s, "gather_topk_bwd_"+s)
	}
}

// GatherTopK writes out[t,k] = s[t, ids[t,k]] (0 for an id of -1) for s [T,E]. An id outside
// [-1, E) counts as -1 and sets StatusBadID.
func (c *CUDA) GatherTopK(d DType, out, s, ids cu.DevicePtr, T int64, E, K int) error {
	if d != F32 && d != F64 {
		return fmt.Errorf("gomoe: device GatherTopK: dtype %v", d)
	}
	if err := colsFit("GatherTopK", E, K); err != nil {
		return err
	}
	tk := T * int64(K)
	return c.do(func() error {
		return c.launch("gather_topk_"+d.suffix(), gridFor(tk, 256), 256, 0, *new(args).p(s).p(ids).p(out).l(tk).i(E).i(K).p(c.status))
	})
}

// GatherTopKBackward writes ds [T,E]: zero except ds[t, ids[t,k]] += g[t,k] (an id outside
// [-1, E) is skipped and sets StatusBadID).
func (c *CUDA) GatherTopKBackward(d DType, ds, g, ids cu.DevicePtr, T int64, E, K int) error {
	if d != F32 && d != F64 {
		return fmt.Errorf("gomoe: device GatherTopK gradient: dtype %v", d)
	}
	if err := colsFit("GatherTopK gradient", E, K); err != nil {
		return err
	}
	return c.do(func() error {
		return c.launch("gather_topk_bwd_"+d.suffix(), blocksFor(T, 256), 256, 0, *new(args).p(g).p(ids).p(ds).l(T).i(E).i(K).p(c.status))
	})
}
