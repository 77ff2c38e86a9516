package kernels

import (
	"math"
	"testing"
)

// ReLU and its gradient (relu.go) against hand-computed values.

func TestReLUHandValues(t *testing.T) {
	nan := math.NaN()
	y := make([]float64, 4)
	if err := ReLU(y, []float64{-1, 0, 2, nan}); err != nil {
		t.Fatal(err)
	}
	nnNear(t, "ReLU", y, []float64{0, 0, 2, nan}, 0)
	if err := ReLUBackward(y, []float64{-1, 0, 2, 3}, []float64{5, 6, 7, 8}); err != nil {
		t.Fatal(err)
	}
	nnNear(t, "ReLUBackward", y, []float64{0, 0, 7, 8}, 0)
}
