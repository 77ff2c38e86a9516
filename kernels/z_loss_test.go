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
