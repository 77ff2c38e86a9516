package op

import (
	"testing"

	"github.com/gomoe/gomoe/internal/reftest"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

func TestExpertLoad(t *testing.T) {
	g := G.NewGraph()
	ids := gcInt32Node(g, "ids", tensor.Shape{4, 2}, []int32{0, 2, 2, -1, 1, 2, 0, 1})
	one, err := ExpertLoad(ids, 3, 1, tensor.Float64)
	if err != nil {
		t.Fatal(err)
	}
	two, err := ExpertLoad(ids, 3, 2, tensor.Float32)
	if err != nil {
		t.Fatal(err)
	}
	var v1, v2 G.Value
	G.Read(one, &v1)
	G.Read(two, &v2)
	m := G.NewTapeMachine(g)
	defer m.Close()
	if err := m.RunAll(); err != nil {
		t.Fatal(err)
	}
	if d := reftest.MaxDiff(gcFloats(v1), []float64{2, 2, 3}); d != 0 {
		t.Errorf("B=1: got %v", gcFloats(v1))
	}
	// sequence 0 = tokens 0,1: {0,2,2}; sequence 1 = tokens 2,3: {1,2,0,1}
	if d := reftest.MaxDiff(gcFloats(v2), []float64{1, 0, 2, 1, 2, 1}); d != 0 {
		t.Errorf("B=2: got %v", gcFloats(v2))
	}
	if _, err := ExpertLoad(ids, 3, 3, tensor.Float64); err == nil {
		t.Error("T=4 in 3 sequences: no error")
	}
	if _, err := ExpertLoad(ids, 3, 1, tensor.Int); err == nil {
		t.Error("int dtype: no error")
	}
}
