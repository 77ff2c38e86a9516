//go:build gomoecuda

package kernels_test

import (
	"math"
	"math/rand/v2"
	"testing"

	. "github.com/gomoe/gomoe/kernels"
)

// The GPU kernels against their CPU twins: top-k routing, ids equal.

// refTopK is the selection rule written out: descending score+bias, ties to the lower id,
// within the kept groups (group score = sum of its top per selection scores).
func refTopK(s, bias []float64, T, E, K, groups, kept int) []int32 {
	ids := make([]int32, T*K)
	gs := E / groups
	per := max(1, K/kept)
	for t := 0; t < T; t++ {
		sel := make([]float64, E)
		for e := range sel {
			sel[e] = s[t*E+e]
			if bias != nil {
				sel[e] += bias[e]
			}
		}
		pick := func(allowed func(int) bool, n int, val func(int) float64, m int) []int {
			var out []int
			used := map[int]bool{}
			for k := 0; k < n; k++ {
				best := -1
				for i := 0; i < m; i++ {
					if used[i] || !allowed(i) {
						continue
					}
					if best < 0 || val(i) > val(best) {
						best = i
					}
				}
				used[best] = true
				out = append(out, best)
			}
			return out
		}
		allowed := func(int) bool { return true }
		if groups > 1 {
			gscore := make([]float64, groups)
			for g := 0; g < groups; g++ {
				top := pick(func(e int) bool { return e/gs == g }, min(per, gs), func(e int) float64 { return sel[e] }, E)
				for _, e := range top {
					gscore[g] += sel[e]
				}
			}
			keep := map[int]bool{}
			for _, g := range pick(func(int) bool { return true }, kept, func(g int) float64 { return gscore[g] }, groups) {
				keep[g] = true
			}
			allowed = func(e int) bool { return keep[e/gs] }
		}
		for k, e := range pick(allowed, K, func(e int) float64 { return sel[e] }, E) {
			ids[t*K+k] = int32(e)
		}
	}
	return ids
}

func TestCUDATopK(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	cases := []struct{ T, E, K, groups, kept int }{
		{100, 8, 2, 1, 1}, {64, 128, 8, 1, 1}, {50, 256, 8, 8, 4}, {33, 64, 6, 8, 3}, {10, 1024, 3, 1, 1}, {20, 6, 6, 3, 3},
	}
	for _, c := range cases {
		for _, withBias := range []bool{false, true} {
			s := trRand(rng, c.T*c.E, 1)
			for i := 0; i < len(s); i += 7 { // ties
				s[i] = 0.5
			}
			var bias []float64
			if withBias {
				bias = trRand(rng, c.E, 0.1)
			}
			// float64 scores: the rule in double, exactly
			want := refTopK(s, bias, c.T, c.E, c.K, c.groups, c.kept)
			bs := cuUpload(t, s)
			var bb cuDevBuf
			if withBias {
				bb = cuUpload(t, bias)
			}
			ids := cuAlloc(t, int64(4*c.T*c.K))
			cuMust(t, testCUDA.TopK(F64, ids.p, bs.p, bb.p, int64(c.T), c.E, c.K, c.groups, c.kept))
			got := cuDownload[int32](t, ids, c.T*c.K)
			for i := range want {
				if got[i] != want[i] {
					t.Fatalf("%+v bias=%v f64: ids[%d] = %d, want %d", c, withBias, i, got[i], want[i])
				}
			}
			// float32 scores: widened to double as the CPU op does
			S := f32s(s)
			var B []float32
			s32 := asF64(S)
			var b32 []float64
			if withBias {
				B = f32s(bias)
				b32 = asF64(B)
			}
			want = refTopK(s32, b32, c.T, c.E, c.K, c.groups, c.kept)
			bS := cuUpload(t, S)
			var bB cuDevBuf
			if withBias {
				bB = cuUpload(t, B)
			}
			cuMust(t, testCUDA.TopK(F32, ids.p, bS.p, bB.p, int64(c.T), c.E, c.K, c.groups, c.kept))
			got = cuDownload[int32](t, ids, c.T*c.K)
			for i := range want {
				if got[i] != want[i] {
					t.Fatalf("%+v bias=%v f32: ids[%d] = %d, want %d", c, withBias, i, got[i], want[i])
				}
			}
		}
	}
	cuMust(t, testCUDA.Status())
	// NaN scores are flagged.
	s := []float32{1, float32(math.NaN()), 0, 2}
	bs := cuUpload(t, s)
	ids := cuAlloc(t, 8)
	cuMust(t, testCUDA.TopK(F32, ids.p, bs.p, 0, 1, 4, 2, 1, 1))
	if err := testCUDA.Status(); err == nil {
		t.Errorf("NaN score: no status error")
	}
	if err := testCUDA.TopK(F32, ids.p, bs.p, 0, 1, 4, 5, 1, 1); err == nil {
		t.Errorf("K > E: no error")
	}
}
