package kernels

import (
	"math"
	"testing"
)

// The router z-loss (z_loss.go) on hand-computed values; op/loss_test.go compares it with
// plain-loop references on random data and the GPU tests with its CUDA twin. Bad input is in
// hostile_test.go (TestLossKernelsBadInput).

func TestZLossHand(t *testing.T) {
	// z-loss of rows (0, 0) and (0, log 3): lse = log 2, log 4.
	x := []float32{0, 0, 0, float32(math.Log(3))}
	z, err := ZLossForward(x, 2, 2, 1)
	if w := 5 * math.Ln2 * math.Ln2; err != nil || !(math.Abs(float64(z)-w) <= 1e-6) {
		t.Errorf("ZLossForward = %v, %v; want %v", z, err, w)
	}
	dx := make([]float32, 4)
	if err := ZLossBackward(dx, x, 2, 2, 1, 1); err != nil {
		t.Fatal(err)
	}
	// row 0: 2·log2·(1/2, 1/2); row 1: 2·2log2·(1/4, 3/4).
	wantZ := []float64{math.Ln2, math.Ln2, math.Ln2, 3 * math.Ln2}
	for i := range wantZ {
		if !(math.Abs(float64(dx[i])-wantZ[i]) <= 1e-6) {
			t.Fatalf("ZLossBackward = %v, want %v", dx, wantZ)
		}
	}
}

// TestZLossLargeLogits: the gradient 2·lse·softmax of a row with large logits. It took the
// softmax as exp(x − lse) from the rounded lse, which lost log Σ exp(x − m) once m was large:
// [10³⁰, 10³⁰] got 2·lse per element, not lse, and float32 [3·10³⁸, 3·10³⁸] +Inf.
func TestZLossLargeLogits(t *testing.T) {
	e4 := math.Exp(4)
	for _, c := range []struct {
		x    []float64
		soft []float64 // the softmax of x
	}{
		{[]float64{1e30, 1e30}, []float64{0.5, 0.5}},
		{[]float64{1e16, 1e16 + 4}, []float64{1 / (1 + e4), e4 / (1 + e4)}},
		{[]float64{-1e20, -1e20}, []float64{0.5, 0.5}},
	} {
		lse := math.Max(c.x[0], c.x[1]) + math.Log1p(math.Exp(-math.Abs(c.x[1]-c.x[0])))
		dx := make([]float64, 2)
		if err := ZLossBackward(dx, c.x, 1, 2, 1, 1); err != nil {
			t.Fatal(err)
		}
		for e := range dx {
			if w := 2 * lse * c.soft[e]; math.Abs(dx[e]-w) > 1e-15*math.Abs(w) {
				t.Errorf("ZLossBackward(%v)[%d] = %v, want %v", c.x, e, dx[e], w)
			}
		}
	}
	dx := make([]float32, 2)
	if err := ZLossBackward(dx, []float32{3e38, 3e38}, 1, 2, 1, 1); err != nil {
		t.Fatal(err)
	}
	for e, v := range dx {
		if w := float32(3e38); math.Abs(float64(v-w)) > 1e-7*3e38 {
			t.Errorf("ZLossBackward(float32 3e38 ×2)[%d] = %v, want %v", e, v, w)
		}
	}
}
