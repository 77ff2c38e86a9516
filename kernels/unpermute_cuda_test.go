//go:build gomoecuda

package kernels_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"gorgonia.org/cu"

	"github.com/gomoe/gomoe/bfloat16"
	. "github.com/gomoe/gomoe/kernels"
)

// TestCUDAUnpermuteBackwardBF16 checks the bfloat16 unpermute backward at the widths where
// DotBF16's order matters (several packs per thread, several warps, a padded last pack, an
// unaligned row start, K above the block's lanes) for every variant of the kernel
// (BF16DotVariants), with one block per token and with blocks that take several tokens, against
// the CPU twin, UnpermuteBackwardBF16: dyp and dprobs bit for bit. The data mix signs and
// magnitudes (2^-30 to 2^30) so that a different order of the float32 sums would show.
func TestCUDAUnpermuteBackwardBF16(t *testing.T) {
	rng := rand.New(rand.NewPCG(21, 22))
	cases := []struct {
		g     Geometry
		H     []int
		shift int // elements the device rows start past a 16-byte boundary (0: aligned)
	}{
		{Geometry{T: 40, K: 8, E: 16, A: 1}, []int{7168, 2048, 8, 24}, 0},
		{Geometry{T: 33, K: 6, E: 9, A: 4}, []int{4100, 2051, 257, 5}, 0},
		{Geometry{T: 20, K: 10, E: 12, A: 1}, []int{4096, 1000}, 0},
		{Geometry{T: 25, K: 2, E: 4, A: 1}, []int{4096}, 1},
		{Geometry{T: 64, K: 1, E: 3, A: 2}, []int{7168, 9}, 0},
		{Geometry{T: 9, K: 40, E: 48, A: 1}, []int{8, 24}, 0}, // K above the 32 lanes
	}
	for _, c := range cases {
		for _, H := range c.H {
			for _, v := range append([]string{""}, BF16DotVariants...) {
				// blocks: one wave (at these T, one block per token), one per token, and 3
				// blocks that each take several tokens
				for _, nb := range []int{0, -1, 3} {
					g := c.g
					name := fmt.Sprintf("T%dK%dE%d/H%d/shift%d/%s/blocks%d", g.T, g.K, g.E, H, c.shift, v, nb)
					t.Run(name, func(t *testing.T) {
						defer SetBF16DotVariant(SetBF16DotVariant(v))
						defer SetBF16DotBlocks(SetBF16DotBlocks(nb))
						cuTestUnpermuteBF16(t, rng, c.g, H, c.shift)
					})
				}
			}
		}
	}
}

func cuTestUnpermuteBF16(t *testing.T, rng *rand.Rand, g Geometry, H, shift int) {
	R := g.Rows()
	ids := cuBalancedIDs(0.05)(rng, g)
	probsF := cuTiedProbs(rng, len(ids))
	probs := cuProbsFor(BF16, probsF).([]float32)
	p, _ := g.View(cuCpuPlan(t, g, ids, probs))
	plan := cuGpuPlan(t, g, cuUpload(t, ids), cuUploadAny(t, probs), F32)
	wild := func(n int) []bfloat16.BFloat16 {
		o := make([]bfloat16.BFloat16, n+shift)
		for i := range o {
			o[i] = bfloat16.FromFloat32(float32(rng.NormFloat64() * math.Ldexp(1, rng.IntN(61)-30)))
		}
		return o
	}
	dy, yp := wild(g.T*H), wild(R*H)
	dDy, dYp, dPr := cuUploadAny(t, dy), cuUploadAny(t, yp), cuUploadAny(t, probs)
	off := cu.DevicePtr(2 * shift)
	// weighted with dyp, unweighted with dyp (dyp a copy of dy), weighted dprobs alone
	for _, c := range []struct{ weighted, rows bool }{{true, true}, {false, true}, {true, false}} {
		var dypG cuDevBuf
		dypP := cu.DevicePtr(0)
		if c.rows {
			dypG = cuAlloc(t, int64(2*(R*H+shift)))
			dypP = dypG.p + off
		}
		dpG := cuAlloc(t, int64(4*g.T*g.K))
		prP, pr := dPr.p, probs
		if !c.weighted {
			prP, pr = 0, nil
		}
		if err := testCUDA.UnpermuteBackward(BF16, g, H, dypP, dpG.p, dDy.p+off, dYp.p+off, prP, plan.p); err != nil {
			t.Fatal(err)
		}
		wantRows := make([]float32, R*H)
		wantDP := make([]float32, g.T*g.K)
		cuMust(t, UnpermuteBackwardBF16(wantRows, wantDP, cuWiden(dy[shift:]).([]float32), cuWiden(yp[shift:]).([]float32), pr, p, H))
		what := fmt.Sprintf("weighted %v rows %v", c.weighted, c.rows)
		if c.rows {
			cuSameBits(t, what+": dyp", cuDownloadAs(t, BF16, dypG, R*H+shift).([]bfloat16.BFloat16)[shift:], cuNarrow(BF16, wantRows))
		}
		cuSameBits(t, what+": dprobs", cuDownload[float32](t, dpG, g.T*g.K), wantDP)
	}
	if err := testCUDA.Status(); err != nil {
		t.Fatal(err)
	}
}
