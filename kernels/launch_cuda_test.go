//go:build gomoecuda

package kernels_test

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"

	. "github.com/gomoe/gomoe/kernels"

	"github.com/gomoe/gomoe/bfloat16"
)

// TestCUDAProgrammaticLaunch runs chains of dependent kernels with no host sync between them,
// with programmatic launches on and off, and checks that both give the same bits. Each chain is
// enqueued behind a sync probe that holds the stream, so every launch is queued before the
// first one runs and programmatic launches overlap as far as they can; the probe also checks
// that the chain waited for nothing. A kernel that read its input before the kernel ahead of it
// had finished writing it would change the result.
//
// The first chain is the routing data path, also against the CPU: each round builds a plan
// from one set of ids, permutes x by it, builds a plan from other ids and combines the
// permuted rows by that one, so every token mixes the rows of other tokens. The second feeds a
// bfloat16 grouped GEMM's output back into it (the sm_90a CUTLASS kernels on an H100), on and
// off only: the GEMMs' bits are not the CPU's.
func TestCUDAProgrammaticLaunch(t *testing.T) {
	was := SetProgrammaticLaunch(testCUDA, true)
	defer SetProgrammaticLaunch(testCUDA, was)
	if !ProgrammaticLaunch(testCUDA) {
		t.Log("this GPU or driver takes no programmatic launches: both runs use plain launches")
	}
	held := func(t *testing.T, enqueue func()) {
		t.Helper()
		probe, err := testCUDA.StartSyncProbe(20 * time.Second)
		cuMust(t, err)
		enqueue()
		waited, err := probe.Release()
		cuMust(t, err)
		if waited {
			t.Fatal("the chain waited for the device")
		}
		cuMust(t, testCUDA.Status())
	}

	t.Run("routing", func(t *testing.T) {
		const rounds, H = 40, 1024
		g := Geometry{T: 512, K: 4, E: 16, A: 1}
		rng := rand.New(rand.NewPCG(21, 22))
		var idSets [3][]int32
		for i := range idSets {
			idSets[i] = cuBalancedIDs(0)(rng, g)
		}
		probs := make([]float32, g.T*g.K)
		for i := range probs {
			probs[i] = 0.2 + 0.1*rng.Float32() // rows of sum about 1: the values stay in range
		}
		x0 := f32s(trRand(rng, g.T*H, 1))

		// The CPU reference.
		want := append([]float32(nil), x0...)
		xp := make([]float32, g.Rows()*H)
		planFor := func(ids []int32) Plan {
			buf := make([]int32, g.PlanLen())
			cuMust(t, BuildPlan[float32](buf, g, ids, nil))
			p, err := g.View(buf)
			cuMust(t, err)
			return p
		}
		for r := range rounds {
			cuMust(t, PermuteForward(xp, want, planFor(idSets[r%3]), H))
			cuMust(t, UnpermuteForward(want, xp, probs, planFor(idSets[(r+1)%3]), H))
		}

		run := func(pdl bool) []float32 {
			SetProgrammaticLaunch(testCUDA, pdl)
			var ids [3]cuDevBuf
			for i := range ids {
				ids[i] = cuUpload(t, idSets[i])
			}
			dProbs := cuUpload(t, probs)
			planA, planB := cuAlloc(t, 4*int64(g.PlanLen())), cuAlloc(t, 4*int64(g.PlanLen()))
			work := cuAlloc(t, PlanWorkBytes(g))
			x := cuUpload(t, x0)
			dxp := cuAlloc(t, int64(g.Rows()*H*4))
			held(t, func() {
				for r := range rounds {
					cuMust(t, testCUDA.BuildPlan(g, planA.p, ids[r%3].p, 0, F32, work.p))
					cuMust(t, testCUDA.PermuteForward(F32, g, H, dxp.p, x.p, planA.p))
					cuMust(t, testCUDA.BuildPlan(g, planB.p, ids[(r+1)%3].p, 0, F32, work.p))
					cuMust(t, testCUDA.UnpermuteForward(F32, g, H, x.p, dxp.p, dProbs.p, planB.p))
				}
			})
			return cuDownload[float32](t, x, g.T*H)
		}
		cuSameBits(t, "chain with programmatic launches", run(true), want)
		cuSameBits(t, "chain with plain launches", run(false), want)
	})

	t.Run("grouped GEMM", func(t *testing.T) {
		const rounds, H = 8, 256
		g := Geometry{T: 256, K: 2, E: 8, A: 1}
		rng := rand.New(rand.NewPCG(23, 24))
		ids := cuBalancedIDs(0)(rng, g)
		bf := func(n int, scale float64) []bfloat16.BFloat16 {
			v := make([]bfloat16.BFloat16, n)
			for i := range v {
				v[i] = bfloat16.FromFloat32(float32(scale * rng.NormFloat64()))
			}
			return v
		}
		x0 := bf(g.Rows()*H, 1)
		w := bf(g.E*H*H, 1/math.Sqrt(H)) // keeps the rows' size from round to round
		run := func(pdl bool) []bfloat16.BFloat16 {
			SetProgrammaticLaunch(testCUDA, pdl)
			plan := cuAlloc(t, 4*int64(g.PlanLen()))
			cuMust(t, testCUDA.BuildPlan(g, plan.p, cuUpload(t, ids).p, 0, F32, cuAlloc(t, PlanWorkBytes(g)).p))
			cuMust(t, testCUDA.Status())
			dw := cuUpload(t, w)
			a, b := cuUpload(t, x0), cuAlloc(t, int64(g.Rows()*H*2))
			// One call first: the first GEMM of a shape builds its launch on the host, which
			// may wait for the device.
			cuMust(t, testCUDA.GroupedMatMulForward(BF16, g, H, H, b.p, a.p, dw.p, plan.p))
			cuMust(t, testCUDA.Status())
			held(t, func() {
				for range rounds {
					cuMust(t, testCUDA.GroupedMatMulForward(BF16, g, H, H, b.p, a.p, dw.p, plan.p))
					a, b = b, a
				}
			})
			return cuDownload[bfloat16.BFloat16](t, a, g.Rows()*H)
		}
		on, off := run(true), run(false)
		cuSameBits(t, "grouped GEMM chain, programmatic against plain launches", on, off)
		nonzero := 0
		for _, v := range on {
			if v.Float32() != 0 {
				nonzero++
			}
		}
		if nonzero < len(on)/2 {
			t.Fatalf("only %d of %d outputs are non-zero: the chain lost its values", nonzero, len(on))
		}
	})
}
