package kernels

import "testing"

// The load-balancing loss (balance_loss.go) on hand-computed values; op/loss_test.go compares it
// with plain-loop references on random data and the GPU tests with its CUDA twin. Bad input is
// in hostile_test.go (TestLossKernelsBadInput).

func TestBalanceLossHand(t *testing.T) {
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
}
