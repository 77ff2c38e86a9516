package kernels

import (
	"math"
	"strings"
	"testing"
)

// The softmax cross-entropy and its gradient (cross_entropy.go) against hand-computed values.

func TestCrossEntropyHandValues(t *testing.T) {
	y := make([]float64, 4)
	// logits (0, ln 3), target class 0: loss ln 4; softmax (1/4, 3/4).
	loss, err := CrossEntropy([]float64{0, math.Log(3), 1, 1}, []float64{1, 0, 0, 1}, 2)
	if err != nil {
		t.Fatal(err)
	}
	nnNear(t, "CrossEntropy", []float64{loss}, []float64{(math.Log(4) + math.Log(2)) / 2}, 1e-15)
	if err := CrossEntropyBackward(y, []float64{0, math.Log(3), 1, 1}, []float64{1, 0, 0, 1}, 2, 2); err != nil {
		t.Fatal(err)
	}
	nnNear(t, "CrossEntropyBackward", y, []float64{-1.5, 1.5, 1, -1}, 1e-15)
	// Large logits do not overflow.
	loss, err = CrossEntropy([]float32{1000, 0}, []float32{0, 1}, 2)
	if err != nil || math.Abs(loss-1000) > 1e-9 {
		t.Errorf("CrossEntropy of (1000, 0), class 1 = %v, %v; want 1000", loss, err)
	}
}

// TestCrossEntropyNegInfLogit: a class whose logit is −Inf and whose target is 0 adds nothing
// to the loss (its softmax is 0 and so is its gradient); the loss was NaN (0·−Inf). With target
// weight on it the loss is +Inf.
func TestCrossEntropyNegInfLogit(t *testing.T) {
	ninf := math.Inf(-1)
	loss, err := CrossEntropy([]float64{0, math.Log(3), ninf}, []float64{1, 0, 0}, 3)
	if err != nil {
		t.Fatal(err)
	}
	nnNear(t, "CrossEntropy", []float64{loss}, []float64{math.Log(4)}, 1e-15)
	dx := make([]float32, 3)
	if err := CrossEntropyBackward(dx, []float32{0, float32(math.Log(3)), float32(ninf)}, []float32{1, 0, 0}, 3, 1); err != nil {
		t.Fatal(err)
	}
	nnNear(t, "CrossEntropyBackward", []float64{float64(dx[0]), float64(dx[1]), float64(dx[2])}, []float64{-0.75, 0.75, 0}, 1e-7)
	if loss, err := CrossEntropy([]float32{0, float32(ninf)}, []float32{0.5, 0.5}, 2); err != nil || !math.IsInf(loss, 1) {
		t.Errorf("CrossEntropy with target weight on a −Inf logit = %v, %v; want +Inf", loss, err)
	}
}

// TestCrossEntropyNoRows: the mean over no rows is an error (it was NaN, with no error).
func TestCrossEntropyNoRows(t *testing.T) {
	if v, err := CrossEntropy[float32](nil, nil, 3); err == nil || !strings.Contains(err.Error(), "no rows") {
		t.Errorf("CrossEntropy of 0 rows: %v, %v; want an error saying there are no rows", v, err)
	}
}

// TestCrossEntropyLargeLogits: the loss of a row with large logits keeps its digits (m + log s
// − ⟨x, t⟩ cancelled to 0 for [10³⁰, 10³⁰]): [a, a] with a one-hot target is log 2, [a, a+d]
// with the target on the first is log(1 + e^d), for a up to 10³⁰.
func TestCrossEntropyLargeLogits(t *testing.T) {
	for _, c := range []struct {
		x    []float64
		want float64
	}{
		{[]float64{1e30, 1e30}, math.Ln2},
		{[]float64{1e16, 1e16 + 4}, math.Log1p(math.Exp(4))},
		{[]float64{-1e20, -1e20}, math.Ln2},
		{[]float64{1e7, 1e7 + 1}, math.Log1p(math.E)},
	} {
		loss, err := CrossEntropy(c.x, []float64{1, 0}, 2)
		if err != nil {
			t.Fatal(err)
		}
		nnNear(t, "CrossEntropy", []float64{loss}, []float64{c.want}, 1e-15)
		loss32, err := CrossEntropy([]float32{float32(c.x[0]), float32(c.x[1])}, []float32{1, 0}, 2)
		if err != nil {
			t.Fatal(err)
		}
		d := float64(float32(c.x[1])) - float64(float32(c.x[0])) // the float32 logits' own gap
		nnNear(t, "CrossEntropy float32", []float64{loss32}, []float64{math.Log1p(math.Exp(d))}, 1e-15)
	}
}
