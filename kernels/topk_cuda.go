//go:build gomoecuda

package kernels

import (
	"fmt"

	"gorgonia.org/cu"
)

// Top-k routing on the device: the launcher of topk.cuh's kernels (CPU twin: topk.go).

func init() {
	kernelNames = append(kernelNames, "topk_f32", "topk_f64")
}

// StatusNaNScore is the status bit TopK sets when a selection or group score is NaN (such a
// score ranks lowest).
const StatusNaNScore = 8

// TopK writes ids [T,K] int32: for every row of scores [T,E] (float32 or float64; bias [E] of
// the same type, or 0) the K experts with the highest score+bias, with groups as in op.TopK
// (groups 1: none; per = max(1, K/kept)). A NaN score sets StatusNaNScore. E ≤ 1024, groups ≤ 64.
func (c *CUDA) TopK(d DType, ids, scores, bias cu.DevicePtr, T int64, E, K, groups, kept int) error {
	if d != F32 && d != F64 {
		return fmt.Errorf("gomoe: device TopK: dtype %v, want float32 or float64", d)
	}
	if groups < 1 {
		groups = 1
	}
	if kept < 1 {
		kept = 1
	}
	if err := CheckTopK(E, K, groups, kept); err != nil {
		return err
	}
	if err := topkDeviceLimits("TopK", E, groups); err != nil {
		return err
	}
	per := max(1, K/kept)
	return c.do(func() error {
		return c.launch("topk_"+d.suffix(), blocksFor(T, 128), 128, 0,
			*new(args).p(scores).p(bias).p(ids).l(T).i(E).i(K).i(groups).i(kept).i(per).p(c.status))
	})
}

// topkDeviceLimits checks what the device's top-k selections (TopK, RouterTopK) support beyond
// CheckTopK: at most 1024 experts and 64 groups.
func topkDeviceLimits(name string, E, groups int) error {
	if E > 1024 || groups > 64 {
		return fmt.Errorf("gomoe: device %s: E=%d experts in %d groups, want E <= 1024 and at most 64 groups", name, E, groups)
	}
	return nil
}
