package kernels_test

import (
	"math"
	"strings"
	"testing"

	. "github.com/gomoe/gomoe/kernels"
)

// The loss kernels (loss.go) on hand-computed values and bad input; op/loss_test.go compares
// them with plain-loop references on random data and the GPU tests with their CUDA twins.

func TestLossKernelsHand(t *testing.T) {
	// T=4, K=1, E=2, B=2 (S=2): sequence 0 picks experts 0, 1; sequence 1 picks 1, 1.
	// N = [[1,1],[0,2]]; P = [[1+3, 2+4], [5+7, 6+8]] = [[4,6],[12,14]];
	// Σ N·P = 4 + 6 + 0 + 28 = 38.
	ids := []int32{0, 1, 1, 1}
	s := []float64{1, 2, 3, 4, 5, 6, 7, 8}
	v, err := BalanceLossForward(ids, s, 4, 1, 2, 2, 0.5)
	if err != nil || v != 19 {
		t.Errorf("BalanceLossForward = %v, %v; want 19", v, err)
	}
	ds := make([]float64, 8)
	if err := BalanceLossBackward(ds, ids, 4, 1, 2, 2, 0.5, 3); err != nil {
		t.Fatal(err)
	}
	want := []float64{1.5, 1.5, 1.5, 1.5, 0, 3, 0, 3}
	for i := range want {
		if ds[i] != want[i] {
			t.Fatalf("BalanceLossBackward = %v, want %v", ds, want)
		}
	}
	// z-loss of rows (0, 0) and (0, log 3): lse = log 2, log 4.
	x := []float32{0, 0, 0, float32(math.Log(3))}
	z, err := ZLossForward(x, 2, 2, 1)
	if w := 5 * math.Ln2 * math.Ln2; err != nil || math.Abs(float64(z)-w) > 1e-6 {
		t.Errorf("ZLossForward = %v, %v; want %v", z, err, w)
	}
	dx := make([]float32, 4)
	if err := ZLossBackward(dx, x, 2, 2, 1, 1); err != nil {
		t.Fatal(err)
	}
	// row 0: 2·log2·(1/2, 1/2); row 1: 2·2log2·(1/4, 3/4).
	wantZ := []float64{math.Ln2, math.Ln2, math.Ln2, 3 * math.Ln2}
	for i := range wantZ {
		if math.Abs(float64(dx[i])-wantZ[i]) > 1e-6 {
			t.Fatalf("ZLossBackward = %v, want %v", dx, wantZ)
		}
	}
}

func TestLossKernelsBadInput(t *testing.T) {
	ids := []int32{0, 1, 1, 1}
	s := make([]float64, 8)
	for _, c := range []struct {
		name string
		err  error
		want string
	}{
		{"T split", func() error { _, err := BalanceLossForward(ids, s, 4, 1, 2, 3, 1); return err }(), "do not split into 3"},
		{"ids length", func() error { _, err := BalanceLossForward(ids[:3], s, 4, 1, 2, 1, 1); return err }(), "3 ids, want T·K = 4"},
		{"scores length", func() error { _, err := BalanceLossForward(ids, s[:7], 4, 1, 2, 1, 1); return err }(), "7 scores, want T·E = 8"},
		{"id range", func() error { _, err := BalanceLossForward([]int32{0, 2, 1, 1}, s, 4, 1, 2, 1, 1); return err }(), "ids[1,0] = 2 is out of range [-1, 2)"},
		{"id below -1", BalanceLossBackward(make([]float64, 8), []int32{0, -2, 1, 1}, 4, 1, 2, 1, 1, 1), "ids[1,0] = -2 is out of range"},
		{"grad length", BalanceLossBackward(make([]float64, 7), ids, 4, 1, 2, 1, 1, 1), "gradient of 7 elements"},
		{"E zero", BalanceLossBackward(s, ids, 4, 1, 0, 1, 1, 1), "E=0"},
		{"z length", func() error { _, err := ZLossForward(s[:7], 4, 2, 1); return err }(), "7 logits, want T·E = 8"},
		{"z T zero", func() error { _, err := ZLossForward(s, 0, 2, 1); return err }(), "T=0"},
		{"z grad length", ZLossBackward(make([]float64, 6), s, 4, 2, 1, 1), "gradient of 6 elements"},
	} {
		if c.err == nil || !strings.Contains(c.err.Error(), c.want) {
			t.Errorf("%s: error %v, want one containing %q", c.name, c.err, c.want)
		}
	}
}
