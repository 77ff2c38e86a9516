//go:build gomoecuda

package kernels

import (
	"fmt"

	"gorgonia.org/cu"
)

// The routing plan on the device: the launcher of plan.cuh's kernels (CPU twin: plan.go).

func init() {
	kernelNames = append(kernelNames, "plan_count", "plan_assign", "plan_select_f32", "plan_select_f64")
}

// Plan pointers inside a flat plan vector on the device.
func planParts(g Geometry, plan cu.DevicePtr) (counts, offsets, rowOf, tokenOf cu.DevicePtr) {
	e, tk := int64(g.E), int64(g.T)*int64(g.K)
	counts = plan
	offsets = plan + cu.DevicePtr(4*e)
	rowOf = plan + cu.DevicePtr(4*(2*e+1))
	tokenOf = plan + cu.DevicePtr(4*(2*e+1+tk))
	return
}

// MaxDeviceExperts is the largest E the device plan builder takes (its shared memory holds
// 11·E+1 int32 per block, within the default 48 KiB).
const MaxDeviceExperts = 1024

// planChunks splits the T tokens into chunks of about 512 pairs, at most maxPlanChunks of them.
// Every plan_assign block sums the per-chunk counts of all chunks, so the plan costs
// O(T·K + E·chunks²) work: linear in T·K with the chunk count capped.
func planChunks(g Geometry) (ct, nchunks int) {
	ct = (512 + g.K - 1) / g.K
	if (g.T+ct-1)/ct > maxPlanChunks {
		ct = (g.T + maxPlanChunks - 1) / maxPlanChunks
	}
	return ct, (g.T + ct - 1) / ct
}

const maxPlanChunks = 128

func align256(n int64) int64 { return (n + 255) &^ 255 }

// PlanWorkBytes is the size of the scratch buffer BuildPlan needs for geometry g.
func PlanWorkBytes(g Geometry) int64 {
	_, nc := planChunks(g)
	n := align256(4 * int64(g.E) * int64(nc))
	if g.Mode == Capacity && g.Drop == DropByProb {
		tk := int64(g.T) * int64(g.K)
		n += 3*align256(4*int64(g.E+1)) + align256(4*tk) + align256(tk)
	}
	return n
}

// BuildPlan fills the flat plan vector plan (g.PlanLen() int32) from ids [T,K] int32, with
// probs [T,K] (float32 for F32 and BF16, float64 for F64; only read under DropByProb, else
// may be 0) and a scratch buffer of PlanWorkBytes(g) bytes. It gives the same plan as the CPU
// BuildPlan for valid ids. Bad ids cannot be reported without a host sync: they are treated as
// -1 and flagged for Status.
func (c *CUDA) BuildPlan(g Geometry, plan, ids, probs cu.DevicePtr, probsType DType, work cu.DevicePtr) error {
	if err := g.Validate(); err != nil {
		return err
	}
	if g.E > MaxDeviceExperts {
		return fmt.Errorf("gomoe: device plan: E=%d experts, the GPU plan builder takes at most %d", g.E, MaxDeviceExperts)
	}
	byProb := g.Mode == Capacity && g.Drop == DropByProb
	if byProb && probs == 0 {
		return fmt.Errorf("gomoe: device plan: drop by prob needs probs")
	}
	if !probsType.valid() {
		return fmt.Errorf("gomoe: device plan: unknown probs type %v", probsType)
	}
	counts, offsets, rowOf, tokenOf := planParts(g, plan)
	ct, nc := planChunks(g)
	R := int64(g.Rows())
	E := g.E
	chunk := work
	return c.do(func() error {
		count := func(keep cu.DevicePtr, check int) error {
			return c.launch("plan_count", nc, 256, 4*E, *new(args).p(ids).i(g.T).i(g.K).i(E).i(ct).i(nc).p(keep).p(chunk).p(tokenOf).l(R).i(check).p(c.status))
		}
		assign := func(A, C, pad, limit int, keep, cnt, off, load, list cu.DevicePtr) error {
			return c.launch("plan_assign", nc, 256, 4*(11*E+1), *new(args).p(ids).i(g.T).i(g.K).i(E).i(ct).i(nc).p(chunk).i(A).i(C).i(pad).i(limit).p(keep).p(cnt).p(off).p(load).p(rowOf).p(tokenOf).p(list))
		}
		pad := 0
		if g.Mode == Capacity && g.PadToCapacity {
			pad = 1
		}
		capC := 0
		limit := int(^uint32(0) >> 1)
		if g.Mode == Capacity {
			capC, limit = g.C, g.C
		}
		var keep cu.DevicePtr
		if byProb {
			// Pass 1: list every pair expert-major (unpadded), then keep the C best of each
			// over-full expert.
			o := align256(4 * int64(E) * int64(nc))
			lcounts := work + cu.DevicePtr(o)
			loffs := lcounts + cu.DevicePtr(align256(4*int64(E+1)))
			load := loffs + cu.DevicePtr(align256(4*int64(E+1)))
			list := load + cu.DevicePtr(align256(4*int64(E+1)))
			keep = list + cu.DevicePtr(align256(4*int64(g.T)*int64(g.K)))
			if err := count(0, 1); err != nil {
				return err
			}
			if err := assign(1, 0, 0, limit, 0, lcounts, loffs, load, list); err != nil {
				return err
			}
			tk := int64(g.T) * int64(g.K)
			sel := "plan_select_f32"
			if probsType == F64 {
				sel = "plan_select_f64"
			}
			if err := c.launch(sel, gridFor(tk, 256), 256, 0, *new(args).p(ids).p(probs).l(tk).i(E).i(g.C).p(loffs).p(load).p(list).p(keep).p(c.status)); err != nil {
				return err
			}
		}
		check := 1
		if byProb {
			check = 0
		}
		if err := count(keep, check); err != nil {
			return err
		}
		return assign(g.A, capC, pad, limit, keep, counts, offsets, 0, 0)
	})
}
