//go:build gomoecuda

package kernels_test

import (
	"math/rand/v2"
	"testing"

	. "github.com/gomoe/gomoe/kernels"
)

// TestCUDAProgrammaticLaunch runs a chain of dependent kernels with no host sync between them,
// with programmatic launches on and off, and the same chain on the CPU: all three must give the
// same bits. Each round builds a plan from one set of ids, permutes x by it, builds a plan
// from other ids and combines the permuted rows by that one, so every token mixes the rows of
// other tokens: a kernel that read its input before the kernel ahead of it had finished
// writing it would change the result.
func TestCUDAProgrammaticLaunch(t *testing.T) {
	was := SetProgrammaticLaunch(testCUDA, true)
	defer SetProgrammaticLaunch(testCUDA, was)
	if !ProgrammaticLaunch(testCUDA) {
		t.Log("this GPU or driver takes no programmatic launches: both runs use plain launches")
	}
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
		for r := range rounds {
			cuMust(t, testCUDA.BuildPlan(g, planA.p, ids[r%3].p, 0, F32, work.p))
			cuMust(t, testCUDA.PermuteForward(F32, g, H, dxp.p, x.p, planA.p))
			cuMust(t, testCUDA.BuildPlan(g, planB.p, ids[(r+1)%3].p, 0, F32, work.p))
			cuMust(t, testCUDA.UnpermuteForward(F32, g, H, x.p, dxp.p, dProbs.p, planB.p))
		}
		cuMust(t, testCUDA.Status())
		return cuDownload[float32](t, x, g.T*H)
	}
	cuSameBits(t, "chain with programmatic launches", run(true), want)
	cuSameBits(t, "chain with plain launches", run(false), want)
}
