package kernels

import "testing"

// The bias add and its column sum (bias.go) against hand-computed values.

func TestBiasHandValues(t *testing.T) {
	y := make([]float64, 4)
	if err := BiasAdd(y, []float64{1, 2, 3, 4}, []float64{10, 20}); err != nil {
		t.Fatal(err)
	}
	nnNear(t, "BiasAdd", y, []float64{11, 22, 13, 24}, 0)
	cs := make([]float64, 2)
	if err := ColSum(cs, []float64{1, 2, 3, 4, 5, 6}); err != nil {
		t.Fatal(err)
	}
	nnNear(t, "ColSum", cs, []float64{9, 12}, 0)
}
