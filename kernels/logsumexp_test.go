package kernels

import (
	"math"
	"testing"
)

// TestRowLogSumExp: values against the direct formula (and an infinite row), the backward's
// softmax·g added onto dx, and size errors.
func TestRowLogSumExp(t *testing.T) {
	x := []float64{0, 1, 2, 1000, 1001, 1002, math.Inf(-1), math.Inf(-1), math.Inf(-1)}
	out := make([]float64, 3)
	if err := RowLogSumExp(out, x, 3); err != nil {
		t.Fatal(err)
	}
	want := math.Log(1 + math.E + math.E*math.E)
	if math.Abs(out[0]-want) > 1e-15 || math.Abs(out[1]-(1000+want)) > 1e-12 || !math.IsInf(out[2], -1) {
		t.Errorf("RowLogSumExp = %v, want [%v %v -Inf]", out, want, 1000+want)
	}
	dx := []float64{1, 1, 1, 0, 0, 0}
	if err := RowLogSumExpBackward(dx, x[:6], out[:2], []float64{2, 1}, 3); err != nil {
		t.Fatal(err)
	}
	for i, v := range dx {
		w := math.Exp(x[i]-out[i/3]) * []float64{2, 1}[i/3]
		if i < 3 {
			w++
		}
		if math.Abs(v-w) > 1e-14 {
			t.Errorf("dx[%d] = %v, want %v", i, v, w)
		}
	}
	if err := RowLogSumExp(out, x[:8], 3); err == nil {
		t.Error("8 elements for rows of 3: no error")
	}
	if err := RowLogSumExpBackward(dx[:5], x[:6], out[:2], []float64{2, 1}, 3); err == nil {
		t.Error("short dx: no error")
	}
}
