package op

import (
	"math/rand"
	"strings"
	"testing"

	"github.com/gomoe/gomoe/internal/reftest"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

func TestGatherTopKGradients(t *testing.T) {
	const T, E, K = 4, 5, 2
	ids := []int32{3, 0, 1, -1, 4, 1, 2, 3}
	rng := rand.New(rand.NewSource(7))
	c := gcCase{
		name:   "sum(W*gather(s,ids)^2) + gather(s,ids2)",
		inputs: []gcInput{{"s", tensor.Shape{T, E}, gcRand(rng, T*E)}},
		build: func(g *G.ExprGraph, dt tensor.Dtype, in []*G.Node) (*G.Node, error) {
			idn := gcInt32Node(g, "ids", tensor.Shape{T, K}, ids)
			id2 := gcInt32Node(g, "ids2", tensor.Shape{T, 1}, []int32{3, 3, 0, 4})
			y, err := GatherTopK(in[0], idn)
			if err != nil {
				return nil, err
			}
			a, err := gcWeighted(g, dt, G.Must(G.Square(y)), "W", 8)
			if err != nil {
				return nil, err
			}
			y2, err := GatherTopK(in[0], id2)
			if err != nil {
				return nil, err
			}
			b, err := gcWeighted(g, dt, y2, "W2", 9)
			if err != nil {
				return nil, err
			}
			return G.Add(a, b)
		},
	}
	gcRun(t, c)
}

func TestGatherTopKValues(t *testing.T) {
	g := G.NewGraph()
	s := G.NewMatrix(g, tensor.Float64, G.WithShape(2, 3), G.WithName("s"), G.WithValue(gcDense(tensor.Float64, tensor.Shape{2, 3}, []float64{1, 2, 3, 4, 5, 6})))
	ids := gcInt32Node(g, "ids", tensor.Shape{2, 2}, []int32{2, -1, 0, 1})
	y, err := GatherTopK(s, ids)
	if err != nil {
		t.Fatal(err)
	}
	var v G.Value
	G.Read(y, &v)
	m := G.NewTapeMachine(g)
	defer m.Close()
	if err := m.RunAll(); err != nil {
		t.Fatal(err)
	}
	if d := reftest.MaxDiff(gcFloats(v), []float64{3, 0, 4, 5}); d != 0 {
		t.Fatalf("got %v", gcFloats(v))
	}
	// out-of-range id: run error
	h := G.NewGraph()
	s2 := G.NewMatrix(h, tensor.Float64, G.WithShape(1, 3), G.WithName("s"), G.WithValue(gcDense(tensor.Float64, tensor.Shape{1, 3}, []float64{1, 2, 3})))
	bad := gcInt32Node(h, "ids", tensor.Shape{1, 1}, []int32{3})
	y2, err := GatherTopK(s2, bad)
	if err != nil {
		t.Fatal(err)
	}
	_ = y2
	m2 := G.NewTapeMachine(h)
	defer m2.Close()
	if err := m2.RunAll(); err == nil || !strings.Contains(err.Error(), "out of range") {
		t.Fatalf("id 3 of 3 experts: got %v", err)
	}
}
