//go:build gomoecuda

package kernels_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	. "github.com/gomoe/gomoe/kernels"
)

// The device plan builder against the CPU BuildPlan (plan_cuda.go, plan.cuh), and the routing
// cases the data kernels' GPU tests share.

// gpuCase is one routing problem.
type gpuCase struct {
	name string
	g    Geometry
	H    []int
	ids  func(rng *rand.Rand, g Geometry) []int32
}

// cuBalancedIDs gives every token K distinct random experts; a fraction drop of slots is -1.
func cuBalancedIDs(drop float64) func(rng *rand.Rand, g Geometry) []int32 {
	return func(rng *rand.Rand, g Geometry) []int32 {
		ids := make([]int32, g.T*g.K)
		for t := 0; t < g.T; t++ {
			row := ids[t*g.K : (t+1)*g.K]
			for k := range row {
				// A uniformly random expert not yet in the row (K <= E): O(K) per draw, where a
				// permutation of all E experts per token would cost O(E).
				for {
					e := int32(rng.IntN(g.E))
					if !slices.Contains(row[:k], e) {
						row[k] = e
						break
					}
				}
			}
			for k := range row {
				if rng.Float64() < drop {
					row[k] = -1
				}
			}
		}
		return ids
	}
}

// cuSkewedIDs sends slot 0 of every token to expert 0 and the rest to random distinct experts
// in [1, E/2): half the experts get no token, expert 0 gets all.
func cuSkewedIDs(rng *rand.Rand, g Geometry) []int32 {
	ids := make([]int32, g.T*g.K)
	for t := 0; t < g.T; t++ {
		ids[t*g.K] = 0
		perm := rng.Perm(g.E/2 - 1)
		for k := 1; k < g.K; k++ {
			ids[t*g.K+k] = int32(perm[k-1] + 1)
		}
	}
	return ids
}

func gpuCases() []gpuCase {
	capG := func(g Geometry, c int, d DropPolicy, pad bool) Geometry {
		g.Mode, g.C, g.Drop, g.PadToCapacity = Capacity, c, d, pad
		return g
	}
	return []gpuCase{
		{"T1", Geometry{T: 1, K: 2, E: 4, A: 1}, []int{8, 3}, cuBalancedIDs(0)},
		{"E1", Geometry{T: 37, K: 1, E: 1, A: 1}, []int{16, 5}, cuBalancedIDs(0)},
		{"KeqE", Geometry{T: 50, K: 4, E: 4, A: 1}, []int{32, 1}, cuBalancedIDs(0)},
		{"random", Geometry{T: 300, K: 3, E: 17, A: 1}, []int{64, 67}, cuBalancedIDs(0.1)},
		{"aligned", Geometry{T: 300, K: 2, E: 8, A: 16}, []int{24, 7}, cuBalancedIDs(0.05)},
		{"skewed", Geometry{T: 200, K: 3, E: 12, A: 4}, []int{40}, cuSkewedIDs},
		{"manychunks", Geometry{T: 5000, K: 4, E: 300, A: 1}, []int{16}, cuBalancedIDs(0.02)},
		{"top1long", Geometry{T: 3000, K: 1, E: 5, A: 8}, []int{8}, cuBalancedIDs(0)},
		{"chunkCap", Geometry{T: 40000, K: 2, E: 6, A: 2}, []int{4}, cuBalancedIDs(0.01)},
		{"maxE", Geometry{T: 20000, K: 8, E: MaxDeviceExperts, A: 1}, []int{8}, cuBalancedIDs(0.01)},
		{"capPos", capG(Geometry{T: 400, K: 2, E: 8, A: 1}, 60, DropByPosition, false), []int{16, 9}, cuBalancedIDs(0.05)},
		{"capPosPad", capG(Geometry{T: 200, K: 3, E: 12, A: 4}, 30, DropByPosition, true), []int{16}, cuSkewedIDs},
		{"capProb", capG(Geometry{T: 400, K: 2, E: 8, A: 1}, 60, DropByProb, false), []int{16, 9}, cuBalancedIDs(0.05)},
		{"capProbPad", capG(Geometry{T: 600, K: 3, E: 12, A: 8}, 50, DropByProb, true), []int{32}, cuSkewedIDs},
		{"capProbLong", capG(Geometry{T: 4000, K: 2, E: 4, A: 1}, 900, DropByProb, false), []int{8}, cuBalancedIDs(0)},
	}
}

// cuTiedProbs draws probs from a few values so that drop-by-prob meets ties.
func cuTiedProbs(rng *rand.Rand, n int) []float64 {
	p := make([]float64, n)
	for i := range p {
		p[i] = float64(rng.IntN(8)) / 8
		if rng.IntN(50) == 0 {
			p[i] = math.Copysign(0, -1)
		}
	}
	return p
}

// cuProbsFor gives the probs of data type d (float32 for bf16).
func cuProbsFor(d DType, p []float64) any {
	if d == F64 {
		return append([]float64(nil), p...)
	}
	o := make([]float32, len(p))
	for i, x := range p {
		o[i] = float32(x)
	}
	return o
}

func cuCpuPlan(t *testing.T, g Geometry, ids []int32, probs any) []int32 {
	t.Helper()
	dst := make([]int32, g.PlanLen())
	var err error
	switch p := probs.(type) {
	case []float32:
		err = BuildPlan(dst, g, ids, p)
	case []float64:
		err = BuildPlan(dst, g, ids, p)
	default:
		err = BuildPlan[float32](dst, g, ids, nil)
	}
	if err != nil {
		t.Fatal(err)
	}
	return dst
}

func cuGpuPlan(t *testing.T, g Geometry, ids cuDevBuf, probs cuDevBuf, pt DType) cuDevBuf {
	t.Helper()
	plan := cuAlloc(t, 4*int64(g.PlanLen()))
	work := cuAlloc(t, PlanWorkBytes(g))
	if err := testCUDA.BuildPlan(g, plan.p, ids.p, probs.p, pt, work.p); err != nil {
		t.Fatal(err)
	}
	return plan
}

func TestCUDAPlan(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	for _, c := range gpuCases() {
		for _, pt := range []DType{F32, F64} {
			t.Run(fmt.Sprintf("%s/%v", c.name, pt), func(t *testing.T) {
				ids := c.ids(rng, c.g)
				probs := cuProbsFor(pt, cuTiedProbs(rng, len(ids)))
				want := cuCpuPlan(t, c.g, ids, probs)
				plan := cuGpuPlan(t, c.g, cuUpload(t, ids), cuUploadAny(t, probs), pt)
				got := cuDownload[int32](t, plan, c.g.PlanLen())
				for i := range want {
					if got[i] != want[i] {
						t.Fatalf("plan entry %d = %d, want %d (counts/offsets/rowOf/tokenOf start at 0, %d, %d, %d)",
							i, got[i], want[i], c.g.E, 2*c.g.E+1, 2*c.g.E+1+c.g.T*c.g.K)
					}
				}
				if err := testCUDA.Status(); err != nil {
					t.Fatalf("status after valid ids: %v", err)
				}
			})
		}
	}
}

func TestCUDAPlanFlagsBadIDs(t *testing.T) {
	g := Geometry{T: 3, K: 2, E: 4, A: 1}
	for _, c := range []struct {
		name string
		ids  []int32
		bit  int32
	}{
		{"out of range", []int32{0, 1, 7, 2, 3, -1}, StatusBadID},
		{"below -1", []int32{0, 1, -2, 2, 3, -1}, StatusBadID},
		{"repeated", []int32{0, 1, 2, 2, 3, -1}, StatusRepeated},
	} {
		t.Run(c.name, func(t *testing.T) {
			plan := cuGpuPlan(t, g, cuUpload(t, c.ids), cuDevBuf{}, F32)
			err := testCUDA.Status()
			if !statusHas(err, c.bit) {
				t.Fatalf("Status() = %v, want a StatusError with bit %d", err, c.bit)
			}
			if err := testCUDA.Status(); err != nil {
				t.Errorf("second Status() = %v, want nil (cleared)", err)
			}
			// The plan stays well-formed: every row id in range, tokenOf agrees.
			p, _ := g.View(cuDownload[int32](t, plan, g.PlanLen()))
			if c.bit == StatusBadID {
				if err := p.Check(); err != nil {
					t.Errorf("plan from bad ids is not well-formed: %v", err)
				}
			}
		})
	}
}
