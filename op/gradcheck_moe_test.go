package op

import (
	"fmt"
	"math/rand"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/internal/reftest"
	"github.com/gomoe/gomoe/kernels"
)

// Gradient-check harness for the grouped matmul and router ops: for each case and dtype the
// symbolic gradient (G.Grad on a tape machine), the dual value of the tape machine, and the
// lisp machine's DoDiff must agree with a float64 central difference of the cost.

// gcInput is one differentiable input of a case.
type gcInput struct {
	name  string
	shape tensor.Shape
	data  []float64
}

// gcCase builds a scalar cost from the differentiable inputs (created by the harness with
// the dtype under test); it creates its own constant (index) nodes with unique names.
type gcCase struct {
	name   string
	inputs []gcInput
	build  func(g *G.ExprGraph, dt tensor.Dtype, in []*G.Node) (*G.Node, error)
}

func gcDense(dt tensor.Dtype, s tensor.Shape, v []float64) *tensor.Dense {
	if dt == tensor.Float32 {
		b := make([]float32, len(v))
		for i, x := range v {
			b[i] = float32(x)
		}
		return tensor.New(tensor.WithShape(s.Clone()...), tensor.WithBacking(b))
	}
	return tensor.New(tensor.WithShape(s.Clone()...), tensor.WithBacking(append([]float64(nil), v...)))
}

func gcFloats(v G.Value) []float64 {
	switch d := v.Data().(type) {
	case []float32:
		o := make([]float64, len(d))
		for i, x := range d {
			o[i] = float64(x)
		}
		return o
	case []float64:
		return append([]float64(nil), d...)
	case float32:
		return []float64{float64(d)}
	case float64:
		return []float64{d}
	}
	panic(fmt.Sprintf("gcFloats: %T", v.Data()))
}

func gcRand(rng *rand.Rand, n int) []float64 {
	v := make([]float64, n)
	for i := range v {
		v[i] = rng.Float64()*2 - 1
	}
	return v
}

// gcWeighted returns sum(W ⊙ y) for a fixed pseudo-random W of y's shape, so that gradients
// are not all ones and row placement matters.
func gcWeighted(g *G.ExprGraph, dt tensor.Dtype, y *G.Node, name string, seed int64) (*G.Node, error) {
	rng := rand.New(rand.NewSource(seed))
	w := G.NewTensor(g, dt, y.Dims(), G.WithShape(y.Shape().Clone()...), G.WithName(name),
		G.WithValue(gcDense(dt, y.Shape(), gcRand(rng, y.Shape().TotalSize()))))
	p, err := G.HadamardProd(y, w)
	if err != nil {
		return nil, err
	}
	return G.Sum(p)
}

func gcNodes(g *G.ExprGraph, dt tensor.Dtype, c gcCase, data [][]float64) []*G.Node {
	in := make([]*G.Node, len(c.inputs))
	for i, x := range c.inputs {
		in[i] = G.NewTensor(g, dt, x.shape.Dims(), G.WithShape(x.shape.Clone()...), G.WithName(x.name),
			G.WithValue(gcDense(dt, x.shape, data[i])))
	}
	return in
}

func gcEval(t *testing.T, c gcCase, data [][]float64) float64 {
	g := G.NewGraph()
	cost, err := c.build(g, tensor.Float64, gcNodes(g, tensor.Float64, c, data))
	if err != nil {
		t.Fatalf("%s: build: %v", c.name, err)
	}
	var v G.Value
	G.Read(cost, &v)
	m := G.NewTapeMachine(g)
	defer m.Close()
	if err := m.RunAll(); err != nil {
		t.Fatalf("%s: forward: %v", c.name, err)
	}
	return gcFloats(v)[0]
}

func gcNumeric(t *testing.T, c gcCase) [][]float64 {
	data := make([][]float64, len(c.inputs))
	for i, x := range c.inputs {
		data[i] = append([]float64(nil), x.data...)
	}
	const eps = 1e-6
	out := make([][]float64, len(c.inputs))
	for i := range c.inputs {
		out[i] = make([]float64, len(data[i]))
		for j := range data[i] {
			v := data[i][j]
			data[i][j] = v + eps
			fp := gcEval(t, c, data)
			data[i][j] = v - eps
			fm := gcEval(t, c, data)
			data[i][j] = v
			out[i][j] = (fp - fm) / (2 * eps)
		}
	}
	return out
}

// gcRun checks c in float64 and float32.
func gcRun(t *testing.T, c gcCase) {
	t.Helper()
	num := gcNumeric(t, c)
	data := make([][]float64, len(c.inputs))
	for i, x := range c.inputs {
		data[i] = x.data
	}
	for _, dt := range []tensor.Dtype{tensor.Float64, tensor.Float32} {
		tol := 1e-6
		if dt == tensor.Float32 {
			tol = 2e-3
		}
		// tape machine + symbolic gradient
		g := G.NewGraph()
		in := gcNodes(g, dt, c, data)
		cost, err := c.build(g, dt, in)
		if err != nil {
			t.Fatalf("%s %v: build: %v", c.name, dt, err)
		}
		grads, err := G.Grad(cost, in...)
		if err != nil {
			t.Fatalf("%s %v: Grad: %v", c.name, dt, err)
		}
		gv := make([]G.Value, len(grads))
		for i := range grads {
			G.Read(grads[i], &gv[i])
		}
		m := G.NewTapeMachine(g, G.BindDualValues(in...))
		if err := m.RunAll(); err != nil {
			m.Close()
			t.Fatalf("%s %v: tape: %v", c.name, dt, err)
		}
		for i, x := range in {
			if d := reftest.MaxDiff(gcFloats(gv[i]), num[i]); d > tol {
				t.Errorf("%s %v: SymDiff d/d%s vs numeric: max diff %g", c.name, dt, c.inputs[i].name, d)
			}
			dv, err := x.Grad()
			if err != nil {
				t.Fatalf("%s %v: %s.Grad(): %v", c.name, dt, c.inputs[i].name, err)
			}
			if d := reftest.MaxDiff(gcFloats(dv), gcFloats(gv[i])); d != 0 {
				t.Errorf("%s %v: dual value d/d%s vs gradient node: max diff %g", c.name, dt, c.inputs[i].name, d)
			}
		}
		m.Close()
		// lisp machine (DoDiff)
		h := G.NewGraph()
		in2 := gcNodes(h, dt, c, data)
		if _, err := c.build(h, dt, in2); err != nil {
			t.Fatalf("%s %v: build: %v", c.name, dt, err)
		}
		lm := G.NewLispMachine(h)
		if err := lm.RunAll(); err != nil {
			lm.Close()
			t.Fatalf("%s %v: lisp: %v", c.name, dt, err)
		}
		for i, x := range in2 {
			dv, err := x.Grad()
			if err != nil {
				t.Fatalf("%s %v: lisp %s.Grad(): %v", c.name, dt, c.inputs[i].name, err)
			}
			if d := reftest.MaxDiff(gcFloats(dv), num[i]); d > tol {
				t.Errorf("%s %v: DoDiff d/d%s vs numeric: max diff %g", c.name, dt, c.inputs[i].name, d)
			}
		}
		lm.Close()
	}
}

// gcPlanNode builds a plan for ids with kernels.BuildPlan (independent of the plan op) and
// returns it as a constant node.
func gcPlanNode(t *testing.T, g *G.ExprGraph, geo kernels.Geometry, ids []int32, probs []float64, name string) *G.Node {
	flat := make([]int32, geo.PlanLen())
	if err := kernels.BuildPlan(flat, geo, ids, probs); err != nil {
		t.Fatalf("plan: %v", err)
	}
	return G.NewVector(g, tensor.Int32, G.WithShape(geo.PlanLen()), G.WithName(name),
		G.WithValue(tensor.New(tensor.WithShape(geo.PlanLen()), tensor.WithBacking(flat))))
}

func gcInt32Node(g *G.ExprGraph, name string, s tensor.Shape, v []int32) *G.Node {
	return G.NewTensor(g, tensor.Int32, s.Dims(), G.WithShape(s.Clone()...), G.WithName(name),
		G.WithValue(tensor.New(tensor.WithShape(s.Clone()...), tensor.WithBacking(append([]int32(nil), v...)))))
}
