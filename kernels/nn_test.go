package kernels_test

import (
	"math"
	"math/rand/v2"
	"testing"

	. "github.com/gomoe/gomoe/kernels"
)

// The nn kernels (nn.go) against hand-computed values and, for the RMSNorm gradients, a
// central difference of the forward pass.

func nnNear(t *testing.T, what string, got, want []float64, tol float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", what, len(got), len(want))
	}
	for i := range want {
		if math.IsNaN(want[i]) != math.IsNaN(got[i]) || math.Abs(got[i]-want[i]) > tol {
			t.Fatalf("%s[%d] = %v, want %v", what, i, got[i], want[i])
		}
	}
}

func TestNNHandValues(t *testing.T) {
	nan := math.NaN()
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
	if err := ReLU(y, []float64{-1, 0, 2, nan}); err != nil {
		t.Fatal(err)
	}
	nnNear(t, "ReLU", y, []float64{0, 0, 2, nan}, 0)
	if err := ReLUBackward(y, []float64{-1, 0, 2, 3}, []float64{5, 6, 7, 8}); err != nil {
		t.Fatal(err)
	}
	nnNear(t, "ReLUBackward", y, []float64{0, 0, 7, 8}, 0)

	// Row (3, 4): mean square 12.5; gain (1, 2).
	r := 1 / math.Sqrt(12.5)
	y2 := make([]float32, 2)
	if err := RMSNorm(y2, []float32{3, 4}, []float32{1, 2}, 0); err != nil {
		t.Fatal(err)
	}
	nnNear(t, "RMSNorm", nnF64(y2), []float64{3 * r, 8 * r}, 1e-6)

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

// TestRMSNormGradients checks RMSNormBackward and RMSNormGainGrad against a central
// difference of Σ dy·RMSNorm(x, gain).
func TestRMSNormGradients(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	const rows, cols, eps = 3, 5, 1e-3
	x, g, dy := nnRand(rng, rows*cols, 1), nnRand(rng, cols, 1), nnRand(rng, rows*cols, 1)
	f := func() float64 {
		y := make([]float64, len(x))
		if err := RMSNorm(y, x, g, eps); err != nil {
			t.Fatal(err)
		}
		var s float64
		for i := range y {
			s += y[i] * dy[i]
		}
		return s
	}
	num := func(v []float64) []float64 {
		out := make([]float64, len(v))
		for i := range v {
			o := v[i]
			v[i] = o + 1e-6
			p := f()
			v[i] = o - 1e-6
			m := f()
			v[i] = o
			out[i] = (p - m) / 2e-6
		}
		return out
	}
	dx := make([]float64, len(x))
	if err := RMSNormBackward(dx, x, g, dy, eps); err != nil {
		t.Fatal(err)
	}
	nnNear(t, "RMSNormBackward", dx, num(x), 1e-7)
	dg := make([]float64, cols)
	if err := RMSNormGainGrad(dg, x, dy, eps); err != nil {
		t.Fatal(err)
	}
	nnNear(t, "RMSNormGainGrad", dg, num(g), 1e-7)
}

func TestNNBadInput(t *testing.T) {
	x := []float32{1, 2, 3, 4, 5, 6}
	out := make([]float32, 6)
	for _, c := range []struct {
		name string
		err  error
	}{
		{"BiasAdd rows", BiasAdd(out, x, []float32{1, 2, 3, 4})},
		{"BiasAdd out", BiasAdd(out[:5], x, []float32{1, 2})},
		{"BiasAdd empty bias", BiasAdd(out, x, nil)},
		{"ColSum", ColSum(out[:4], x)},
		{"ReLU", ReLU(out[:5], x)},
		{"ReLUBackward", ReLUBackward(out, x, x[:5])},
		{"RMSNorm eps", RMSNorm(out, x, []float32{1, 1, 1}, -1)},
		{"RMSNorm NaN eps", RMSNorm(out, x, []float32{1, 1, 1}, math.NaN())},
		{"RMSNorm gain", RMSNorm(out, x, []float32{1, 1, 1, 1}, 0)},
		{"RMSNormBackward", RMSNormBackward(out, x, []float32{1, 1, 1}, x[:3], 0)},
		{"RMSNormGainGrad", RMSNormGainGrad(out[:4], x, x, 0)},
		{"CrossEntropyBackward", CrossEntropyBackward(out, x, x[:3], 3, 1)},
	} {
		if c.err == nil {
			t.Errorf("%s: no error", c.name)
		}
	}
	for i, v := range out {
		if v != 0 {
			t.Fatalf("a failed call wrote out[%d] = %v", i, v)
		}
	}
	if _, err := CrossEntropy(x, x, 4); err == nil {
		t.Error("CrossEntropy of 6 elements in rows of 4: no error")
	}
	if _, err := CrossEntropy(x, x, 0); err == nil {
		t.Error("CrossEntropy with 0 columns: no error")
	}
}

func nnRand(rng *rand.Rand, n int, scale float64) []float64 {
	v := make([]float64, n)
	for i := range v {
		v[i] = rng.NormFloat64() * scale
	}
	return v
}

func nnF64(v []float32) []float64 {
	o := make([]float64, len(v))
	for i, x := range v {
		o[i] = float64(x)
	}
	return o
}

func TestEmbeddingKernels(t *testing.T) {
	table := []float64{1, 2, 3, 4, 5, 6} // V=3 rows of 2
	ids := []int32{2, 0, 2}
	out := make([]float64, 6)
	if err := Embedding(out, table, ids, 2); err != nil {
		t.Fatal(err)
	}
	nnNear(t, "Embedding", out, []float64{5, 6, 1, 2, 5, 6}, 0)
	dt := make([]float64, 6)
	if err := EmbeddingBackward(dt, []float64{1, 10, 100, 1000, 2, 20}, ids, 2); err != nil {
		t.Fatal(err)
	}
	nnNear(t, "EmbeddingBackward", dt, []float64{100, 1000, 0, 0, 3, 30}, 0)
	for _, bad := range [][]int32{{0, 3, 1}, {-1, 0, 0}} {
		out := make([]float64, 6)
		if err := Embedding(out, table, bad, 2); err == nil {
			t.Errorf("Embedding with ids %v: no error", bad)
		}
		if err := EmbeddingBackward(out, out, bad, 2); err == nil {
			t.Errorf("EmbeddingBackward with ids %v: no error", bad)
		}
		nnNear(t, "untouched", out, make([]float64, 6), 0)
	}
	if err := Embedding(out[:4], table, ids, 2); err == nil {
		t.Error("Embedding with a short output: no error")
	}
	if err := Embedding(out, table[:5], ids, 2); err == nil {
		t.Error("Embedding with a table of 5 elements in rows of 2: no error")
	}
}
