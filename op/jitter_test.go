package op

import (
	"math"
	"testing"

	"github.com/gomoe/gomoe/internal/reftest"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

func TestJitterNoise(t *testing.T) {
	run := func(seed int64, runs int) [][]float64 {
		g := G.NewGraph()
		x := G.NewMatrix(g, tensor.Float32, G.WithShape(50, 4), G.WithName("x"),
			G.WithValue(tensor.New(tensor.Of(tensor.Float32), tensor.WithShape(50, 4))))
		n, err := JitterNoise(x, 0.1, seed)
		if err != nil {
			t.Fatal(err)
		}
		var v G.Value
		G.Read(n, &v)
		m := G.NewTapeMachine(g)
		defer m.Close()
		var out [][]float64
		for r := 0; r < runs; r++ {
			if err := m.RunAll(); err != nil {
				t.Fatal(err)
			}
			out = append(out, gcFloats(v))
			m.Reset()
		}
		return out
	}
	a, b, c := run(1, 2), run(1, 2), run(2, 1)
	for _, v := range a[0] {
		if v < 0.9 || v >= 1.1 {
			t.Fatalf("noise %v outside [0.9, 1.1)", v)
		}
	}
	if reftest.MaxDiff(a[0], b[0]) != 0 || reftest.MaxDiff(a[1], b[1]) != 0 {
		t.Error("same seed, same runs: different noise")
	}
	if reftest.MaxDiff(a[0], a[1]) == 0 {
		t.Error("two runs drew the same noise")
	}
	if reftest.MaxDiff(a[0], c[0]) == 0 {
		t.Error("two seeds drew the same noise")
	}
	g := G.NewGraph()
	x := G.NewMatrix(g, tensor.Float32, G.WithShape(2, 2), G.WithName("x"))
	for _, eps := range []float64{-0.1, 1, math.NaN()} {
		if _, err := JitterNoise(x, eps, 0); err == nil {
			t.Errorf("eps %v: no error", eps)
		}
	}
}
