package kernels

import (
	"math"
	"testing"
)

// FuzzPlanCheck edits a valid plan at fuzzed positions (a hand-filled or corrupted plan) and
// checks that Plan.Check guards every data kernel: either Check rejects the plan and every
// kernel returns that error without writing its output, or the plan is consistent (scatter by
// rowOf and gather by tokenOf agree) and every kernel runs without panicking and matches the
// reference loops.
func FuzzPlanCheck(f *testing.F) {
	f.Add(uint8(5), uint8(2), uint8(4), uint8(1), uint8(3), uint8(0), []byte{3, 4, 5}, []byte{0, 1, 2, 3})
	f.Add(uint8(17), uint8(3), uint8(5), uint8(3), uint8(4), uint8(3), []byte{200, 1, 7}, []byte{40, 255, 7, 0})
	f.Add(uint8(9), uint8(1), uint8(2), uint8(2), uint8(1), uint8(1), []byte{1}, []byte{})
	f.Fuzz(func(t *testing.T, t8, k8, e8, a8, c8, mode8 uint8, raw, edits []byte) {
		g, _, probs, flat, ok := fuzzPlan(t, t8, k8, e8, a8, c8, mode8, raw)
		if !ok {
			return
		}
		// Each edit is 2 bytes: a position in the flat vector and a value in [-3, 252].
		for i := 0; i+1 < len(edits) && i < 16; i += 2 {
			flat[int(edits[i])%len(flat)] = int32(edits[i+1]) - 3
		}
		p, err := g.View(flat)
		if err != nil {
			t.Fatal(err)
		}
		const H = 3
		R := g.Rows()
		x := make([]float64, g.T*H)
		for i := range x {
			x[i] = float64(i%11) - 5
		}
		yp := make([]float64, R*H)
		for i := range yp {
			yp[i] = float64(i%7) - 3
		}
		const sentinel = 1234.5
		out := func(n int) []float64 {
			v := make([]float64, n)
			for i := range v {
				v[i] = sentinel
			}
			return v
		}
		xp, y, dx, pp, dprobs, dyp := out(R*H), out(g.T*H), out(g.T*H), out(R), out(g.T*g.K), out(R*H)
		errs := []error{
			PermuteForward(xp, x, p, H),
			UnpermuteForward(y, yp, probs, p, H),
			PermuteBackward(dx, yp, p, H),
			PermuteProbsForward(pp, probs, p),
			UnpermuteBackward(dyp, dprobs, x, yp, probs, p, H),
		}
		if cerr := p.Check(); cerr != nil {
			for i, err := range errs {
				if err == nil || err.Error() != cerr.Error() {
					t.Fatalf("Check says %v but kernel %d says %v", cerr, i, err)
				}
			}
			for _, v := range [][]float64{xp, y, dx, pp, dprobs, dyp} {
				for _, w := range v {
					if w != sentinel {
						t.Fatal("a kernel wrote its output although the plan was rejected")
					}
				}
			}
			return
		}
		for i, err := range errs {
			if err != nil {
				t.Fatalf("kernel %d rejected a plan that Check accepts: %v", i, err)
			}
		}
		// A plan that passes Check: gather by tokenOf equals scatter by rowOf.
		scatter := make([]float64, R*H)
		for i, r := range p.RowOf {
			if r >= 0 {
				copy(scatter[int(r)*H:(int(r)+1)*H], x[(i/g.K)*H:(i/g.K+1)*H])
			}
		}
		if d := maxAbsDiff(refPermute(x, p.RowOf, g, H), scatter); d != 0 {
			t.Fatalf("tokenOf and rowOf disagree on an accepted plan")
		}
		if d := maxAbsDiff(xp, scatter); d != 0 {
			t.Fatalf("permute differs from the reference by %g", d)
		}
		if d := maxAbsDiff(y, refUnpermute(yp, probs, p.RowOf, g.T, g.K, H)); d > 1e-12 {
			t.Fatalf("unpermute differs from the reference by %g", d)
		}
		if d := maxAbsDiff(dx, refUnpermute(yp, nil, p.RowOf, g.T, g.K, H)); d > 1e-12 {
			t.Fatalf("permute backward differs from the reference by %g", d)
		}
	})
}

// FuzzUnpermuteBackward checks the backward of combine-unpermute (grad rows and grad probs)
// and permute-probs forward and backward against plain loops written from their definitions.
func FuzzUnpermuteBackward(f *testing.F) {
	f.Add(uint8(5), uint8(2), uint8(4), uint8(1), uint8(3), uint8(0), uint8(3), []byte{3, 4, 5, 6, 7, 8})
	f.Add(uint8(30), uint8(3), uint8(6), uint8(4), uint8(2), uint8(2), uint8(5), []byte{9, 1})
	f.Fuzz(func(t *testing.T, t8, k8, e8, a8, c8, mode8, h8 uint8, raw []byte) {
		g, _, probs, flat, ok := fuzzPlan(t, t8, k8, e8, a8, c8, mode8, raw)
		if !ok {
			return
		}
		H := int(h8%9) + 1
		p, _ := g.View(flat)
		R := g.Rows()
		dy := make([]float64, g.T*H)
		for i := range dy {
			dy[i] = float64(i%5) - 2
		}
		yp := make([]float64, R*H)
		for i := range yp {
			yp[i] = float64(i%9)/4 - 1
		}
		dyp := make([]float64, R*H)
		dprobs := make([]float64, g.T*g.K)
		for i := range dyp {
			dyp[i] = math.NaN() // every row must be written
		}
		if err := UnpermuteBackward(dyp, dprobs, dy, yp, probs, p, H); err != nil {
			t.Fatal(err)
		}
		wantRows := make([]float64, R*H)
		wantProbs := make([]float64, g.T*g.K)
		for t0 := 0; t0 < g.T; t0++ {
			for k := 0; k < g.K; k++ {
				r := p.RowOf[t0*g.K+k]
				if r < 0 {
					continue
				}
				var s float64
				for h := 0; h < H; h++ {
					wantRows[int(r)*H+h] = probs[t0*g.K+k] * dy[t0*H+h]
					s += yp[int(r)*H+h] * dy[t0*H+h]
				}
				wantProbs[t0*g.K+k] = s
			}
		}
		if d := maxAbsDiff(dyp, wantRows); !(d == 0) {
			t.Fatalf("grad rows differ from the reference by %g", d)
		}
		if d := maxAbsDiff(dprobs, wantProbs); !(d <= 1e-12) {
			t.Fatalf("grad probs differ from the reference by %g", d)
		}
		pp := make([]float64, R)
		if err := PermuteProbsForward(pp, probs, p); err != nil {
			t.Fatal(err)
		}
		back := make([]float64, g.T*g.K)
		if err := PermuteProbsBackward(back, pp, p); err != nil {
			t.Fatal(err)
		}
		for i, r := range p.RowOf {
			want := 0.0
			if r >= 0 {
				want = probs[i]
				if pp[r] != probs[i] {
					t.Fatalf("pp[%d] = %v, want probs[%d] = %v", r, pp[r], i, probs[i])
				}
			}
			if back[i] != want {
				t.Fatalf("permute probs backward [%d] = %v, want %v", i, back[i], want)
			}
		}
	})
}
