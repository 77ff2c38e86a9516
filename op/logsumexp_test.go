package op

import (
	"math"
	"math/rand"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

func TestRowLogSumExp(t *testing.T) {
	const T, E = 3, 4
	rng := rand.New(rand.NewSource(11))
	x := gcRand(rng, T*E)
	x[5] = 40 // large logit: the naive formula still works in float64, the op must too
	gcRun(t, gcCase{
		name:   "sum(W*lse(x)^2)",
		inputs: []gcInput{{"x", tensor.Shape{T, E}, x}},
		build: func(g *G.ExprGraph, dt tensor.Dtype, in []*G.Node) (*G.Node, error) {
			l, err := RowLogSumExp(in[0])
			if err != nil {
				return nil, err
			}
			return gcWeighted(g, dt, G.Must(G.Square(l)), "W", 12)
		},
	})
	g := G.NewGraph()
	xn := G.NewMatrix(g, tensor.Float64, G.WithShape(T, E), G.WithName("x"), G.WithValue(gcDense(tensor.Float64, tensor.Shape{T, E}, x)))
	l, err := RowLogSumExp(xn)
	if err != nil {
		t.Fatal(err)
	}
	var v G.Value
	G.Read(l, &v)
	m := G.NewTapeMachine(g)
	defer m.Close()
	if err := m.RunAll(); err != nil {
		t.Fatal(err)
	}
	for i, got := range gcFloats(v) {
		var s float64
		for e := 0; e < E; e++ {
			s += math.Exp(x[i*E+e])
		}
		if want := math.Log(s); math.Abs(got-want) > 1e-12 {
			t.Errorf("lse[%d] = %g, want %g", i, got, want)
		}
	}
}
