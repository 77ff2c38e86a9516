package op

import (
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// TestSink: the sink of an int32 node and of a float node is a float32 zero; a graph with a
// sink still differentiates (G.Grad) and runs on the tape machine and on the lisp machine in
// forward-only mode, where an int32 node without a consumer would fail.
func TestSink(t *testing.T) {
	for _, fwdOnly := range []bool{false, true} {
		g := G.NewGraph()
		all := G.NewVector(g, tensor.Int32, G.WithShape(4), G.WithName("all"), G.WithValue(tensor.New(tensor.WithBacking([]int32{2, 0, 1, 5}))))
		ids := G.Must(G.Slice(all, G.S(0, 3))) // an int32 op output, as the layer's Counts
		x := G.NewVector(g, tensor.Float64, G.WithShape(3), G.WithName("x"), G.WithValue(tensor.New(tensor.WithBacking([]float64{1, 2, 3}))))
		si, err := Sink(ids)
		if err != nil {
			t.Fatal(err)
		}
		sx, err := Sink(x)
		if err != nil {
			t.Fatal(err)
		}
		cost := G.Must(G.Sum(G.Must(G.Square(x))))
		if !fwdOnly {
			if _, err := G.Grad(cost, x); err != nil {
				t.Fatalf("G.Grad with a sink in the graph: %v", err)
			}
		}
		var vm G.VM
		if fwdOnly {
			vm = G.NewLispMachine(g, G.ExecuteFwdOnly())
		} else {
			vm = G.NewTapeMachine(g)
		}
		if err := vm.RunAll(); err != nil {
			t.Fatalf("forward-only %v: %v", fwdOnly, err)
		}
		for _, n := range []*G.Node{si, sx} {
			if v, ok := n.Value().(*G.F32); !ok || *v != 0 {
				t.Errorf("%v: value %v, want a float32 0", n, n.Value())
			}
		}
		vm.Close()
	}
	if _, err := Sink(nil); err == nil {
		t.Error("Sink(nil): no error")
	}
}
