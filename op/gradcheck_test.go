package op

import (
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/kernels"
)

// The gradient-check harness: float64 central differences against G.Grad on the tape machine
// and against DoDiff on the lisp machine.

// ---------------------------------------------------------------- gradient-check harness

// gradGeom is one geometry of the gradient checks with its ids (T=5, K=2, E=3).
type gradGeom struct {
	name      string
	g         kernels.Geometry
	ids, ids2 []int32
}

// The ids overload expert 0 (four pairs) so that capacity C=2 drops, leave expert slots empty
// (-1), and give token 4 no expert at all.
var (
	gradIDs  = []int32{0, 1, 0, -1, 2, 0, 1, 0, -1, -1}
	gradIDs2 = []int32{1, 2, 2, 0, 0, -1, 2, 1, 1, 0}
)

func gradGeoms() []gradGeom {
	geo := func(name string, g kernels.Geometry) gradGeom {
		g.T, g.K, g.E = 5, 2, 3
		return gradGeom{name: name, g: g, ids: gradIDs, ids2: gradIDs2}
	}
	return []gradGeom{
		geo("dropless A=1", kernels.Geometry{A: 1}),
		geo("dropless A=4", kernels.Geometry{A: 4}),
		geo("capacity position C=2", kernels.Geometry{A: 1, Mode: kernels.Capacity, C: 2}),
		geo("capacity position C=3 A=2 pad", kernels.Geometry{A: 2, Mode: kernels.Capacity, C: 3, PadToCapacity: true}),
		geo("capacity prob C=2", kernels.Geometry{A: 1, Mode: kernels.Capacity, C: 2, Drop: kernels.DropByProb}),
		geo("capacity prob C=2 A=2 pad", kernels.Geometry{A: 2, Mode: kernels.Capacity, C: 2, Drop: kernels.DropByProb, PadToCapacity: true}),
	}
}

// gradEnv is one graph of a gradient-check case.
type gradEnv struct {
	t     testing.TB
	g     *G.ExprGraph
	dt    tensor.Dtype
	geo   gradGeom
	H     int
	in    map[string]*G.Node // the float inputs the case differentiates
	plan  *Plan
	plan2 *Plan // a second plan from other ids, built by second() when a case uses it
	mk    func(idsName string, ids []int32) (*Plan, error)
}

// second returns the second plan (built from other ids), for inputs that feed two uses of an
// op. It is built on first use: the lisp machine rejects graphs with unused nodes.
func (e *gradEnv) second() *Plan {
	if e.plan2 == nil {
		e.plan2 = must2(e.mk("ids2", e.geo.ids2))
	}
	return e.plan2
}

// inputShape is the shape of each named float input.
func inputShape(g kernels.Geometry, H int, name string) []int {
	switch name {
	case "x", "dy":
		return []int{g.T, H}
	case "yp", "dxp":
		return []int{g.Rows(), H}
	case "probs":
		return []int{g.T, g.K}
	case "dpp":
		return []int{g.Rows()}
	}
	panic("unknown input " + name)
}

// inputData is the deterministic data of each named input (probs distinct and positive).
func inputData(g kernels.Geometry, H int, name string) []float64 {
	n := 1
	for _, s := range inputShape(g, H, name) {
		n *= s
	}
	rng := newRNG(uint64(len(name)*1000 + int(name[0])))
	if name == "probs" {
		return randProbs(rng, n)
	}
	return randFloats(rng, n)
}

// weight returns a named constant input with deterministic, non-trivial data.
func (e *gradEnv) weight(name string, shape ...int) *G.Node {
	n := 1
	for _, s := range shape {
		n *= s
	}
	rng := newRNG(uint64(len(name)) + 77)
	data := make([]float64, n)
	for i := range data {
		data[i] = 0.5 + rng.Float64() + float64(i%3)
	}
	return G.NewTensor(e.g, e.dt, len(shape), G.WithShape(shape...), G.WithName(name), G.WithValue(denseOf(e.dt, data, shape...)))
}

// weighted returns sum(W ⊙ y²) for a fresh weight W named name.
func (e *gradEnv) weighted(name string, y *G.Node) (*G.Node, error) {
	w := e.weight(name, y.Shape()...)
	sq, err := G.Square(y)
	if err != nil {
		return nil, err
	}
	prod, err := G.HadamardProd(w, sq)
	if err != nil {
		return nil, err
	}
	return G.Sum(prod)
}

// gradCase builds a scalar cost from some float inputs of a gradEnv.
type gradCase struct {
	name   string
	inputs []string
	build  func(e *gradEnv) (*G.Node, error)
}

// newGradEnv builds the inputs (values from data, possibly perturbed), the two plans and the
// case's cost.
func newGradEnv(t testing.TB, c gradCase, geo gradGeom, H int, dt tensor.Dtype, data map[string][]float64) (*gradEnv, *G.Node, error) {
	e := &gradEnv{t: t, g: G.NewGraph(), dt: dt, geo: geo, H: H, in: map[string]*G.Node{}}
	for _, name := range c.inputs {
		shape := inputShape(geo.g, H, name)
		e.in[name] = G.NewTensor(e.g, dt, len(shape), G.WithShape(shape...), G.WithName(name), G.WithValue(denseOf(dt, data[name], shape...)))
	}
	tk := []int{geo.g.T, geo.g.K}
	mkPlan := func(idsName string, ids []int32) (*Plan, error) {
		idn := G.NewMatrix(e.g, tensor.Int32, G.WithShape(tk...), G.WithName(idsName), G.WithValue(int32Dense(ids, tk...)))
		if geo.g.Mode != kernels.Capacity || geo.g.Drop != kernels.DropByProb {
			return NewPlan(idn, nil, geo.g)
		}
		probs := e.in["probs"] // the plan may share the probs the case differentiates
		if probs == nil {
			probs = G.NewMatrix(e.g, dt, G.WithShape(tk...), G.WithName("rprobs"+idsName), G.WithValue(denseOf(dt, inputData(geo.g, H, "probs"), tk...)))
		}
		return NewPlan(idn, probs, geo.g)
	}
	var err error
	if e.plan, err = mkPlan("ids", geo.ids); err != nil {
		return nil, nil, err
	}
	e.mk = mkPlan
	cost, err := c.build(e)
	return e, cost, err
}

func (e *gradEnv) wrts(c gradCase) G.Nodes {
	out := make(G.Nodes, len(c.inputs))
	for i, name := range c.inputs {
		out[i] = e.in[name]
	}
	return out
}

// evalCost runs the case's cost forward on a tape machine.
func evalCost(t testing.TB, c gradCase, geo gradGeom, H int, data map[string][]float64) float64 {
	t.Helper()
	_, cost, err := newGradEnv(t, c, geo, H, tensor.Float64, data)
	if err != nil {
		t.Fatalf("build: %v", err)
	}
	m := G.NewTapeMachine(cost.Graph())
	defer m.Close()
	if err := m.RunAll(); err != nil {
		t.Fatalf("forward: %v", err)
	}
	return toF64(t, cost.Value())[0]
}

// numericGrads is the float64 central difference of the cost wrt every input of the case.
func numericGrads(t testing.TB, c gradCase, geo gradGeom, H int, data map[string][]float64) map[string][]float64 {
	t.Helper()
	const eps = 1e-6
	out := map[string][]float64{}
	for _, name := range c.inputs {
		base := data[name]
		grad := make([]float64, len(base))
		for i := range base {
			pert := func(d float64) float64 {
				moved := map[string][]float64{}
				for k, v := range data {
					moved[k] = v
				}
				p := append([]float64(nil), base...)
				p[i] += d
				moved[name] = p
				return evalCost(t, c, geo, H, moved)
			}
			grad[i] = (pert(eps) - pert(-eps)) / (2 * eps)
		}
		out[name] = grad
	}
	return out
}

// tapeGrads differentiates symbolically (G.Grad + tape machine with BindDualValues) and
// returns the gradient nodes' values and the dual values x.Grad(), which must be identical.
func tapeGrads(t testing.TB, c gradCase, geo gradGeom, H int, dt tensor.Dtype, data map[string][]float64) (viaNode, viaDual map[string][]float64) {
	t.Helper()
	e, cost, err := newGradEnv(t, c, geo, H, dt, data)
	if err != nil {
		t.Fatalf("build: %v", err)
	}
	wrts := e.wrts(c)
	grads, err := G.Grad(cost, wrts...)
	if err != nil {
		t.Fatalf("G.Grad: %v", err)
	}
	m := G.NewTapeMachine(e.g, G.BindDualValues(wrts...))
	defer m.Close()
	if err := m.RunAll(); err != nil {
		t.Fatalf("tape run: %v", err)
	}
	viaNode, viaDual = map[string][]float64{}, map[string][]float64{}
	for i, name := range c.inputs {
		viaNode[name] = toF64(t, grads[i].Value())
		d, err := wrts[i].Grad()
		if err != nil {
			t.Fatalf("%s.Grad(): %v", name, err)
		}
		viaDual[name] = toF64(t, d)
	}
	return viaNode, viaDual
}

// lispGrads differentiates with dual values (DoDiff) on a lisp machine.
func lispGrads(t testing.TB, c gradCase, geo gradGeom, H int, dt tensor.Dtype, data map[string][]float64) map[string][]float64 {
	t.Helper()
	e, _, err := newGradEnv(t, c, geo, H, dt, data)
	if err != nil {
		t.Fatalf("build: %v", err)
	}
	m := G.NewLispMachine(e.g)
	defer m.Close()
	if err := m.RunAll(); err != nil {
		t.Fatalf("lisp run: %v", err)
	}
	out := map[string][]float64{}
	for _, name := range c.inputs {
		d, err := e.in[name].Grad()
		if err != nil {
			t.Fatalf("%s.Grad(): %v", name, err)
		}
		out[name] = toF64(t, d)
	}
	return out
}

// checkGradCases runs every case on every geometry: float64 central differences against the
// symbolic gradients (tape) and the dual-value gradients (lisp), in float64 and float32.
func checkGradCases(t *testing.T, cases []gradCase) {
	const H = 3
	for _, geo := range gradGeoms() {
		for _, c := range cases {
			t.Run(geo.name+"/"+c.name, func(t *testing.T) {
				data := map[string][]float64{}
				for _, name := range c.inputs {
					data[name] = inputData(geo.g, H, name)
				}
				num := numericGrads(t, c, geo, H, data)
				nonzero := false
				for _, name := range c.inputs {
					for _, v := range num[name] {
						nonzero = nonzero || v != 0
					}
				}
				if !nonzero {
					t.Fatalf("numeric gradient is all zero: the case tests nothing")
				}
				for _, dt := range []tensor.Dtype{tensor.Float64, tensor.Float32} {
					tol := 1e-6
					if dt == tensor.Float32 {
						tol = 1e-4
					}
					node, dual := tapeGrads(t, c, geo, H, dt, data)
					lisp := lispGrads(t, c, geo, H, dt, data)
					for _, name := range c.inputs {
						if d := maxRelDiff(node[name], num[name]); d > tol {
							t.Errorf("%v d/d%s: tape %v vs numeric %v (rel diff %g)", dt, name, node[name], num[name], d)
						}
						if d := maxRelDiff(dual[name], node[name]); d != 0 {
							t.Errorf("%v d/d%s: %s.Grad() %v differs from the grad node %v", dt, name, name, dual[name], node[name])
						}
						if d := maxRelDiff(lisp[name], num[name]); d > tol {
							t.Errorf("%v d/d%s: lisp %v vs numeric %v (rel diff %g)", dt, name, lisp[name], num[name], d)
						}
					}
				}
			})
		}
	}
}

// costOf is a shorthand for building sums of weighted squares in cases.
func costOf(e *gradEnv, terms ...*G.Node) (*G.Node, error) {
	out := terms[0]
	for _, t := range terms[1:] {
		var err error
		if out, err = G.Add(out, t); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// must2 unwraps node results in case builders (errors end the build, not the test binary).
type buildErr struct{ err error }

func must(n *G.Node, err error) *G.Node {
	if err != nil {
		panic(buildErr{err})
	}
	return n
}

func must2(p *Plan, err error) *Plan {
	if err != nil {
		panic(buildErr{err})
	}
	return p
}

// caseFn turns a builder that uses must into one that returns errors.
func caseFn(f func(e *gradEnv) *G.Node) func(e *gradEnv) (*G.Node, error) {
	return func(e *gradEnv) (n *G.Node, err error) {
		defer func() {
			if r := recover(); r != nil {
				be, ok := r.(buildErr)
				if !ok {
					panic(r)
				}
				err = be.err
			}
		}()
		return f(e), nil
	}
}
