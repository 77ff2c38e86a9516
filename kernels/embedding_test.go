package kernels

import "testing"

// The embedding lookup and its gradient (embedding.go) against hand-computed values and bad ids.

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
