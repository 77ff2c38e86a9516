package kernels

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
)

// The docs/design.md benchmark shapes, with T scaled down so that a float32 run fits a small
// machine (the permuted buffer stays between 100 and 250 MB). H, E and K are the real ones.
var benchShapes = []struct {
	name       string
	T, E, K, H int
}{
	{"dsv3", 1024, 256, 8, 7168},
	{"te16k", 2048, 128, 6, 4096},
	{"mixtral", 4096, 8, 2, 4096},
	{"top1", 4096, 4, 1, 7168},
}

// copyRate measures the machine's copy bandwidth for a buffer of n bytes: a copy() split over
// GOMAXPROCS goroutines (the same parallelism the kernels get), counting bytes read plus bytes
// written, timed as the kernel is: one untimed copy (the kernels' buffers are touched before
// their timing too), then the mean of reps copies (the kernel's b.N). It runs right after each
// kernel benchmark, so both see the same machine load. (It used to take the best of 7 copies
// against the kernel's mean, which put the ratio to copy low.)
func copyRate(n, reps int) float64 {
	src := make([]byte, n)
	dst := make([]byte, n)
	for i := range src {
		src[i] = byte(i)
	}
	cp := func() { parallelRange(n, 1<<20, func(lo, hi int) { copy(dst[lo:hi], src[lo:hi]) }) }
	cp()
	reps = max(reps, 1)
	start := time.Now()
	for rep := 0; rep < reps; rep++ {
		cp()
	}
	return 2 * float64(n) * float64(reps) / time.Since(start).Seconds() / 1e9
}

// report sets GB/s (the mean over the b.N calls) and the ratio to a copy of the same bytes.
func report(b *testing.B, bytes int) {
	b.SetBytes(int64(bytes))
	gbs := float64(bytes) * float64(b.N) / b.Elapsed().Seconds() / 1e9
	cp := copyRate(bytes/2, b.N)
	b.ReportMetric(gbs, "GB/s")
	b.ReportMetric(cp, "copyGB/s")
	b.ReportMetric(gbs/cp, "x_copy")
}

func BenchmarkKernels(b *testing.B) {
	for _, s := range benchShapes {
		for _, dt := range []string{"f32", "f64"} {
			if dt == "f64" && s.name != "mixtral" {
				continue // float64 is for gradient checks; one shape shows its cost
			}
			b.Run(fmt.Sprintf("%s/%s", s.name, dt), func(b *testing.B) {
				if dt == "f32" {
					benchShape[float32](b, s.T, s.E, s.K, s.H)
				} else {
					benchShape[float64](b, s.T, s.E, s.K, s.H)
				}
			})
		}
	}
}

func benchShape[F Float](b *testing.B, T, E, K, H int) {
	rng := rand.New(rand.NewPCG(1, 2))
	g := Geometry{T: T, K: K, E: E, A: 1}
	ids := randomIDs(rng, T, K, E, 0)
	flat := make([]int32, g.PlanLen())
	if err := BuildPlan(flat, g, ids, []F(nil)); err != nil {
		b.Fatal(err)
	}
	p, _ := g.View(flat)
	R := g.Rows()
	var e F
	es := int(unsafeSizeof(e))
	x := make([]F, T*H)
	for i := range x {
		x[i] = F(i % 7)
	}
	xp := make([]F, R*H)
	dyp := make([]F, R*H) // the backward's output: it may not alias yp (xp here)
	y := make([]F, T*H)
	probs := make([]F, T*K)
	for i := range probs {
		probs[i] = 0.5
	}
	dprobs := make([]F, T*K)
	moved := T*H*es + T*K*H*es // docs/design.md: permute = unpermute = T·H·e + T·K·H·e

	// Touch every buffer once so page faults are not timed.
	_ = PermuteForward(xp, x, p, H)
	_ = UnpermuteForward(y, xp, probs, p, H)
	if err := UnpermuteBackward(dyp, dprobs, y, xp, probs, p, H); err != nil {
		b.Fatal(err)
	}

	b.Run("plan", func(b *testing.B) {
		for b.Loop() {
			if err := BuildPlan(flat, g, ids, []F(nil)); err != nil {
				b.Fatal(err)
			}
		}
		report(b, 4*(len(ids)+len(flat)))
	})
	b.Run("permute_fwd", func(b *testing.B) {
		for b.Loop() {
			_ = PermuteForward(xp, x, p, H)
		}
		report(b, moved)
	})
	b.Run("permute_bwd", func(b *testing.B) {
		for b.Loop() {
			_ = PermuteBackward(y, xp, p, H)
		}
		report(b, moved)
	})
	b.Run("unpermute_fwd", func(b *testing.B) {
		for b.Loop() {
			_ = UnpermuteForward(y, xp, probs, p, H)
		}
		report(b, moved)
	})
	b.Run("unpermute_bwd", func(b *testing.B) {
		for b.Loop() {
			_ = UnpermuteBackward(dyp, dprobs, y, xp, probs, p, H)
		}
		report(b, moved+T*K*H*es) // also reads yp for the probs gradient
	})
	b.Run("plan+permute", func(b *testing.B) {
		for b.Loop() {
			_ = BuildPlan(flat, g, ids, []F(nil))
			_ = PermuteForward(xp, x, p, H)
		}
		report(b, moved)
	})
}
