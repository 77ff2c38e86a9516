package op

import (
	"fmt"
	"math"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/kernels"
)

func TestPlanForward(t *testing.T) {
	for i, fg := range fwdGeoms() {
		for seed := uint64(0); seed < 3; seed++ {
			for _, dt := range []tensor.Dtype{tensor.Float64, tensor.Float32} {
				t.Run(fmt.Sprintf("%s/seed%d/%v", fg.name, seed, dt), func(t *testing.T) {
					d := makeFwdData(fg, 1000*seed+uint64(i))
					gr := G.NewGraph()
					p, _ := buildPlan(t, gr, dt, fg.g, d)
					if p.Geometry != fg.g {
						t.Fatalf("plan geometry %+v, want %+v", p.Geometry, fg.g)
					}
					if !p.Node.Shape().Eq(tensor.Shape{fg.g.PlanLen()}) || p.Node.Dtype() != tensor.Int32 {
						t.Fatalf("plan node %v %v, want int32 (%d)", p.Node.Dtype(), p.Node.Shape(), fg.g.PlanLen())
					}
					v := runRead(t, gr, p.Node)[0]
					want := refPlan(fg.g, d.ids, d.probs).Flat()
					if got := v.Data().([]int32); fmt.Sprint(got) != fmt.Sprint(want) {
						t.Fatalf("plan\n got %v\nwant %v", got, want)
					}
				})
			}
		}
	}
}

// TestPlanHandTable checks the plan op on a case worked out by hand (no reference code):
// capacity 2 by prob, so expert 0 (pairs of tokens 0,1,2,3 with probs .9,.2,.5,.7) keeps the
// pairs of tokens 0 and 3, in token order.
func TestPlanHandTable(t *testing.T) {
	gr := G.NewGraph()
	ids := G.NewMatrix(gr, tensor.Int32, G.WithShape(5, 2), G.WithName("ids"), G.WithValue(int32Dense(gradIDs, 5, 2)))
	probs := G.NewMatrix(gr, tensor.Float64, G.WithShape(5, 2), G.WithName("probs"), G.WithValue(tensor.New(tensor.WithShape(5, 2),
		tensor.WithBacking([]float64{.9, .1, .2, .8, .6, .5, .3, .7, .4, .6}))))
	p, err := NewPlan(ids, probs, kernels.Geometry{E: 3, A: 2, Mode: kernels.Capacity, C: 2, Drop: kernels.DropByProb})
	if err != nil {
		t.Fatal(err)
	}
	got := runRead(t, gr, p.Node)[0].Data().([]int32)
	want := []int32{
		2, 2, 1, // counts
		0, 2, 4, 6, // offsets (segments of roundup(count, 2))
		0, 2, -1, -1, 4, -1, 3, 1, -1, -1, // rowOf
		0, 3, 0, 3, 2, -1, // tokenOf
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("plan\n got %v\nwant %v", got, want)
	}
}

func TestNewPlanTakesTKFromIDs(t *testing.T) {
	gr := G.NewGraph()
	ids := G.NewMatrix(gr, tensor.Int32, G.WithShape(6, 2), G.WithName("ids"))
	for _, g := range []kernels.Geometry{{E: 4, A: 1}, {T: 6, E: 4, A: 1}, {K: 2, E: 4, A: 1}, {T: 6, K: 2, E: 4, A: 1}} {
		p, err := NewPlan(ids, nil, g)
		if err != nil {
			t.Fatalf("%+v: %v", g, err)
		}
		if p.Geometry.T != 6 || p.Geometry.K != 2 || p.Rows() != 12 {
			t.Errorf("%+v: geometry %+v rows %d, want T=6 K=2 R=12", g, p.Geometry, p.Rows())
		}
	}
}

func TestPlanNotDifferentiable(t *testing.T) {
	op := planOp{g: kernels.Geometry{T: 2, K: 1, E: 2, A: 1, Mode: kernels.Capacity, C: 1, Drop: kernels.DropByProb}, withProbs: true}
	if d := op.DiffWRT(2); len(d) != 2 || d[0] || d[1] {
		t.Errorf("DiffWRT = %v, want [false false]", d)
	}
	if n, err := op.SymDiff(make(G.Nodes, 2), nil, nil); err != nil || len(n) != 2 || n[0] != nil || n[1] != nil {
		t.Errorf("SymDiff = %v, %v; want two nils", n, err)
	}
	// Asking for the gradient of the ids is an error from G.Grad, not a panic.
	gr := G.NewGraph()
	ids := G.NewMatrix(gr, tensor.Int32, G.WithShape(2, 1), G.WithName("ids"), G.WithValue(int32Dense([]int32{0, 1}, 2, 1)))
	x := G.NewMatrix(gr, tensor.Float64, G.WithShape(2, 3), G.WithName("x"), G.WithValue(denseOf(tensor.Float64, make([]float64, 6), 2, 3)))
	p, err := NewPlan(ids, nil, kernels.Geometry{E: 2, A: 1})
	if err != nil {
		t.Fatal(err)
	}
	cost := must(G.Sum(must(Permute(x, p))))
	if _, err := G.Grad(cost, ids); err == nil {
		t.Errorf("G.Grad wrt the ids gave no error")
	}
}

// badCase is one bad input of an op: build returns the error of a node function, or (atRun)
// builds a graph whose run must fail.
type badCase struct {
	name  string
	build func(gr *G.ExprGraph) (*G.Node, error)
	atRun bool
	frags []string // what the error must mention
}

// runBadCases checks that every case gives an error naming the problem, that nothing panics,
// and that a failing run leaves every input value as it was.
func runBadCases(t *testing.T, cases []badCase) {
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			defer func() {
				if r := recover(); r != nil {
					t.Fatalf("panic: %v", r)
				}
			}()
			gr := G.NewGraph()
			n, err := c.build(gr)
			if !c.atRun {
				wantErr(t, "build", err, c.frags...)
				return
			}
			if err != nil {
				t.Fatalf("build: %v", err)
			}
			if n == nil {
				t.Fatalf("build gave no node")
			}
			before := map[*G.Node]G.Value{}
			for _, in := range gr.Inputs() {
				if v := in.Value(); v != nil {
					before[in] = v.(*tensor.Dense).Clone().(*tensor.Dense)
				}
			}
			m := G.NewTapeMachine(gr)
			defer m.Close()
			wantErr(t, "run", m.RunAll(), c.frags...)
			for in, v := range before {
				if !bitsEqual(in.Value(), v) {
					t.Errorf("input %v was modified", in.Name())
				}
			}
		})
	}
}

// idsNode adds an int32 ids input [T,K].
func idsNode(gr *G.ExprGraph, name string, T, K int, data []int32) *G.Node {
	return G.NewMatrix(gr, tensor.Int32, G.WithShape(T, K), G.WithName(name), G.WithValue(int32Dense(data, T, K)))
}

// floatNode adds a float input of the given shape filled with 0.5.
func floatNode(gr *G.ExprGraph, dt tensor.Dtype, name string, shape ...int) *G.Node {
	n := 1
	for _, s := range shape {
		n *= s
	}
	data := make([]float64, n)
	for i := range data {
		data[i] = 0.5
	}
	return G.NewTensor(gr, dt, len(shape), G.WithShape(shape...), G.WithName(name), G.WithValue(denseOf(dt, data, shape...)))
}

// okIDs is a valid ids [4,2] for E=3.
var okIDs = []int32{0, 1, 2, 0, 1, -1, 2, 1}

func TestNewPlanBadInputs(t *testing.T) {
	drop := kernels.Geometry{E: 3, A: 1}
	byProb := kernels.Geometry{E: 3, A: 1, Mode: kernels.Capacity, C: 2, Drop: kernels.DropByProb}
	planWith := func(ids []int32, T, K int, g kernels.Geometry, probs func(*G.ExprGraph) *G.Node) func(*G.ExprGraph) (*G.Node, error) {
		return func(gr *G.ExprGraph) (*G.Node, error) {
			var pn *G.Node
			if probs != nil {
				pn = probs(gr)
			}
			p, err := NewPlan(idsNode(gr, "ids", T, K, ids), pn, g)
			if err != nil {
				return nil, err
			}
			return p.Node, nil
		}
	}
	probs42 := func(dt tensor.Dtype) func(*G.ExprGraph) *G.Node {
		return func(gr *G.ExprGraph) *G.Node { return floatNode(gr, dt, "probs", 4, 2) }
	}
	nanProbs := func(gr *G.ExprGraph) *G.Node {
		d := []float64{.5, .5, .5, math.NaN(), .5, .5, .5, .5}
		return G.NewMatrix(gr, tensor.Float64, G.WithShape(4, 2), G.WithName("probs"), G.WithValue(denseOf(tensor.Float64, d, 4, 2)))
	}
	cases := []badCase{
		{"nil ids", func(gr *G.ExprGraph) (*G.Node, error) { _, err := NewPlan(nil, nil, drop); return nil, err }, false, []string{"ids is nil"}},
		{"ids vector", func(gr *G.ExprGraph) (*G.Node, error) {
			_, err := NewPlan(G.NewVector(gr, tensor.Int32, G.WithShape(8), G.WithName("ids")), nil, drop)
			return nil, err
		}, false, []string{"ids has shape (8)", "want (T, K)"}},
		{"ids int not int32", func(gr *G.ExprGraph) (*G.Node, error) {
			_, err := NewPlan(G.NewMatrix(gr, tensor.Int, G.WithShape(4, 2), G.WithName("ids")), nil, drop)
			return nil, err
		}, false, []string{"ids has dtype int", "want int32"}},
		{"ids float", func(gr *G.ExprGraph) (*G.Node, error) {
			_, err := NewPlan(floatNode(gr, tensor.Float32, "ids", 4, 2), nil, drop)
			return nil, err
		}, false, []string{"ids has dtype float32", "want int32"}},
		{"T mismatch", planWith(okIDs, 4, 2, kernels.Geometry{T: 5, E: 3, A: 1}, nil), false, []string{"T=4", "T=5"}},
		{"K mismatch", planWith(okIDs, 4, 2, kernels.Geometry{K: 3, E: 3, A: 1}, nil), false, []string{"K=2", "K=3"}},
		{"K > E", planWith(okIDs, 2, 4, kernels.Geometry{E: 3, A: 1}, nil), false, []string{"K=4 > E=3"}},
		{"E = 0", planWith(okIDs, 4, 2, kernels.Geometry{A: 1}, nil), false, []string{"E=0"}},
		{"A = 0", planWith(okIDs, 4, 2, kernels.Geometry{E: 3}, nil), false, []string{"alignment A=0"}},
		{"capacity 0", planWith(okIDs, 4, 2, kernels.Geometry{E: 3, A: 1, Mode: kernels.Capacity}, nil), false, []string{"capacity C=0"}},
		{"capacity in dropless mode", planWith(okIDs, 4, 2, kernels.Geometry{E: 3, A: 1, C: 2}, nil), false, []string{"dropless"}},
		{"drop by prob without probs", planWith(okIDs, 4, 2, byProb, nil), false, []string{"needs the probs"}},
		{"probs wrong shape", planWith(okIDs, 4, 2, byProb, func(gr *G.ExprGraph) *G.Node { return floatNode(gr, tensor.Float64, "probs", 4, 3) }), false, []string{"probs has shape (4, 3)", "K=2"}},
		{"probs int32", planWith(okIDs, 4, 2, byProb, func(gr *G.ExprGraph) *G.Node { return idsNode(gr, "probs", 4, 2, okIDs) }), false, []string{"probs has dtype int32"}},
		{"probs of another graph", planWith(okIDs, 4, 2, byProb, func(*G.ExprGraph) *G.Node { return floatNode(G.NewGraph(), tensor.Float64, "probs", 4, 2) }), false, []string{"another graph"}},
		{"id >= E at run time", planWith([]int32{0, 1, 2, 3, 1, -1, 2, 1}, 4, 2, drop, nil), true, []string{"ids[1,1] = 3", "out of range"}},
		{"id < -1 at run time", planWith([]int32{0, 1, 2, 0, -2, -1, 2, 1}, 4, 2, drop, nil), true, []string{"ids[2,0] = -2", "out of range"}},
		{"repeated expert at run time", planWith([]int32{0, 1, 2, 2, 1, -1, 2, 1}, 4, 2, drop, nil), true, []string{"token 1 names expert 2 twice"}},
		{"NaN prob at run time", planWith(okIDs, 4, 2, byProb, nanProbs), true, []string{"probs[1,1] is NaN"}},
		{"float32 probs fine, bad id at run time", planWith([]int32{0, 1, 2, 0, 1, 7, 2, 1}, 4, 2, byProb, probs42(tensor.Float32)), true, []string{"ids[2,1] = 7"}},
	}
	runBadCases(t, cases)
}

// TestPlanDoBadValues calls Do directly with values the graph would never pass, including a
// prealloc of the wrong size.
func TestPlanDoBadValues(t *testing.T) {
	g := kernels.Geometry{T: 4, K: 2, E: 3, A: 1}
	ids := int32Dense(okIDs, 4, 2)
	op := planOp{g: g}
	wantErr(t, "no inputs", func() error { _, err := op.Do(); return err }(), "got 0 inputs, want 1")
	wantErr(t, "nil input", func() error { _, err := op.Do(nil); return err }(), "input 0 is nil")
	wantErr(t, "int ids", func() error {
		_, err := op.Do(tensor.New(tensor.WithShape(4, 2), tensor.WithBacking([]int{0, 1, 2, 0, 1, -1, 2, 1})))
		return err
	}(), "ids has dtype int, want int32")
	wantErr(t, "ids shape", func() error { _, err := op.Do(int32Dense(okIDs, 2, 4)); return err }(), "ids has shape (2, 4)", "T=4, K=2")
	wantErr(t, "scalar ids", func() error { _, err := op.Do(G.NewI(3)); return err }(), "ids has dtype int")
	pre := tensor.New(tensor.WithShape(5), tensor.WithBacking(make([]int32, 5)))
	wantErr(t, "prealloc size", func() error { _, err := op.UsePreallocDo(pre, ids); return err }(), "preallocated output has shape (5)")
	// A valid prealloc holding stale data is overwritten completely.
	stale := make([]int32, g.PlanLen())
	for i := range stale {
		stale[i] = 99
	}
	pre = tensor.New(tensor.WithShape(g.PlanLen()), tensor.WithBacking(stale))
	v, err := op.UsePreallocDo(pre, ids)
	if err != nil {
		t.Fatal(err)
	}
	if want := refPlan(g, okIDs, nil).Flat(); fmt.Sprint(v.Data()) != fmt.Sprint(want) {
		t.Errorf("prealloc plan %v, want %v", v.Data(), want)
	}
	// Drop by prob with probs of another dtype than the graph's is still fine for the plan.
	gp := kernels.Geometry{T: 4, K: 2, E: 3, A: 1, Mode: kernels.Capacity, C: 1, Drop: kernels.DropByProb}
	if _, err := (planOp{g: gp, withProbs: true}).Do(ids, denseOf(tensor.Float32, make([]float64, 8), 4, 2)); err != nil {
		t.Errorf("float32 probs: %v", err)
	}
	wantErr(t, "int32 probs", func() error { _, err := (planOp{g: gp, withProbs: true}).Do(ids, ids); return err }(), "probs has dtype int32, want float32 or float64")
}
